"""`mlplat dashboard` requires login: a real dashboard process over a provisioned dev stack with captures.

It prints a login link carrying a token drawn per start; the link opens a session (HttpOnly, SameSite=Strict
cookie). Pages and API routes answer 401 without that session, and the one state-changing route also needs
the session's CSRF token in a header, a same-origin (or absent) Origin and a JSON body. Every refusal leaves
the ledger's labels as they were. No browser: the browser test follows the link in Chromium.
"""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import threading
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.conftest import BIN, run_cli, write_project
from tests.integration.monitoring_support import insert_captures
from tests.timing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("dashboard-login")]

USER = "ds@example.com"
LINK = re.compile(r"log in: (http://127\.0\.0\.1:(\d+)/login\?token=([A-Za-z0-9_-]+))")


class Dashboard:
    def __init__(self, project: Path):
        self.proc = subprocess.Popen([str(BIN / "mlplat"), "dashboard", "--stack", "dev", "--port", "0",
                                      "--refresh", "0"], cwd=project,
                                     env={**os.environ, "MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": USER},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        match = wait_until(self._link, timeout=90, message=lambda: "no login link printed: " + "".join(self.lines))
        self.link, port, self.token = match.group(1), int(match.group(2)), match.group(3)
        self.url = f"http://127.0.0.1:{port}"
        self.origin = self.url
        wait_until(self._healthy, timeout=60, message="the dashboard did not answer /healthz")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def _link(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"dashboard exited {self.proc.returncode}: {''.join(self.lines)[-2000:]}")
        return next((m for m in map(LINK.search, list(self.lines)) if m), None)

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, follow_redirects=False)

    def logged_in(self) -> tuple[httpx.Client, str]:
        """A client holding a session, and the session's CSRF token (read from the page, as its script does)."""
        c = self.client()
        assert c.get(f"/login?token={self.token}").status_code == 303
        page = c.get("/").text
        csrf = re.search(r"<meta name='csrf-token' content='([^']+)'>", page)
        assert csrf, page[:500]
        return c, csrf.group(1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = write_project(tmp_path_factory.mktemp("dashboard-login") / "project")
    up = run_cli("up", "--stack", "dev", "--yes", cwd=root, env={"MLPLAT_PROJECT_DIR": str(root)})
    assert up.returncode == 0, up.stderr
    frame = pd.DataFrame({"x": [0.1, 0.2, 0.3, 0.4]})
    insert_captures(root / ".mlplat" / "dev" / "platform.db", model="m", version=1, frame=frame,
                    predictions=[0, 1, 0, 1], start_ts=1_700_000_000.0, prefix="req")
    return root


@pytest.fixture(scope="module")
def dashboard(project):
    running = Dashboard(project)
    yield running
    running.stop()


def labels(project: Path) -> list[tuple]:
    conn = sqlite3.connect(project / ".mlplat" / "dev" / "platform.db")
    try:
        return conn.execute("SELECT request_id, label FROM monitor_labels ORDER BY request_id").fetchall()
    finally:
        conn.close()


def test_without_a_session_pages_and_api_routes_answer_401(dashboard):
    with dashboard.client() as c:
        page = c.get("/")
        assert page.status_code == 401 and "text/html" in page.headers["content-type"]
        assert "Open the login link printed by <code>mlplat dashboard</code>" in page.text
        for path in ("/api/v1/snapshot", "/api/v1/session", "/static/dashboard.js"):
            refused = c.get(path)
            assert refused.status_code == 401, path
            assert "mlplat dashboard" in refused.json()["hint"], path
        # a forged cookie is no session
        c.cookies.set(f"mlplat_dashboard_{httpx.URL(dashboard.url).port}", "made-up")
        assert c.get("/api/v1/snapshot").status_code == 401


def test_a_wrong_or_missing_token_opens_no_session(dashboard):
    with dashboard.client() as c:
        for path in ("/login", "/login?token=", "/login?token=" + dashboard.token[:-1],
                     "/login?token=" + dashboard.token + "x", "/login?token=" + "A" * len(dashboard.token)):
            refused = c.get(path)
            assert refused.status_code == 401 and "set-cookie" not in refused.headers, path
            assert "token is missing or wrong" in refused.text
        assert c.get("/").status_code == 401


def test_the_login_link_sets_a_strict_http_only_session_cookie(dashboard):
    with dashboard.client() as c:
        answer = c.get(dashboard.link.replace(dashboard.url, ""))
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
        page = c.get("/")
        assert page.status_code == 200
        # the dashboard acts as whoever ran it, and says so
        assert f"signed in as <b id='identity'>{USER}</b> (trusted-local)" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/api/v1/snapshot").json()["stack"] == "dev"
        session = c.get("/api/v1/session").json()
        assert session["identity"] == {"principal": USER, "method": "trusted-local"} and session["csrf_token"]
        assert c.get("/static/dashboard.js").status_code == 200
    # every login opens its own session with its own CSRF token
    first, second = dashboard.logged_in(), dashboard.logged_in()
    assert first[1] != second[1]
    first[0].close()
    second[0].close()


def test_state_changing_requests_need_the_csrf_token_same_origin_and_json(dashboard, project):
    before = labels(project)
    body = b'{"labels": {"req-00000": 1}}'
    c, csrf = dashboard.logged_in()
    other_client, other_csrf = dashboard.logged_in()
    other_client.close()
    json_type = {"content-type": "application/json"}
    try:
        refused = {
            "no CSRF token": c.post("/api/v1/labels", content=body, headers=json_type | {"origin": dashboard.origin}),
            "no CSRF token, no origin": c.post("/api/v1/labels", content=body, headers=json_type),
            "a wrong CSRF token": c.post("/api/v1/labels", content=body,
                                         headers=json_type | {"x-csrf-token": csrf[:-1] + "x"}),
            "another session's CSRF token": c.post("/api/v1/labels", content=body,
                                                   headers=json_type | {"x-csrf-token": other_csrf}),
            "cross-origin text/plain": c.post("/api/v1/labels", content=body,
                                              headers={"content-type": "text/plain", "origin": "http://evil.example"}),
            "cross-origin form": c.post("/api/v1/labels", content=b"labels=1",
                                        headers={"content-type": "application/x-www-form-urlencoded",
                                                 "origin": "http://evil.example"}),
            "cross-origin, even with the token": c.post("/api/v1/labels", content=body,
                                                        headers=json_type | {"x-csrf-token": csrf,
                                                                             "origin": "https://" + dashboard.url[7:]}),
        }
        for what, answer in refused.items():
            assert answer.status_code == 403, (what, answer.status_code, answer.text)
        assert "CSRF" in refused["no CSRF token"].json()["error"]
        assert "cross-origin request refused" in refused["cross-origin text/plain"].json()["error"]
        # a cross-site request carries no cookie (SameSite=Strict) and no token: refused as well
        with dashboard.client() as anonymous:
            assert anonymous.post("/api/v1/labels", content=b"labels=1",
                                  headers={"content-type": "text/plain"}).status_code == 401
        # same origin with the token, but not JSON
        plain = c.post("/api/v1/labels", content=body, headers={"content-type": "text/plain", "x-csrf-token": csrf,
                                                                "origin": dashboard.origin})
        assert plain.status_code == 415
        assert labels(project) == before  # nothing refused wrote anything

        ok = c.post("/api/v1/labels", content=body, headers=json_type | {"x-csrf-token": csrf,
                                                                         "origin": dashboard.origin})
        assert ok.status_code == 200, ok.text
        assert ok.json()["stored"] == 1
    finally:
        c.close()
    assert labels(project) == sorted(before + [("req-00000", "1")])  # labels are stored as text
