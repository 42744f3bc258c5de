"""Hostile input over real HTTP on 127.0.0.1: the gateway and the model server answer every request a
client can send with a 4xx JSON body and an ``x-request-id`` (never a 5xx), cut off bodies that do not
arrive (408), keep captures apart when clients reuse request ids, and speak the Open Inference Protocol
to a real client (tritonclient), binary tensor data included."""
from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from tests.integration.support_serving import GatewayHarness, row, save_sklearn, start_model_server, stop, training_frame

pytestmark = pytest.mark.integration
SCORE = "/endpoints/scorer/invocations"
INFER = "/v2/models/scorer/infer"


def save_unsigned(path):
    """A logistic regression fitted on a DataFrame (so it knows its columns) saved without a signature."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    X, y = training_frame()
    mlflow.sklearn.save_model(LogisticRegression().fit(X, y), str(path), pip_requirements=["scikit-learn"])
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    return {1: save_sklearn(tmp / "v1"), 5: save_unsigned(tmp / "unsigned")}


@pytest.fixture
def harness(tmp_path, models):
    h = GatewayHarness(tmp_path, dict(models), max_body_bytes=200_000)
    yield h
    h.stop()


def tensor(data, shape=(1, 3), datatype="FP64", name="x"):
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}]}


def raw(text: str | bytes) -> dict:
    return {"content": text.encode() if isinstance(text, str) else text, "headers": {"content-type": "application/json"}}


# (what, route, request kwargs, status, fragment of the message)
HOSTILE = [
    ("deep JSON", SCORE, raw(b"[" * 100_000 + b"]" * 100_000), 400, "nested deeper than 64 levels"),
    ("deep JSON, v2", INFER, raw(b"[" * 3000 + b"]" * 3000), 400, "nested deeper than 64 levels"),
    ("moderately deep", SCORE, raw('{"instances": ' + "[" * 80 + "1" + "]" * 80 + "}"), 400, "deeper than 64"),
    ("integer past float", SCORE, raw('{"dataframe_records": [{"a": 1' + "0" * 400 + ', "b": 0, "c": 0}]}'), 422,
     "column 'a' expects double"),
    ("integer past the digit limit", SCORE, raw('{"instances": [[' + "9" * 5000 + ", 0, 0]]}"), 400, "not valid JSON"),
    ("NaN", SCORE, raw('{"dataframe_records": [{"a": NaN, "b": 0, "c": 0}]}'), 422,
     "column 'a' expects a finite double, got nan in row 0"),
    ("Infinity", SCORE, raw('{"dataframe_split": {"columns": ["a", "b", "c"], "data": [[0, 0, 0], [0, Infinity, 0]]}}'),
     422, "column 'b' expects a finite double, got inf in row 1"),
    ("1e400", SCORE, raw('{"instances": [[1e400, 0, 0]]}'), 422, "got inf in row 0"),
    ("true for a double", SCORE, {"json": {"dataframe_records": [{"a": True, "b": 0.5, "c": 0.5}]}}, 422,
     "column 'a' expects double, got bool True in row 0"),
    ("duplicate column", SCORE, {"json": {"dataframe_split": {"columns": ["a", "b", "a", "c"], "data": [[1, 2, 3, 4]]}}},
     400, "names column 'a' twice"),
    ("duplicate key", SCORE, raw('{"dataframe_records": [{"a": 1, "b": 2, "c": 3, "a": 4}]}'), 400,
     "key 'a' appears more than once in dataframe_records[0]"),
    ("rank 65", INFER, {"json": tensor([1], shape=[1] * 65)}, 400, "shape has 65 dimensions"),
    ("NaN, v2", INFER, raw('{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [0, NaN, 0]}]}'),
     422, "element [1] is nan"),
    ("true for FP32", INFER, {"json": tensor([True, 0.5, 0.5], datatype="FP32")}, 422, "FP32 needs numbers, got true/false"),
    ("true for FP64", INFER, {"json": tensor([0.5, 0.5, False])}, 422, "FP64 needs numbers, got true/false"),
    ("INT8 100000", INFER, {"json": tensor([100000, 0, 0], datatype="INT8")}, 422, "INT8 needs whole numbers from -128"),
    ("UINT64 -1", INFER, {"json": tensor([0, -1, 0], datatype="UINT64")}, 422, "UINT64 needs whole numbers from 0"),
    ("nesting against shape", INFER, {"json": tensor([[1], [2], [3]])}, 422, "nested as [3, 1] but shape is [1, 3]"),
    ("duplicate tensor", INFER, {"json": {"inputs": [tensor([1], shape=[1], name="a")["inputs"][0]] * 2}}, 400,
     "inputs[1].name 'a' repeats inputs[0]"),
    ("binary header too long", INFER, {"content": b'{"inputs": []}', "headers": {
        "inference-header-content-length": "500", "content-type": "application/octet-stream"}}, 400, "does not fit"),
]


def assert_refused(response: httpx.Response, status: int, fragment: str, v2: bool) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert fragment in body["message"], body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    if v2:
        assert body["error"] == body["message"]  # the Open Inference Protocol's error body


def test_gateway_answers_hostile_input_with_4xx_json_and_a_request_id(harness):
    harness.deploy(1)
    harness.start()
    with httpx.Client(base_url=harness.url, timeout=60) as c:
        for _what, route, kwargs, status, fragment in HOSTILE:
            response = c.post(route, **kwargs)
            assert_refused(response, status, fragment, route == INFER)
        assert c.post(SCORE, json=row()).status_code == 200  # still serving
        unknown = c.post("/v2/models/nope/infer", json=tensor([1, 2, 3]))
        assert unknown.status_code == 404 and "no endpoint 'nope'" in unknown.json()["error"]
        assert unknown.headers["x-request-id"]
        metrics = c.get("/metrics").text
    labels = 'model="scorer",version="1",variant="primary",environment="production"'
    assert f"mlplat_errors_total{{{labels}}} 0" in metrics
    assert f"mlplat_client_errors_total{{{labels}}} {len(HOSTILE)}" in metrics


def test_model_server_answers_hostile_input_with_4xx_json(models, tmp_path):
    proc, url = start_model_server(models[1], tmp_path, "--name", "scorer", "--max-body-bytes", "200000")
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            for _what, route, kwargs, status, fragment in HOSTILE:
                response = c.post("/invocations" if route == SCORE else route, **kwargs)
                assert_refused(response, status, fragment, route == INFER)
            assert c.get("/v2").json()["extensions"] == ["binary_tensor_data"]
            missing = c.get("/v2/models/other")
            assert missing.status_code == 404 and "unknown model 'other'" in missing.json()["error"]
    finally:
        stop(proc)


def test_columns_are_checked_against_training_columns_without_a_signature(harness, models, tmp_path):
    """A model logged without an input example: its estimator's feature_names_in_ stand in for the
    signature, so an unknown column is a 4xx (promotion's integration test asks exactly this)."""
    harness.deploy(5)
    harness.start()
    wrong = {"dataframe_split": {"columns": ["no_such_column"], "data": [[1]]}}
    with httpx.Client(base_url=harness.url, timeout=30) as c:
        refused = c.post(SCORE, json=wrong)
        assert refused.status_code == 422 and "missing column(s) a, b, c" in refused.json()["message"]
        assert c.post(SCORE, json={"dataframe_records": [{"a": 1.0, "b": 1.0}]}).status_code == 422
        good = c.post(SCORE, json={"dataframe_split": {"columns": ["c", "b", "a"], "data": [[0, 0, 3], [0, 0, -3]]}})
        assert good.status_code == 200 and good.json()["predictions"] == [1, 0]
    proc, url = start_model_server(models[5], tmp_path, "--name", "scorer")
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/invocations", json=wrong).status_code == 422
            assert c.post("/invocations", json=row()).status_code == 200
    finally:
        stop(proc)


def http_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes the connection (the timeout bounds a hang only)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


PROMISE = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: 1000\r\n\r\n" + b'{"dataframe_records": [')


def parse_response(data: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


def test_a_body_that_never_arrives_gets_408_and_the_connection_is_closed(harness, models, tmp_path):
    harness.deploy(1)
    harness.start()
    harness.gateway.config.body_timeout = 0.5
    status, headers, body = parse_response(http_exchange(int(harness.url.rsplit(":", 1)[1]), PROMISE % SCORE.encode()))
    assert status == 408 and headers["connection"] == "close" and headers["x-request-id"] == body["request_id"]
    assert "got 23 bytes of the 1000 promised" in body["message"] and body["error_code"] == "REQUEST_TIMEOUT"
    assert httpx.post(harness.url + SCORE, json=row(), timeout=30).status_code == 200  # others still served

    proc, url = start_model_server(models[1], tmp_path, "--name", "scorer", "--body-timeout", "0.5")
    try:
        status, headers, body = parse_response(http_exchange(int(url.rsplit(":", 1)[1]), PROMISE % INFER.encode()))
        assert status == 408 and "did not arrive within 0.5 s" in body["error"]
    finally:
        stop(proc)


def test_reused_client_request_ids_keep_every_capture_and_labels_join_by_either_id(harness, monkeypatch):
    harness.deploy(1)
    harness.start()
    with httpx.Client(base_url=harness.url, timeout=30) as c:
        first = c.post(SCORE, json=row(1), headers={"x-request-id": "order-17"})
        second = c.post(SCORE, json=row(2), headers={"x-request-id": "order-17"})
        other = c.post(SCORE, json=row(3))
        v2 = c.post(INFER, json={"id": "batch-9", **tensor([0.5, 0.5, 0.5])})
    assert first.status_code == second.status_code == other.status_code == v2.status_code == 200
    ids = [r.headers["x-request-id"] for r in (first, second, other, v2)]
    assert len(set(ids)) == 4 and "order-17" not in ids  # the platform names every request itself
    assert first.headers["x-client-request-id"] == first.json()["client_request_id"] == "order-17"
    assert v2.json()["id"] == "batch-9"
    captures = harness.wait_for(lambda: (lambda rows: rows if len(rows) == 4 else None)(
        harness.query("SELECT request_id, client_request_id FROM captures ORDER BY ts")))
    assert [c["request_id"] for c in captures] == ids
    assert [c["client_request_id"] for c in captures] == ["order-17", "order-17", None, "batch-9"]

    from mlplat.services.monitoring import passes, quality
    from mlplat_providers.local.monitoring import LocalMonitor

    monitor = LocalMonitor(SimpleNamespace(state_dir=harness.tmp, name="t"), None)
    monkeypatch.setattr(passes, "monitor_for", lambda spec, ctx: monitor)
    ctx = SimpleNamespace(clock=lambda: 1_000.0)
    batch = quality.parse_records([("order-17", 1), (ids[2], 0), ("batch-9", 1), ("never-sent", 0)], source="test")
    result = passes.ingest_labels(None, ctx, batch, source="test")
    assert (result.stored, result.unknown, result.unknown_ids) == (4, 1, ["never-sent"])
    stored = {r["request_id"]: r["label"] for r in harness.query("SELECT request_id, label FROM monitor_labels")}
    assert stored == {ids[0]: "1", ids[1]: "1", ids[2]: "0", ids[3]: "1"}
    assert len(monitor.captures("scorer", 1, labelled_only=True)) == 4


def test_a_real_open_inference_protocol_client(harness, models, tmp_path):
    """tritonclient (HTTP): server and model metadata, JSON and binary tensor data, and the error body."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    harness.deploy(1)
    harness.start()
    proc, url = start_model_server(models[1], tmp_path, "--name", "scorer")
    try:
        for base in (harness.url, url):
            client = triton.InferenceServerClient(url=base.removeprefix("http://"))
            try:
                assert client.is_server_live()
                assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
                assert [i["name"] for i in client.get_model_metadata("scorer")["inputs"]] == ["a", "b", "c"]
                X = np.array([[3.0, 0.0, 0.0], [-3.0, 0.0, 0.0]])
                for binary in (True, False):
                    inp = triton.InferInput("x", list(X.shape), "FP64")
                    inp.set_data_from_numpy(X, binary_data=binary)
                    outputs = [triton.InferRequestedOutput("predictions", binary_data=binary)]
                    result = client.infer("scorer", [inp], outputs=outputs)
                    assert result.as_numpy("predictions").tolist() == [1, 0], binary
                bad = triton.InferInput("x", [1, 2], "FP64")
                bad.set_data_from_numpy(np.array([[1.0, 2.0]]))
                with pytest.raises(InferenceServerException, match="the model expects 3"):
                    client.infer("scorer", [bad])
                nan = triton.InferInput("x", [1, 3], "FP64")
                nan.set_data_from_numpy(np.array([[1.0, np.nan, 0.0]]))
                with pytest.raises(InferenceServerException, match=r"element \[0, 1\] is nan"):
                    client.infer("scorer", [nan])
            finally:
                client.close()
    finally:
        stop(proc)


def test_entity_keys_the_online_store_refuses_are_4xx(harness):
    """Rows enriched from the online store: a key of the wrong type or beyond 64 bits is the client's error."""
    from mlplat.features.errors import FeatureDataError

    def enrich(rows):
        for i, r in enumerate(rows):
            if not isinstance(r.get("driver_id"), int):
                raise FeatureDataError(f"entity key type mismatch: 'driver_id' is {type(r.get('driver_id')).__name__} "
                                       f"in row {i} but the entity is int64")
            if r["driver_id"] >= 2 ** 63:
                raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return [{"a": 1.0, "b": 0.0, "c": 0.0} for _ in rows]

    harness.deploy(1)
    harness.start()
    harness.gateway._enricher = lambda name, version: enrich
    with httpx.Client(base_url=harness.url, timeout=30) as c:
        assert c.post(SCORE, json={"dataframe_records": [{"driver_id": 7}]}).status_code == 200
        for key, fragment in (("seven", "'driver_id' is str in row 0"), (2 ** 70, "entity key is out of range")):
            response = c.post(SCORE, json={"dataframe_records": [{"driver_id": key}]})
            assert_refused(response, 422, fragment, v2=False)
