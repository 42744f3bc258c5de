"""Property-based fuzzing of the platform API: no request, however malformed, gets a 5xx.

A real ``mlplat server`` process (SQLite, the repo's dev stack, which is ``trusted-local``) serves a
ledger seeded the way a team's would be: ``scorer`` version 1 registered (critical), promoted to
staging and deployed in ``dev``. Schemathesis (its pytest integration:
one test per operation) runs three phases against every operation of the platform API's OpenAPI
document: examples, the coverage phase (boundary and invalid values of every path, query and body
field: negative as well as positive inputs) and Hypothesis fuzzing, bounded per operation. Half of
the fuzzed path, query and body names are the seeded ones (``scorer``, version 1 or 2), so the
fuzzer also reaches the code behind existing models, versions and deployments, not only the 404s.
Checks: no 5xx (``not_a_server_error``) and a status the document lists
(``status_code_conformance``).

The operations are collected before any server runs, so the document is the one this process
builds (``mlplat.api.operations.openapi``); the first test asserts the running server serves exactly
that document. The seed is fixed (:data:`SEED`, and ``derandomize``): a failure names its case and
reproduces on the next run.
"""
from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from mlplat.api import operations
from mlplat.api.plane import USER_HEADER
from tests.integration.support_registry import AUTHOR, cli_in, make_registered_project
from tests.server_support import running_server

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("api-fuzz")]

SEED = 20261202
EXAMPLES_PER_OPERATION = 20
MODEL = "scorer"
NAMES = ("name", "model")  # parameters that name a model
VERSIONS = ("version", "to")  # parameters that name one of its versions

CONFIG = schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"mode": "all", "max-examples": EXAMPLES_PER_OPERATION},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
               "stateful": {"enabled": False}},
})
DOCUMENT = operations.openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


def _seeded(values: Any) -> st.SearchStrategy:
    """``values`` as generated, or with its model and version names replaced by the seeded ones."""
    if not isinstance(values, dict):
        return st.just(values)
    names = [k for k in NAMES if isinstance(values.get(k), str)]
    versions = [k for k in VERSIONS if isinstance(values.get(k), int) and not isinstance(values.get(k), bool)]
    if not names and not versions:
        return st.just(values)
    return st.tuples(st.booleans(), st.sampled_from((1, 2))).map(
        lambda choice: values if not choice[0] else {**values, **{k: MODEL for k in names},
                                                     **{k: choice[1] for k in versions}})


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    return _seeded(path_parameters)


@schema.hook
def flatmap_query(context, query):
    return _seeded(query)


@schema.hook
def flatmap_body(context, body):
    return _seeded(body)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    project = make_registered_project(tmp_path_factory.mktemp("api-fuzz") / "project")
    env = {"MLPLAT_CONTAINER_ENGINE": "none"}
    promoted = cli_in(project, "models", "promote", MODEL, "1", "--to", "staging", env=env)
    assert promoted.returncode == 0, promoted.stderr
    deployed = cli_in(project, "deploy", MODEL, "1", "--env", "dev", env=env)
    assert deployed.returncode == 0, deployed.stderr
    with running_server(project, "dev", env=env) as running:
        yield running
        assert "Traceback" not in running.output(), running.output()[-5000:]


def test_the_fuzzed_document_is_the_one_the_server_serves(server):
    served = httpx.get(server.url + "/api/v1/openapi.json", timeout=10).json()
    assert served == DOCUMENT
    fuzzed = {op.ok().definition.raw["operationId"] for op in schema.get_all_operations()}
    assert fuzzed == set(operations.load())
    # the seeded names are there to be found
    shown = httpx.get(server.url + f"/api/v1/models/{MODEL}/versions/1", headers={USER_HEADER: AUTHOR}, timeout=30)
    assert shown.status_code == 200, shown.text


# What the fuzzer found first, replayed: each of these was a 5xx (501, 500, 500, 502).
FOUND = (
    ("GET", "/cost/report", {"by": "team", "billed": "true"}, None, 400, None),
    ("POST", "/deployments", None, {"model": MODEL, "version": 23208572851784675328}, 422, "version"),
    ("GET", f"/models/{MODEL}/versions/-35116513718293110819266234970800128/sealed", None, None, 422, "version"),
    ("POST", f"/models/{MODEL}/versions/1/promotions", None,
     {"target": "staging", "environment": "\u0019G\U000917f5,\u00f0U", "progress": False}, 422, "environment"),
)


@pytest.mark.parametrize("method, path, query, body, status, field", FOUND,
                         ids=["billed-cost-on-local", "version-beyond-64-bits", "negative-huge-version",
                              "environment-not-a-slug"])
def test_what_the_fuzzer_found_is_a_4xx_naming_the_field_and_writes_nothing(server, method, path, query, body,
                                                                           status, field):
    audit = server.project / ".mlplat" / "dev" / "platform.db"
    before = _audit_entries(audit)
    answer = httpx.request(method, server.url + "/api/v1" + path, params=query, json=body,
                           headers={USER_HEADER: AUTHOR}, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["message"] and error["hint"]
    if field:
        assert error["where"] == field and error["details"]["fields"][0]["field"] == field
    else:
        assert error["error"] == "CapabilityNotSupported" and "billed cost" in error["message"]
    assert _audit_entries(audit) == before


def _audit_entries(path) -> int:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    finally:
        conn.close()


@schema.parametrize()
@settings(deadline=None, database=None, derandomize=True, max_examples=EXAMPLES_PER_OPERATION,
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx(case, server):
    case.call_and_validate(base_url=server.url, headers={USER_HEADER: AUTHOR},
                           checks=[not_a_server_error, status_code_conformance], timeout=120)
