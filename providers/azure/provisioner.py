"""`mlplat up | preview | destroy | status` for Azure stacks, through Pulumi's Automation API.

``planned_resources`` runs the same program under Pulumi's mocks answering ARM ids and Azure's invokes
(:mod:`mlplat_providers.azure.offline`): no CLI, no credentials. That is what ``mlplat preview
--offline`` prints and what ``mlplat policy check`` evaluates. The real engine needs the ``pulumi`` CLI
(``ToolMissing`` names the install command when it is absent) and Azure credentials from the default
chain (``az login``, a managed identity, or the ``ARM_*`` environment variables).
"""
from __future__ import annotations

from typing import Any

from mlplat.pulumi_support import PulumiProvisioner


class AzureProvisioner(PulumiProvisioner):
    def _run_program(self, spec: Any) -> None:
        from mlplat_providers.azure.components import program

        program(spec)

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

    def _check_stack(self) -> None:
        from mlplat_providers.azure.plan import stack_plan

        stack_plan(self.spec)  # a missing subscription, resource group or location is named before the CLI is needed

    def _after_up(self, outputs: dict[str, Any]) -> None:
        out = self.ctx.err if self.ctx.json else self.ctx.console
        for key in ("controlPlaneUrl", "trackingUrl", "workspace", "containerRegistry"):
            if outputs.get(key):
                out.print(f"  {key}: {outputs[key]}", markup=False, highlight=False, soft_wrap=True)
