"""Alert rules over monitoring metrics, de-duplicated, delivered to channels.

A rule (metric, threshold, op, severity) is evaluated per subject — a deployed
model (``model@environment``) or the team (``team:<name>``, for cost). An alert
*fires* once when a breach starts, stays silent while the breach persists, and
sends one *resolved* message when it ends. A metric that a pass could not compute
(insufficient data) leaves the state as it is: missing data neither fires nor
resolves.

Channels: ``console`` (stderr of the process running the pass), ``log`` (one JSON
line per event, appended) and ``webhook`` (HTTP POST JSON). Webhooks go through
an outbox in the platform database and are sent by a background thread with a
timeout and exponential backoff, so a slow receiver never blocks a pass or the
serving path; undelivered messages survive a restart and are retried by the next
pass.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.db import Database
    from mlplat.stack import StackSpec

BUILTIN_DRIFT_RULE = "drift"


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    threshold: float
    op: str = "gt"
    severity: str = "warning"
    retrain: bool = False

    def breached(self, value: float) -> bool:
        return value > self.threshold if self.op == "gt" else value < self.threshold


@dataclass
class Event:
    id: int | None
    ts: float
    rule: str
    subject: str
    kind: str  # fired | resolved
    severity: str
    metric: str
    value: float | None
    threshold: float
    message: str

    def payload(self, spec: StackSpec | None = None) -> dict[str, Any]:
        out = {"event": self.kind, "rule": self.rule, "subject": self.subject, "severity": self.severity,
               "metric": self.metric, "value": self.value, "threshold": self.threshold, "ts": self.ts,
               "message": self.message}
        if spec is not None:
            out |= {"stack": spec.name, "team": spec.team, "environment": spec.environment}
        return out


def rules_for(spec: StackSpec) -> list[Rule]:
    """The stack's rules, plus one per budget alert share, plus a drift rule when no rule watches drift."""
    rules = [Rule(r.name, r.metric, r.threshold, r.op, r.severity, r.retrain) for r in spec.monitoring.alerts]
    if not any(r.metric.startswith("drift.") for r in rules):
        rules.append(Rule(BUILTIN_DRIFT_RULE, "drift.detected", 0.5, "gt", "warning", False))
    if spec.budget is not None:
        for share in spec.budget.alert_at:
            rules.append(Rule(f"budget-{round(share * 100)}", "cost.budget_share", share, "gt",
                              "critical" if share >= 1 else "warning"))
    return rules


@dataclass(frozen=True)
class About:
    """What a message says about its subject: who it is (``credit-risk v2 in production``) and, for a
    deployed model, the drift report of the window that was judged (``DriftReport.to_dict()``)."""

    label: str
    drift: Mapping[str, Any] | None = None


TOP_FEATURES = 3  # drifting features a message names, the strongest first


def _p(value: float) -> str:
    return "p<0.001" if value < 0.001 else f"p={value:.2g}"


def _feature_phrase(f: Mapping[str, Any]) -> str:
    """``income PSI 0.41, KS p<0.001``: the effect size, then the test that confirmed it."""
    if f.get("kind") == "categorical":
        text = f"{f['feature']} JS {f.get('js_distance') or 0:.2f}"
        p = f.get("chi2_p_value")
        return text + (f", χ² {_p(p)}" if p is not None else "")
    text = f"{f['feature']} PSI {f.get('psi') or 0:.2f}"
    p = f.get("ks_p_value")
    return text + (f", KS {_p(p)}" if p is not None else "")


def drift_summary(drift: Mapping[str, Any]) -> str:
    """``3 of 8 features drifted — income PSI 0.41, KS p<0.001; age …`` from a drift report."""
    features = [f for f in drift.get("features") or [] if f.get("verdict") not in _NOT_JUDGED]
    limits = drift.get("thresholds") or {}

    def strength(f: Mapping[str, Any]) -> float:  # effect size over its limit: PSI and JS are on different scales
        if f.get("kind") == "categorical":
            return float(f.get("js_distance") or 0) / float(limits.get("js_distance") or 0.1)
        return float(f.get("psi") or 0) / float(limits.get("psi") or 0.2)

    drifted = sorted((f for f in features if f.get("verdict") == "drift"), key=lambda f: -strength(f))
    text = f"{len(drifted)} of {len(features)} feature{'s' if len(features) != 1 else ''} drifted"
    if drifted:
        text += " — " + "; ".join(_feature_phrase(f) for f in drifted[:TOP_FEATURES])
        if len(drifted) > TOP_FEATURES:
            text += f"; and {len(drifted) - TOP_FEATURES} more"
    prediction = drift.get("prediction") or {}
    if prediction.get("verdict") == "drift":
        text += "; predictions drifted (" + _feature_phrase(prediction | {"feature": "output"}).removeprefix("output ") + ")"
    return text


