"""Monitoring, feature store and cost commands through a real `mlplat server`, against the same commands run
embedded on the same ledger: labels in batches (a retried batch adds nothing), monitor run and status, features
apply / list / materialize / skew from a checkout that holds no data, cost report, refused requests.

One provisioned project and one server per module; the tests run in order and build on each other's state.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from mlplat.context import Context
from mlplat.errors import Conflict, ExitCode
from tests.conftest import REPO, run_cli, write_project
from tests.integration.monitoring_support import insert_captures
from tests.server_support import running_server

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("api-monitoring")]

USER = "ds@example.com"
CAPTURED = 6_010  # more labels than one request carries (5,000)
PERIOD = "2000-01-01..2099-12-31"  # a fixed period: the same report whenever it is asked


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("api-monitoring")
    root = write_project(base / "project")
    env = {"MLPLAT_PROJECT_DIR": str(root), "MLPLAT_USER": USER}
    up = run_cli("up", "--stack", "dev", "--yes", cwd=root, env=env)
    assert up.returncode == 0, up.stderr
    examples = root / "examples" / "features"
    examples.mkdir(parents=True)
    for name in ("definitions.py", "make_data.py"):
        shutil.copy(REPO / "examples" / "features" / name, examples / name)
    subprocess.run([sys.executable, str(examples / "make_data.py")], check=True, capture_output=True, cwd=root)
    frame = pd.DataFrame({"x": [float(i % 97) for i in range(CAPTURED)], "y": [i % 5 for i in range(CAPTURED)]})
    ids = insert_captures(root / ".mlplat" / "dev" / "platform.db", model="scorer", version=1, frame=frame,
                          predictions=[i % 2 for i in range(CAPTURED)], start_ts=time.time() - 7200, prefix="r",
                          step=0.5)
    # a second checkout of the same project: the stack file and the definitions module, no data, no state
    client = write_project(base / "client")
    (client / "examples" / "features").mkdir(parents=True)
    shutil.copy(REPO / "examples" / "features" / "definitions.py", client / "examples" / "features" / "definitions.py")
    with running_server(root, "dev") as server:
        yield {"root": root, "client": client, "env": env, "ids": ids, "server": server,
               "db": root / ".mlplat" / "dev" / "platform.db"}


def embedded(site, *args: str, cwd: Path | None = None):
    cwd = cwd or site["root"]
    return run_cli(*args, cwd=cwd, env={**site["env"], "MLPLAT_PROJECT_DIR": str(cwd)})


def remote(site, *args: str, cwd: Path | None = None):
    cwd = cwd or site["root"]
    return run_cli(*args, cwd=cwd, env={**site["env"], "MLPLAT_PROJECT_DIR": str(cwd), **site["server"].client_env()})


def same_json(site, *args: str) -> dict | list:
    """The command's --json document, asserted identical embedded and through the server."""
    here, there = embedded(site, *args, "--json"), remote(site, *args, "--json")
    assert here.returncode == 0, here.stderr
    assert there.returncode == 0, there.stderr
    assert json.loads(here.stdout) == json.loads(there.stdout)
    return json.loads(there.stdout)


def count(site, sql: str, *args):
    """The first column of the first row."""
    conn = sqlite3.connect(site["db"])
    try:
        return conn.execute(sql, args).fetchone()[0]
    finally:
        conn.close()


def served(site, operation: str) -> int:
    """Requests the server answered 200 for ``operation`` (from its Prometheus metrics)."""
    text = httpx.get(site["server"].url + "/metrics", timeout=10).text
    prefix = f'mlplat_api_requests_total{{operation="{operation}",status="200"}} '
    return sum(int(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix))


def plane(site):
    ctx = Context(project_dir=site["root"], _user=USER)
    return site["server"].plane(ctx.stack("dev"), ctx)


