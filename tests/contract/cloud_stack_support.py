"""A cloud stack file for the contract tests: the same team, tags, governance, gate, serving and budget
on every cloud; each provider's support module names its config keys, provider block and instance type."""
from __future__ import annotations

from collections.abc import Sequence

APPROVERS = "[risk-office@example.com, head-of-ds@example.com]"


def cloud_stack_text(*, cloud_config: Sequence[str], provider: Sequence[str], instance_type: str,
                     price_per_hour: str, environment: str = "production", risk: str = "critical",
                     approvers: str = APPROVERS, extra: str = "") -> str:
    """The stack file's text. ``cloud_config``: the cloud's own config lines (``  aws:region: ...``);
    ``provider``: the lines under ``mlplat:provider:`` (``    kind: aws``, ...)."""
    lines = [
        "config:",
        *cloud_config,
        "  mlplat:team: fraud",
        f"  mlplat:environment: {environment}",
        "  mlplat:provider:",
        *provider,
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
        f"    instanceType: {instance_type}",
        f"    pricePerHour: {price_per_hour}",
        "    canary: {steps: [10, 50, 100], bakeSeconds: 0, minRequests: 5}",
        "  mlplat:budget: {monthlyUsd: 5000}",
        "  mlplat:access: {mode: trusted-local}",  # the tests play several people with MLPLAT_USER
    ]
    return "\n".join(lines) + "\n" + extra