_NOT_JUDGED = ("insufficient data", "insufficient reference")
_METRIC_WORDS = {"cost.budget_share": "budget used"}


def message(rule: Rule, subject: str, value: float, kind: str, about: About | None = None) -> str:
    """What a person reads about an alert event: which model version, what moved and by how much.

    ``credit-risk v2 in production: 3 of 8 features drifted — income PSI 0.41, KS p<0.001 (rule drift on
    drift.detected)``
    rather than the rule's arithmetic; the arithmetic stays in the event's metric/value/threshold."""
    who = about.label if about is not None else subject
    why = f"(rule {rule.name} on {rule.metric}{'' if kind == 'fired' else ', resolved'})"
    if rule.metric.startswith("drift.") and about is not None and about.drift and about.drift.get("features") is not None:
        state = drift_summary(about.drift) if kind == "fired" else "drift resolved, " + drift_summary(about.drift)
        return f"{who}: {state} {why}"
    name = _METRIC_WORDS.get(rule.metric, rule.metric.split(".", 1)[-1].replace("_", " "))
    if rule.metric == "cost.budget_share":
        shown, limit = f"{value:.0%}", f"{rule.threshold:.0%}"
    else:
        shown, limit = f"{value:.4g}", f"{rule.threshold:g}"
    if kind == "fired":
        return f"{who}: {name} {shown} {'above' if rule.op == 'gt' else 'below'} {limit} {why}"
    return f"{who}: {name} back to {shown} {why}"


def evaluate(conn: sqlite3.Connection, rules: Iterable[Rule], metrics: Mapping[str, Mapping[str, float]], *,
             now: float, about: Mapping[str, About] | None = None) -> list[Event]:
    """Advance the alert state for every (rule, subject) with a value; return the new events.

    ``about`` names each subject for people (model version, the drift behind a drift alert); a
    subject without one is named by its key. Runs inside the caller's transaction so state and
    events move together.
    """
    about = about or {}
    events: list[Event] = []
    rules = list(rules)
    for subject, values in sorted(metrics.items()):
        for rule in rules:
            if rule.metric not in values:
                continue
            value = float(values[rule.metric])
            breached = rule.breached(value)
            row = conn.execute("SELECT firing, breaches FROM alert_state WHERE rule=? AND subject=?",
                               (rule.name, subject)).fetchone()
            firing = bool(row["firing"]) if row else False
            if breached and not firing:
                conn.execute(
                    "INSERT INTO alert_state(rule, subject, firing, since, last_value, last_seen, breaches, severity) "
                    "VALUES (?,?,1,?,?,?,1,?) ON CONFLICT(rule, subject) DO UPDATE SET firing=1, since=excluded.since, "
                    "last_value=excluded.last_value, last_seen=excluded.last_seen, breaches=1, severity=excluded.severity",
                    (rule.name, subject, now, value, now, rule.severity))
                events.append(_record(conn, Event(None, now, rule.name, subject, "fired", rule.severity, rule.metric, value,
                                                   rule.threshold, message(rule, subject, value, "fired",
                                                                           about.get(subject)))))
            elif breached and firing:
                conn.execute("UPDATE alert_state SET last_value=?, last_seen=?, breaches=breaches+1 WHERE rule=? AND subject=?",
                             (value, now, rule.name, subject))
            elif not breached and firing:
                conn.execute("UPDATE alert_state SET firing=0, since=?, last_value=?, last_seen=?, breaches=0 "
                             "WHERE rule=? AND subject=?", (now, value, now, rule.name, subject))
                events.append(_record(conn, Event(None, now, rule.name, subject, "resolved", rule.severity, rule.metric,
                                                   value, rule.threshold, message(rule, subject, value, "resolved",
                                                                                  about.get(subject)))))
            elif row is not None:
                conn.execute("UPDATE alert_state SET last_value=?, last_seen=? WHERE rule=? AND subject=?",
                             (value, now, rule.name, subject))
    return events


def _record(conn: sqlite3.Connection, event: Event) -> Event:
    cur = conn.execute(
        "INSERT INTO alert_events(ts, rule, subject, kind, severity, metric, value, threshold, message) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        (event.ts, event.rule, event.subject, event.kind, event.severity, event.metric, event.value, event.threshold,
         event.message))
    event.id = cur.lastrowid
    return event


# --- channels --------------------------------------------------------------------------------


