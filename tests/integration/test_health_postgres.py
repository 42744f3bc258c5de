"""Health samples on a PostgreSQL ledger: the recorder writes them and the SLA reads them as on SQLite."""
from __future__ import annotations

import pytest

from mlplat.db import open_database
from mlplat.services import health, sla
from tests.pg import fresh_database

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

T0 = 1_790_000_000.0


def test_health_samples_round_trip_on_postgres(postgres, tmp_path):
    db = open_database(fresh_database(postgres), key_dir=tmp_path)
    db.migrate()
    now = [T0]
    for instance, stop in (("a", False), ("b", True)):
        recorder = health.HealthRecorder(db, component=health.CONTROL_PLANE, environment="dev",
                                         clock=lambda: now[0], instance=instance)
        recorder.begin()
        for _ in range(3):
            recorder.observe(200)
            now[0] += 30
            assert recorder.flush()
        if stop:
            recorder.stop()
        now[0] += 10  # a died here; b starts 10 s later
    conn = db.connect()
    try:
        rows = health.samples(conn, health.CONTROL_PLANE, T0, now[0])
        earlier = health.samples(conn, health.CONTROL_PLANE, T0 + 95, now[0])  # a's last row lies before
    finally:
        conn.close()
    assert [(r.instance, r.requests, r.stopped) for r in rows][-2:] == [("b", 1, False), ("b", 0, True)]
    result = sla.availability(rows, T0, now[0])
    assert result is not None and (result.up_s, result.down_s, result.requests, result.crashes) == (180, 10, 6, 1)
    assert {r.instance for r in earlier} == {"a", "b"}
