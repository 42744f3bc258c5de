"""The dashboard with real data, read as a user reads it: headless Chromium (through chromedriver) after following
the login link `mlplat dashboard` prints. One seeded project and one browser serve every test of this module.

The project: the sklearn example registered twice (v1, v2), both promoted to staging, v1 deployed, v2 canaried and
rolled back; captured traffic with class probabilities (calm, then five features shifted) judged by two monitoring
passes, and no labels yet.
Screenshots at 1024 and 1920 px are written to ``test-artifacts/`` (kept by CI). The HTTP guards need no browser and
run wherever the dashboard does.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.conftest import BIN, REPO, require_tools, run_cli, write_project
from tests.integration.monitoring_support import FEATURES, insert_captures, load_model, shifted
from tests.timing import wait_until

ARTIFACTS = REPO / "test-artifacts"
WIDTHS = (1024, 1920)
USER = "ds@example.com"
TIME_LABEL = re.compile(r"^(\d{2}:\d{2}|\d{2}-\d{2} \d{2}:\d{2}|\d{4}-\d{2}-\d{2})$")  # a UTC tick of a time axis


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli(root: Path, env: dict[str, str], *args: str) -> None:
    done = run_cli(*args, cwd=root, env=env, timeout=600)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The seeded project (see the module's docstring): ``root``, ``env``, the calm captures' ``label_file``."""
    root = write_project(tmp_path_factory.mktemp("dashboard") / "project")
    shutil.copytree(REPO / "examples" / "sklearn_tabular", root / "ex", ignore=shutil.ignore_patterns("data"))
    # the staging endpoint runs as a local process: the images' build is tested elsewhere
    env = {"MLPLAT_PROJECT_DIR": str(root), "MLPLAT_USER": USER, "MLPLAT_CONTAINER_ENGINE": "none"}
    _cli(root, env, "up", "--stack", "dev", "--yes")
    for estimators in ("30", "20"):
        trained = subprocess.run([sys.executable, "ex/train.py", "--stack", "dev", "--register", "credit-risk",
                                  "--n-estimators", estimators], cwd=root, env={**os.environ, **env},
                                 capture_output=True, text=True, timeout=600)
        assert trained.returncode == 0, trained.stderr[-2000:]
    for version in ("1", "2"):  # one promotion of a model at a time (the ledger refuses a second meanwhile)
        _cli(root, env, "models", "promote", "credit-risk", version, "--to", "staging")
    _cli(root, env, "deploy", "credit-risk", "1")
    _cli(root, env, "deploy", "credit-risk", "2", "--strategy", "canary")
    _cli(root, env, "rollback", "credit-risk", "--reason", "latency breach seen by on-call")

    os.environ.update(env)
    try:
        model = load_model(root, "credit-risk", 1)
    finally:
        for key in env:
            os.environ.pop(key, None)
    holdout = pd.read_parquet(root / "ex" / "data" / "holdout.parquet")

    def scores(frame: pd.DataFrame) -> list[list[float]]:  # what the server answers: [P(0), P(1)] per row
        return model.predict_proba(frame[FEATURES]).tolist()

    db = root / ".mlplat" / "dev" / "platform.db"
    calm = holdout.sample(300, random_state=1)
    ids = insert_captures(db, model="credit-risk", version=1, frame=calm[FEATURES],
                          predictions=scores(calm), start_ts=time.time() - 7200, prefix="calm")
    pd.DataFrame({"request_id": ids, "label": calm["label"]}).to_csv(root / "labels.csv", index=False)
    _cli(root, env, "monitor", "run")
    drifted = shifted(shifted(shifted(holdout.sample(500, random_state=2), "income", 3), "age", 3), "tenure", 3)
    drifted = shifted(shifted(drifted, "debt_ratio", 3), "accounts", 3)
    insert_captures(db, model="credit-risk", version=1, frame=drifted[FEATURES],
                    predictions=scores(drifted), start_ts=time.time() - 3600, prefix="shift")
    _cli(root, env, "monitor", "run")
    return SimpleNamespace(root=root, env=env, label_file="labels.csv")


