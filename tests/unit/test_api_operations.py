"""The operations table and its two transports, with a test-only operation table.

The server side runs in this process through httpx's ASGI transport (the real app object);
tests/integration/test_api_server.py runs a real `mlplat server` process.
"""
from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from mlplat.api import operations
from mlplat.api.operations import API_PREFIX, API_VERSION, InvalidRequest, operation
from mlplat.api.plane import RemotePlane, error_from
from mlplat.errors import (
    CapabilityNotSupported,
    Conflict,
    Denied,
    ExitCode,
    ExternalError,
    MlplatError,
    NotFound,
    ToolMissing,
)

CALLS: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def test_operations():
    """Operations that exist only for these tests (removed after)."""
    before = dict(operations.load())

    @operation("test.echo", "POST", "/test/echo/{name}")
    def echo(spec: Any, ctx: Any, *, name: str, count: int, tags: list[str] | None = None) -> dict[str, Any]:
        """Echo the parameters back."""
        ctx.err.print(f"echoing {name}")
        CALLS.append({"name": name, "count": count, "user": ctx.user})
        return {"name": name, "count": count, "tags": tags, "user": ctx.user, "nan": float("nan")}

    @operation("test.read", "GET", "/test/read")
    def read(spec: Any, ctx: Any, *, limit: int = 10) -> list[int]:
        """Read something."""
        return list(range(limit))

    @operation("test.denied", "POST", "/test/denied")
    def denied(spec: Any, ctx: Any) -> None:
        """Always denied."""
        raise Denied("you may not", where="approver", hint="ask someone else")

    @operation("test.conflict", "POST", "/test/conflict")
    def conflict(spec: Any, ctx: Any) -> None:
        """Always a conflict."""
        raise Conflict("busy", hint="retry")

    @operation("test.missing", "GET", "/test/missing")
    def missing(spec: Any, ctx: Any) -> None:
        """Never found."""
        raise NotFound("no such thing", hint="list them first", known=["a", "b"])

    @operation("test.half", "POST", "/test/half")
    def half(spec: Any, ctx: Any) -> None:
        """Print a step, then fail."""
        ctx.console.print("ok  gate  0.10s")
        raise Conflict("staging tests failed", hint="see the report")

    @operation("test.bug", "GET", "/test/bug")
    def bug(spec: Any, ctx: Any) -> None:
        """A bug."""
        raise ZeroDivisionError("boom")

    @operation("test.unsupported", "GET", "/test/unsupported")
    def unsupported(spec: Any, ctx: Any) -> None:
        """A capability the provider lacks."""
        raise CapabilityNotSupported("local", "billed cost", hint="drop --billed")

    @operation("test.tool", "GET", "/test/tool")
    def tool(spec: Any, ctx: Any) -> None:
        """A program the server needs is missing."""
        raise ToolMissing("the pulumi CLI is not installed")

    yield
    operations.OPERATIONS.clear()
    operations.OPERATIONS.update(before)


class Spec:
    name = "team"
    environment = "dev"


@pytest.fixture
def app(tmp_path, monkeypatch):
    from mlplat.api.server import create_app
    from mlplat.services import governance

    # a stack with no ledger behind it: no roles declared, so its trusted-local callers may run anything
    open_access = governance.AccessInForce(mode="trusted-local", roles={}, feature_grants=(), approvers=(),
                                           applied=False)
    monkeypatch.setattr(governance, "access_in_force_for", lambda spec, ctx: open_access)
    return create_app(Spec(), project_dir=tmp_path)


@pytest.fixture
def plane(app):
    transport = httpx.ASGITransport(app=app)
    # RemotePlane is synchronous: drive the ASGI app through a sync adapter
    return RemotePlane("http://testserver", stack="team", user="ds@example.com", transport=_SyncASGI(transport),
                       sleep=lambda s: None)


class _SyncASGI(httpx.BaseTransport):
    def __init__(self, transport: httpx.ASGITransport):
        self.transport = transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import asyncio

        async def run() -> httpx.Response:
            body = await request.aread()
            req = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            response = await self.transport.handle_async_request(req)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return asyncio.run(run())


