"""SageMaker Feature Store where moto lacks it, and a check of every feature store request.

moto 5 implements ``CreateFeatureGroup`` and ``DescribeFeatureGroup`` only, and not as SageMaker
does: it replaces the caller's ``DataCatalogConfig`` with its own database, leaves ``sagemaker/`` out
of ``ResolvedOutputS3Uri``, drops ``OnlineStoreConfig`` and answers ``Created`` at once. It has no
``UpdateFeatureGroup`` and no ``sagemaker-featurestore-runtime`` at all. :func:`install_feature_store_gaps`
adds them to moto in this process (``mock_aws``), doing what the documentation says:

- a new group answers ``Creating`` to its first ``CREATING_DESCRIBES`` descriptions, then ``Created``;
- ``ResolvedOutputS3Uri`` is ``<S3Uri>/<account>/sagemaker/<region>/offline-store/<group>-<created>/data``;
- ``PutRecord`` writes the record to the online store when its event time is later than the held one
  (else it is historic: offline only) and honours ``TargetStores``;
- SageMaker writes the offline store itself (moto does not): here each ``PutRecord`` to the offline
  store becomes one Parquet file in moto's S3 at the documented place,
  ``.../data/year=YYYY/month=MM/day=DD/hour=HH/<event time>_<16 characters>.parquet``, with the
  feature columns typed by their definitions (Integral int64, Fractional double, String string) and
  the store's ``write_time``, ``api_invocation_time`` and ``is_deleted`` columns, so the platform's
  reader is tested against that layout;
- ``BatchGetRecord`` answers the held records, unknown identifiers under ``Errors``.

https://docs.aws.amazon.com/sagemaker/latest/dg/feature-store-offline.html
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_feature_store_PutRecord.html
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_feature_store_BatchGetRecord.html

:func:`checked_requests` validates every feature store request a client sends against botocore's
service model (``ParamValidator``) and the service's rules (``service_rules``), and records it.
"""
from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from typing import Any

CREATING_DESCRIBES = 2
RUNTIME_URL = r"https?://featurestore-runtime\.sagemaker\.(.+)\.amazonaws\.com"

_installed = False
_groups: dict[tuple[str, str, str], dict[str, Any]] = {}  # (account, region, name) -> request and state
_online: dict[tuple[str, str, str], dict[str, tuple[float, list[dict[str, str]]]]] = {}
_files = [0]


def reset() -> None:
    """Forget every group's extra state and online records (each test starts from an empty fake)."""
    _groups.clear()
    _online.clear()
    _files[0] = 0


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/json", "x-amzn-ErrorType": code}, \
        json.dumps({"__type": code, "message": message})


