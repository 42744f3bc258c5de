"""The dashboard with real data: rendered in headless Chromium after following the login link `mlplat dashboard`
prints (content asserted, screenshot kept), and its HTTP guards, which need no browser and so run wherever the
dashboard does."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.conftest import BIN, REPO, require_tools, run_cli, write_project
from tests.integration.monitoring_support import FEATURES, insert_captures, load_model, shifted
from tests.timing import wait_until

ARTIFACTS = REPO / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--hide-scrollbars",
         "--window-size=1400,2000"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def chromium():
    """``chromium(*args)`` runs headless Chromium; a missing Chromium skips (fails under CI=true)."""
    binary = require_tools("chromium|chromium-browser", purpose="the dashboard's browser tests",
                           install="apt-get install -y chromium chromium-driver")["chromium"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([binary, *FLAGS, *args], capture_output=True, text=True, timeout=120)

    return run


@pytest.fixture
def dashboard(tmp_path):
    """The dashboard of a dev stack with a trained model, captures, labels and a drift verdict, on a free port."""
    root = write_project(tmp_path / "project")
    shutil.copytree(REPO / "examples" / "sklearn_tabular", root / "ex", ignore=shutil.ignore_patterns("data"))
    env = {"MLPLAT_PROJECT_DIR": str(root), "MLPLAT_USER": "ds@example.com"}
    assert run_cli("up", "--stack", "dev", "--yes", cwd=root, env=env).returncode == 0
    trained = subprocess.run([sys.executable, "ex/train.py", "--stack", "dev", "--register", "credit-risk"], cwd=root,
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    os.environ.update(env)
    try:
        model = load_model(root, "credit-risk", 1)
    finally:
        for key in env:
            os.environ.pop(key, None)
    holdout = pd.read_parquet(root / "ex" / "data" / "holdout.parquet")
    db = root / ".mlplat" / "dev" / "platform.db"
    calm = holdout.sample(300, random_state=1)
    ids = insert_captures(db, model="credit-risk", version=1, frame=calm[FEATURES], predictions=model.predict(calm[FEATURES]),
                          start_ts=time.time() - 7200, prefix="calm")
    pd.DataFrame({"request_id": ids, "label": calm["label"]}).to_csv(root / "labels.csv", index=False)
    assert run_cli("monitor", "labels", "--file", "labels.csv", cwd=root, env=env).returncode == 0
    assert run_cli("monitor", "run", cwd=root, env=env).returncode == 0
    drifted = shifted(shifted(shifted(holdout.sample(500, random_state=2), "income", 3), "age", 3), "tenure", 3)
    drifted = shifted(shifted(drifted, "debt_ratio", 3), "accounts", 3)
    insert_captures(db, model="credit-risk", version=1, frame=drifted[FEATURES],
                    predictions=model.predict(drifted[FEATURES]), start_ts=time.time() - 3600, prefix="shift")
    assert run_cli("monitor", "run", cwd=root, env=env).returncode == 0

    port = free_port()
    server = subprocess.Popen([str(BIN / "mlplat"), "dashboard", "--stack", "dev", "--port", str(port), "--refresh", "0"],
                              cwd=root, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    url = f"http://127.0.0.1:{port}/"
    printed: list[str] = []
    threading.Thread(target=lambda: printed.extend(server.stderr), daemon=True).start()

    def login_link() -> str | None:
        if server.poll() is not None:
            raise AssertionError(f"dashboard exited {server.returncode}: {''.join(printed)[-2000:]}")
        found = re.search(r"log in: (http://127\.0\.0\.1:\d+/login\?token=[A-Za-z0-9_-]+)", "".join(printed))
        return found.group(1) if found else None

    def healthy() -> bool:
        try:
            urllib.request.urlopen(url + "healthz", timeout=2)
            return True
        except OSError:
            return False

    try:
        link = wait_until(login_link, timeout=60, interval=0.2, message="the dashboard printed no login link")
        wait_until(healthy, timeout=60, interval=0.2, message="the dashboard did not answer /healthz")
    except AssertionError:
        server.kill()
        raise
    yield SimpleNamespace(url=url, link=link)
    server.terminate()
    server.wait(timeout=20)


@pytest.mark.browser
def test_dashboard_renders_models_drift_quality_cost_alerts_and_audit(chromium, dashboard):
    # without a session the browser gets the login page only
    denied = chromium("--dump-dom", dashboard.url).stdout
    assert "Login required" in denied and "credit-risk" not in denied
    # the printed link logs the browser in and lands on the page
    dom = chromium("--dump-dom", dashboard.link).stdout
    assert "mlplat dashboard" in dom and 'id="stack">dev<' in dom
    assert 'signed in as <b id="identity">ds@example.com</b> (trusted-local)' in dom
    # models, versions and stages
    assert "credit-risk" in dom and "Models, versions and stages" in dom
    # drift per feature: the shifted features are flagged, with a PSI chart
    assert "Drift per feature" in dom and 'aria-label="PSI per feature of credit-risk"' in dom
    drift_section = dom.split('id="drift"')[1].split("</section>")[0]
    assert 'class="badge drift">drift<' in drift_section
    for feature in ("income", "age", "tenure"):
        assert f">{feature}<" in drift_section
    # quality over time and calibration
    assert "Quality and calibration over time" in dom and "accuracy" in dom
    # cost with the team's budget
    assert "Cost per team, with budget" in dom and "ml-core: $200.00 a month" in dom
    # alerts: the built-in drift rule fired
    alerts_section = dom.split('id="alerts"')[1].split("</section>")[0]
    assert "drift.detected" in alerts_section and "credit-risk@dev" in alerts_section
    # approvals and the audit trail
    assert "Pending approvals" in dom
    audit = dom.split('id="audit"')[1].split("</section>")[0]
    assert "model.registered" in audit
    assert dom.count("<svg") >= 3

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    result = chromium(f"--screenshot={shot}", dashboard.link)
    assert shot.is_file() and shot.stat().st_size > 20_000, result.stderr[-1000:]


@pytest.mark.integration
def test_dashboard_refuses_foreign_hosts_and_form_posts(dashboard):
    """Host check and form-post refusal are plain HTTP: no browser needed, never skipped with the browser tests."""
    import http.cookiejar

    request = urllib.request.Request(dashboard.url, headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 403
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = browser.open(dashboard.link, timeout=30).read().decode()  # logs in, follows the redirect to the page
    csrf = re.search(r"<meta name='csrf-token' content='([^']+)'>", page).group(1)
    form = urllib.request.Request(dashboard.url + "api/v1/labels", data=b"labels=1", method="POST",
                                  headers={"Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": csrf})
    with pytest.raises(urllib.error.HTTPError) as info:
        browser.open(form, timeout=10)
    assert info.value.code == 415
    tokenless = urllib.request.Request(dashboard.url + "api/v1/labels", method="POST", data=b'{"labels": {}}',
                                       headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        browser.open(tokenless, timeout=10)
    assert info.value.code == 403
    ok = urllib.request.Request(dashboard.url + "api/v1/labels", method="POST",
                                data=json.dumps({"labels": {"calm-00001": 1, "nobody": 0}}).encode(),
                                headers={"Content-Type": "application/json", "X-CSRF-Token": csrf})
    doc = json.loads(browser.open(ok, timeout=10).read())
    assert doc["unknown"] == 1 and doc["stored"] + doc["updated"] <= 1
    snapshot = json.loads(browser.open(dashboard.url + "api/v1/snapshot", timeout=30).read())
    assert snapshot["stack"] == "dev" and snapshot["drift"][0]["verdict"] == "drift"