@pytest.fixture(scope="module")
def dashboard(project):
    """`mlplat dashboard` on a free port, fetching its parts every second; ``url`` and the printed login ``link``."""
    port = free_port()
    server = subprocess.Popen([str(BIN / "mlplat"), "dashboard", "--stack", "dev", "--port", str(port), "--refresh", "1"],
                              cwd=project.root, env={**os.environ, **project.env}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
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
    yield SimpleNamespace(url=url, link=link, port=port)
    server.terminate()
    server.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module, driven through chromedriver (a missing one skips; fails under CI)."""
    tools = require_tools("chromium|chromium-browser|google-chrome", "chromedriver", purpose="the dashboard's browser "
                          "tests", install="apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(v for k, v in tools.items() if k != "chromedriver")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--hide-scrollbars", "--disable-dev-shm-usage", "--window-size=1024,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(tools["chromedriver"]))
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def _open(browser, dashboard, path: str = "/") -> None:
    """Log in through the printed link once, then open ``path``."""
    if not browser.get_cookies():
        browser.get(dashboard.link)
    browser.get(dashboard.url.rstrip("/") + path)
    wait_until(lambda: browser.execute_script("return document.readyState") == "complete", timeout=60)


def _hold(browser) -> None:
    """Pause the live updates, so the elements a test holds are not replaced under it (a fetch already in flight
    checks the pause before it applies)."""
    browser.execute_script("document.body.setAttribute('data-live-paused', '')")


def _resize(browser, width: int) -> None:
    browser.set_window_size(width, 900)
    wait_until(lambda: browser.execute_script("return window.innerWidth") == width, timeout=30,
               message=lambda: f"the window is {browser.execute_script('return window.innerWidth')} px, not {width}")


def _screenshot(browser, name: str) -> Path:
    """The whole page as a PNG under test-artifacts/ (the window grown to the page's height for the shot)."""
    width = browser.execute_script("return window.innerWidth")
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, min(height, 12000))
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000, shot
    print(f"screenshot: {shot}")
    browser.set_window_size(width, 900)
    return shot


# Every table, chart and histogram measured against the card (section) that holds it: the element's right edge
# may not pass the card's inner right edge, and a table's scroll box may not need scrolling.
OVERFLOWS = """
const out = [];
for (const card of document.querySelectorAll('main > section')) {
  const box = card.getBoundingClientRect();
  const inner = box.right - parseFloat(getComputedStyle(card).paddingRight) + 0.5;
  for (const el of card.querySelectorAll('table, svg.chart, .placeholder, .table-wrap')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0) continue;
    if (r.right > inner || r.left < box.left) out.push(`${card.id}: ${el.tagName.toLowerCase()} ${r.left}-${r.right} in ${box.left}-${inner}`);
    if (el.classList.contains('table-wrap') && el.scrollWidth > el.clientWidth + 1) out.push(`${card.id}: table scrolls`);
  }
  if (card.scrollWidth > card.clientWidth + 1) out.push(`${card.id}: the card itself overflows`);
}
return out;
"""


def _text(browser, css: str) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, css).text


