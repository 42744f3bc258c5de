"""Property-based fuzzing of the serving gateway: no request, however malformed, gets a 5xx.

A real gateway process (``GatewayHarness(process=True)``, as `mlplat serve` runs it) serves a
logistic regression on three double columns as ``scorer``. Its OpenAPI document (``GET /openapi.json``)
types ``/endpoints/scorer/invocations`` and ``/v2/models/scorer/infer`` by the model's signature and
carries a valid example of each input format. Schemathesis (its pytest integration: one test per
operation) runs three phases against every route of that document: the documented examples, the
coverage phase (boundary and invalid values of every parameter and body field: negative as well as
positive inputs) and Hypothesis fuzzing, bounded per operation. Checks: no 5xx (``not_a_server_error``)
and a status the document lists (``status_code_conformance``).

The operations are collected before any gateway runs, so the document is built in this process for the
signature the test model has (:data:`SIGNATURE`); the first test asserts the running gateway serves
exactly that document. The seed is fixed (:data:`SEED`, and ``derandomize``): a failure names its case
and reproduces on the next run.
"""
from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from mlplat import __version__
from mlplat.serving import openapi
from mlplat.serving.protocol import Column, Signature
from tests.integration.support_serving import FEATURES, GatewayHarness, row, save_sklearn

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("gateway-fuzz")]

SEED = 20261202
EXAMPLES_PER_OPERATION = 40
ENVIRONMENT = "production"
SIGNATURE = Signature(columns=tuple(Column(name, "double") for name in FEATURES))  # save_sklearn's model
DOCUMENT = openapi.document(ENVIRONMENT, {"scorer": SIGNATURE}, version=__version__)
CONFIG = schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"mode": "all", "max-examples": EXAMPLES_PER_OPERATION},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
               "stateful": {"enabled": False}},
})
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateway-fuzz")
    harness = GatewayHarness(tmp, {1: save_sklearn(tmp / "m1")}, environment=ENVIRONMENT, controller_interval=0.5)
    harness.deploy(1)
    harness.start(controller=False, process=True)
    harness.wait_for(lambda: harness.endpoint()["loaded"] == {"1": True}, timeout=60)
    yield harness
    harness.stop()


def test_the_document_describes_the_routes_and_types_the_served_model(gateway):
    doc = httpx.get(gateway.url + "/openapi.json", timeout=10).json()
    assert doc == DOCUMENT, "the fuzzed operations are not the ones the gateway documents"
    assert doc["openapi"] == "3.1.0"
    assert {"/endpoints/{name}/invocations", "/endpoints/{name}", "/endpoints", "/v2/models/{name}/infer",
            "/v2/models/{name}", "/v2/models/{name}/ready", "/v2", "/v2/health/live", "/v2/health/ready",
            "/ping", "/health", "/metrics", "/openapi.json"} <= set(doc["paths"])
    typed = doc["paths"]["/endpoints/scorer/invocations"]["post"]["requestBody"]["content"]["application/json"]
    formats = {next(iter(alt["required"])): alt for alt in typed["schema"]["oneOf"]}
    assert set(formats) == {"dataframe_split", "dataframe_records", "instances", "inputs"}
    record = formats["dataframe_records"]["properties"]["dataframe_records"]["items"]
    assert record["required"] == FEATURES and record["properties"]["a"] == {"type": "number"}
    # every documented example is a request the gateway scores
    for name, example in typed["examples"].items():
        answer = httpx.post(gateway.url + "/endpoints/scorer/invocations", json=example["value"], timeout=30)
        assert answer.status_code == 200, (name, answer.text)
        assert len(answer.json()["predictions"]) == 2
    v2 = doc["paths"]["/v2/models/scorer/infer"]["post"]["requestBody"]["content"]["application/json"]
    answer = httpx.post(gateway.url + "/v2/models/scorer/infer", json=v2["examples"]["columns"]["value"], timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["shape"] == [2]
    assert httpx.post(gateway.url + "/endpoints/scorer/invocations", json=row(0), timeout=30).status_code == 200


@schema.parametrize()
@settings(deadline=None, database=None, derandomize=True, max_examples=EXAMPLES_PER_OPERATION,
          suppress_health_check=list(HealthCheck))
def test_no_gateway_route_answers_5xx(case, gateway):
    case.call_and_validate(base_url=gateway.url, checks=[not_a_server_error, status_code_conformance], timeout=30)