def test_params_model_refuses_unknown_and_wrong_types():
    op = operations.get("test.echo")
    with pytest.raises(InvalidRequest) as err:
        op.validate({"name": "x", "count": "many"})
    assert err.value.where == "count"
    assert err.value.exit_code == ExitCode.USAGE
    with pytest.raises(InvalidRequest, match="colour: Extra inputs"):
        op.validate({"name": "x", "count": 1, "colour": "red"})


def test_params_the_ledger_cannot_store_are_refused_naming_the_field():
    op = operations.get("test.echo")
    cases = {"count": {"name": "x", "count": 2 ** 63}, "tags": {"name": "x", "count": 1, "tags": ["ok", "a\x00b"]},
             "name": {"name": "\ud800", "count": 1}}
    problems = {}
    for field, raw in cases.items():
        with pytest.raises(InvalidRequest) as err:
            op.validate(raw)
        assert err.value.where == field, raw
        problems[field] = err.value.details["fields"][0]["problem"]
    assert problems["count"] == f"{2 ** 63} is outside the 64-bit integer range the platform stores"
    assert problems["tags"].startswith("[1]: a NUL character")
    assert "lone surrogate" in problems["name"]
    assert op.validate({"name": "x", "count": 2 ** 63 - 1}).count == 2 ** 63 - 1
    assert op.validate({"name": "x", "count": -(2 ** 63)}).count == -(2 ** 63)


def test_environment_parameters_are_slugs():
    op = operations.get("deployments.create")
    for bad in ("Production", "dev env", "dev\n", "-dev", "../dev"):
        with pytest.raises(InvalidRequest) as err:
            op.validate({"model": "scorer", "version": 1, "environment": bad})
        assert err.value.where == "environment", bad
    assert op.validate({"model": "scorer", "version": 1, "environment": "prod-eu"}).environment == "prod-eu"


def test_remote_call_round_trip_with_messages_and_caller(plane):
    from rich.console import Console

    console = Console(record=True, width=200)
    plane.err = console
    result = plane.call("test.echo", name="a b", count=3, tags=["x"])
    assert result == {"name": "a b", "count": 3, "tags": ["x"], "user": "ds@example.com", "nan": None}
    assert "echoing a b" in console.export_text()
    with pytest.raises(InvalidRequest, match="name must not contain '/'"):
        plane.call("test.echo", name="a/b", count=3)
    assert CALLS[-1]["user"] == "ds@example.com"
    assert plane.call("test.read", limit=3) == [0, 1, 2]


def test_errors_come_back_as_the_same_class_and_exit_code(plane):
    with pytest.raises(Denied) as err:
        plane.call("test.denied")
    assert (err.value.where, err.value.hint, err.value.exit_code) == ("approver", "ask someone else", ExitCode.DENIED)
    with pytest.raises(Conflict):
        plane.call("test.conflict")
    with pytest.raises(NotFound) as missing:
        plane.call("test.missing")
    assert missing.value.details == {"known": ["a", "b"]}


def test_http_statuses_and_error_documents(app):
    from starlette.testclient import TestClient

    client = TestClient(app)
    user = {"Mlplat-User": "u@example.com"}
    assert client.post(f"{API_PREFIX}/test/denied", headers=user).status_code == 403
    assert client.post(f"{API_PREFIX}/test/conflict", headers=user).status_code == 409
    response = client.get(f"{API_PREFIX}/test/missing", headers=user)
    assert response.status_code == 404 and response.json()["error"] == "NotFound"
    bad = client.post(f"{API_PREFIX}/test/echo/n", headers=user, json={"count": "x"})
    assert bad.status_code == 422
    assert bad.json()["details"]["fields"] == [{"field": "count", "problem": bad.json()["details"]["fields"][0]["problem"]}]
    not_json = client.post(f"{API_PREFIX}/test/echo/n", headers=user, content=b"{nope")
    assert not_json.status_code == 422 and not_json.json()["where"] == "(body)"
    listed = client.post(f"{API_PREFIX}/test/echo/n", headers=user, content=b"[1, 2]")
    assert listed.status_code == 422
    assert client.get(f"{API_PREFIX}/test/bug", headers=user).status_code == 500
    unsupported = client.get(f"{API_PREFIX}/test/unsupported", headers=user)
    assert unsupported.status_code == 400 and unsupported.json()["error"] == "CapabilityNotSupported"
    assert client.get(f"{API_PREFIX}/test/tool", headers=user).status_code == 503
    no_user = client.get(f"{API_PREFIX}/test/read")
    assert no_user.status_code == 400 and no_user.json()["where"] == "Mlplat-User"
    other_stack = client.get(f"{API_PREFIX}/test/read", headers=user | {"Mlplat-Stack": "other"})
    assert other_stack.status_code == 400 and "serves stack 'team', not 'other'" in other_stack.json()["message"]
    newer = client.get(f"{API_PREFIX}/test/read", headers=user | {"Mlplat-Api-Version": "2"})
    assert newer.status_code == 400
    assert "v2" in newer.json()["message"] and f"v{API_VERSION}" in newer.json()["message"]
    assert client.get("/api/v2/models", headers=user).status_code == 400
    assert client.get(f"{API_PREFIX}/nothing-here", headers=user).status_code == 404
    metrics = client.get("/metrics").text
    assert 'mlplat_api_requests_total{operation="test.denied",status="403"} 1' in metrics