def test_labels_file_goes_through_the_server_in_batches(site):
    ids = site["ids"]
    labelled = ids[:6_000]
    frame = pd.DataFrame({"request_id": [*labelled, "ghost-1", "ghost-2", ids[0], None],
                          "label": [i % 2 for i in range(6_000)] + [1, 0, 0, 1]})
    frame.to_csv(site["root"] / "labels.csv", index=False)
    before = served(site, "monitoring.labels")
    result = remote(site, "monitor", "labels", "scorer", "--file", "labels.csv", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc == {"received": 6_004, "stored": 6_000, "updated": 0, "unknown": 2, "unknown_ids": ["ghost-1", "ghost-2"],
                   "missing_ids": 1, "duplicates": 1, "conflicting": []}
    assert served(site, "monitoring.labels") - before == 2  # 6,002 distinct ids: 5,000 + 1,002
    assert count(site, "SELECT COUNT(*) FROM monitor_labels") == 6_000
    assert count(site, "SELECT COUNT(*) FROM meta WHERE key LIKE 'monitoring.label_batch:%'") == 2

    text = remote(site, "monitor", "labels", "--file", "labels.csv")
    assert text.returncode == 0, text.stderr
    assert "6004 rows: 0 labels stored, 0 updated, 2 unknown request id(s), 1 without an id, 1 duplicate(s)" in text.stdout
    assert "ghost-1, ghost-2" in text.stdout


def test_a_retried_label_batch_adds_nothing(site):
    rest = site["ids"][6_000:]
    batch = [{"request_id": request_id, "label": 1} for request_id in rest] + [{"request_id": "ghost-3", "label": 0}]
    api = plane(site)
    try:
        first = api.call("monitoring.labels", labels=batch, source="retry-test", batch_id="upload-7-0")
        rows = count(site, "SELECT COUNT(*) FROM monitor_labels")
        stamps = count(site, "SELECT SUM(received_at) FROM monitor_labels")
        again = api.call("monitoring.labels", labels=batch, source="retry-test", batch_id="upload-7-0")
        with pytest.raises(Conflict) as refused:  # the same id with other labels
            api.call("monitoring.labels", labels=[{"request_id": rest[0], "label": 0}], source="retry-test",
                     batch_id="upload-7-0")
    finally:
        api.close()
    assert (first["stored"], first["unknown"], first["replayed"]) == (10, 1, False)
    assert again == first | {"replayed": True}
    assert count(site, "SELECT COUNT(*) FROM monitor_labels") == rows == 6_010
    assert count(site, "SELECT SUM(received_at) FROM monitor_labels") == stamps
    assert refused.value.exit_code == ExitCode.CONFLICT and refused.value.where == "batch_id"
    assert json.loads(count(site, "SELECT label FROM monitor_labels WHERE request_id=?", rest[0])) == 1
    assert count(site, "SELECT COUNT(*) FROM meta WHERE key='monitoring.label_batch:upload-7-0'") == 1


def test_monitor_run_on_the_server_and_status_the_same_both_ways(site):
    ran = remote(site, "monitor", "run", "--json")
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    [window] = report["windows"]
    assert (window["model"], window["drift"]["verdict"]) == ("scorer", "no reference")
    assert window["quality"]["verdict"] == "ok" and window["quality"]["rows"] == 500  # the window's labelled rows
    assert count(site, "SELECT COUNT(*) FROM monitor_windows WHERE pass_id=?", report["pass_id"]) == 2

    status = same_json(site, "monitor", "status", "scorer", "--history", "3")
    assert [w["pass_id"] for w in status["windows"]] == [report["pass_id"]] * 2
    assert same_json(site, "monitor", "status")["windows"] == status["windows"]
    table_here, table_there = embedded(site, "monitor", "status"), remote(site, "monitor", "status")
    assert table_here.returncode == table_there.returncode == 0
    assert table_here.stdout == table_there.stdout and "firing alerts: 0 (all clear)" in table_there.stdout


def test_cost_report_the_same_both_ways(site):
    doc = same_json(site, "cost", "report", "--by", "version", "--period", PERIOD)
    [group] = doc["groups"]
    assert (group["key"], group["predictions"]) == ("scorer v1", CAPTURED)
    by_team = same_json(site, "cost", "report", "--by", "team", "--period", PERIOD)
    assert by_team["budget"]["ml-core"]["monthly_usd"] == 200
    csv_here = embedded(site, "cost", "report", "--period", PERIOD, "--format", "csv")
    csv_there = remote(site, "cost", "report", "--period", PERIOD, "--format", "csv")
    assert csv_here.stdout == csv_there.stdout and csv_there.stdout.startswith("team,cost_usd,")
    bad = remote(site, "cost", "report", "--period", "fortnight")
    assert bad.returncode == 1 and "cannot read period 'fortnight'" in bad.stderr


def test_features_from_a_checkout_without_data_are_read_where_the_server_runs(site):
    client = site["client"]
    defs = "examples/features/definitions.py"
    assert not (client / "examples" / "features" / "data").exists()
    dry = remote(site, "features", "apply", "-d", defs, "--dry-run", cwd=client)
    assert dry.returncode == 0, dry.stderr
    assert "+ create    feature view  driver_stats@2" in dry.stdout and "Plan: 5 to create" in dry.stdout
    assert same_json(site, "features", "list") == []

    applied = remote(site, "features", "apply", "-d", defs, "--yes", cwd=client)
    assert applied.returncode == 0, applied.stderr
    assert "Applied. 5 created, 0 updated." in applied.stdout
    listed = same_json(site, "features", "list")
    assert [(r["view"], r["version"]) for r in listed] == [("customer_profile", 1), ("driver_stats", 1),
                                                           ("driver_stats", 2)]
    assert listed[1]["source"] == "examples/features/data/driver_stats.parquet"
    assert count(site, "SELECT applied_by FROM feature_views WHERE name='driver_stats' AND version=2") == USER
    plan = same_json(site, "features", "apply", "-d", defs, "--dry-run")
    assert plan["has_changes"] is False and plan["applied"] is False
    assert "No changes." in remote(site, "features", "apply", "-d", defs, "--yes", cwd=client).stdout

    lonely = embedded(site, "features", "list", cwd=client)  # the checkout has no ledger of its own
    assert lonely.returncode != 0 and "mlplat up" in lonely.stderr

    materialized = remote(site, "features", "materialize", "--start", "2024-03-01", "--end", "2024-03-31T00:00:00Z",
                          cwd=client)
    assert materialized.returncode == 0, materialized.stderr
    assert "driver_stats@2: 200 entities written" in materialized.stdout
    skew = same_json(site, "features", "skew", "driver_stats@2", "--seed", "3")
    assert skew["mismatches"] == 0 and skew["ok"] is True and skew["sampled_entities"] > 0


def test_unknown_things_exit_4_through_the_server(site):
    unknown = remote(site, "features", "skew", "driver_stat")
    assert unknown.returncode == 4, unknown.stderr
    assert "unknown feature view 'driver_stat'" in unknown.stderr and "driver_stats" in unknown.stderr
    version = remote(site, "features", "skew", "driver_stats@9")
    assert version.returncode == 4 and "has no version 9" in version.stderr


@pytest.mark.parametrize("path, body, field", [
    ("/monitoring/labels", {"labels": [{"request_id": "r-00000", "label": 0.5}]}, "labels.0.label"),
    ("/monitoring/labels", {"labels": [], "lables": []}, "lables"),
    ("/monitoring/labels", {"labels": [{"request_id": f"r-{i:05d}", "label": 1} for i in range(5_001)]}, "labels"),
    ("/monitoring/labels", {"labels": [{"request_id": "", "label": 1}]}, "labels.0.request_id"),
    ("/monitoring/passes", {"retrain": "sometimes"}, "retrain"),
    ("/features/apply", {"definitions": {"views": [{"name": "v", "entities": [], "features": []}]}},
     "definitions.views.0.source"),
    ("/features/materialize", {"start": "2024-01-01"}, "end"),
])
def test_a_malformed_request_is_refused_naming_the_field_and_writes_nothing(site, path, body, field):
    labels = count(site, "SELECT COUNT(*) FROM monitor_labels")
    windows = count(site, "SELECT COUNT(*) FROM monitor_windows")
    views = count(site, "SELECT COUNT(*) FROM feature_views")
    response = httpx.post(site["server"].url + "/api/v1" + path, json=body, timeout=30,
                          headers={"Mlplat-User": USER, "Mlplat-Api-Version": "1"})
    assert response.status_code == 422, response.text
    doc = response.json()
    assert doc["error"] == "InvalidRequest" and doc["exit_code"] == int(ExitCode.USAGE)
    assert field in [f["field"] for f in doc["details"]["fields"]] or doc["where"] == field, doc
    assert field in doc["message"]
    assert count(site, "SELECT COUNT(*) FROM monitor_labels") == labels
    assert count(site, "SELECT COUNT(*) FROM monitor_windows") == windows
    assert count(site, "SELECT COUNT(*) FROM feature_views") == views


def test_a_bad_skew_query_is_refused_naming_the_field(site):
    response = httpx.get(site["server"].url + "/api/v1/features/views/driver_stats/skew", params={"sample": "0"},
                         headers={"Mlplat-User": USER}, timeout=30)
    assert response.status_code == 422 and "sample" in response.json()["message"]


def test_the_dashboard_reads_the_same_figures_through_the_server(site):
    from mlplat.api.plane import EmbeddedPlane
    from mlplat.dashboard import data

    ctx = Context(project_dir=site["root"], _user=USER)
    spec = ctx.stack("dev")
    here = EmbeddedPlane(spec, ctx).call("dashboard.snapshot")
    api = site["server"].plane(spec, ctx)
    try:
        there = api.call("dashboard.snapshot")
    finally:
        api.close()
    # the month to date and the SLA's 30 days end when they are asked; the server's own uptime grows meanwhile
    moving = ("now", "cost", "sla", "adoption")
    assert {k: v for k, v in here.items() if k not in moving} == {k: v for k, v in there.items() if k not in moving}
    assert [f["key"] for f in here["sla"]["figures"]] == [f["key"] for f in there["sla"]["figures"]]
    assert here["adoption"]["rows"] == there["adoption"]["rows"]
    assert [w["model"] for w in there["drift"]] == ["scorer"]
    assert [(r["version"], r["predictions"]) for r in here["cost"]["versions"]] == [
        (r["version"], r["predictions"]) for r in there["cost"]["versions"]]
    assert data.snapshot(spec, ctx)["quality"]["scorer"][-1]["rows"] == 500
