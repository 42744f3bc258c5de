"""The feature store through the CLI and a tracked training run, as a user drives it: apply with a diff,
lineage of a training set, refusal of a breaking change to a view a production model uses."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _copy_example(project: Path) -> Path:
    target = project / "examples" / "features"
    target.mkdir(parents=True)
    for name in ("definitions.py", "make_data.py", "train.py"):
        shutil.copy(REPO / "examples" / "features" / name, target / name)
    subprocess.run([sys.executable, str(target / "make_data.py")], check=True, capture_output=True, cwd=project)
    return target


def _mark_production(project: Path, run_id: str, model: str = "completion") -> None:
    """Record what the model registry records when a version trained by ``run_id`` reaches production."""
    conn = sqlite3.connect(project / ".mlplat" / "dev" / "platform.db")
    now = time.time()
    with conn:
        conn.execute("INSERT INTO model_versions(model, version, run_id, author, framework, source, manifest, "
                     "artifact_digest, seal, lineage, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                     (model, 1, run_id, "ds@example.com", "sklearn", "-", "{}", "d", "s", "{}", now))
        conn.execute("INSERT INTO model_stages(model, version, environment, stage, updated_at, updated_by) "
                     "VALUES (?,?,?,?,?,?)", (model, 1, "dev", "production", now, "ds@example.com"))
    conn.close()


def test_apply_train_lineage_and_breaking_change_refused(up_project, cli):
    project = up_project
    example = _copy_example(project)
    defs = "examples/features/definitions.py"

    dry = cli("features", "apply", "-d", defs, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "+ create    feature view  driver_stats@2" in dry.stdout and "Plan: 5 to create" in dry.stdout
    assert json.loads(cli("features", "list", "--json").stdout) == []

    applied = cli("features", "apply", "-d", defs, "--yes")
    assert applied.returncode == 0, applied.stderr
    assert "No changes." in cli("features", "apply", "-d", defs, "--yes").stdout

    trained = subprocess.run([sys.executable, str(example / "train.py"), "--stack", "dev"], cwd=project,
                             capture_output=True, text=True, env={**__import__("os").environ, "MLPLAT_PROJECT_DIR": str(project)})
    assert trained.returncode == 0, trained.stderr
    run_id = trained.stdout.split("run ")[1].split(":")[0]

    shown = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert shown["tags"]["mlplat.features.driver_stats"] == "2"
    assert shown["tags"]["mlplat.features.customer_profile"] == "1"
    artifact = project / ".mlplat" / "dev" / "artifacts"
    features_json = next(artifact.rglob("mlplat/features.json"))
    recorded = json.loads(features_json.read_text())["retrievals"][0]
    assert recorded["entity_rows"] == 5000 and {(v["view"], v["version"]) for v in recorded["views"]} == {
        ("driver_stats", 2), ("customer_profile", 1)}
    listed = {(r["view"], r["version"]): r for r in json.loads(cli("features", "list", "--json").stdout)}
    assert listed[("driver_stats", 2)]["runs"] == [run_id] and listed[("driver_stats", 1)]["runs"] == []

    # the model trained on driver_stats@2 goes to production: a breaking change to v2 is refused
    _mark_production(project, run_id)
    text = (example / "definitions.py").read_text()
    breaking = text.replace('        Feature("avg_daily_trips", "float64", "Trips per day."),\n', "")
    assert breaking != text
    (example / "definitions.py").write_text(breaking)
    before = (project / ".mlplat" / "dev" / "platform.db").read_bytes()
    refused = cli("features", "apply", "-d", defs, "--yes")
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert "completion v1 (production in dev)" in refused.stderr and "driver_stats version=3" in refused.stderr
    assert "feature 'avg_daily_trips' removed [breaking]" in refused.stdout
    listed = {(r["view"], r["version"]): r for r in json.loads(cli("features", "list", "--json").stdout)}
    assert "avg_daily_trips:float64" in listed[("driver_stats", 2)]["features"]
    assert listed[("driver_stats", 2)]["production_models"] == ["completion v1 (production in dev)"]
    del before

    # the same change declared as a new version is fine, and version 2 stays as it was
    (example / "definitions.py").write_text(text + breaking.split("driver_stats_v2 = ")[1].join(
        ["\ndriver_stats_v3 = ", ""]).replace("version=2", "version=3"))
    bumped = cli("features", "apply", "-d", defs, "--yes")
    assert bumped.returncode == 0, bumped.stdout + bumped.stderr
    assert "+ create    feature view  driver_stats@3" in bumped.stdout

    materialized = cli("features", "materialize", "--start", "2024-03-01", "--end", "2024-03-31T00:00:00Z")
    assert materialized.returncode == 0, materialized.stderr
    assert "driver_stats@3: 200 entities written" in materialized.stdout
    skew = cli("features", "skew", "driver_stats@2", "--json")
    assert skew.returncode == 0, skew.stderr
    assert json.loads(skew.stdout)["mismatches"] == 0


def test_cli_errors_have_their_exit_codes_and_write_nothing(up_project, cli):
    project = up_project
    _copy_example(project)
    missing = cli("features", "apply", "--yes")
    assert missing.returncode == 3 and "features/definitions.py" in missing.stderr
    broken = project / "broken.py"
    broken.write_text("from mlplat.features import Feature\nFeature('x', 'float65')\n")
    bad = cli("features", "apply", "-d", str(broken), "--yes")
    assert bad.returncode == 3 and "did you mean 'float64'" in bad.stderr
    wrong_type = project / "wrong.py"
    wrong_type.write_text((REPO / "examples" / "features" / "definitions.py").read_text().replace(
        'Feature("segment", "string")', 'Feature("segment", "float64")'))
    result = cli("features", "apply", "-d", str(wrong_type), "--yes")
    assert result.returncode == 1 and "feature 'segment' is declared float64 but the source has VARCHAR" in result.stderr
    assert json.loads(cli("features", "list", "--json").stdout) == []
    unknown = cli("features", "skew", "driver_stat")
    assert unknown.returncode == 4 and "no views are registered" in unknown.stderr
    window = cli("features", "materialize", "--start", "2024-03-02", "--end", "2024-03-01")
    assert window.returncode in (1, 4)
    assert cli("features", "materialize", "--end", "now").returncode == 2
