"""The dashboard's label endpoint over real HTTP on 127.0.0.1: the Origin check compares the scheme too, and
its JSON has the serving path's limits (depth, repeated keys). Refusals happen before any store is
touched, so the app runs over a stack that is never opened; no browser needed. Requests past the Origin
check hold a session (from the login link) and send its CSRF token."""
from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

TOKEN = "a-login-token-for-the-guard-tests"

pytestmark = pytest.mark.integration


@pytest.fixture
def dashboard():
    import uvicorn

    from mlplat.dashboard.app import create_app
    from mlplat.serving.model_server import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_app(SimpleNamespace(name="guarded"), None, port=port, token=TOKEN)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30  # bounds a hang; nothing is timed
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the dashboard did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def session(port: int) -> tuple[str, str]:
    """``(cookie header, CSRF token)`` of a fresh session opened through the login link."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        assert c.get(f"/login?token={TOKEN}").status_code == 303
        csrf = c.get("/api/v1/session").json()["csrf_token"]
        return "; ".join(f"{k}={v}" for k, v in c.cookies.items()), csrf


def post(port: int, content: bytes, origin: str | None = None) -> httpx.Response:
    cookie, csrf = session(port)
    headers = {"content-type": "application/json", "cookie": cookie, "x-csrf-token": csrf}
    headers |= {"origin": origin} if origin is not None else {}
    return httpx.post(f"http://127.0.0.1:{port}/api/v1/labels", content=content, headers=headers, timeout=30)


def test_origin_must_match_scheme_host_and_port(dashboard):
    shape_error = b'{"labels": 5}'  # refused after the origin check, before any store is opened
    for origin in (f"https://127.0.0.1:{dashboard}", f"ws://localhost:{dashboard}", f"http://127.0.0.1:{dashboard + 1}",
                   "null", f"http://evil.example:{dashboard}", f"127.0.0.1:{dashboard}"):
        response = post(dashboard, shape_error, origin)
        assert response.status_code == 403, (origin, response.text)
        assert "cross-origin request refused" in response.json()["error"]
    for origin in (f"http://127.0.0.1:{dashboard}", f"http://localhost:{dashboard}", None):
        assert post(dashboard, shape_error, origin).status_code == 422, origin


@pytest.mark.parametrize("content, fragment", [
    (b'{"labels": ' + b"[" * 100 + b"]" * 100 + b"}", "nested deeper than 64 levels"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64 levels"),
    (b'{"labels": {"r1": 1}, "labels": [{"request_id": "r1", "label": 0}]}', "key 'labels' appears more than once"),
    (b'{"labels": {"r1": 1, "r1": 0}}', "key 'r1' appears more than once in labels"),
    (b'{"labels": ', "malformed JSON"),
])
def test_label_json_has_the_serving_limits(dashboard, content, fragment):
    response = post(dashboard, content, f"http://127.0.0.1:{dashboard}")
    assert response.status_code == 400 and fragment in response.json()["error"], response.text


def test_an_announced_oversized_body_is_refused_before_it_is_read(dashboard):
    cookie, csrf = session(dashboard)
    request = (b"POST /api/v1/labels HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
               b"Cookie: %s\r\nX-CSRF-Token: %s\r\n"
               b"Content-Length: 999999999\r\n\r\n{}" % (dashboard, cookie.encode(), csrf.encode()))
    with socket.create_connection(("127.0.0.1", dashboard), timeout=60) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:  # the answer comes though the body never will
            chunk = sock.recv(65536)
            assert chunk, "connection closed without an answer"
            received += chunk
    assert received.startswith(b"HTTP/1.1 413 ")