@pytest.mark.browser
def test_the_stack_page_reads_right_at_1024_and_1920_px(browser, dashboard):
    from selenium.webdriver.common.by import By

    _open(browser, dashboard)
    _hold(browser)
    assert _text(browser, "#stack") == "dev" and "ds@example.com" in _text(browser, "header")
    # the rollback is the latest event, and the traffic says v1 serves everything
    serving = _text(browser, "#serving")
    assert "latest event: rolled_back rolled back by ds@example.com" in serving, serving
    assert "latency breach seen by on-call" in serving and "primary v1 100 %" in serving
    # charts over time: UTC tick labels and axis titles with units
    drift_share = browser.find_element(By.CSS_SELECTOR, "svg[aria-label='drift share of credit-risk over time']")
    ticks = [t.text for t in drift_share.find_elements(By.CSS_SELECTOR, "text.tick")]
    assert sum(bool(TIME_LABEL.match(t)) for t in ticks) >= 2, ticks
    titles = [t.text for t in drift_share.find_elements(By.CSS_SELECTOR, "text.axis-title")]
    assert titles == ["window end (UTC)", "features drifted (%)"], titles
    psi = browser.find_element(By.CSS_SELECTOR, "svg[aria-label='PSI per feature of credit-risk']")
    assert "population stability index" in psi.find_element(By.CSS_SELECTOR, "text.axis-title").text
    # reference-vs-current histograms for exactly the drifted features
    drifted = {f.get_attribute("data-feature") for f in browser.find_elements(By.CSS_SELECTOR, "figure.feature-histogram")}
    assert {"income", "age", "tenure", "debt_ratio", "accounts"} <= drifted and "inquiries" not in drifted, drifted
    income = browser.find_element(By.CSS_SELECTOR, "figure[data-feature='income'] svg")
    assert [t.text for t in income.find_elements(By.CSS_SELECTOR, "text.legend")] == ["reference", "current window"]
    assert len(income.find_elements(By.CSS_SELECTOR, "rect")) >= 2 * 12
    # no labels yet: a placeholder says so instead of an empty chart
    quality = browser.find_element(By.ID, "quality")
    assert "Waiting for labels" in quality.text and not quality.find_elements(By.CSS_SELECTOR, "svg.chart")
    # cost: the period, a trend over the month with its axes, the month-end forecast against the budget
    cost = _text(browser, "#cost")
    assert re.search(r"period \d{4}-\d{2} to date", cost) and "month-end forecast $" in cost and "of $200.00" in cost
    trend = browser.find_element(By.CSS_SELECTOR, "#cost svg.chart[aria-label^='cost of ']")
    assert [t.text for t in trend.find_elements(By.CSS_SELECTOR, "text.axis-title")] == [
        "date (UTC)", "cumulative cost (USD)"]
    assert [t.text for t in trend.find_elements(By.CSS_SELECTOR, "text.legend")] == ["spent", "forecast"]
    # every table that names a model links to its page
    for section in ("models", "serving", "cost", "approvals", "audit", "alerts"):
        links = browser.find_elements(By.CSS_SELECTOR, f"#{section} a.model-link")
        assert links and all(a.get_attribute("href").endswith("/models/credit-risk") for a in links), section

    for width in WIDTHS:
        _resize(browser, width)
        assert browser.execute_script(OVERFLOWS) == [], width
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        _screenshot(browser, f"dashboard-{width}.png")


@pytest.mark.browser
def test_a_model_name_opens_the_model_page(browser, dashboard, project):
    from selenium.webdriver.common.by import By

    _open(browser, dashboard)
    _hold(browser)
    _resize(browser, 1024)
    browser.find_element(By.CSS_SELECTOR, "#models a.model-link").click()
    wait_until(lambda: browser.current_url.endswith("/models/credit-risk"), timeout=60,
               message=lambda: browser.current_url)
    wait_until(lambda: browser.execute_script("return document.readyState") == "complete", timeout=60)
    assert _text(browser, "#model-name") == "credit-risk"
    versions = _text(browser, "#versions")
    assert "v1" in versions and "v2" in versions and "staging" in versions
    # lineage: each version's run, linked to the tracking UI
    runs = browser.find_elements(By.CSS_SELECTOR, "#lineage a.run-link")
    from mlplat.api.plane import EmbeddedPlane
    from mlplat.context import Context

    ctx = Context(project_dir=project.root, _user=USER)
    run_id = EmbeddedPlane(ctx.stack("dev"), ctx).call("models.show", name="credit-risk", version=1)["run_id"]
    assert f"http://127.0.0.1:5000/#/runs/{run_id}" in [a.get_attribute("href") for a in runs]
    assert "holdout" in _text(browser, "#lineage")
    # the deployment: the rollback leads, the canary is history
    deployment = _text(browser, "#deployment")
    assert "latest event: rolled_back rolled back" in deployment and "canary deployment of version 2" in deployment
    monitoring = browser.find_element(By.ID, "monitoring")
    assert "drift" in monitoring.text and monitoring.find_elements(By.CSS_SELECTOR, "figure.feature-histogram")
    assert "Waiting for labels" in monitoring.text
    for width in WIDTHS:
        _resize(browser, width)
        assert browser.execute_script(OVERFLOWS) == [], width
        _screenshot(browser, f"dashboard-model-{width}.png")