def test_openapi_lists_every_operation_with_its_parameters():
    doc = operations.openapi()
    ids = {entry["operationId"] for path in doc["paths"].values() for entry in path.values()}
    assert ids == set(operations.load())
    echo = doc["paths"][f"{API_PREFIX}/test/echo/{{name}}"]["post"]
    assert echo["parameters"][0]["name"] == "name"
    body = doc["components"]["schemas"]["TestEchoParams"]
    assert set(body["properties"]) == {"count", "tags"} and body["required"] == ["count"]
    read = doc["paths"][f"{API_PREFIX}/test/read"]["get"]
    assert read["parameters"] == [{"name": "limit", "in": "query", "required": False,
                                   "schema": read["parameters"][0]["schema"]}]
    json.dumps(doc)  # serialisable


def test_client_refuses_a_server_of_another_api_version():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Mlplat-Api-Version": "7"}, json={"result": 1})

    plane = RemotePlane("http://cp.example", stack="team", user="u", transport=httpx.MockTransport(handler))
    with pytest.raises(MlplatError, match=f"speaks platform API v{API_VERSION} but the control plane at "
                                          r"http://cp.example speaks v7"):
        plane.call("test.read")


def test_unreachable_server_is_an_external_error_naming_the_url_and_writes_are_not_retried():
    attempts = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request.method)
        raise httpx.ConnectError("connection refused")

    plane = RemotePlane("http://127.0.0.1:9", stack="team", user="u", transport=httpx.MockTransport(handler),
                        sleep=lambda s: None)
    with pytest.raises(ExternalError, match=r"control plane at http://127.0.0.1:9 is unreachable") as err:
        plane.call("test.echo", name="n", count=1)
    assert err.value.exit_code == ExitCode.EXTERNAL and attempts == ["POST"]
    attempts.clear()
    with pytest.raises(ExternalError):
        plane.call("test.read")
    assert attempts == ["GET"] * 5  # reads retry


def test_503_is_retried_then_succeeds():
    answers = [httpx.Response(503, headers={"Mlplat-Api-Version": "1", "Retry-After": "0"},
                              json={"error": "MlplatError", "message": "db down", "exit_code": 1})] * 2 + [
        httpx.Response(200, headers={"Mlplat-Api-Version": "1"}, json={"result": {"ok": True}, "messages": []})]
    it = iter(answers)
    plane = RemotePlane("http://cp", stack="team", user="u", transport=httpx.MockTransport(lambda r: next(it)),
                        sleep=lambda s: None)
    assert plane.call("test.echo", name="n", count=1) == {"ok": True}


def test_a_non_platform_answer_is_reported_as_such():
    plane = RemotePlane("http://cp", stack="team", user="u",
                        transport=httpx.MockTransport(lambda r: httpx.Response(502, text="<html>bad gateway</html>")))
    with pytest.raises(ExternalError, match="is it an `mlplat server`"):
        plane.call("test.read")


def test_error_from_unknown_class_falls_back_by_exit_code():
    exc = error_from({"error": "SomethingNew", "message": "m", "exit_code": 4}, status=404)
    assert isinstance(exc, NotFound) and exc.message == "m"


def test_lines_printed_before_a_failure_reach_the_client(plane):
    from rich.console import Console

    console = Console(record=True, width=200)
    plane.err = console
    with pytest.raises(Conflict) as err:
        plane.call("test.half")
    assert "ok  gate  0.10s" in console.export_text()
    assert "messages" not in err.value.details
