"""The SLA's measurements on their own: availability from health samples (ready, not ready, an unclean stop,
workers overlapping), the overhead histogram's p99 bound, nearest-rank p95, the health recorder's rows
(injected clock) and the adoption report's bookkeeping (owners, rows, trend buckets)."""
from __future__ import annotations

import json

import pytest

from mlplat.contracts import ServedEndpoint
from mlplat.db import Database
from mlplat.services import adoption, health, sla

T0 = 1_790_000_000.0  # 2026-09-21 (a Monday 14:13 UTC)


def sample(instance: str, start: float, end: float, *, ready: bool = True, requests: int = 0, errors: int = 0,
           stopped: bool = False, started_at: float | None = None, environment: str = "dev") -> health.Sample:
    return health.Sample(component=health.GATEWAY, environment=environment, instance=instance,
                         started_at=started_at if started_at is not None else start, window_start=start,
                         window_end=end, ready=ready, requests=requests, errors=errors,
                         overhead=tuple(health.empty_histogram()), stopped=stopped)


def test_a_clean_stop_is_not_downtime_and_a_crash_is_down_until_the_next_process_starts():
    a = [sample("a", T0 + i * 60, T0 + (i + 1) * 60, started_at=T0, requests=100, errors=1) for i in range(10)]
    # a dies at T0+600 without its last row; b starts 300 s later, is not ready for its first minute, stops cleanly
    b = [sample("b", T0 + 900, T0 + 960, ready=False, started_at=T0 + 900),
         sample("b", T0 + 960, T0 + 1200, started_at=T0 + 900, requests=300),
         sample("b", T0 + 1200, T0 + 1260, started_at=T0 + 900, stopped=True)]
    # after b's clean stop nothing runs until the period ends: not downtime
    result = sla.availability(a + b, T0, T0 + 5000)
    assert result is not None
    assert (result.up_s, result.not_ready_s, result.down_s) == (600 + 300, 60, 300)
    assert result.time_share == pytest.approx(900 / 1260)
    assert (result.requests, result.errors, result.crashes, result.instances) == (1300, 10, 1, 2)
    assert result.request_share == pytest.approx(1 - 10 / 1300)


def test_workers_overlapping_count_once_and_a_live_process_is_up_until_now():
    w1 = [sample("w1", T0 + i * 30, T0 + (i + 1) * 30, started_at=T0) for i in range(4)]
    w2 = [sample("w2", T0 + 15 + i * 30, T0 + 15 + (i + 1) * 30, started_at=T0 + 15) for i in range(4)]
    # both still run: their last rows are within two intervals of the period's end
    result = sla.availability(w1 + w2, T0, T0 + 150)
    assert result is not None and (result.up_s, result.down_s, result.crashes) == (150, 0, 0)
    # seen much later without a new row, both died: down from the later of their last rows
    later = sla.availability(w1 + w2, T0, T0 + 1000)
    assert later is not None and later.crashes == 2
    assert later.up_s == 135 and later.down_s == 1000 - 135


def test_interval_arithmetic():
    assert sla.union([(5, 7), (1, 3), (2, 4), (9, 9)]) == [(1, 4), (5, 7)]
    assert sla.subtract([(0, 10)], [(2, 3), (5, 7)]) == [(0, 2), (3, 5), (7, 10)]
    assert sla.clip([(0, 10), (20, 30)], 5, 25) == [(5, 10), (20, 25)]


def test_p99_is_the_upper_bound_of_its_bucket_and_p95_the_nearest_rank():
    histogram = health.empty_histogram()
    histogram[health.bucket_of(0.8)] = 98  # ≤ 1 ms
    histogram[health.bucket_of(4.0)] = 2  # ≤ 5 ms
    assert health.quantile_upper_bound(histogram, 0.98) == 1.0
    assert health.quantile_upper_bound(histogram, 0.99) == 5.0
    assert health.quantile_upper_bound(health.empty_histogram(), 0.99) is None
    histogram[-1] = 100
    assert health.quantile_upper_bound(histogram, 0.99) == float("inf")
    assert sla.nearest_rank([3.0, 1.0, 2.0, 10.0], 0.95) == 10.0
    assert sla.nearest_rank([float(i) for i in range(1, 101)], 0.95) == 95.0
    assert sla.nearest_rank([], 0.95) is None


def test_the_recorder_writes_one_row_per_window_and_marks_a_clean_stop(tmp_path):
    db = Database(tmp_path / "platform.db")
    db.migrate()
    now = [T0]
    recorder = health.HealthRecorder(db, component=health.GATEWAY, environment="dev", clock=lambda: now[0],
                                     ready=lambda: now[0] < T0 + 100, instance="test:1")
    recorder.begin()
    for ms in (0.3, 0.9, 30.0):
        recorder.observe(200, ms)
    recorder.observe(503, 1.5)
    now[0] = T0 + 60
    assert recorder.flush()
    now[0] = T0 + 120
    recorder.stop()
    recorder.stop()  # once
    conn = db.connect()
    try:
        rows = health.samples(conn, health.GATEWAY, T0, T0 + 200)
    finally:
        conn.close()
    assert [(r.window_start, r.window_end, r.ready, r.requests, r.errors, r.stopped) for r in rows] == [
        (T0, T0 + 60, True, 4, 1, False), (T0 + 60, T0 + 120, False, 0, 0, True)]
    overhead = list(rows[0].overhead)
    assert overhead[health.bucket_of(0.3)] == 1 and overhead[health.bucket_of(30.0)] == 1 and sum(overhead) == 4