def install_feature_store_gaps() -> None:
    global _installed
    if _installed:
        return
    import moto.backend_index as backend_index
    import moto.sagemakerruntime.urls as runtime_urls
    from moto.core.responses import ActionResult
    from moto.sagemaker.exceptions import ResourceNotFound, ValidationError
    from moto.sagemaker.responses import SageMakerResponse

    original_create = SageMakerResponse.create_feature_group
    original_describe = SageMakerResponse.describe_feature_group

    def create_feature_group(self):
        result = original_create(self)
        name = self._get_param("FeatureGroupName")
        created = int(datetime.now(UTC).timestamp())
        offline = self._get_param("OfflineStoreConfig")
        resolved = None
        if offline:
            resolved = (f"{offline['S3StorageConfig']['S3Uri'].rstrip('/')}/{self.current_account}/sagemaker/"
                        f"{self.region}/offline-store/{name}-{created}/data")
        _groups[(self.current_account, self.region, name)] = {
            "offline": offline, "online": self._get_param("OnlineStoreConfig"), "resolved": resolved,
            "describes": 0, "definitions": list(self._get_param("FeatureDefinitions")),
            "record_id": self._get_param("RecordIdentifierFeatureName"),
            "event_time": self._get_param("EventTimeFeatureName"), "tags": self._get_param("Tags") or []}
        return result

    def describe_feature_group(self):
        name = self._get_param("FeatureGroupName")
        state = _groups.get((self.current_account, self.region, name))
        if state is None:  # moto fails with a KeyError (HTTP 500); SageMaker answers ResourceNotFound
            raise ResourceNotFound(message=f"Resource Not Found: FeatureGroup {name} does not exist.")
        result = original_describe(self)
        body = getattr(result, "result", None)
        if isinstance(body, dict):
            state["describes"] += 1
            body["FeatureGroupStatus"] = "Creating" if state["describes"] <= CREATING_DESCRIBES else "Created"
            body["FeatureDefinitions"] = state["definitions"]
            if state["offline"]:
                offline = json.loads(json.dumps(state["offline"]))
                offline["S3StorageConfig"]["ResolvedOutputS3Uri"] = state["resolved"]
                body["OfflineStoreConfig"] = offline
            if state["online"]:
                body["OnlineStoreConfig"] = state["online"]
        return result

    def update_feature_group(self):
        name = self._get_param("FeatureGroupName")
        state = _groups.get((self.current_account, self.region, name))
        if state is None:
            raise ResourceNotFound(message=f"Resource Not Found: FeatureGroup {name} does not exist.")
        have = {d["FeatureName"] for d in state["definitions"]}
        for addition in self._get_param("FeatureAdditions") or []:
            if addition["FeatureName"] in have:
                raise ValidationError(message=f"Feature {addition['FeatureName']} already exists.")
            state["definitions"].append(addition)
        return ActionResult({"FeatureGroupArn": self.sagemaker_backend.describe_feature_group(name)["FeatureGroupArn"]})

    SageMakerResponse.create_feature_group = create_feature_group
    SageMakerResponse.describe_feature_group = describe_feature_group
    SageMakerResponse.update_feature_group = update_feature_group

    runtime_urls.url_bases.append(RUNTIME_URL)
    runtime_urls.url_paths["{0}/FeatureGroup/(?P<name>[^/?]+)$"] = _featurestore_dispatch
    runtime_urls.url_paths["{0}/BatchGetRecord$"] = _featurestore_dispatch
    backend_index.backend_url_patterns.append(("sagemakerruntime", re.compile(RUNTIME_URL)))
    _installed = True


def _featurestore_dispatch(request: Any, full_url: str, headers: Any) -> tuple[int, dict[str, str], str]:
    from urllib.parse import unquote, urlparse

    from moto.core import DEFAULT_ACCOUNT_ID

    url = urlparse(full_url)
    region = re.match(RUNTIME_URL, f"{url.scheme}://{url.netloc}").group(1)  # type: ignore[union-attr]
    account = DEFAULT_ACCOUNT_ID
    raw = request.get_data() if hasattr(request, "get_data") else request.body
    body = json.loads(raw or b"{}")
    if request.method == "PUT" and url.path.startswith("/FeatureGroup/"):
        return _put_record(account, region, unquote(url.path.split("/")[2]), body)
    if request.method == "POST" and url.path == "/BatchGetRecord":
        return _batch_get_record(account, region, body)
    return _error(400, "ValidationError", f"the fake feature store runtime has no {request.method} {url.path}")


