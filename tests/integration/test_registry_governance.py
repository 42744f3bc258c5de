"""Registration, the gate, approvals and the platform's refusal of tampering, on a real local stack.

One project per module (``registered``): version 1 of ``scorer`` (critical) by ds@example.com.
Tests that change files or the database restore them before they return.
"""
from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest

from mlplat.errors import CheckFailed, Denied, IntegrityError, TrackingRequired
from tests.integration.support_registry import APPROVER, AUTHOR, cli_in, db, in_project, registered, spec_ctx  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("registry-governance")]


def test_registration_records_lineage_manifest_and_reference(registered):
    conn = db(registered)
    row = conn.execute("SELECT * FROM model_versions WHERE model='scorer' AND version=1").fetchone()
    lineage = json.loads(row["lineage"])
    assert row["author"] == AUTHOR and row["framework"] == "sklearn" and row["task"] == "classification"
    assert lineage["datasets"]["train"]["sha256"] and lineage["environment"]["hash"]
    assert any(r.startswith("scikit-learn==") for r in lineage["environment"]["requirements"])
    assert json.loads(row["signature"])["inputs"]
    files = json.loads(row["manifest"])["files"]
    assert {"MLmodel", "model.skops", "reference.parquet", "profile.json", "requirements.txt"} <= set(files)
    ref = pd.read_parquet(f"{row['source']}/reference.parquet")
    assert len(ref) == 900 and "__prediction__" in ref.columns and "label" not in ref.columns
    assert ref["__prediction__"].between(0, 1).all()  # probability of the positive class
    profile = json.loads(open(f"{row['source']}/profile.json").read())
    assert profile["columns"]["x0"]["kind"] == "numerical" and "p50" in profile["columns"]["x0"]["quantiles"]
    # MLflow knows the version too, with the digest as a tag
    assert conn.execute("SELECT stage FROM model_stages WHERE model='scorer'").fetchone()[0] == "dev"
    # `mlplat up` recorded the governance in force first, then the registration was audited
    assert [r[0] for r in conn.execute("SELECT action FROM audit_log WHERE seq <= 2 ORDER BY seq")] == [
        "governance.applied", "model.registered"]
    # no pip inference: requirements.txt holds exactly the pins from the run's environment
    reqs = open(f"{row['source']}/requirements.txt").read().split()
    assert reqs == lineage["environment"]["requirements"]


def test_log_model_outside_a_run_is_refused(in_project):
    import mlplat

    with pytest.raises(TrackingRequired):
        mlplat.log_model(object(), name="scorer")


def test_registration_with_a_bad_holdout_writes_nothing(in_project):
    from sklearn.dummy import DummyClassifier

    import mlplat

    conn = db(in_project)
    before = conn.execute("SELECT count(*) FROM model_versions").fetchone()[0]
    X = pd.DataFrame({"x0": [0.0, 1.0, 2.0, 3.0]})
    model = DummyClassifier().fit(X, [0, 1, 0, 1])
    from mlplat.services.gate import HoldoutError

    with mlplat.start_run(experiment="bad-holdout", autolog=False) as run:
        with pytest.raises(HoldoutError, match="not found"):
            run.log_model(model, name="scorer", holdout={"path": "data/nope.parquet", "label": "label"})
        with pytest.raises(HoldoutError, match="label column 'target'"):
            run.log_model(model, name="scorer", holdout={"path": "data/holdout.parquet", "label": "target"})
    assert conn.execute("SELECT count(*) FROM model_versions").fetchone()[0] == before


def test_gate_failure_names_the_check_and_margin_and_changes_no_stage(registered):
    result = cli_in(registered, "models", "promote", "scorer", "1", "--to", "staging", "--stack", "strict")
    assert result.returncode == 1, result.stderr
    assert "failed the evaluation gate" in result.stderr and "roc_auc" in result.stderr
    assert "below the minimum 0.9990 by" in result.stderr
    conn = db(registered)
    assert conn.execute("SELECT stage FROM model_stages WHERE model='scorer' AND version=1").fetchone()[0] == "dev"
    assert conn.execute("SELECT passed FROM gate_reports ORDER BY created_at DESC").fetchone()[0] == 0
    assert conn.execute("SELECT state FROM promotions ORDER BY id DESC").fetchone()[0] == "failed"


