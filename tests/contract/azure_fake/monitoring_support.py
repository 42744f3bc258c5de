"""The Azure driver of the monitoring contract: traffic as Azure Machine Learning's data collector writes it
(JSON Lines in the workspace blob store), and what the pass published, read back from the fake Azure Monitor."""
from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from tests.contract.azure_fake.arm import storage_account


def collector_line(kind: str, correlation_id: str, when: float, data: Any, source: str) -> str:
    """One line of a collection file, in the collector's documented shape (a CloudEvents envelope)."""
    return json.dumps({
        "specversion": "1.0", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{correlation_id}")),
        "source": source, "type": f"azureml.inference.{kind}", "datacontenttype": "application/json",
        "time": dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "data": data,
        "path": "/score", "method": "POST", "contentrange": f"bytes 0-{len(json.dumps(data))}/*",
        "correlationid": correlation_id, "xrequestid": correlation_id, "modelversion": "default",
        "collectdatatype": "pandas.core.frame.DataFrame", "agent": "azureml-ai-monitoring/0.1.0b4"})


def write_collected(fake: Any, workspace: dict[str, Any], endpoint: str, deployment: str,
                    requests: list[dict], start: float, *, files: int = 2) -> None:
    """``requests`` (``{inference_id, features, predicted}``) as the collector of ``deployment`` writes them:
    ``modelDataCollector/<endpoint>/<deployment>/<collection>/yyyy/MM/dd/HH/<n>.jsonl`` in the workspace
    blob store's container, inputs and outputs in separate collections, spread over ``files`` files."""
    account = storage_account(workspace["name"])
    container = f"azureml-blobstore-{workspace['properties']['workspaceId']}"
    source = f"{workspace['id']}/onlineEndpoints/{endpoint}/deployments/{deployment}"
    for kind, data_of in (("model_inputs", lambda r: [r["features"]]),
                          ("model_outputs", lambda r: [{"prediction": r["predicted"]}])):
        by_file: dict[str, list[str]] = {}
        for i, r in enumerate(requests):
            when = start + i
            hour = dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y/%m/%d/%H")
            name = f"modelDataCollector/{endpoint}/{deployment}/{kind}/{hour}/{i * files // max(1, len(requests)):02d}.jsonl"
            by_file.setdefault(name, []).append(collector_line(kind, r["inference_id"], when, data_of(r), source))
        with fake.arm.lock:
            for name, lines in by_file.items():
                fake.arm.blobs[(account, container, name)] = (("\n".join(lines) + "\n").encode(), {})


class AzureCaptures:
    name = "azure"

    def __init__(self, project: Any, stack: str, environment: str, fake: Any):
        self.project, self.stack, self.environment, self.fake = project, stack, environment, fake

    def capture(self, requests: list[dict], start: float) -> None:
        """The collector's files of the deployment serving version 1 of the model's endpoint; the caller's id
        is the request's ``x-request-id``, which the collector records as the correlation id."""
        from tests.contract.lifecycle import serving

        azure_serving = serving(self.project, self.stack)
        endpoint = azure_serving.endpoint_name("scorer", self.environment)
        [workspace] = self.fake.arm.workspaces.values()
        write_collected(self.fake, workspace, endpoint, azure_serving.deployment_name("scorer", 1), requests, start)

    def published(self) -> list[dict[str, Any]]:
        """Every custom-metric value the fake Azure Monitor took."""
        return list(self.fake.arm.extra.get("custom_metrics", []))


def seed_deployment(fake: Any, endpoint: str, deployment: str, *, managed: bool = True) -> str:
    """An online endpoint whose one deployment collects its inputs and outputs, as the runtime leaves it
    (with the data assets azure-ai-ml registers for the collections); answers the deployment's ARM id."""
    from tests.contract.azure_fake.arm import A_WS

    [workspace] = fake.arm.workspaces.values()
    ws_id = workspace["id"]
    ep_id = f"{ws_id}/onlineEndpoints/{endpoint}"
    tags = {"mlplat-managed": "true", "team": "fraud"} if managed else {}
    collections = {}
    with fake.arm.lock:
        for kind in ("model_inputs", "model_outputs"):
            name = f"{endpoint}-{deployment}-{kind}"
            fake.arm.extra.setdefault("data", {})[(ws_id.lower(), name, "1")] = {
                "id": f"{ws_id}/data/{name}/versions/1", "name": "1", "type": f"{A_WS}/data/versions",
                "properties": {"dataType": "uri_folder", "isAnonymous": False, "isArchived": False, "tags": {},
                               "properties": {}, "dataUri": "azureml://datastores/workspaceblobstore/paths/"
                                                            f"modelDataCollector/{endpoint}/{deployment}/{kind}"}}
            collections[kind] = {"dataCollectionMode": "Enabled", "dataId": f"{ws_id}/data/{name}/versions/1",
                                 "samplingRate": 1.0}
        fake.arm.endpoints[(ws_id.lower(), endpoint)] = {
            "id": ep_id, "name": endpoint, "type": f"{A_WS}/onlineEndpoints", "location": workspace["location"],
            "kind": "Managed", "identity": {"type": "SystemAssigned"}, "tags": tags,
            "properties": {"authMode": "Key", "traffic": {deployment: 100}, "mirrorTraffic": {},
                           "provisioningState": "Succeeded", "scoringUri": f"https://{endpoint}.inference.ml/score"}}
        fake.arm.deployments[(ws_id.lower(), endpoint, deployment)] = {
            "id": f"{ep_id}/deployments/{deployment}", "name": deployment, "type": f"{A_WS}/onlineEndpoints/deployments",
            "location": workspace["location"], "kind": "Managed", "tags": tags, "sku": {"name": "Default", "capacity": 1},
            "properties": {"endpointComputeType": "Managed", "instanceType": "Standard_DS3_v2",
                           "model": f"{ws_id}/models/scorer/versions/1",
                           "environmentId": f"{ws_id}/environments/mlplat-serving/versions/1",
                           "dataCollector": {"collections": collections}, "provisioningState": "Succeeded",
                           "scaleSettings": {"scaleType": "Default"},
                           "requestSettings": {"maxConcurrentRequestsPerInstance": 1, "requestTimeout": "PT5S"}}}
    return f"{ep_id}/deployments/{deployment}"
