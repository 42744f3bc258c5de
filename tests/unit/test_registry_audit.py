"""The audit log's hash chain: appends link, and every kind of tampering is reported."""
from __future__ import annotations

import pytest

from mlplat.db import Database
from mlplat.services import audit


@pytest.fixture
def conn(tmp_path):
    db = Database(tmp_path / "platform.db")
    db.migrate()
    c = db.connect()
    for i in range(5):
        with db.transaction(c):
            audit.append(c, method="os-user", actor=f"user{i}@example.com", action="approval.approved", model="m", version=i + 1,
                         environment="dev", reason=f"reason {i}", evidence={"i": i})
    yield c
    c.close()


def _untrigger(conn):
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("DROP TRIGGER audit_log_no_delete")


def test_intact_chain_verifies_and_links(conn):
    result = audit.verify(conn)
    assert result.ok and result.entries == 5, result.problems
    rows = audit.entries(conn)
    assert rows[0]["prev_hash"] == audit.GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(rows, rows[1:]))
    assert [r["seq"] for r in audit.entries(conn, model="m", limit=2)] == [4, 5]


def test_append_outside_a_transaction_takes_the_lock_itself(conn):
    entry = audit.append(conn, method="os-user", actor="x@example.com", action="deployment.created", model="m", version=1,
                         environment="dev", reason="r", evidence={})
    assert entry["seq"] == 6 and not conn.in_transaction and audit.verify(conn).ok


def test_triggers_refuse_update_and_delete(conn):
    import sqlite3

    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_log SET reason='x' WHERE seq=2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_log WHERE seq=2")


def test_edited_entry_is_detected(conn):
    _untrigger(conn)
    conn.execute("UPDATE audit_log SET reason='approved after all' WHERE seq=3")
    result = audit.verify(conn)
    assert not result.ok
    assert any("#3" in p and "edited" in p for p in result.problems), result.problems


def test_deleted_entry_is_detected(conn):
    _untrigger(conn)
    conn.execute("DELETE FROM audit_log WHERE seq=2")
    problems = audit.verify(conn).problems
    assert any("missing" in p or "link" in p for p in problems), problems


def test_deleted_tail_is_detected_by_the_head(conn):
    _untrigger(conn)
    conn.execute("DELETE FROM audit_log WHERE seq=5")
    problems = audit.verify(conn).problems
    assert any("head" in p for p in problems), problems


def test_reordered_entries_are_detected(conn):
    _untrigger(conn)
    conn.execute("UPDATE audit_log SET seq=100 WHERE seq=2")
    conn.execute("UPDATE audit_log SET seq=2 WHERE seq=3")
    conn.execute("UPDATE audit_log SET seq=3 WHERE seq=100")
    problems = audit.verify(conn).problems
    assert any("link" in p for p in problems), problems


def test_recomputed_hash_of_an_edited_entry_still_breaks_the_next_link(conn):
    _untrigger(conn)
    row = dict(conn.execute("SELECT * FROM audit_log WHERE seq=3").fetchone())
    row["reason"] = "forged"
    row["hash"] = audit._row_hash(row)
    conn.execute("UPDATE audit_log SET reason=?, hash=? WHERE seq=3", (row["reason"], row["hash"]))
    problems = audit.verify(conn).problems
    assert any("#4" in p and "link" in p for p in problems), problems


# --- the keyed chain ----------------------------------------------------------------------------


def _legacy_chain(db, n: int) -> None:
    """Entries as versions before the keyed chain wrote them: plain sha256, no scheme, no key id."""
    conn = db.connect()
    prev = audit.GENESIS
    with db.transaction(conn):
        for seq in range(1, n + 1):
            row = {"seq": seq, "ts": float(seq), "actor": "old@example.com", "action": "model.registered", "model": "m",
                   "version": seq, "environment": "dev", "reason": "legacy", "evidence": "{}", "digest": "d" * 64,
                   "prev_hash": prev}
            row["hash"] = audit._row_hash(row)
            conn.execute("INSERT INTO audit_log (seq, ts, actor, action, model, version, environment, reason, evidence, "
                         "digest, prev_hash, hash) VALUES (:seq, :ts, :actor, :action, :model, :version, :environment, "
                         ":reason, :evidence, :digest, :prev_hash, :hash)", row)
            conn.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                         "seq = excluded.seq, hash = excluded.hash", (seq, row["hash"]))
            prev = row["hash"]
    conn.close()


