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
            audit.append(c, actor=f"user{i}@example.com", action="approval.approved", model="m", version=i + 1,
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
    entry = audit.append(conn, actor="x@example.com", action="deployment.created", model="m", version=1,
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