def dispatch(conn: sqlite3.Connection, spec: StackSpec, ctx: Context, events: list[Event], *, now: float) -> None:
    """Console and log channels write now; webhooks are queued in the outbox (same transaction)."""
    if not events:
        return
    from rich.markup import escape

    for channel in spec.monitoring.channels:
        if channel.kind == "console":
            for e in events:
                colour = {"critical": "red", "warning": "yellow"}.get(e.severity, "cyan") if e.kind == "fired" else "green"
                ctx.err.print(f"[{colour}]alert {e.kind}[/] " + escape(f"[{e.severity}] {e.message}"), markup=True,
                              highlight=False)
        elif channel.kind == "log":
            if channel.path is None:  # the stack schema requires a path for log channels; Path(None) fails the same way
                raise TypeError("log channel without a path")
            path = Path(channel.path)
            if not path.is_absolute():
                path = Path(spec.project_dir) / path
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                for e in events:
                    handle.write(json.dumps(e.payload(spec), sort_keys=True) + "\n")
        elif channel.kind == "webhook":
            for e in events:
                conn.execute(
                    "INSERT INTO alert_outbox(event_id, url, payload, timeout_s, max_attempts, backoff_s, attempts, "
                    "next_attempt, status) VALUES (?,?,?,?,?,?,0,?,'pending')",
                    (e.id, channel.url, json.dumps(e.payload(spec), sort_keys=True), channel.timeout_seconds,
                     channel.max_attempts, channel.backoff_seconds, now))


def deliver_due(db: Database, *, deadline: float | None = None, clock: Callable[[], float] = time.time,
                sleep: Callable[[float], None] = time.sleep) -> dict[str, int]:
    """Send queued webhooks until none is due or retrying (or ``deadline`` passes).

    Each message is claimed with a lease so two processes never send it twice at
    once. A failure schedules the next attempt after ``backoff * 2**(attempts-1)``
    seconds; after ``max_attempts`` the message is marked failed.
    """
    import httpx

    counts = {"sent": 0, "failed": 0, "retried": 0}
    while True:
        now = clock()
        if deadline is not None and now >= deadline:
            return counts
        with db.transaction() as conn:
            row = conn.execute(
                "SELECT * FROM alert_outbox WHERE (status='pending' AND next_attempt<=?) "
                "OR (status='sending' AND lease_until<?) ORDER BY next_attempt LIMIT 1", (now, now)).fetchone()
            if row is not None:
                conn.execute("UPDATE alert_outbox SET status='sending', lease_until=? WHERE id=?",
                             (now + row["timeout_s"] + 5, row["id"]))
            waiting = conn.execute("SELECT MIN(next_attempt) FROM alert_outbox WHERE status='pending'").fetchone()[0]
        if row is None:
            if waiting is None:
                return counts
            pause = waiting - clock()
            if deadline is not None and clock() + pause > deadline:
                return counts
            sleep(max(0.0, min(pause, 5.0)))
            continue
        error = None
        try:
            response = httpx.post(row["url"], content=row["payload"], timeout=row["timeout_s"],
                                  headers={"Content-Type": "application/json", "User-Agent": "mlplat-alerts"})
            if response.status_code >= 300:
                error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempts = row["attempts"] + 1
        with db.transaction() as conn:
            if error is None:
                conn.execute("UPDATE alert_outbox SET status='sent', attempts=?, lease_until=NULL, last_error=NULL "
                             "WHERE id=?", (attempts, row["id"]))
                counts["sent"] += 1
            elif attempts >= row["max_attempts"]:
                conn.execute("UPDATE alert_outbox SET status='failed', attempts=?, lease_until=NULL, last_error=? "
                             "WHERE id=?", (attempts, error, row["id"]))
                counts["failed"] += 1
            else:
                delay = row["backoff_s"] * (2 ** (attempts - 1))
                conn.execute("UPDATE alert_outbox SET status='pending', attempts=?, next_attempt=?, lease_until=NULL, "
                             "last_error=? WHERE id=?", (attempts, clock() + delay, error, row["id"]))
                counts["retried"] += 1


_senders: dict[str, threading.Thread] = {}
_senders_lock = threading.Lock()


def deliver_in_background(db: Database) -> threading.Thread:
    """At most one daemon sender per database per process; returns it (tests join it)."""
    key = str(db.path)
    with _senders_lock:
        thread = _senders.get(key)
        if thread is not None and thread.is_alive():
            return thread
        thread = threading.Thread(target=_deliver_quietly, args=(db,), name="mlplat-alert-webhooks", daemon=True)
        _senders[key] = thread
        thread.start()
        return thread


def _deliver_quietly(db: Database) -> None:
    import logging

    try:
        deliver_due(db)
    except Exception:  # noqa: BLE001 - a sender thread must never take the gateway down; the outbox keeps the message
        logging.getLogger("mlplat.alerts").exception("webhook delivery stopped; the next pass retries")
