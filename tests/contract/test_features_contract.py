"""The FEATURES contract: one feature store lifecycle, the same assertions, on every provider.

apply → apply again (unchanged) → materialize → list → online reads (the latest value per entity)
→ a point-in-time training set equal to the local provider's answer on the same data (and to a
brute-force reference). The user's writes go through the stack's control plane
(``features.apply/materialize/list``), reads through the SDK's ``FeatureStore``.

On GCP (the fake Vertex AI and BigQuery REST servers on 127.0.0.1) every request body is parsed into
``aiplatform_v1`` types or checked against BigQuery's schema rules as it arrives, and the online store is
synced from the BigQuery table the materialization wrote.

On AWS (moto in this process, with :mod:`tests.contract.moto_feature_store` filling in what moto
lacks) every SageMaker and Feature Store runtime request is validated against botocore's service
model and the service's rules as it is sent, and the training set is read back from the offline
store's Parquet files in their documented layout.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from tests.conftest import write_project
from tests.contract import moto_feature_store as mfs
from tests.contract import moto_support as ms
from tests.contract.azure_fake.feature_support import azure_redis, azure_redis_server  # noqa: F401
from tests.contract.azure_fake.feature_support import provision_features as provision_azure_features
from tests.contract.azure_fake.fixtures import azure_fake, azure_server  # noqa: F401
from tests.contract.azure_support import azure_stack_text
from tests.contract.gcp_fake.bigquery import bigquery_fake, bigquery_server  # noqa: F401
from tests.contract.gcp_fake.feature_support import gcp_stack_text, provision_features
from tests.contract.gcp_fake.fixtures import gcp_fake, gcp_servers  # noqa: F401
from tests.contract.lifecycle import AUTHOR, call, context
from tests.integration.support_features import BASE, brute_force, plain

pytestmark = pytest.mark.integration

STACK = "team"
REFERENCE = "ref"  # a local stack in the same project: the local provider's answer on the same data
DRIVERS = [1, 2, 3, 4, 5]
FEATURES = ["trips", "rating", "city", "active", "last_seen"]
REFS = [f"driver_stats:{f}" for f in FEATURES]
WINDOW = {"start": "2023-12-31T00:00:00", "end": "2024-01-02T00:00:00"}


def local_text(state_dir: str) -> str:
    text = ms.aws_stack_text()
    for line in (f"  aws:region: {ms.REGION}", "    kind: aws", f"    region: {ms.REGION}", f'    accountId: "{ms.ACCOUNT}"'):
        text = text.replace(line + "\n", "")
    return text.replace("  mlplat:provider:\n", f"  mlplat:provider:\n    kind: local\n    stateDir: {state_dir}\n") \
        .replace("instanceType: ml.m5.large", "instanceType: local.cpu")


def source_frame() -> pd.DataFrame:
    """Four events per driver an hour apart (two sharing an event time, told apart by the created time),
    one null rating, every dtype the contract maps."""
    rows = []
    for driver in DRIVERS:
        for k in range(4):
            at = BASE + pd.Timedelta(hours=k, minutes=driver)
            rows.append({"driver_id": driver, "event_timestamp": at, "created": at + pd.Timedelta(seconds=1),
                         "trips": 10 * driver + k, "rating": None if (driver, k) == (2, 3) else 4.0 + driver / 10 + k / 100,
                         "city": f"city-{driver}-{k}", "active": (driver + k) % 2 == 0,
                         "last_seen": at - pd.Timedelta(microseconds=123457 * k)})
    tie = dict(rows[5])  # driver 2, event 1 again: created later, so it wins offline and online
    tie.update(created=tie["created"] + pd.Timedelta(seconds=5), trips=999, city="tie-winner")
    rows.append(tie)
    frame = pd.DataFrame(rows)
    for column in ("event_timestamp", "created", "last_seen"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
    frame["rating"] = frame["rating"].astype("float64")
    return frame


def definitions(*, feature_names: list[str] | None = None, extra: list[Any] | None = None):
    from mlplat.api.ops.features import definitions_doc
    from mlplat.features.definitions import Entity, Feature, FeatureView, collect

    driver = Entity("driver", join_key="driver_id", dtype="int64")
    dtypes = {"trips": "int64", "rating": "float64", "city": "string", "active": "bool", "last_seen": "timestamp"}
    view = FeatureView("driver_stats", entities=[driver], source="data/driver_stats.parquet",
                       timestamp_field="event_timestamp", created_timestamp_field="created", ttl=timedelta(hours=2),
                       features=[Feature(name, dtypes.get(name, "float64")) for name in (feature_names or FEATURES)])
    return definitions_doc(collect([view, *(extra or [])]))


def entity_rows() -> pd.DataFrame:
    """Before any event, exactly at events, between them, past the TTL, and an unknown driver."""
    rows = []
    for driver in [*DRIVERS, 99]:
        for offset in (-30, 1, 61, 90, 181, 240, 400):
            rows.append({"driver_id": driver, "event_timestamp": BASE + pd.Timedelta(minutes=offset + driver)})
    rows.append({"driver_id": 2, "event_timestamp": BASE + pd.Timedelta(hours=1, minutes=2)})  # the tie, exactly
    frame = pd.DataFrame(rows)
    frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[us, UTC]")
    return frame


def expected_online(frame: pd.DataFrame) -> list[dict[str, Any]]:
    latest = frame.sort_values(["event_timestamp", "created"]).groupby("driver_id").tail(1).set_index("driver_id")
    out = []
    for driver in [*DRIVERS, 99]:
        row = {"driver_id": driver}
        for feature in FEATURES:
            value = plain(latest.loc[driver, feature]) if driver in latest.index else None
            row[feature] = value.to_pydatetime() if isinstance(value, pd.Timestamp) else value
        out.append(row)
    return out


def provision_local(project, stack: str) -> None:
    from mlplat.db import Database
    from mlplat.stack import load_stack
    from mlplat_providers.local.layout import StateLayout

    layout = StateLayout(load_stack(stack, project).state_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    Database(layout.platform_db).migrate()


def feature_project(tmp_path, monkeypatch, files: dict[str, str]):
    """A project of ``files`` holding the source data, entered: the CLI and SDK of this process use it."""
    root = write_project(tmp_path / "project", files)
    (root / "data").mkdir()
    source_frame().to_parquet(root / "data" / "driver_stats.parquet", index=False)
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(root))
    monkeypatch.setenv("MLPLAT_USER", AUTHOR)
    monkeypatch.delenv("MLPLAT_STACK", raising=False)
    monkeypatch.delenv("MLPLAT_CONTROL_PLANE_URL", raising=False)
    monkeypatch.chdir(root)
    return root


def cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """``mlplat(*args)`` in this process: its exit code, stdout and stderr."""
    from mlplat.cli import main

    def mlplat(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(list(args))
        out, err = capsys.readouterr()
        return int(done.value.code), out, err

    return mlplat


def apply_and_materialize(mlplat: Callable[..., tuple[int, str, str]]) -> None:
    """`mlplat features apply` of good.py, then `materialize` of the window: five rows of version 1."""
    import json

    from mlplat.errors import ExitCode

    code, out, err = mlplat("features", "apply", "--stack", STACK, "-d", "good.py", "--yes", "--json")
    assert code == ExitCode.OK, err
    assert json.loads(out)["applied"] is True
    code, out, err = mlplat("features", "materialize", "--stack", STACK, "--start", WINDOW["start"], "--end",
                            WINDOW["end"], "--json")
    assert code == ExitCode.OK, err
    assert json.loads(out) == [{"view": "driver_stats", "version": 1, "rows": 5}]


@pytest.fixture(params=["local", "aws", "gcp", "azure"])
def project(request, tmp_path, monkeypatch):
    kind = request.param
    main = {"local": lambda: local_text(".mlplat/team"), "aws": ms.aws_stack_text, "gcp": gcp_stack_text,
            "azure": azure_stack_text}[kind]()
    root = feature_project(tmp_path, monkeypatch, {STACK: main, REFERENCE: local_text(".mlplat/ref")})
    provision_local(root, REFERENCE)
    if kind == "local":
        provision_local(root, STACK)
        yield root, None
        return
    if kind == "gcp":
        provision_features(root, STACK, request.getfixturevalue("gcp_fake").vertex,
                           request.getfixturevalue("bigquery_fake"))
        yield root, None
        return
    if kind == "azure":
        request.getfixturevalue("azure_redis")
        provision_azure_features(root, STACK, request.getfixturevalue("azure_fake"))
        yield root, None
        return
    from moto import mock_aws

    ms.use_fake_aws(monkeypatch)
    mfs.install_feature_store_gaps()
    mfs.reset()
    monkeypatch.setattr(mfs, "CREATING_DESCRIBES", 0)  # the wait itself: test_a_new_group_is_waited_for
    checked = mfs.check_requests(monkeypatch)
    with mock_aws():
        ms.provision_cloud(context(root).stack(STACK))
        yield root, checked
    mfs.reset()


def store(project, stack: str):
    from mlplat.features import FeatureStore

    ctx = context(project)
    return FeatureStore(spec=ctx.stack(stack), ctx=ctx)


def test_apply_materialize_online_and_point_in_time(project):
    root, checked = project
    doc = definitions()
    assert [v["action"] for v in call(root, STACK, "features.apply", definitions=doc)["views"]] == ["create"]
    assert [v["action"] for v in call(root, STACK, "features.apply", definitions=doc)["views"]] == ["unchanged"]
    assert call(root, STACK, "features.materialize", **WINDOW) == [{"view": "driver_stats", "version": 1, "rows": 5}]
    listed = call(root, STACK, "features.list")
    assert [(v["view"], v["version"], v["online_rows"]) for v in listed] == [("driver_stats", 1, 5)]
    assert listed[0]["materialized_until"].startswith("2024-01-02T00:00:00")

    frame = source_frame()
    online = store(root, STACK).get_online_features([{"driver_id": d} for d in [*DRIVERS, 99]], REFS)
    assert online == expected_online(frame)

    entities = entity_rows()
    training = store(root, STACK).get_historical_features(entities, REFS)
    call(root, REFERENCE, "features.apply", definitions=doc)
    reference = store(root, REFERENCE).get_historical_features(entities, REFS)
    pd.testing.assert_frame_equal(training, reference)
    brute = brute_force(frame, entities, "driver_id", FEATURES, ttl_s=7200, created="created")
    got = [{f: plain(training[f].iloc[i]) for f in FEATURES} for i in range(len(training))]
    assert got == brute
    assert training["trips"].notna().sum() > 10 and training["trips"].isna().sum() > 5  # TTL and "before" rows
    assert 999 in set(training["trips"].dropna())  # the tie went to the later created time

    skew = call(root, STACK, "features.skew", view="driver_stats", sample=20, at="2024-01-01T03:10:00")  # within the TTL
    assert (skew["ok"], skew["mismatches"], skew["sampled_entities"]) == (True, 0, len(DRIVERS)), skew

    if checked is not None:  # AWS: every request well-formed by the model and the rules, and as many as needed
        assert checked["problems"] == []
        ops = [op for op, _ in checked["sent"]]
        assert ops.count("CreateFeatureGroup") == 1
        assert ops.count("PutRecord") == len(frame)  # every row: the history offline, the latest online
        offline_only = [p for op, p in checked["sent"] if op == "PutRecord" and p.get("TargetStores") == ["OfflineStore"]]
        assert len(offline_only) == len(frame) - len(DRIVERS)


def test_online_reads_of_many_keys_go_a_hundred_at_a_time(project):
    root, checked = project
    call(root, STACK, "features.apply", definitions=definitions())
    call(root, STACK, "features.materialize", **WINDOW)
    keys = [{"driver_id": d} for d in range(1, 251)]
    rows = store(root, STACK).get_online_features(keys, ["driver_stats:trips"])
    assert [r["trips"] for r in rows[:5]] == [13, 23, 33, 43, 53]  # each driver's latest event
    assert all(r["trips"] is None for r in rows[5:])
    if checked is not None:
        batches = [p for op, p in checked["sent"] if op == "BatchGetRecord"]
        assert [len(b["Identifiers"][0]["RecordIdentifiersValueAsString"]) for b in batches] == [100, 100, 50]
        assert checked["problems"] == []


def test_unknown_view_is_one_clear_refusal(project):
    from mlplat.features.errors import UnknownFeature

    root, checked = project
    call(root, STACK, "features.apply", definitions=definitions())
    with pytest.raises(UnknownFeature, match="unknown feature view 'driver_stat'") as caught:
        store(root, STACK).get_online_features([{"driver_id": 1}], ["driver_stat:trips"])
    assert "driver_stats" in str(caught.value.hint)
    with pytest.raises(UnknownFeature):
        call(root, STACK, "features.materialize", views=["nope"], **WINDOW)
    assert call(root, STACK, "features.list")[0]["materialized_until"] is None
    if checked is not None:
        assert [op for op, _ in checked["sent"] if op == "PutRecord"] == []


def test_a_new_group_is_waited_for_without_sleeping(tmp_path, monkeypatch):
    """Creation is asynchronous: apply waits on DescribeFeatureGroup (Creating, Creating, Created) with the
    injected poller, and registers the view only once the group is Created."""
    from moto import mock_aws

    from mlplat.features.definitions import Entity, Feature, FeatureView, collect
    from mlplat_providers.aws.runtime.features import AwsFeatureStore, Poller

    root = write_project(tmp_path / "project", {STACK: ms.aws_stack_text()})
    (root / "data").mkdir()
    source_frame().to_parquet(root / "data" / "driver_stats.parquet", index=False)
    monkeypatch.chdir(root)
    ms.use_fake_aws(monkeypatch)
    mfs.install_feature_store_gaps()
    mfs.reset()
    slept: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    view = FeatureView("driver_stats", entities=[Entity("driver", join_key="driver_id")], source="data/driver_stats.parquet",
                       features=[Feature("trips", "int64")])
    with mock_aws():
        ctx = context(root)
        spec = ctx.stack(STACK)
        ms.provision_cloud(spec)
        backend = AwsFeatureStore(spec, ctx, poller=Poller(interval_seconds=7, sleep=sleep, clock=lambda: now[0]))
        defs = collect([view])
        backend.apply(defs, backend.plan(defs), user=AUTHOR)
        assert slept == [7, 7]  # two Creating answers, then Created
        assert list(backend.registered_views()) == [("driver_stats", 1)]

        impatient = AwsFeatureStore(spec, ctx, poller=Poller(interval_seconds=7, timeout_seconds=5, sleep=sleep,
                                                             clock=lambda: now[0]))
        second = FeatureView("trips_v", entities=[Entity("driver", join_key="driver_id")],
                             source="data/driver_stats.parquet", features=[Feature("trips", "int64")])
        defs = collect([second])
        from mlplat.errors import ExternalError

        with pytest.raises(ExternalError, match="still Creating"):
            impatient.apply(defs, impatient.plan(defs), user=AUTHOR)
        assert ("trips_v", 1) not in impatient.registered_views()  # refused: the ledger registers nothing
    mfs.reset()


@pytest.mark.parametrize("name, reason", [("write_time", "reserved"), ("_rating", "must start and end"),
                                          ("rating_", "must start and end")])
def test_names_sagemaker_refuses_are_refused_before_anything_is_created(tmp_path, monkeypatch, name, reason):
    from moto import mock_aws

    from mlplat.features.errors import FeatureDefinitionError

    root = write_project(tmp_path / "project", {STACK: ms.aws_stack_text()})
    (root / "data").mkdir()
    source_frame().rename(columns={"rating": name}).to_parquet(root / "data" / "driver_stats.parquet", index=False)
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(root))
    monkeypatch.chdir(root)
    ms.use_fake_aws(monkeypatch)
    mfs.install_feature_store_gaps()
    mfs.reset()
    checked = mfs.check_requests(monkeypatch)
    with mock_aws():
        ms.provision_cloud(context(root).stack(STACK))
        doc = definitions(feature_names=["trips", name])
        for operation in ("features.plan", "features.apply"):
            with pytest.raises(FeatureDefinitionError, match=reason) as caught:
                call(root, STACK, operation, definitions=doc)
            assert f"driver_stats@1: feature name {name!r}" in caught.value.message
            assert "nothing was created" in str(caught.value.hint)
        assert call(root, STACK, "features.list") == []
    assert [op for op, _ in checked["sent"] if op != "DescribeFeatureGroup"] == []
    mfs.reset()


def test_an_added_feature_extends_the_group_and_a_retyped_one_is_refused(tmp_path, monkeypatch):
    """SageMaker adds features to a group (UpdateFeatureGroup) but never changes a feature's type or the
    record identifier: a non-breaking update extends the group, a retyped feature is refused before anything
    changes, naming the way out (a new version)."""
    from moto import mock_aws

    from mlplat.features.errors import FeatureDefinitionError

    root = write_project(tmp_path / "project", {STACK: ms.aws_stack_text()})
    (root / "data").mkdir()
    frame = source_frame()
    frame["rating_str"] = frame["rating"].astype(str)
    frame.to_parquet(root / "data" / "driver_stats.parquet", index=False)
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(root))
    monkeypatch.chdir(root)
    ms.use_fake_aws(monkeypatch)
    mfs.install_feature_store_gaps()
    mfs.reset()
    monkeypatch.setattr(mfs, "CREATING_DESCRIBES", 0)
    checked = mfs.check_requests(monkeypatch)
    with mock_aws():
        ms.provision_cloud(context(root).stack(STACK))
        call(root, STACK, "features.apply", definitions=definitions(feature_names=["trips"]))
        call(root, STACK, "features.materialize", **WINDOW)
        applied = call(root, STACK, "features.apply", definitions=definitions(feature_names=["trips", "rating"]))
        assert [v["action"] for v in applied["views"]] == ["update"]
        updates = [p for op, p in checked["sent"] if op == "UpdateFeatureGroup"]
        assert [[a["FeatureName"] for a in u["FeatureAdditions"]] for u in updates] == [["rating"]]
        call(root, STACK, "features.materialize", **WINDOW)
        refs = ["driver_stats:trips", "driver_stats:rating"]
        # SageMaker keeps an online record until a later event time: the window ingested again leaves it as it was
        assert store(root, STACK).get_online_features([{"driver_id": 1}], refs) == [
            {"driver_id": 1, "trips": 13, "rating": None}]
        later = frame.iloc[[3]].assign(event_timestamp=frame["event_timestamp"].iloc[3] + pd.Timedelta(hours=1),
                                       trips=14, rating=9.5)
        frame = pd.concat([frame, later], ignore_index=True)
        frame.to_parquet(root / "data" / "driver_stats.parquet", index=False)
        call(root, STACK, "features.materialize", **WINDOW)
        assert store(root, STACK).get_online_features([{"driver_id": 1}], refs) == [
            {"driver_id": 1, "trips": 14, "rating": 9.5}]

        retyped = definitions(feature_names=["trips", "rating"])
        retyped["views"][0]["features"][1]["dtype"] = "string"
        retyped["views"][0]["source"]["path"] = "data/driver_stats.parquet"
        frame.drop(columns=["rating"]).rename(columns={"rating_str": "rating"}).to_parquet(
            root / "data" / "driver_stats.parquet", index=False)
        sent = len(checked["sent"])
        with pytest.raises(FeatureDefinitionError, match="cannot change a feature's type") as caught:
            call(root, STACK, "features.apply", definitions=retyped)
        assert "driver_stats version=N+1" in str(caught.value.hint)
        assert [op for op, _ in checked["sent"][sent:] if op != "DescribeFeatureGroup"] == []
        registered = call(root, STACK, "features.list")[0]["features"]
        assert registered == ["trips:int64", "rating:float64"]
        assert checked["problems"] == []
    mfs.reset()


DEFINITIONS_MODULE = '''
from datetime import timedelta
from mlplat.features import Entity, Feature, FeatureView

driver = Entity("driver", join_key="driver_id", dtype="int64")
driver_stats = FeatureView("driver_stats", entities=[driver], source="data/driver_stats.parquet",
                           timestamp_field="event_timestamp", created_timestamp_field="created", ttl=timedelta(hours=2),
                           features=[Feature("trips", "int64"), Feature({rating!r}, "float64")])
'''


def test_the_cli_applies_lists_and_materializes_on_an_aws_stack(tmp_path, monkeypatch, capsys):
    """`mlplat features apply|list|materialize` on an AWS stack, in this process (moto is in-process); a view
    SageMaker would refuse exits with the configuration error's code and creates nothing."""
    import json

    from moto import mock_aws

    from mlplat.cli import main
    from mlplat.errors import ExitCode

    root = write_project(tmp_path / "project", {STACK: ms.aws_stack_text()})
    (root / "data").mkdir()
    source_frame().rename(columns={"rating": "write_time"}).assign(rating=source_frame()["rating"]).to_parquet(
        root / "data" / "driver_stats.parquet", index=False)
    (root / "good.py").write_text(DEFINITIONS_MODULE.format(rating="rating"))
    (root / "bad.py").write_text(DEFINITIONS_MODULE.format(rating="write_time"))
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(root))
    monkeypatch.setenv("MLPLAT_USER", AUTHOR)
    monkeypatch.chdir(root)
    ms.use_fake_aws(monkeypatch)
    mfs.install_feature_store_gaps()
    mfs.reset()
    monkeypatch.setattr(mfs, "CREATING_DESCRIBES", 0)
    checked = mfs.check_requests(monkeypatch)

    mlplat = cli(capsys)
    with mock_aws():
        ms.provision_cloud(context(root).stack(STACK))
        code, _, err = mlplat("features", "apply", "--stack", STACK, "-d", "bad.py", "--yes")
        assert code == ExitCode.CONFIG, err
        assert "feature name 'write_time' is reserved" in err and "nothing was created" in err
        assert [op for op, _ in checked["sent"] if op != "DescribeFeatureGroup"] == []

        apply_and_materialize(mlplat)
        code, out, err = mlplat("features", "list", "--stack", STACK, "--json")
        assert code == ExitCode.OK, err
        assert [(v["view"], v["online_rows"]) for v in json.loads(out)] == [("driver_stats", 5)]

        # a group deleted outside mlplat: the plan shows it, apply creates it again, materialize refills it
        from moto.sagemaker.models import sagemaker_backends

        backend = sagemaker_backends[ms.ACCOUNT][ms.REGION]
        backend.feature_groups.clear()
        mfs.reset()
        code, out, err = mlplat("features", "apply", "--stack", STACK, "-d", "good.py", "--yes", "--json")
        assert code == ExitCode.OK, err
        assert json.loads(out)["views"][0]["changes"] == [
            "feature group mlplat-fraud-production-driver_stats-v1 was missing in SageMaker: created again"]
        assert len(backend.feature_groups) == 1
        code, _, err = mlplat("features", "materialize", "--stack", STACK, "--start", WINDOW["start"], "--end",
                              WINDOW["end"])
        assert code == ExitCode.OK, err
        assert checked["problems"] == []
    mfs.reset()
