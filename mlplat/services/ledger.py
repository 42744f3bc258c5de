"""Decision rows checked against the keyed audit chain.

The services read decisions from ordinary rows: a version's stage per environment
(``model_stages``), approvals (``approvals``) and each endpoint's routing (``endpoints``).
Anyone with write access to the database file could set those by hand, so a row is only
trusted when the audit chain holds the decision that produced it:

* a stage row must equal the stage the chain's last stage decision for that version and
  environment gave it (``model.registered`` → dev, ``stage.changed`` → its target, and
  ``archived`` for the production version it replaced); no row means ``dev``;
* an approval row must have its ``approval.approved|rejected`` entry (same approver,
  version, environment, artifact and gate digests, reason);
* an endpoint row must equal the routing recorded by the last ``deployment.*`` entry
  for its model and environment, and a running canary's versions and policy those of the
  ``deployment.created`` entry that started it.

Entries count only when authentic (their keyed hash verifies, see :mod:`audit`). Stages
and routing also need the whole chain intact: deleting a later decision would otherwise
revive an earlier one. :class:`Ledger` verifies the chain once and answers row checks.
"""
from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from typing import Any

from mlplat.errors import IntegrityError
from mlplat.services import audit

STAGE_ACTIONS = ("model.registered", "stage.changed")
DEPLOY_ACTIONS = ("deployment.created", "deployment.step", "deployment.rolled_back")
ENDPOINT_FIELDS = ("strategy", "routes", "shadow", "stable_version", "previous_version", "rollout_id")
FIX = "restore the platform database from a backup; `mlplat audit verify` lists every row no audited decision produced"


