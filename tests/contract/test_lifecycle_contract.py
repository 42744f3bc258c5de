"""The provider contract: one lifecycle, the same assertions, on every provider.

register → gate (promotion to staging) → four-eyes approval → production → deploy →
canary → one step → rollback, through the provider-neutral services only
(``mlplat.services.*`` and the capabilities ``mlplat.providers`` hands out). The
providers differ only in what stands in for live traffic when a canary step is judged:
real requests through the local gateway, or the CloudWatch metrics SageMaker publishes
(moto in this process) for the AWS provider.
"""
from __future__ import annotations

import asyncio
import json

import pytest

from tests.contract import moto_support as ms
from tests.contract.lifecycle import AUTHOR, approve, context, new_project, promote, serving, train

pytestmark = pytest.mark.integration

STACK = "team"
ENV = "production"


APPROVERS = "[risk-office@example.com, ds@example.com]"  # the author is an approver, yet never of their own


def local_stack_text() -> str:
    text = ms.aws_stack_text(approvers=APPROVERS)
    aws_lines = [f"  aws:region: {ms.REGION}", "    kind: aws", f"    region: {ms.REGION}", f'    accountId: "{ms.ACCOUNT}"']
    for line in aws_lines:
        text = text.replace(line + "\n", "")
    return text.replace("  mlplat:provider:\n", "  mlplat:provider:\n    kind: local\n    stateDir: .mlplat/team\n") \
        .replace("instanceType: ml.m5.large", "instanceType: local.cpu")


class LocalDriver:
    """Traffic for a canary step: keyed requests through the gateway, judged by its controller.

    The verdict rests on what the test sends, not on chance: routing keys fix which variant
    serves each request (the gateway's own router picks them), every version is warm before
    its latency counts, and the controller is driven pass by pass, with fresh traffic between
    passes, until it acts - a latency stall it holds as "suspect" is then judged again on new
    samples, as the running controller would - or ``ROUNDS`` rounds have gone by.
    """

    name = "local"
    ROUND = {"canary": 20, "stable": 60}  # requests per round, per variant
    ROUNDS = 10

    def __init__(self, project):
        self.project = project

    def provision(self) -> None:
        from mlplat_providers.local.provisioner import LocalProvisioner

        ctx = context(self.project)
        provisioner = LocalProvisioner(ctx.stack(STACK), ctx)
        provisioner.apply(provisioner.plan())

    def judge_step(self, dep) -> str:
        import httpx
        import pandas as pd

        from tests.integration.support_serving import warm

        frame = pd.read_parquet(self.project / "data" / "holdout.parquet").drop(columns=["label"]).head(1)
        body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
        gateway = dep.gateway(environment=ENV, controller=False)
        gateway.start()
        try:
            live = gateway.table["scorer"]
            warm(live, json.dumps(body).encode())
            keys = self._keys(live)

            async def traffic(batch: list[tuple[str, str]]) -> list[tuple[int, str]]:
                transport = httpx.ASGITransport(app=gateway)
                async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                    out = []
                    for routing_key, _ in batch:
                        r = await client.post("/endpoints/scorer/invocations", json=body,
                                              headers={"x-routing-key": routing_key})
                        out.append((r.status_code, r.headers.get("x-mlplat-variant", "")))
                    return out

            for _ in range(self.ROUNDS):  # the deadline counts rounds of traffic, not seconds
                batch = next(keys)
                assert asyncio.run(traffic(batch)) == [(200, variant) for _, variant in batch]
                acted = gateway.control_once()
                if acted:
                    break
        finally:
            gateway.stop()
        return acted[0][1] if acted else "wait"

    def _keys(self, live):
        """Rounds of ``(routing key, variant it routes to)``, canary and stable interleaved."""
        i = 0
        while True:
            picked: dict[str, list[str]] = {variant: [] for variant in self.ROUND}
            while any(len(picked[v]) < n for v, n in self.ROUND.items()):
                routing_key = f"contract-request-{i}"
                i += 1
                variant = live.pick(routing_key.encode()).variant
                if len(picked[variant]) < self.ROUND[variant]:
                    picked[variant].append(routing_key)
            stable = iter(picked["stable"])
            ratio = self.ROUND["stable"] // self.ROUND["canary"]
            batch = []
            for canary_key in picked["canary"]:
                batch.append((canary_key, "canary"))
                batch += [(next(stable), "stable") for _ in range(ratio)]
            batch += [(k, "stable") for k in stable]
            yield batch


