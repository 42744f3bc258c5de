"""What the GCP tests need around the fakes: a GCP stack, what `mlplat up` creates, Vertex's metrics."""
from __future__ import annotations

import time
from typing import Any

from tests.contract.gcp_fake.fixtures import PROJECT, REGION, FakeGcp

BILLING_ACCOUNT = "012345-6789AB-CDEF01"


def gcp_stack_text(*, environment: str = "production", risk: str = "critical",
                   approvers: str = "[risk-office@example.com, head-of-ds@example.com]", extra: str = "") -> str:
    lines = [
        "config:",
        f"  gcp:project: {PROJECT}",
        f"  gcp:region: {REGION}",
        "  mlplat:team: fraud",
        f"  mlplat:environment: {environment}",
        "  mlplat:provider:",
        "    kind: gcp",
        f"    project: {PROJECT}",
        f"    region: {REGION}",
        f'    billingAccount: "{BILLING_ACCOUNT}"',
        "  mlplat:tags:",
        "    team: fraud",
        "    cost-center: CC-1042",
        f"    environment: {environment}",
        "    owner: fraud-leads@example.com",
        "  mlplat:governance:",
        f"    riskTier: {risk}",
        f"    approvers: {approvers}",
        "    requiredApprovals: 1",
        "  mlplat:gate:",
        "    holdout: {path: data/holdout.parquet, label: label}",
        "    thresholds: {roc_auc: 0.70, accuracy: 0.60}",
        "  mlplat:serving:",
        "    instanceType: n1-standard-4",
        "    pricePerHour: 0.19",
        "    canary: {steps: [10, 50, 100], bakeSeconds: 0, minRequests: 5}",
        "  mlplat:budget: {monthlyUsd: 5000}",
        "  mlplat:access: {mode: trusted-local}",  # the tests play several people with MLPLAT_USER
    ]
    return "\n".join(lines) + "\n" + extra


def provision_cloud(spec: Any, fake: FakeGcp) -> None:
    """What `mlplat up` leaves for the runtime: the stack's bucket (the Pulumi program's), and the platform's
    state on this machine (its ledger; a first write would create it too)."""
    from mlplat_providers.gcp.plan import stack_plan
    from mlplat_providers.gcp.runtime.state import GcpState

    GcpState(spec.state_dir, None).ensure()
    fake.vertex.buckets.add(stack_plan(spec).bucket)


def canary_versions(serving: Any, model: str, environment: str) -> tuple[int, int]:
    """(stable, candidate) versions of the running canary of ``model``, as the ledger routes them."""
    shown = serving.show(model, environment=environment)
    candidate = next(int(r["version"]) for r in shown["routes"] if r["variant"] == "canary")
    return int(shown["stable_version"]), candidate


def feed_deployed_model(fake: FakeGcp, serving: Any, model: str, environment: str, version: int, *, requests: int,
                        errors: int = 0, latency_ms: float = 5.0, at: float | None = None) -> None:
    """What Vertex AI publishes to Cloud Monitoring for the deployed model serving ``version``."""
    endpoint_id, deployed = serving._deployed_ids(model, environment)
    fake.monitoring.feed(project=serving.gcp.project, location=serving.gcp.region, endpoint_id=endpoint_id,
                         deployed_model_id=deployed[int(version)], at=time.time() if at is None else at,
                         requests=requests, errors=errors, latencies_ms=[latency_ms] * max(1, min(requests, 20)))
