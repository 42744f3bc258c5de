"""Provider-neutral checks of a deploy request, run by every serving provider before it applies one.

The serving contract itself is ``mlplat.contracts.EndpointDeployer``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.stack import StackSpec


@dataclass
class CheckedDeploy:
    """A deploy request that passed the provider-neutral checks, ready to apply."""

    canary: Any  # rollout.CanaryPolicy | None
    shadow_percent: int | None
    evidence: dict[str, Any]  # slimmed: stage, digests, approval state
    versions: list[int]  # the version deployed first, then any other A/B variant named in the weights


def check_deploy(spec: StackSpec, ctx: Context, name: str, version: int, *, environment: str, strategy: str, weights: str | None,
                 steps: Sequence[int] | None, bake_seconds: float | None, percent: int | None) -> CheckedDeploy:
    """Validate the rollout spec and that every version it names may serve in ``environment``
    (gate passed; approvals for production). Reads only; raises on the first refusal."""
    from mlplat.services import deployability
    from mlplat.services import rollout as ro

    if strategy not in ro.STRATEGIES:
        raise ro.RolloutError(f"unknown strategy '{strategy}'", hint="one of: " + ", ".join(ro.STRATEGIES))
    canary = ro.CanaryPolicy.from_stack(spec.serving.canary, steps=steps, bake=bake_seconds) \
        if strategy == "canary" else None
    if strategy == "shadow":
        if percent is None:
            percent = spec.serving.shadow.percent
        if not 1 <= int(percent) <= ro.MAX_SHADOW_PERCENT:
            raise ro.RolloutError(f"--percent {percent}: shadow traffic must be between 1 and {ro.MAX_SHADOW_PERCENT} %",
                                  hint="mirror at most half of the traffic")
    evidence = deployability.assert_deployable(spec, ctx, name, int(version), environment)
    versions = [int(version)]
    if strategy == "ab" and weights and "=" in weights:
        named = set()
        for part in (p for p in weights.split(",") if "=" in p):
            try:
                named.add(ro.version_number(part.split("=")[0]))
            except ValueError:
                continue  # not a version: parse_weights refuses the weights with the reason
        others = sorted(named - {int(version)})
        for other in others:
            deployability.assert_deployable(spec, ctx, name, other, environment)
        versions += others
    return CheckedDeploy(canary, percent, _slim(evidence), versions)


def _slim(evidence: dict[str, Any]) -> dict[str, Any]:
    keep = ("stage", "artifact_digest", "gate_digest")
    out = {k: evidence.get(k) for k in keep if k in evidence}
    approvals = evidence.get("approvals")
    if isinstance(approvals, dict):
        out["approvals"] = {k: approvals.get(k) for k in ("required", "state") if k in approvals}
    return out
