"""A GCP stack for the provider-neutral feature store suite: the fakes in the state the Pulumi program leaves
them (the artifact bucket, the feature dataset, the online store) and the stack's local state."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.contract.gcp_fake.fixtures import PROJECT, REGION


def gcp_stack_text(*, environment: str = "production") -> str:
    """The same team as the AWS suite's stack (``fraud``), on GCP."""
    return "\n".join([
        "config:",
        "  mlplat:team: fraud",
        f"  mlplat:environment: {environment}",
        "  mlplat:provider:",
        "    kind: gcp",
        f"    project: {PROJECT}",
        f"    region: {REGION}",
        "    billingAccount: 01A2B3-C4D5E6-F7A8B9",
        "  mlplat:tags:",
        "    team: fraud",
        "    cost-center: CC-1042",
        f"    environment: {environment}",
        "    owner: fraud-leads@example.com",
        "  mlplat:governance:",
        "    riskTier: critical",
        "    approvers: [risk-office@example.com, head-of-ds@example.com]",
        "    requiredApprovals: 1",
        "  mlplat:serving:",
        "    instanceType: n1-standard-4",
        "    pricePerHour: 0.19",
        "  mlplat:budget: {monthlyUsd: 5000}",
        "  mlplat:access: {mode: trusted-local}",
    ]) + "\n"


def provision_features(root: Path, stack: str, vertex: Any, bigquery: Any) -> None:
    """What ``mlplat up`` leaves for the feature store: the bucket, the feature dataset, the online store
    (``AiFeatureOnlineStore``), the stack's local state; the Vertex fake reads BigQuery through ``bigquery``."""
    from mlplat.stack import load_stack
    from mlplat_providers.gcp.plan import stack_plan
    from mlplat_providers.gcp.runtime.state import GcpState
    from tests.contract.gcp_fake.vertex_features import add_online_store

    spec = load_stack(stack, root)
    plan = stack_plan(spec)
    GcpState(Path(spec.state_dir)).ensure()
    vertex.buckets.add(plan.bucket)
    add_online_store(vertex, plan.project, plan.region, plan.online_store)
    bigquery.datasets[f"{plan.project}.{plan.feature_dataset}"] = {
        "datasetReference": {"projectId": plan.project, "datasetId": plan.feature_dataset}}
    vertex.extra["bigquery"] = bigquery