@pytest.mark.browser
def test_labels_and_a_monitoring_pass_appear_without_a_reload(browser, dashboard, project):
    """Runs last: it adds labels and a monitoring window to the shared project."""
    from selenium.webdriver.common.by import By

    _open(browser, dashboard)
    _resize(browser, 1024)
    assert "Waiting for labels" in _text(browser, "#quality")
    browser.execute_script("window.__sameDocument = 'still here'")
    updates = int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-updates") or 0)

    _cli(project.root, project.env, "monitor", "labels", "--file", project.label_file)
    _cli(project.root, project.env, "monitor", "run")

    def quality_charts():
        return browser.find_elements(By.CSS_SELECTOR, "#quality svg.chart[aria-label='quality of credit-risk, "
                                                      "higher is better']")

    wait_until(quality_charts, timeout=120, interval=0.25, message="the quality chart never appeared")
    _hold(browser)
    chart = quality_charts()[0]
    assert browser.execute_script("return window.__sameDocument") == "still here"  # the page was not reloaded
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1
    assert int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-updates")) > updates
    assert "Waiting for labels" not in _text(browser, "#quality")
    # higher-is-better and lower-is-better metrics on charts of their own, each with its axes
    legend = [t.text for t in chart.find_elements(By.CSS_SELECTOR, "text.legend")]
    assert "accuracy" in legend and "brier" not in legend and "ece" not in legend, legend
    lower = browser.find_element(By.CSS_SELECTOR, "#quality svg.chart[aria-label='errors of credit-risk, lower is better']")
    assert "brier" in [t.text for t in lower.find_elements(By.CSS_SELECTOR, "text.legend")]
    for svg in (chart, lower):
        assert [t.text for t in svg.find_elements(By.CSS_SELECTOR, "text.axis-title")][0] == "window end (UTC)"
        assert any(TIME_LABEL.match(t.text) for t in svg.find_elements(By.CSS_SELECTOR, "text.tick"))
    assert browser.execute_script(OVERFLOWS) == []
    _screenshot(browser, "dashboard-labelled-1024.png")


@pytest.mark.integration
def test_dashboard_refuses_foreign_hosts_and_form_posts(dashboard):
    """Host check, sessions on the new routes and form-post refusal are plain HTTP: no browser needed."""
    import http.cookiejar

    request = urllib.request.Request(dashboard.url, headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 403
    for path in ("models/credit-risk", "api/v1/parts", "api/v1/models/credit-risk/parts"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(dashboard.url + path, timeout=30)
        assert info.value.code == 401, path
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = browser.open(dashboard.link, timeout=30).read().decode()  # logs in, follows the redirect to the page
    csrf = re.search(r"<meta name='csrf-token' content='([^']+)'>", page).group(1)
    parts = json.loads(browser.open(dashboard.url + "api/v1/parts", timeout=60).read())
    assert set(parts["parts"]) >= {"models", "serving", "drift", "quality", "cost", "alerts", "approvals", "audit"}
    assert all(html.startswith("<section data-v='") and f" id='{key}'" in html for key, html in parts["parts"].items())
    for path in ("models/nosuch", "api/v1/models/nosuch/parts"):
        with pytest.raises(urllib.error.HTTPError) as info:
            browser.open(dashboard.url + path, timeout=60)
        body = info.value.read().decode()
        assert info.value.code == 404 and "no model named" in body and "nosuch" in body, path
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
                                data=json.dumps({"labels": {"nobody": 0}}).encode(),
                                headers={"Content-Type": "application/json", "X-CSRF-Token": csrf})
    doc = json.loads(browser.open(ok, timeout=10).read())
    assert doc["unknown"] == 1 and doc["stored"] + doc["updated"] == 0
    snapshot = json.loads(browser.open(dashboard.url + "api/v1/snapshot", timeout=30).read())
    assert snapshot["stack"] == "dev" and snapshot["drift"][0]["verdict"] == "drift"