def test_entries_are_keyed_with_the_stacks_secret_and_anchored_by_a_signed_head_file(conn, tmp_path):
    import json
    import stat

    key_file = tmp_path / "keys" / "platform.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = audit.derive_key(key_file.read_bytes().strip())
    rows = audit.entries(conn)
    assert {(r["scheme"], r["key_id"]) for r in rows} == {(audit.SCHEME_KEYED, key.key_id)}
    result = audit.verify(conn)
    assert result.schemes == {audit.SCHEME_KEYED: 5} and result.key_id == key.key_id and result.head_file == "ok"
    head = json.loads((tmp_path / audit.HEAD_FILE).read_text())
    assert (head["seq"], head["hash"], head["key_id"]) == (5, rows[-1]["hash"], key.key_id)
    assert stat.S_IMODE((tmp_path / audit.HEAD_FILE).stat().st_mode) == 0o600


def test_a_chain_rewritten_without_the_key_is_detected(conn):
    """Recomputing every hash (the attack plain SHA-256 allowed) no longer yields a valid chain."""
    _untrigger(conn)
    prev = audit.GENESIS
    for row in [dict(r) for r in conn.execute("SELECT * FROM audit_log ORDER BY seq")]:
        row["prev_hash"] = prev
        row["reason"] = "rewritten" if row["seq"] == 2 else row["reason"]
        row["hash"] = audit._row_hash(row)
        conn.execute("UPDATE audit_log SET reason=?, prev_hash=?, hash=? WHERE seq=?",
                     (row["reason"], row["prev_hash"], row["hash"], row["seq"]))
        prev = row["hash"]
    conn.execute("UPDATE audit_head SET hash=? WHERE id=1", (prev,))
    problems = audit.verify(conn).problems
    assert sum("keyed hash" in p for p in problems) == 5, problems
    # downgrading the entries to the unkeyed scheme as well: the signed head file still names the real tail
    conn.execute("UPDATE audit_log SET scheme=NULL, key_id=NULL")
    problems = audit.verify(conn).problems
    assert not any("keyed hash" in p for p in problems)
    assert any("#5 differs from the one the signed head file names" in p for p in problems), problems


def test_a_chain_rekeyed_with_another_secret_is_detected(conn):
    _untrigger(conn)
    other = audit.derive_key(b"f" * 64)
    prev = audit.GENESIS
    for row in [dict(r) for r in conn.execute("SELECT * FROM audit_log ORDER BY seq")]:
        row["prev_hash"], row["key_id"] = prev, other.key_id
        row["hash"] = audit._row_mac(other, row)
        conn.execute("UPDATE audit_log SET key_id=?, prev_hash=?, hash=? WHERE seq=?",
                     (row["key_id"], row["prev_hash"], row["hash"], row["seq"]))
        prev = row["hash"]
    problems = audit.verify(conn).problems
    assert any("#1" in p and "not the stack's key" in p for p in problems), problems


def test_cutting_the_tail_and_moving_the_head_is_caught_by_the_head_file(conn):
    _untrigger(conn)
    fourth = conn.execute("SELECT hash FROM audit_log WHERE seq=3").fetchone()[0]
    conn.execute("DELETE FROM audit_log WHERE seq >= 4")
    conn.execute("UPDATE audit_head SET seq=3, hash=? WHERE id=1", (fourth,))
    result = audit.verify(conn)
    assert not result.ok and result.head_file == "truncated"
    assert any("head file names entry #5 but the log ends at #3" in p for p in result.problems), result.problems


def test_a_forged_or_deleted_head_file_is_reported(conn, tmp_path):
    import json

    path = tmp_path / audit.HEAD_FILE
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "seq": 2, "hash": audit.entries(conn)[1]["hash"]}))
    assert any("not signed with the stack's key" in p for p in audit.verify(conn).problems)
    path.unlink()
    assert any("head file" in p and "missing" in p for p in audit.verify(conn).problems)


def test_a_rolled_back_append_does_not_move_the_head_file(conn, tmp_path):
    import json

    db = Database(tmp_path / "platform.db")
    before = (tmp_path / audit.HEAD_FILE).read_text()
    with pytest.raises(RuntimeError):
        with db.transaction(conn):
            audit.append(conn, method="os-user", actor="x@example.com", action="approval.approved", model="m", reason="r")
            raise RuntimeError("the decision failed after its audit entry")
    assert (tmp_path / audit.HEAD_FILE).read_text() == before and audit.verify(conn).ok
    with db.transaction(conn):
        audit.append(conn, method="os-user", actor="x@example.com", action="approval.approved", model="m", reason="r")
    assert json.loads((tmp_path / audit.HEAD_FILE).read_text())["seq"] == 6


