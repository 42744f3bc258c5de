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
