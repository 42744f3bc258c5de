"""`mlplat up | preview | destroy | status` for Azure stacks, through Pulumi's Automation API.

``planned_resources`` runs the same program under Pulumi's mocks answering ARM ids and Azure's invokes
(:mod:`mlplat_providers.azure.offline`): no CLI, no credentials. That is what ``mlplat preview
--offline`` prints and what ``mlplat policy check`` evaluates. The real engine needs the ``pulumi`` CLI
(``ToolMissing`` names the install command when it is absent) and Azure credentials from the default
chain (``az login``, a managed identity, or the ``ARM_*`` environment variables).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlplat.contracts import Plan, PlannedChange, Provisioner, ResourceStatus
from mlplat.errors import CheckFailed, ExternalError

_OPS = {"create": "create", "update": "update", "delete": "delete", "same": "unchanged", "replace": "update",
        "create-replacement": "update", "delete-replaced": "update", "read": "unchanged", "refresh": "unchanged"}


class AzureProvisioner(Provisioner):
    def __init__(self, spec, ctx):
        self.spec = spec
        self.ctx = ctx

    def program(self) -> Callable[[], None]:
        """The stack's Pulumi program (a callable Pulumi runs inline or under mocks)."""
        spec = self.spec

        def run() -> None:
            from mlplat_providers.azure.components import program

            program(spec)

        return run

    def planned_resources(self) -> list[dict[str, Any]]:
        from mlplat.pulumi_support import run_offline
        from mlplat_providers.azure.offline import AzureOfflineCloud
        from mlplat_providers.azure.plan import stack_plan
        from mlplat_providers.azure.summary import summarize

        plan = stack_plan(self.spec)  # validates the stack for Azure before any Pulumi import
        records = run_offline(self.program(), project="mlplat", stack=self.spec.name, region=plan.location,
                              cloud=AzureOfflineCloud(plan.subscription_id, plan.resource_group, plan.location,
                                                      getattr(self.spec.provider, "tenant_id", None)))
        return [{**r.to_dict(), "summary": summarize(r.type, r.inputs)} for r in records]

    # --- the real engine ----------------------------------------------------------------

    def _stack(self):
        from mlplat.pulumi_support import automation_stack
        from mlplat_providers.azure.plan import stack_plan

        stack_plan(self.spec)  # a missing subscription, resource group or location is named before the CLI is needed
        return automation_stack(self.spec, self.program())

    def _guard_policies(self) -> None:
        """Mandatory policy violations block `up`, before anything reaches the cloud."""
        from mlplat.services.policy_check import check_resources

        result = check_resources(self.spec, self.planned_resources())
        blocking = [f for f in result.findings if f.level == "mandatory"]
        if blocking:
            raise CheckFailed(
                f"{len(blocking)} mandatory policy violation(s) block `up` of stack '{self.spec.name}': "
                + "; ".join(f"[{f.policy}] {f.message}" for f in blocking[:5]),
                hint=f"run `mlplat policy check --stack {self.spec.name}` for the details and remediations")

    def _collect(self, events: list) -> Callable[[Any], None]:
        def on_event(event) -> None:
            pre = getattr(event, "resource_pre_event", None)
            if pre is not None and pre.metadata is not None:
                meta = pre.metadata
                events.append(PlannedChange(meta.type, meta.urn.rsplit("::", 1)[-1],
                                            _OPS.get(getattr(meta.op, "value", str(meta.op)), "update")))
        return on_event

    def plan(self) -> Plan:
        stack = self._stack()
        events: list[PlannedChange] = []
        try:
            stack.preview(on_event=self._collect(events))
        except Exception as exc:  # Automation API raises CommandError subclasses with the CLI's output
            raise ExternalError(f"pulumi preview of stack '{self.spec.name}' failed: {str(exc).strip()[-800:]}") from exc
        return Plan(self.spec.name, [e for e in events if e.resource != "pulumi:pulumi:Stack"])

    def apply(self, plan: Plan) -> Plan:
        self._guard_policies()
        stack = self._stack()
        events: list[PlannedChange] = []
        try:
            result = stack.up(on_event=self._collect(events),
                              on_output=lambda line: self.ctx.console.print(line, highlight=False))
        except Exception as exc:
            raise ExternalError(f"pulumi up of stack '{self.spec.name}' failed: {str(exc).strip()[-800:]}",
                                hint="fix the error above and rerun; Pulumi resumes from its state") from exc
        outputs = {key: getattr(value, "value", value) for key, value in (result.outputs or {}).items()}
        out = self.ctx.err if self.ctx.json else self.ctx.console
        for key in ("controlPlaneUrl", "trackingUrl", "workspace", "containerRegistry"):
            if outputs.get(key):
                out.print(f"  {key}: {outputs[key]}", markup=False, highlight=False, soft_wrap=True)
        return Plan(self.spec.name, [e for e in events if e.resource != "pulumi:pulumi:Stack"])

    def plan_destroy(self) -> Plan:
        stack = self._stack()
        state = stack.export_stack().deployment or {}
        return Plan(self.spec.name, [PlannedChange(r["type"], r["urn"].rsplit("::", 1)[-1], "delete")
                                     for r in state.get("resources", []) if r.get("type") != "pulumi:pulumi:Stack"])

    def destroy(self) -> Plan:
        plan = self.plan_destroy()
        stack = self._stack()
        try:
            stack.destroy(on_output=lambda line: self.ctx.console.print(line, highlight=False))
        except Exception as exc:
            raise ExternalError(f"pulumi destroy of stack '{self.spec.name}' failed: {str(exc).strip()[-800:]}") from exc
        return plan

    def status(self) -> list[ResourceStatus]:
        stack = self._stack()
        state = stack.export_stack().deployment or {}
        return [ResourceStatus(r["type"], r["urn"].rsplit("::", 1)[-1], True, r.get("id", ""))
                for r in state.get("resources", []) if r.get("type") != "pulumi:pulumi:Stack"]