def test_a_missing_key_under_keyed_entries_is_never_replaced(conn, tmp_path):
    from mlplat.errors import IntegrityError

    (tmp_path / "keys" / "platform.key").unlink()
    with pytest.raises(IntegrityError, match="key is missing"):
        audit.append(conn, method="os-user", actor="x@example.com", action="approval.approved", model="m", reason="r")
    assert not (tmp_path / "keys" / "platform.key").exists()
    assert any("key is missing" in p for p in audit.verify(conn).problems)


def test_a_legacy_chain_still_verifies_and_the_keyed_entries_continue_it(tmp_path):
    db = Database(tmp_path / "platform.db")
    db.migrate()
    _legacy_chain(db, 3)
    conn = db.connect()
    try:
        result = audit.verify(conn)
        assert result.ok and result.schemes == {audit.SCHEME_LEGACY: 3} and result.head_file == "absent", result
        entry = audit.append(conn, method="os-user", actor="new@example.com", action="approval.approved", model="m", reason="r")
        assert entry["prev_hash"] == audit.entries(conn)[2]["hash"] and entry["scheme"] == audit.SCHEME_KEYED
        result = audit.verify(conn)
        assert result.ok and result.schemes == {audit.SCHEME_LEGACY: 3, audit.SCHEME_KEYED: 1}, result.problems
        assert "3 legacy (sha256" in result.describe_schemes() and "1 keyed (hmac-sha256" in result.describe_schemes()
        # a legacy entry edited after the upgrade: its own hash may be recomputed, the keyed link is not
        _untrigger(conn)
        row = dict(conn.execute("SELECT * FROM audit_log WHERE seq=2").fetchone())
        row["reason"] = "forged"
        row["hash"] = audit._row_hash(row)
        conn.execute("UPDATE audit_log SET reason=?, hash=? WHERE seq=2", (row["reason"], row["hash"]))
        problems = audit.verify(conn).problems
        assert any("#3" in p and "link" in p for p in problems), problems
    finally:
        conn.close()


def test_an_unkeyed_entry_after_keyed_ones_is_a_forgery(conn):
    last = audit.entries(conn)[-1]
    row = {"seq": 6, "ts": 1.0, "actor": "mallory@example.com", "action": "approval.approved", "model": "m",
           "version": 9, "environment": "dev", "reason": "r", "evidence": "{}", "digest": "d" * 64,
           "prev_hash": last["hash"]}
    row["hash"] = audit._row_hash(row)
    conn.execute("INSERT INTO audit_log (seq, ts, actor, action, model, version, environment, reason, evidence, digest, "
                 "prev_hash, hash) VALUES (:seq, :ts, :actor, :action, :model, :version, :environment, :reason, "
                 ":evidence, :digest, :prev_hash, :hash)", row)
    conn.execute("UPDATE audit_head SET seq=6, hash=? WHERE id=1", (row["hash"],))
    problems = audit.verify(conn).problems
    assert any("#6" in p and "legacy scheme after keyed entries" in p for p in problems), problems


class _AppendsBefore:
    """A connection that lets another writer append (and write the head file) just before ``verify``
    reads the given statement: the interleaving of a reader and a writer on a busy ledger."""

    def __init__(self, conn, path, marker: str):
        self.conn, self.path, self.marker, self.done = conn, path, marker, False
        self.key_dir = path.parent  # where the key and the head file are, as a PostgreSQL ledger's connection says

    def execute(self, sql, *args):
        if not self.done and sql.startswith(self.marker):
            self.done = True
            db = Database(self.path)
            other = db.connect()
            with db.transaction(other):
                audit.append(other, method="system", actor="controller", action="rollout.advanced", model="m")
            other.close()
        return self.conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.conn, name)


@pytest.mark.parametrize("marker", ["SELECT seq, hash FROM audit_head", "SELECT * FROM audit_log"])
def test_an_append_while_the_chain_is_read_is_not_taken_for_tampering(conn, tmp_path, marker):
    racing = _AppendsBefore(conn, tmp_path / "platform.db", marker)
    result = audit.verify(racing)
    assert racing.done and result.ok, result.problems
    assert audit.verify(conn).ok and audit.verify(conn).entries == 6


def test_an_entry_beyond_the_head_that_no_head_covers_is_still_reported(conn):
    _untrigger(conn)
    last = conn.execute("SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    conn.execute("INSERT INTO audit_log (seq, ts, actor, action, model, version, environment, reason, evidence, digest, "
                 "prev_hash, hash, scheme, key_id, auth_method) VALUES (6, 1.0, 'mallory', 'approval.approved', 'm', 9, "
                 "'dev', 'x', '{}', 'd', ?, 'h', ?, ?, 'oidc')", (last["hash"], last["scheme"], last["key_id"]))
    problems = audit.verify(conn).problems
    assert any("the chain head names entry #5 but the last entry is #6" in p for p in problems), problems