def test_gate_passes_and_report_digest_is_reproducible(in_project):
    from mlplat.services import gate

    spec, ctx = spec_ctx(in_project)
    first = gate.run_gate(spec, ctx, "scorer", 1, "dev")
    second = gate.run_gate(spec, ctx, "scorer", 1, "dev", record=False)
    assert first["passed"] and first["digest"] == second["digest"]
    assert set(first["metrics"]) >= {"accuracy", "precision", "recall", "f1", "roc_auc", "brier", "ece"}


def test_missing_and_wrong_column_holdout_at_the_gate(in_project):
    from mlplat.services import gate

    spec, ctx = spec_ctx(in_project)
    holdout = in_project / "data" / "holdout.parquet"
    original = holdout.read_bytes()
    try:
        pd.read_parquet(holdout).drop(columns=["x3"]).to_parquet(holdout, index=False)
        with pytest.raises(gate.HoldoutError, match="lacks feature column.*x3"):
            gate.run_gate(spec, ctx, "scorer", 1, "dev", record=False)
        holdout.unlink()
        with pytest.raises(gate.HoldoutError, match="not found"):
            gate.run_gate(spec, ctx, "scorer", 1, "dev", record=False)
    finally:
        holdout.write_bytes(original)


def test_approval_rules(in_project):
    from mlplat.services import approvals, gate

    spec, ctx = spec_ctx(in_project)
    gate.run_gate(spec, ctx, "scorer", 1, "dev")
    result = cli_in(in_project, "models", "approve", "scorer", "1", "--reason", "mine", user=AUTHOR)
    assert result.returncode == 6 and "four-eyes" in result.stderr, result.stderr
    result = cli_in(in_project, "models", "approve", "scorer", "1", "--reason", "sure", user="mallory@example.com")
    assert result.returncode == 6 and "not an approver" in result.stderr
    result = cli_in(in_project, "models", "approve", "scorer", "1", "--reason", "   ", user=APPROVER)
    assert result.returncode != 0 and "reason is required" in result.stderr
    conn = db(in_project)
    assert conn.execute("SELECT count(*) FROM approvals").fetchone()[0] == 0
    result = cli_in(in_project, "models", "approve", "scorer", "1", "--reason", "validated", user=APPROVER)
    assert result.returncode == 0, result.stderr
    again = cli_in(in_project, "models", "reject", "scorer", "1", "--reason", "changed my mind", user=APPROVER)
    assert again.returncode == 5 and "final" in again.stderr
    st = approvals.status(conn, spec, "scorer", 1, "dev")
    assert st["state"] == "approved" and st["approvals"] == 1


def test_approval_is_void_after_the_artifact_changes(in_project):
    """Re-sealing new files for a version (an admin re-upload with the key) voids earlier approvals."""
    from mlplat.services import approvals, deployability, manifest
    from mlplat.services import registry as reg

    spec, ctx = spec_ctx(in_project)
    conn = db(in_project)
    row = reg.version_row(conn, "scorer", 1)
    key = reg.registry_for(spec, ctx).signing_key()
    path = f"{row['source']}/MLmodel"
    original = open(path, "rb").read()
    backup = in_project / "platform.backup.db"
    src = sqlite3.connect(in_project / ".mlplat/dev/platform.db")
    src.backup(sqlite3.connect(backup))
    try:
        if approvals.status(conn, spec, "scorer", 1, "dev")["state"] != "approved":
            test_approval_rules(in_project)
        with open(path, "ab") as handle:
            handle.write(b"\n# re-uploaded\n")
        doc = manifest.build(__import__("pathlib").Path(row["source"]), model="scorer", run_id=row["run_id"],
                             framework="sklearn")
        conn.execute("UPDATE model_versions SET manifest=?, artifact_digest=?, seal=? WHERE model='scorer' AND version=1",
                     (json.dumps(doc, sort_keys=True, separators=(",", ":")), manifest.digest(doc),
                      manifest.seal(doc, key)))
        st = approvals.status(conn, spec, "scorer", 1, "dev")
        assert st["state"] == "no_gate" and st["approvals"] == 0 and not st["decisions"][0]["valid"]
        with pytest.raises(Denied):
            deployability.assert_deployable(spec, ctx, "scorer", 1, "dev")
    finally:
        open(path, "wb").write(original)
        sqlite3.connect(backup).backup(sqlite3.connect(in_project / ".mlplat/dev/platform.db"))


