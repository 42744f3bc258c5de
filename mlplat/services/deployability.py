"""Whether a registered version may serve traffic: the checks deployments and rollouts run first.

The version ledger (:mod:`mlplat.services.registry`) says what a version is and where it stands;
this module combines it with the evaluation gate, approvals and the applied governance to decide
whether serving it is allowed, and returns the evidence for the audit entry of the deployment.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlplat.errors import Denied
from mlplat.services import approvals as approvals_service
from mlplat.services import gate as gate_service
from mlplat.services import governance as governance_service
from mlplat.services import ledger as ledger_service
from mlplat.services import registry as reg

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.stack import StackSpec


def assert_deployable(spec: StackSpec, ctx: Context, name: str, version: int, environment: str) -> dict[str, Any]:
    """Raise unless ``name`` ``version`` may serve traffic in ``environment``; return the evidence.

    Rules: the version exists (``NotFound``); its files match the sealed manifest (``IntegrityError``);
    the audit chain verifies and its stage and approval rows are the ones audited decisions wrote
    (``IntegrityError`` otherwise); governance is the one applied by the last ``mlplat up``;
    a gate report for its current artifact passed in ``environment``; it is in ``staging`` or ``production``
    there; in a production environment (the stack's own when it is called production/prod, or any
    environment named so) it must be the production version, with its approvals still valid for critical
    models. The provider's aliases are never trusted: an alias moved outside mlplat is reported and refused.
    """
    registry = reg.registry_for(spec, ctx)
    conn = registry.database().connect()
    try:
        row = reg.version_row(conn, name, version)
        ledger = ledger_service.Ledger(conn)
        # stages are trusted only as the audited decisions left them (a hand-set row is refused)
        stage = ledger.stage(name, version, environment)
        prod = ledger.production_version(name, environment)
        report = gate_service.latest_report(conn, name, version, environment, row["artifact_digest"])
        governance = governance_service.effective_for(spec, ctx, conn).governance
        approval = approvals_service.status(conn, spec, name, version, environment, governance)
    finally:
        conn.close()
    approvals_service.require_audited(approval, f"serving {name} version {version}")
    reg.verify_row(registry, row)
    what = f"{name} version {version}"
    moved = [a for a, v in reg.aliases_pointing(registry, spec, name, environment).items() if v == int(version)]
    if moved and prod != int(version):
        raise Denied(f"{what} is marked production by MLflow alias @{moved[0]}, set outside mlplat; the platform "
                     f"database has {'version ' + str(prod) if prod else 'no version'} in production in '{environment}'",
                     hint=f"aliases only mirror the platform; promote it with "
                          f"`mlplat models promote {name} {version} --to production --env {environment}`")
    if report is None or not report["passed"]:
        raise Denied(f"{what} has not passed the evaluation gate in '{environment}'",
                     hint=f"run `mlplat models promote {name} {version} --to staging --env {environment}`")
    production_env = environment.lower() in ("production", "prod")
    if production_env and stage != "production":
        raise Denied(f"{what} is in stage '{stage}', not production, in '{environment}'",
                     hint=f"promote it: `mlplat models promote {name} {version} --to production --env {environment}`")
    if stage not in ("staging", "production"):
        raise Denied(f"{what} is in stage '{stage}' in '{environment}'; only staging or production versions serve",
                     hint=f"promote it: `mlplat models promote {name} {version} --to staging --env {environment}`")
    if stage == "production" and approval["required"] and approval["state"] != "approved":
        raise Denied(f"{what} is critical and its approvals are no longer valid ({approval['state']})",
                     hint="the artifact or gate report changed since approval; re-run the gate and ask for approval")
    return {"model": name, "version": int(version), "environment": environment, "stage": stage,
            "artifact_digest": row["artifact_digest"], "gate_digest": report["digest"], "approvals": approval}
