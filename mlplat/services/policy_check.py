"""`mlplat policy check`: every stack's resource graph through the policy pack, with no cloud and no CLI.

For each stack: load and validate the stack file, ask its provider for the planned
resources (cloud providers run their Pulumi program under mocks; the local provider
describes its stores and gateway), and evaluate the pack's validators
(``mlplat_policies.rules``) with the stack's enforcement settings.

A stack file that fails validation is a mandatory violation of ``stack-valid``; a
program that raises marks only its own stack as an error; a provider without a
program is reported as skipped with the reason. Nothing is written anywhere.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat.contracts import Capability
from mlplat.errors import CapabilityNotSupported, MlplatError, StackError
from mlplat_policies import rules

if TYPE_CHECKING:
    from mlplat.context import Context
    from mlplat.stack import StackSpec

STACK_VALID = "stack-valid"
STACK_VALID_REMEDIATION = "fix the stack file; `mlplat stack validate --stack S` shows every problem"
PASSED, FAILED, WARNED, ERROR, SKIPPED = "passed", "failed", "warned", "error", "skipped"
SETTINGS_POLICIES = ("access",)  # policies that read the stack file's settings (access_resource), not a program's


@dataclass
class StackResult:
    stack: str
    path: str = ""
    provider: str | None = None
    status: str = PASSED
    findings: list[rules.Finding] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def mandatory(self) -> list[rules.Finding]:
        return [f for f in self.findings if f.level == rules.MANDATORY]

    @property
    def advisory(self) -> list[rules.Finding]:
        return [f for f in self.findings if f.level == rules.ADVISORY]

    @property
    def blocking(self) -> bool:
        return self.status in (FAILED, ERROR)

    def to_dict(self) -> dict[str, Any]:
        return {"stack": self.stack, "path": self.path, "provider": self.provider, "status": self.status,
                "resources": len(self.resources), "error": self.error, "seconds": round(self.seconds, 3),
                "findings": [f.to_dict() for f in self.findings]}


@dataclass
class CheckReport:
    project_dir: str
    stacks: list[StackResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(s.blocking for s in self.stacks)

    def counts(self) -> dict[str, int]:
        out = {PASSED: 0, WARNED: 0, FAILED: 0, ERROR: 0, SKIPPED: 0}
        for s in self.stacks:
            out[s.status] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "project": self.project_dir, "seconds": round(self.seconds, 3),
                "counts": self.counts(), "stacks": [s.to_dict() for s in self.stacks],
                "policies": [{"name": p.name, "description": p.description, "remediation": p.remediation,
                              "defaultLevel": p.default_level} for p in rules.POLICIES]}


def _as_resources(stack: str, planned: list[dict[str, Any]]) -> list[rules.Resource]:
    out = []
    for item in planned:
        urn = item.get("urn") or f"urn:mlplat:{stack}::{item['type']}::{item['name']}"
        out.append(rules.Resource(type=item["type"], name=str(item["name"]), props=item.get("props") or {},
                                  urn=urn, parent=item.get("parent")))
    return out


def _status(findings: list[rules.Finding]) -> str:
    if any(f.level == rules.MANDATORY for f in findings):
        return FAILED
    return WARNED if findings else PASSED


def access_resource(spec: StackSpec) -> dict[str, Any]:
    """The stack file's ``mlplat:access`` as the policy pack reads it (``rules.T_ACCESS``)."""
    mode = spec.access.mode
    return {"type": rules.T_ACCESS, "name": spec.name,
            "props": {"provider": spec.provider.kind, "mode": mode.value if mode is not None else None,
                      "roles": {role: list(patterns) for role, patterns in spec.access.roles.items()}}}


def check_resources(spec: StackSpec, planned: list[dict[str, Any]]) -> StackResult:
    """Evaluate the policy pack over a stack's planned resources (already produced by its provider) and
    its stack-file settings (:func:`access_resource`)."""
    planned = [*planned, access_resource(spec)]
    result = StackResult(spec.name, spec.path, spec.provider.kind, resources=planned)
    try:
        result.findings = rules.evaluate(_as_resources(spec.name, planned), spec.policy.as_settings())
    except ValueError as exc:  # the stack model validates this too; kept for settings built in code
        raise StackError(f"invalid policy settings: {exc}", where=spec.path or spec.name,
                         hint="`mlplat policy list` shows every policy and its settings") from exc
    result.status = _status(result.findings)
    return result


def check_stack(name: str, project_dir: Path, ctx: Context) -> StackResult:
    """Check one stack; never raises for a problem of the stack itself (it lands in the result)."""
    from mlplat import providers
    from mlplat.stack import load_stack, stack_path

    started = time.perf_counter()
    try:
        path = str(stack_path(name, project_dir))
    except StackError:
        path = ""
    result = StackResult(name, path)
    try:
        spec = load_stack(name, project_dir)
    except StackError as exc:
        result.status = FAILED
        result.findings = [rules.Finding(STACK_VALID, rules.MANDATORY, str(exc), STACK_VALID_REMEDIATION,
                                         "stack", name)]
        result.seconds = time.perf_counter() - started
        return result
    result.provider = spec.provider.kind
    try:
        provisioner = providers.capability(spec, ctx, Capability.PROVISIONER)
        planned = provisioner.planned_resources()
    except CapabilityNotSupported as exc:
        # no resource graph: only the policies of the stack file's own settings apply (the others would
        # report the resources a program was never asked for)
        settings_only = check_resources(spec, [])
        result.resources = settings_only.resources
        result.findings = [f for f in settings_only.findings if f.policy in SETTINGS_POLICIES]
        result.status = FAILED if _status(result.findings) == FAILED else SKIPPED
        result.error = (f"provider '{spec.provider.kind}' has no program to check (only the stack file's settings "
                        f"were): {exc.message}")
        result.seconds = time.perf_counter() - started
        return result
    except MlplatError as exc:
        result.status, result.error = ERROR, str(exc)
        result.seconds = time.perf_counter() - started
        return result
    checked = check_resources(spec, planned)
    checked.seconds = time.perf_counter() - started
    return checked


def check(names: list[str], project_dir: Path, ctx: Context, *, graph_dir: Path | None = None) -> CheckReport:
    """Check each named stack in turn; with ``graph_dir``, also write each stack's resource graph as JSON."""
    started = time.perf_counter()
    report = CheckReport(str(project_dir))
    for name in names:
        result = check_stack(name, project_dir, ctx)
        report.stacks.append(result)
        if graph_dir is not None and result.resources:
            graph_dir.mkdir(parents=True, exist_ok=True)
            (graph_dir / f"{name}.json").write_text(json.dumps(result.resources, indent=1, sort_keys=True, default=str))
    report.seconds = time.perf_counter() - started
    return report
