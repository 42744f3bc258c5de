"""`mlplat up | preview | destroy | status` for AWS stacks, through Pulumi's Automation API.

``planned_resources`` runs the same program under Pulumi's mocks instead: no CLI,
no credentials. That is what ``mlplat preview --offline`` prints and what
``mlplat policy check`` evaluates.
"""
from __future__ import annotations

from typing import Any

from mlplat.pulumi_support import PulumiProvisioner


class AwsProvisioner(PulumiProvisioner):
    def _run_program(self, spec: Any) -> None:
        from mlplat_providers.aws.components import program

        program(spec)

    def planned_resources(self) -> list[dict[str, Any]]:
        from mlplat.pulumi_support import run_offline
        from mlplat_providers.aws.plan import stack_plan

        plan = stack_plan(self.spec)  # validates the stack for AWS before any Pulumi import
        from mlplat_providers.aws.summary import summarize

        records = run_offline(self.program(), project="mlplat", stack=self.spec.name, region=plan.region)
        return [{**r.to_dict(), "summary": summarize(r.type, r.inputs)} for r in records]

    def _after_up(self, outputs: dict[str, Any]) -> None:
        from mlplat_providers.aws.control_plane import up_lines
        from mlplat_providers.aws.runtime.state import AwsState

        # the stack's ledger, sealing key and tracking store on this machine: reads find them from now on
        AwsState(self.spec.state_dir, getattr(self.ctx, "database_url", None)).ensure()
        for line in up_lines(self.spec, outputs):
            (self.ctx.err if self.ctx.json else self.ctx.console).print(line, markup=False, highlight=False,
                                                                          soft_wrap=True)