def test_a_ledger_without_the_table_is_left_alone(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    sqlite3.connect(path).close()
    recorder = health.HealthRecorder(path, component=health.GATEWAY, environment="dev", clock=lambda: T0)
    assert recorder.flush() is True  # nothing to write to, nothing raised
    assert recorder.flush() is False


def test_adoption_rows_owners_and_trend_from_an_inventory_without_a_ledger():
    endpoints = [
        ServedEndpoint("mlplat-fraud-production-scorer", True, {"team": "fraud", "environment": "production"},
                       created_at=T0 - 86400 * 40, model="scorer"),
        ServedEndpoint("churn-legacy", False, {"team": "fraud", "environment": "production", "owner": "bob@x.io"},
                       created_at=T0 - 86400 * 3),
        ServedEndpoint("adhoc", False, {}, created_at=T0 - 86400 * 100),
    ]
    report = adoption.build([], [adoption.Inventory("aws", "123/eu-west-1", endpoints)], now=T0, trend="month",
                            buckets=3)
    doc = report.to_dict()
    rows = {(r["team"], r["environment"]): r for r in doc["rows"]}
    assert rows[("fraud", "production")]["managed"] == 1 and rows[("fraud", "production")]["share"] == 0.5
    assert rows[("fraud", "production")]["owners"] == ["bob@x.io"]
    assert rows[("(untagged)", "(untagged)")]["owners"] == ["unknown (no owner tag)"]
    assert doc["share"] == pytest.approx(1 / 3)
    assert [p["period"] for p in doc["trend"]["points"]] == ["2026-07", "2026-08", "2026-09"]
    assert [p["unmanaged"] for p in doc["trend"]["points"]] == [1, 1, 2]
    assert json.loads(json.dumps(doc)) == doc


def test_week_buckets_end_on_mondays():
    ends = adoption.bucket_ends(T0, "week", 2)
    assert [label for label, _ in ends] == ["2026-W38", "2026-W39"]
    assert ends[-1][1] == T0 and ends[0][1] == pytest.approx(T0 - (T0 % 86400) - 0)  # Monday 00:00 UTC


def test_time_to_production_and_interventions_per_model(tmp_path):
    from types import SimpleNamespace

    from mlplat.services import audit

    db = Database(tmp_path / "platform.db")
    db.migrate()
    conn = db.connect()
    try:
        with db.transaction(conn):
            for version, run in ((1, "run-a"), (2, "run-b")):
                conn.execute("INSERT INTO model_versions (model, version, run_id, author, framework, source, manifest, "
                             "artifact_digest, seal, lineage, created_at) VALUES ('scorer', ?, ?, 'a@x.io', 'sklearn', "
                             "'-', '{}', 'd', 's', '{}', ?)", (version, run, T0 - 86400 * (4 - version)))
            conn.execute("INSERT INTO approvals (model, version, environment, approver, decision, reason, "
                         "artifact_digest, gate_digest, created_at) VALUES ('scorer', 1, 'dev', 'r@x.io', 'approved', "
                         "'ok', 'd', 'g', ?)", (T0,))
            audit.append(conn, actor="a@x.io", method="os-user", action="stage.changed", model="scorer", version=1,
                         environment="dev", reason="promoted to production", evidence={"stage": "production"},
                         ts=T0 - 86400)
            for method in ("os-user", "system", "system"):
                audit.append(conn, actor="a@x.io", method=method, action="deployment.rolled_back", model="scorer",
                             version=1, environment="dev", reason="r", evidence={})
        starts = {"run-a": T0 - 86400 * 10}  # the first run started 10 days before; run-b's start is unknown
        view = adoption.LedgerView(SimpleNamespace(name="dev", team="fraud", environment="dev"), conn, starts.get)
        report = adoption.build([view], [], now=T0)
    finally:
        conn.close()
    [model] = report.models
    assert (model.model, model.first_run_source, model.first_run_at) == ("scorer", "tracking", T0 - 86400 * 10)
    assert model.days == pytest.approx(9.0)  # promoted a day before T0: 9 days from the first run
    assert (model.approvals, model.rollbacks_manual, model.rollbacks_automatic, model.interventions) == (1, 1, 2, 2)
    # the trend replays the promotion: in production from the month it happened
    assert report.trend[-1]["managed"] == 1
    conn = db.connect()
    try:
        unknown = adoption.build([adoption.LedgerView(view.spec, conn, lambda _run: None)], [], now=T0)
    finally:
        conn.close()
    assert unknown.models[0].first_run_source == "registration"
    assert unknown.models[0].first_run_at == T0 - 86400 * 3  # version 1's registration