def endpoint_state(endpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The routing fields of an endpoint (``Endpoint.to_dict()``) as the audit entry records them."""
    return {k: endpoint.get(k) for k in ENDPOINT_FIELDS}


class Ledger:
    """One connection's view of the decision rows, checked against the audit chain."""

    def __init__(self, conn: sqlite3.Connection, key: audit.AuditKey | None = None):
        self.conn = conn
        self.key = key if key is not None else audit.load_key(conn)
        self._first_keyed: int | None | bool = False  # False: not looked up yet
        self._chain: audit.Verification | None = None

    # --- the chain -------------------------------------------------------------------------

    def chain(self) -> audit.Verification:
        if self._chain is None:
            self._chain = audit.verify(self.conn, self.key)
        return self._chain

    def require_chain(self, doing: str) -> None:
        """Raise ``IntegrityError`` if the audit chain does not verify: no decision can be trusted then."""
        result = self.chain()
        if not result.ok:
            raise IntegrityError(f"refusing to {doing}: the audit log was tampered with "
                                 f"({len(result.problems)} problem(s)):" + audit.format_problems(result.problems, 5),
                                 hint=FIX, problems=result.problems)

    def _authentic(self, entry: Mapping[str, Any]) -> bool:
        if self._first_keyed is False:
            self._first_keyed = audit.first_keyed_seq(self.conn)
        return audit.entry_problem(entry, self.key, first_keyed=self._first_keyed) is None

    def _entries(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        rows = [dict(r) for r in self.conn.execute(sql, args)]
        return [r for r in rows if self._authentic(r)]

    # --- stages ----------------------------------------------------------------------------

    def audited_stages(self, model: str, environment: str) -> dict[int, str]:
        """version -> stage, as the chain's decisions for ``model`` in ``environment`` left it."""
        stages: dict[int, str] = {}
        for entry in self._entries("SELECT * FROM audit_log WHERE model = ? AND environment = ? AND action IN "
                                   "(?, ?) ORDER BY seq", (model, environment, *STAGE_ACTIONS)):
            version = entry["version"]
            if version is None:
                continue
            if entry["action"] == "model.registered":
                stages[int(version)] = "dev"
                continue
            evidence = json.loads(entry["evidence"] or "{}")
            stage = evidence.get("stage")
            if stage is None:  # entries written before the stage was recorded in the evidence
                match = re.fullmatch(r"promoted to (\w+)", entry["reason"] or "")
                stage = match.group(1) if match else None
            if stage is None:
                continue
            archived = evidence.get("archived")
            if archived is not None and int(archived) != int(version):
                stages[int(archived)] = "archived"
            stages[int(version)] = stage
        return stages

    def stage_problem(self, model: str, version: int, environment: str, stage: str) -> str | None:
        audited = self.audited_stages(model, environment).get(int(version), "dev")
        if audited == stage:
            return None
        return (f"model_stages row ({model}, version {version}, '{environment}') says '{stage}' but no audited "
                f"decision put it there (the audit log's last stage decision for it: '{audited}')")

    def stage(self, model: str, version: int, environment: str) -> str:
        """The version's stage in ``environment`` after checking the row and the whole chain."""
        self.require_chain(f"use the stage of {model} version {version}")
        row = self.conn.execute("SELECT stage FROM model_stages WHERE model=? AND version=? AND environment=?",
                                (model, int(version), environment)).fetchone()
        stage = row[0] if row else "dev"
        problem = self.stage_problem(model, version, environment, stage)
        if problem:
            raise IntegrityError(f"refusing to use a stage set outside mlplat: {problem}", hint=FIX)
        return stage

    def production_version(self, model: str, environment: str) -> int | None:
        row = self.conn.execute("SELECT version FROM model_stages WHERE model=? AND environment=? AND "
                                "stage='production'", (model, environment)).fetchone()
        if row is None:
            return None
        self.stage(model, int(row[0]), environment)
        return int(row[0])

    # --- approvals -------------------------------------------------------------------------

    def approval_problem(self, row: Mapping[str, Any]) -> str | None:
        candidates = self._entries(
            "SELECT * FROM audit_log WHERE model = ? AND version = ? AND environment = ? AND action = ? AND actor = ? "
            "AND digest = ? ORDER BY seq", (row["model"], int(row["version"]), row["environment"],
                                            f"approval.{row['decision']}", row["approver"], row["artifact_digest"]))
        for entry in candidates:
            evidence = json.loads(entry["evidence"] or "{}")
            if evidence.get("gate_digest") == row["gate_digest"] and entry["reason"] == row["reason"]:
                return None
        label = f"#{row['id']} " if row.get("id") is not None else ""
        return (f"approvals row {label}({row['approver']} {row['decision']} {row['model']} version {row['version']} "
                f"in '{row['environment']}') has no audit entry: it was not recorded by `mlplat models approve`")

    # --- endpoints -------------------------------------------------------------------------

    def last_deployment(self, model: str, environment: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM audit_log WHERE model = ? AND environment = ? AND action IN (?, ?, ?) "
                                "ORDER BY seq DESC LIMIT 1", (model, environment, *DEPLOY_ACTIONS)).fetchone()
        return dict(row) if row else None

    def endpoint_problem(self, endpoint: Mapping[str, Any]) -> str | None:
        """Why the routing row of ``endpoint`` (``Endpoint.to_dict()``) is not the audited one, or None."""
        model, environment = endpoint["model"], endpoint["environment"]
        what = f"endpoints row ({model}, '{environment}')"
        entry = self.last_deployment(model, environment)
        if entry is None:
            return f"{what} routes {_routes(endpoint)} but no audited deployment produced it"
        if not self._authentic(entry):
            return f"{what}: the audit entry #{entry['seq']} it rests on is not authentic"
        evidence = json.loads(entry["evidence"] or "{}")
        state = endpoint_state(endpoint)
        recorded = evidence.get("endpoint")
        if recorded is not None:
            if _normal(recorded) == _normal(state):
                return None
            return (f"{what} routes {_routes(endpoint)} but the last audited deployment (entry #{entry['seq']}) "
                    f"set {_routes(recorded)}")
        return self._legacy_endpoint_problem(entry, evidence, state, what)

    @staticmethod
    def _legacy_endpoint_problem(entry: Mapping[str, Any], evidence: Mapping[str, Any], state: Mapping[str, Any],
                                 what: str) -> str | None:
        """Entries written before the routing was recorded in full: compare what they did record."""
        routes = [dict(r) for r in state["routes"] or []]
        versions = {int(r["version"]) for r in routes}
        if entry["action"] == "deployment.created":
            expected = {k: evidence.get(k) for k in ("strategy", "routes", "shadow", "stable_version", "rollout_id")}
            actual = {k: state[k] for k in expected}
            ok = _normal(expected) == _normal(actual)
        elif entry["action"] == "deployment.rolled_back":
            ok = routes == [{"variant": "primary", "version": int(evidence.get("to_version", -1)), "weight": 100}] \
                and state["shadow"] is None
        else:  # a canary step or its promotion: the candidate takes part, the rollout is the recorded one
            ok = entry["version"] is not None and int(entry["version"]) in versions and \
                state["rollout_id"] in (None, evidence.get("rollout_id"))
        return None if ok else (f"{what} routes {_routes(state)}, which the last audited deployment "
                                f"(entry #{entry['seq']}, {entry['action']}) did not set")

    def rollout_problem(self, rollout: Mapping[str, Any]) -> str | None:
        """Why a canary rollout row (its stable, candidate and policy) is not the audited deployment, or None."""
        what = f"rollouts row #{rollout['id']} ({rollout['model']}, '{rollout['environment']}')"
        for entry in self._entries("SELECT * FROM audit_log WHERE model = ? AND environment = ? AND action = ? "
                                   "ORDER BY seq DESC", (rollout["model"], rollout["environment"], DEPLOY_ACTIONS[0])):
            evidence = json.loads(entry["evidence"] or "{}")
            if evidence.get("rollout_id") != rollout["id"]:
                continue
            policy = json.loads(rollout["policy"]) if isinstance(rollout["policy"], str) else rollout["policy"]
            if (entry["version"] == rollout["candidate_version"] and evidence.get("stable_version") ==
                    rollout["stable_version"] and _normal(evidence.get("policy")) == _normal(policy)):
                return None
            return (f"{what}: stable v{rollout['stable_version']}, candidate v{rollout['candidate_version']} or its "
                    f"policy differ from the audited deployment (entry #{entry['seq']})")
        return f"{what} has no audited canary deployment"

    # --- everything, for `mlplat audit verify` --------------------------------------------------

    def problems(self) -> tuple[list[str], int]:
        """Every decision row no audited decision produced, and how many rows were checked."""
        out: list[str] = []
        checked = 0
        for row in self.conn.execute("SELECT model, version, environment, stage FROM model_stages ORDER BY model, "
                                     "environment, version").fetchall():
            checked += 1
            problem = self.stage_problem(row["model"], row["version"], row["environment"], row["stage"])
            if problem:
                out.append(problem)
        for row in self.conn.execute("SELECT * FROM approvals ORDER BY id").fetchall():
            checked += 1
            problem = self.approval_problem(dict(row))
            if problem:
                out.append(problem)
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "endpoints" in tables:
            for row in self.conn.execute("SELECT * FROM endpoints ORDER BY model, environment").fetchall():
                checked += 1
                endpoint = dict(row)
                endpoint["routes"] = json.loads(endpoint["routes"])
                endpoint["shadow"] = json.loads(endpoint["shadow"]) if endpoint["shadow"] else None
                problem = self.endpoint_problem(endpoint)
                if problem:
                    out.append(problem)
            for row in self.conn.execute("SELECT * FROM rollouts WHERE state = 'running' ORDER BY id").fetchall():
                checked += 1
                problem = self.rollout_problem(dict(row))
                if problem:
                    out.append(problem)
        return out, checked


def verify(conn: sqlite3.Connection, key: audit.AuditKey | None = None) -> audit.Verification:
    """The audit chain's verification plus every decision row checked against it (read-only)."""
    ledger = Ledger(conn, key)
    result = ledger.chain()
    problems, checked = ledger.problems()
    result.problems = result.problems + problems
    result.ok = not result.problems
    result.rows = checked
    return result


def _normal(value: Any) -> str:
    return audit.canonical(value)


def _routes(endpoint: Mapping[str, Any]) -> str:
    routes = endpoint.get("routes") or []
    text = ", ".join(f"v{r['version']}:{r['weight']}%" for r in routes) or "nothing"
    shadow = endpoint.get("shadow")
    return text + (f" (+ shadow v{shadow['version']} {shadow['percent']}%)" if shadow else "")
