"""What the GCP tests need around the fakes: a GCP stack, what `mlplat up` creates, Vertex's metrics."""
from __future__ import annotations

import time
from typing import Any

from tests.contract.cloud_stack_support import APPROVERS, cloud_stack_text
from tests.contract.gcp_fake.fixtures import PROJECT, REGION, FakeGcp

BILLING_ACCOUNT = "012345-6789AB-CDEF01"


def gcp_stack_text(*, environment: str = "production", risk: str = "critical", approvers: str = APPROVERS,
                   extra: str = "") -> str:
    return cloud_stack_text(
        cloud_config=[f"  gcp:project: {PROJECT}", f"  gcp:region: {REGION}"],
        provider=["    kind: gcp", f"    project: {PROJECT}", f"    region: {REGION}",
                  f'    billingAccount: "{BILLING_ACCOUNT}"'],
        instance_type="n1-standard-4", price_per_hour="0.19",
        environment=environment, risk=risk, approvers=approvers, extra=extra)


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