def _put_record(account: str, region: str, name: str, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    state = _groups.get((account, region, name))
    if state is None:
        return _error(404, "ResourceNotFound", f"Resource Not Found: FeatureGroup {name} does not exist.")
    types = {d["FeatureName"]: d["FeatureType"] for d in state["definitions"]}
    record = body["Record"]
    values = {v["FeatureName"]: v.get("ValueAsString") for v in record}
    unknown = sorted(set(values) - set(types))
    if unknown or state["record_id"] not in values or state["event_time"] not in values:
        return _error(400, "ValidationError", f"record of {name} has unknown features {unknown} or lacks the record "
                                              "identifier or the event time")
    event = float(values[state["event_time"]])  # Fractional: Unix seconds
    stores = body.get("TargetStores") or ["OnlineStore", "OfflineStore"]
    if "OnlineStore" in stores and (state["online"] or {}).get("EnableOnlineStore"):
        held = _online.setdefault((account, region, name), {})
        current = held.get(values[state["record_id"]])
        if current is None or event > current[0]:  # a later event time replaces; an older one is historic
            held[values[state["record_id"]]] = (event, record)
    if "OfflineStore" in stores and state["resolved"]:
        _write_offline(account, state, types, values, event)
    return 200, {"Content-Type": "application/json"}, ""


def _write_offline(account: str, state: dict[str, Any], types: dict[str, str], values: dict[str, Any],
                   event: float) -> None:
    """One Parquet file per record at the documented place (SageMaker batches records; the layout is the same)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from moto.s3.models import s3_backends

    arrow = {"Integral": pa.int64(), "Fractional": pa.float64(), "String": pa.string()}
    convert = {"Integral": int, "Fractional": float, "String": str}
    now = datetime.now(UTC)
    columns: dict[str, Any] = {}
    for feature, kind in types.items():
        text = values.get(feature)
        columns[feature] = pa.array([None if text is None else convert[kind](text)], type=arrow[kind])
    columns["write_time"] = pa.array([now], type=pa.timestamp("us", tz="UTC"))
    columns["api_invocation_time"] = pa.array([now], type=pa.timestamp("us", tz="UTC"))
    columns["is_deleted"] = pa.array([False])
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    when = datetime.fromtimestamp(event, tz=UTC)
    _files[0] += 1
    bucket, prefix = state["resolved"][len("s3://"):].split("/", 1)
    key = (f"{prefix}/year={when:%Y}/month={when:%m}/day={when:%d}/hour={when:%H}/"
           f"{when:%Y%m%dT%H%M%SZ}_{_files[0]:016d}.parquet")
    s3_backends[account]["aws"].put_object(bucket, key, buffer.getvalue())


def _batch_get_record(account: str, region: str, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    records, errors = [], []
    for entry in body["Identifiers"]:
        name = entry["FeatureGroupName"]
        held = _online.get((account, region, name), {})
        wanted = set(entry.get("FeatureNames") or [])
        for record_id in entry["RecordIdentifiersValueAsString"]:
            if record_id not in held:
                errors.append({"FeatureGroupName": name, "RecordIdentifierValueAsString": record_id,
                               "ErrorCode": "ResourceNotFound", "ErrorMessage": "record not found"})
                continue
            record = [v for v in held[record_id][1] if not wanted or v["FeatureName"] in wanted]
            records.append({"FeatureGroupName": name, "RecordIdentifierValueAsString": record_id, "Record": record})
    return 200, {"Content-Type": "application/json"}, json.dumps(
        {"Records": records, "Errors": errors, "UnprocessedIdentifiers": []})


FEATURE_STORE_OPERATIONS = {"sagemaker": ("CreateFeatureGroup", "DescribeFeatureGroup", "UpdateFeatureGroup"),
                            "sagemaker-featurestore-runtime": ("PutRecord", "BatchGetRecord")}


def check_requests(monkeypatch) -> dict[str, list[Any]]:
    """Check every feature store request any AWS session's clients send from now on (botocore's model with
    ``ParamValidator``, then the service's rules); returns ``{"sent": [(operation, params)], "problems": [...]}``."""
    from botocore.validate import ParamValidator

    from mlplat_providers.aws import service_rules as rules
    from mlplat_providers.aws.runtime.session import AwsSession

    seen: dict[str, list[Any]] = {"sent": [], "problems": []}

    def checker(operation: str):
        def check(params, model, **_):
            report = ParamValidator().validate(params, model.input_shape)
            if report.has_errors():
                seen["problems"].append(f"{operation}: {report.generate_report()}")
            if operation == "CreateFeatureGroup":
                seen["problems"].extend(rules.create_feature_group_problems(params))
            elif operation == "BatchGetRecord":
                seen["problems"].extend(rules.batch_get_record_problems(params))
            elif operation == "PutRecord":
                state = next((s for (_, _, n), s in _groups.items() if n == params["FeatureGroupName"]), None)
                if state is None:
                    seen["problems"].append(f"PutRecord to {params['FeatureGroupName']}, which was never created")
                else:
                    types = {d["FeatureName"]: d["FeatureType"] for d in state["definitions"]}
                    seen["problems"].extend(rules.put_record_problems(
                        params, types, record_identifier=state["record_id"], event_time=state["event_time"]))
            seen["sent"].append((operation, params))
        return check

    original = AwsSession.client

    def client(self, service: str):
        fresh = service not in self._clients
        made = original(self, service)
        if fresh and service in FEATURE_STORE_OPERATIONS:
            prefix = made.meta.service_model.service_id.hyphenize()
            for operation in FEATURE_STORE_OPERATIONS[service]:
                made.meta.events.register(f"provide-client-params.{prefix}.{operation}", checker(operation))
        return made

    monkeypatch.setattr(AwsSession, "client", client)
    return seen