def test_tampered_artifact_is_refused_at_load_and_promotion(in_project):
    from mlplat.services import registry as reg

    spec, ctx = spec_ctx(in_project)
    folder = reg.verified_model_dir(spec, ctx, "scorer", 1)
    target = folder / "model.skops"
    original = target.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    try:
        target.write_bytes(bytes(flipped))
        with pytest.raises(IntegrityError, match="'model.skops'.*modified"):
            reg.verified_model_dir(spec, ctx, "scorer", 1)
        result = cli_in(in_project, "models", "promote", "scorer", "1", "--to", "staging")
        assert result.returncode == 8 and "model.skops" in result.stderr, result.stderr
    finally:
        target.write_bytes(original)
    assert reg.verified_model_dir(spec, ctx, "scorer", 1) == folder


def test_unknown_model_and_version(registered):
    result = cli_in(registered, "models", "show", "scorr", "1")
    assert result.returncode == 4 and "did you mean 'scorer'" in result.stderr
    result = cli_in(registered, "models", "promote", "scorer", "9", "--to", "staging")
    assert result.returncode == 4 and "no version 9" in result.stderr


def test_alias_set_directly_in_mlflow_is_not_servable(in_project):
    from mlflow.tracking import MlflowClient

    from mlplat.services import deployability

    spec, ctx = spec_ctx(in_project)
    uri = f"sqlite:///{in_project}/.mlplat/dev/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.set_registered_model_alias("scorer", "production", "1")
    try:
        with pytest.raises(Denied, match="alias @production, set outside mlplat"):
            deployability.assert_deployable(spec, ctx, "scorer", 1, "dev")
        shown = cli_in(in_project, "models", "show", "scorer", "1", "--json")
        assert "set outside mlplat" in json.loads(shown.stdout)["alias_warnings"][0]
    finally:
        client.delete_registered_model_alias("scorer", "production")


def test_audit_verify_detects_tampering_through_the_cli(registered):
    assert cli_in(registered, "audit", "verify").returncode == 0
    path = registered / ".mlplat/dev/platform.db"
    backup = registered / "audit.backup.db"
    sqlite3.connect(path).backup(sqlite3.connect(backup))
    try:
        for tamper in (["UPDATE audit_log SET actor='someone-else@example.com' WHERE seq=1"],
                       ["DELETE FROM audit_log WHERE seq=2"],
                       ["UPDATE audit_log SET seq=-1 WHERE seq=1", "UPDATE audit_log SET seq=1 WHERE seq=2",
                        "UPDATE audit_log SET seq=2 WHERE seq=-1"]):
            sqlite3.connect(backup).backup(sqlite3.connect(path))
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("DROP TRIGGER audit_log_no_update")
            conn.execute("DROP TRIGGER audit_log_no_delete")
            for statement in tamper:
                conn.execute(statement)
            conn.close()
            result = cli_in(registered, "audit", "verify")
            assert result.returncode == 8, (tamper, result.stdout, result.stderr)
            assert "tampered" in result.stderr
    finally:
        sqlite3.connect(backup).backup(sqlite3.connect(path))
    assert cli_in(registered, "audit", "verify").returncode == 0
