"""`mlplat up | preview | destroy | status` for GCP stacks, through Pulumi's Automation API.

``planned_resources`` runs the same program under Pulumi's mocks answering GCP ids and invokes
(:mod:`mlplat_providers.gcp.offline`): no CLI, no credentials. That is what ``mlplat preview
--offline`` prints and what ``mlplat policy check`` evaluates. The real engine needs the ``pulumi`` CLI
(``ToolMissing`` names the install command when it is absent) and Google credentials from the default
chain (``gcloud auth application-default login`` or a service account).
"""
from __future__ import annotations

from typing import Any

from mlplat.pulumi_support import PulumiProvisioner


class GcpProvisioner(PulumiProvisioner):
    def _run_program(self, spec: Any) -> None:
        from mlplat_providers.gcp.components import program

        program(spec)

    def planned_resources(self) -> list[dict[str, Any]]:
        from mlplat.pulumi_support import run_offline
        from mlplat_providers.gcp.offline import GcpOfflineCloud
        from mlplat_providers.gcp.plan import stack_plan
        from mlplat_providers.gcp.summary import summarize

        plan = stack_plan(self.spec)  # validates the stack for GCP before any Pulumi import
        records = run_offline(self.program(), project="mlplat", stack=self.spec.name, region=plan.region,
                              cloud=GcpOfflineCloud(plan.project, plan.region))
        return [{**r.to_dict(), "summary": summarize(r.type, r.inputs)} for r in records]

    def _check_stack(self) -> None:
        from mlplat_providers.gcp.plan import stack_plan

        stack_plan(self.spec)  # a missing project, region or billing account is named before the CLI is needed

    def _after_up(self, outputs: dict[str, Any]) -> None:
        out = self.ctx.err if self.ctx.json else self.ctx.console
        for key in ("controlPlaneUrl", "trackingUrl", "bucket", "dockerRepository"):
            if outputs.get(key):
                out.print(f"  {key}: {outputs[key]}", markup=False, highlight=False, soft_wrap=True)
        out.print("  cost: enable the billing export to BigQuery once (Billing > Billing export), see the README",
                  markup=False, highlight=False, soft_wrap=True)
