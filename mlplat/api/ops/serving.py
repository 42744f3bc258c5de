"""Operations on deployments and rollouts: deploy, roll back, list, show, rollout status.

They run the stack's serving provider against the ledger of the process that owns it (this one
when embedded, ``mlplat server`` otherwise). The gateway itself (``mlplat serve``) is a platform
process beside the server, not an operation.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from mlplat.api.operations import Environment, operation
from mlplat.errors import ExitCode, MlplatError

Strategy = Literal["direct", "ab", "canary", "shadow"]
Version = Annotated[int, Field(ge=1)]


class DeployOptionError(MlplatError):
    """A rollout option given with a strategy it does not apply to."""

    exit_code = ExitCode.USAGE


def _serving(spec: Any, ctx: Any) -> Any:
    from mlplat import providers
    from mlplat.contracts import Capability

    return providers.capability(spec, ctx, Capability.SERVING)


def check_options(strategy: str, *, weights: str | None, steps: list[int] | None, bake_seconds: float | None,
                  percent: int | None) -> None:
    """Refuse an option that does not belong to ``strategy`` (the CLI checks the same before it calls)."""
    if weights and strategy != "ab":
        raise DeployOptionError("--weights applies to --strategy ab", where="weights",
                                hint=f"drop the weights, or deploy with --strategy ab (not {strategy})")
    if (steps or bake_seconds is not None) and strategy != "canary":
        raise DeployOptionError("--steps and --bake apply to --strategy canary",
                                where="steps" if steps else "bake_seconds",
                                hint=f"drop them, or deploy with --strategy canary (not {strategy})")
    if percent is not None and strategy != "shadow":
        raise DeployOptionError("--percent applies to --strategy shadow", where="percent",
                                hint=f"drop it, or deploy with --strategy shadow (not {strategy})")


@operation("deployments.create", "POST", "/deployments")
def create(spec: Any, ctx: Any, *, model: str, version: Version, environment: Environment | None = None,
           strategy: Strategy = "direct", weights: str | None = None, steps: list[int] | None = None,
           bake_seconds: float | None = None, percent: int | None = None) -> dict[str, Any]:
    """Deploy a version of a model with a rollout strategy (gated, and for production approved, versions only)."""
    check_options(strategy, weights=weights, steps=steps, bake_seconds=bake_seconds, percent=percent)
    return dict(_serving(spec, ctx).deploy(model, version, environment=environment or spec.environment,
                                           strategy=strategy, weights=weights, steps=steps,
                                           bake_seconds=bake_seconds, percent=percent))


@operation("deployments.rollback", "POST", "/deployments/{model}/rollback")
def rollback(spec: Any, ctx: Any, *, model: str, environment: Environment | None = None, to: Version | None = None,
             reason: str | None = None) -> dict[str, Any]:
    """Move all of a model's traffic back to its stable (kept warm) version, ending any rollout."""
    return dict(_serving(spec, ctx).rollback(model, environment=environment or spec.environment, to=to,
                                             reason=reason))


@operation("deployments.list", "GET", "/deployments")
def list_deployments(spec: Any, ctx: Any, *, environment: Environment | None = None) -> list[dict[str, Any]]:
    """Every deployment (of one environment, or of all) with its strategy and routing."""
    rows = list(_serving(spec, ctx).list(environment))
    if environment is not None and not rows:  # an environment nobody knows, or one with nothing deployed yet
        from mlplat.services import known
        from mlplat.services.monitoring.passes import monitor_for

        conn = monitor_for(spec, ctx).database().connect()
        try:
            known.require_environment(conn, spec, environment)
        finally:
            conn.close()
    return rows


@operation("deployments.show", "GET", "/deployments/{model}")
def show(spec: Any, ctx: Any, *, model: str, environment: Environment | None = None) -> dict[str, Any]:
    """One deployment: routing, served-version history, recent decisions."""
    return dict(_serving(spec, ctx).show(model, environment=environment or spec.environment))


@operation("rollouts.status", "GET", "/rollouts/{model}")
def rollout_status(spec: Any, ctx: Any, *, model: str, environment: Environment | None = None) -> dict[str, Any]:
    """Current step, latest analysis per variant (canary), A/B readout, shadow comparison, decisions."""
    return dict(_serving(spec, ctx).rollout_status(model, environment=environment or spec.environment))