class AwsDriver:
    """Traffic for a canary step: the metrics SageMaker publishes to CloudWatch, then ``step``."""

    name = "aws"

    def __init__(self, project):
        self.project = project

    def provision(self) -> None:
        ms.provision_cloud(context(self.project).stack(STACK))

    def judge_step(self, dep) -> str:
        endpoint = dep.endpoint_name("scorer", ENV)
        ms.put_variant_metrics(endpoint, 1, invocations=135)
        ms.put_variant_metrics(endpoint, 2, invocations=15)
        return dep.step("scorer", environment=ENV)["action"]


@pytest.fixture(params=["local", "aws"])
def driver(request, tmp_path, monkeypatch):
    kind = request.param
    text = local_stack_text() if kind == "local" else ms.aws_stack_text(approvers=APPROVERS)
    project = new_project(tmp_path / "project", {STACK: text})
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(project))
    monkeypatch.setenv("MLPLAT_USER", AUTHOR)
    monkeypatch.delenv("MLPLAT_STACK", raising=False)
    monkeypatch.chdir(project)
    if kind == "local":
        # the staging endpoint as a local process, as on AWS; images are the `container` tests' subject
        monkeypatch.setattr("mlplat_providers.local.delivery.container_engine", lambda: None)
        drv = LocalDriver(project)
        drv.provision()
        yield drv
        return
    from moto import mock_aws

    ms.use_fake_aws(monkeypatch)
    ms.install_sagemaker_gaps()
    with mock_aws():
        drv = AwsDriver(project)
        drv.provision()
        yield drv


def routes(endpoint: dict) -> list[tuple[str, int, int]]:
    return sorted((r["variant"], r["version"], r["weight"]) for r in endpoint["routes"] if r["weight"])


def release(project, version: int) -> None:
    """gate → approval → production, with the checks every provider must enforce on the way."""
    from mlplat.errors import Denied

    assert promote(project, STACK, version, "staging")["stage"] == "staging"
    with pytest.raises(Denied, match="needs 1 approval"):
        promote(project, STACK, version, "production")  # critical model: four eyes first
    with pytest.raises(Denied, match="four-eyes"):
        approve(project, STACK, version, user=AUTHOR)
    assert approve(project, STACK, version)["state"] == "approved"
    assert promote(project, STACK, version, "production")["stage"] == "production"


def test_register_gate_approve_deploy_step_rollback(driver):
    from mlplat.errors import Denied
    from mlplat.services import audit
    from mlplat.services import registry as reg

    project = driver.project
    spec, ctx = context(project).stack(STACK), context(project)
    assert spec.provider.kind == driver.name

    # register: versions count up from 1 and carry their lineage in the ledger
    assert train(project, STACK) == 1
    assert train(project, STACK, c=0.5) == 2
    registry = reg.registry_for(spec, ctx)
    conn = registry.database().connect()
    try:
        row = reg.version_row(conn, "scorer", 2)
        assert reg.stage_of(conn, "scorer", 2, ENV) == "dev"
    finally:
        conn.close()
    assert row["lineage"]["datasets"]["train"]["sha256"] and row["author"] == AUTHOR
    assert reg.verified_model_dir(spec, ctx, "scorer", 2).joinpath("MLmodel").is_file()

    dep = serving(project, STACK)
    with pytest.raises(Denied):
        dep.deploy("scorer", 1, environment=ENV, strategy="direct")  # not gated, not approved

    release(project, 1)
    first = dep.deploy("scorer", 1, environment=ENV, strategy="direct")
    assert routes(first) == [("primary", 1, 100)]

    release(project, 2)
    canary = dep.deploy("scorer", 2, environment=ENV, strategy="canary")
    assert routes(canary) == [("canary", 2, 10), ("stable", 1, 90)]
    assert canary["rollout_id"] is not None

    assert driver.judge_step(dep) == "step"
    stepped = dep.show("scorer", environment=ENV)
    assert routes(stepped) == [("canary", 2, 50), ("stable", 1, 50)]
    status = dep.rollout_status("scorer", environment=ENV)
    assert status["rollout"]["state"] == "running" and status["rollout"]["step_index"] == 1

    rolled = dep.rollback("scorer", environment=ENV, reason="contract test")
    assert routes(rolled) == [("primary", 1, 100)] and rolled["stable_version"] == 1
    status = dep.rollout_status("scorer", environment=ENV)
    assert status["rollout"]["state"] == "rolled_back"
    events = [e["event"] for e in status["events"]]
    assert events[-4:] == ["deployed", "deployed", "step", "rolled_back"]

    conn = registry.database().connect()
    try:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log ORDER BY seq")]
        verification = audit.verify(conn)
    finally:
        conn.close()
    for action in ("model.registered", "approval.approved", "stage.changed", "deployment.created",
                   "deployment.step", "deployment.rolled_back"):
        assert action in actions, action
    assert verification.ok, verification.problems
    assert verification.entries == len(actions)
