"""The provider contract: one lifecycle, the same assertions, on every provider and control plane.

register → gate (promotion to staging) → four-eyes approval → production → deploy →
canary → one step → rollback. The test acts as a user: it trains in this process and does
everything else through the stack's control plane (``plane_for(spec, ctx).call``: models.promote,
models.approve, models.show, deployments.create/show/rollback, rollouts.status, audit.log/verify).
The canary step is a platform component's act, not a user's: the gateway's controller for the
local provider, the metrics SageMaker publishes to CloudWatch (moto in this process) for AWS.

Configurations (the ``driver`` fixture's ids):

- ``local-embedded``: the ledger is the state directory's SQLite, opened by this process;
- ``local-server-sqlite``: a real ``mlplat server`` process on the project serves the same
  SQLite ledger, and this process is its client (``MLPLAT_CONTROL_PLANE_URL``);
- ``local-server-postgres``: the same with the server's ledger in PostgreSQL (``tests/pg.py``);
- ``aws-embedded``: the AWS provider, embedded only, since moto runs inside this process and a
  server in another process would not see its fake AWS.
- ``gcp-embedded``: the GCP provider against the fake Vertex AI REST API and the fake Cloud Monitoring
  gRPC server (tests/contract/gcp_fake, real servers on 127.0.0.1); the canary step is judged on the
  per-deployed-model metrics fed into the fake Monitoring.
- ``azure-embedded``: the Azure provider against the fake ARM / Azure ML REST API and Blob Storage
  (tests/contract/azure_fake, a real server on 127.0.0.1); the canary step is judged on the
  per-deployment Azure Monitor metrics fed into the fake.

In the server configurations the gateway that takes the canary step runs in this process as the
platform process it is beside the server (``ctx.ledger_owner``, the server's database), and
the test checks that the server answered each of the user's writes.
"""
from __future__ import annotations

import asyncio
import json

import pytest

from tests.contract import azure_support as azs
from tests.contract import gcp_support as gs
from tests.contract import moto_support as ms
from tests.contract.azure_fake.fixtures import azure_fake, azure_server  # noqa: F401  (fixtures)
from tests.contract.gcp_fake.fixtures import gcp_fake, gcp_servers  # noqa: F401  (fixtures)
from tests.contract.lifecycle import (
    AUTHOR,
    approve,
    call,
    context,
    deployments,
    new_project,
    plane_mode,
    platform_serving,
    promote,
    show,
    train,
)
from tests.pg import fresh_database
from tests.server_support import running_server

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
        self.server = None  # the `mlplat server` process the test is a client of, if any
        self.database_url: str | None = None  # the server's ledger when it is not the state directory's SQLite

    def provision(self) -> None:
        from mlplat_providers.local.provisioner import LocalProvisioner

        ctx = context(self.project)
        provisioner = LocalProvisioner(ctx.stack(STACK), ctx)
        provisioner.apply(provisioner.plan())

    @property
    def mode(self) -> str:
        return "embedded" if self.server is None else "server"

    def judge_step(self) -> str:
        import httpx
        import pandas as pd

        from tests.integration.support_serving import warm

        frame = pd.read_parquet(self.project / "data" / "holdout.parquet").drop(columns=["label"]).head(1)
        body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
        serving = platform_serving(self.project, STACK, database_url=self.database_url)
        gateway = serving.gateway(environment=ENV, controller=False)
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
    mode = "embedded"
    server = None

    def __init__(self, project):
        self.project = project

    def provision(self) -> None:
        ms.provision_cloud(context(self.project).stack(STACK))

    def judge_step(self) -> str:
        serving = platform_serving(self.project, STACK)
        endpoint = serving.endpoint_name("scorer", ENV)
        ms.put_variant_metrics(endpoint, "primary", invocations=135)
        ms.put_variant_metrics(endpoint, "canary", invocations=15)
        return serving.step("scorer", environment=ENV)["action"]


class GcpDriver:
    """Traffic for a canary step: the per-deployed-model metrics Vertex AI publishes to Cloud Monitoring
    (fed into the fake), then ``step``."""

    name = "gcp"
    mode = "embedded"
    server = None

    def __init__(self, project, fake):
        self.project = project
        self.fake = fake

    def provision(self) -> None:
        gs.provision_cloud(context(self.project).stack(STACK), self.fake)

    def judge_step(self) -> str:
        serving = platform_serving(self.project, STACK)
        stable, candidate = gs.canary_versions(serving, "scorer", ENV)
        gs.feed_deployed_model(self.fake, serving, "scorer", ENV, stable, requests=135)
        gs.feed_deployed_model(self.fake, serving, "scorer", ENV, candidate, requests=15)
        return serving.step("scorer", environment=ENV)["action"]


class AzureDriver:
    """Traffic for a canary step: the per-deployment metrics Azure Monitor publishes for the endpoint
    (fed into the fake), then ``step``."""

    name = "azure"
    mode = "embedded"
    server = None

    def __init__(self, project, fake):
        self.project = project
        self.fake = fake

    def provision(self) -> None:
        azs.provision_cloud(context(self.project).stack(STACK))

    def shared_registry(self) -> str:
        """An Azure ML registry shared across teams, in the stack's resource group."""
        from tests.contract.azure_fake import fixtures, registries

        registries.add_registry(self.fake.arm, fixtures.SUBSCRIPTION, fixtures.RESOURCE_GROUP, "mlr-shared",
                                fixtures.LOCATION)
        return "mlr-shared"

    def judge_step(self) -> str:
        serving = platform_serving(self.project, STACK)
        stable, candidate = gs.canary_versions(serving, "scorer", ENV)
        azs.feed_deployment(self.fake, serving, "scorer", ENV, stable, requests=135)
        azs.feed_deployment(self.fake, serving, "scorer", ENV, candidate, requests=15)
        return serving.step("scorer", environment=ENV)["action"]


@pytest.fixture(params=["local-embedded", "local-server-sqlite",
                        pytest.param("local-server-postgres", marks=pytest.mark.postgres), "aws-embedded",
                        "gcp-embedded", "azure-embedded"])
def driver(request, tmp_path, monkeypatch):
    kind, _, ledger = request.param.partition("-")
    text = local_stack_text() if kind == "local" else gs.gcp_stack_text(approvers=APPROVERS) if kind == "gcp" \
        else azs.azure_stack_text(approvers=APPROVERS) if kind == "azure" else ms.aws_stack_text(approvers=APPROVERS)
    project = new_project(tmp_path / "project", {STACK: text})
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(project))
    monkeypatch.setenv("MLPLAT_USER", AUTHOR)
    monkeypatch.delenv("MLPLAT_STACK", raising=False)
    monkeypatch.delenv("MLPLAT_CONTROL_PLANE_URL", raising=False)
    monkeypatch.chdir(project)
    if kind == "local":
        # the staging endpoint as a local process, as on AWS; images are the `container` tests' subject
        monkeypatch.setattr("mlplat_providers.local.delivery.container_engine", lambda: None)
        drv = LocalDriver(project)
        drv.provision()
        if ledger == "embedded":
            yield drv
            return
        if ledger == "server-postgres":
            drv.database_url = fresh_database(request.getfixturevalue("postgres"))
        with running_server(project, STACK, database_url=drv.database_url,
                            env={"MLPLAT_CONTAINER_ENGINE": "none"}) as server:
            drv.server = server
            monkeypatch.setenv("MLPLAT_CONTROL_PLANE_URL", server.url)  # this process is the server's client
            yield drv
        return
    if kind == "gcp":
        drv_gcp = GcpDriver(project, request.getfixturevalue("gcp_fake"))
        drv_gcp.provision()
        yield drv_gcp
        return
    if kind == "azure":
        drv_azure = AzureDriver(project, request.getfixturevalue("azure_fake"))
        drv_azure.provision()
        yield drv_azure
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


def requests_answered(server) -> dict[tuple[str, str], int]:
    """``{(operation, HTTP status): count}`` from the server's /metrics."""
    import re

    import httpx

    text = httpx.get(server.url + "/metrics", timeout=10, trust_env=False).text
    return {(op, status): int(n) for op, status, n in
            re.findall(r'mlplat_api_requests_total\{operation="([^"]+)",status="(\d+)"\} (\d+)', text)}


def test_register_gate_approve_deploy_step_rollback(driver):
    from mlplat.errors import Denied, ExitCode, MlplatError
    from mlplat.services import registry as reg

    project = driver.project
    spec, ctx = context(project).stack(STACK), context(project)
    assert spec.provider.kind == driver.name
    assert plane_mode(project, STACK) == driver.mode

    # register: versions count up from 1 and carry their lineage in the ledger
    assert train(project, STACK) == 1
    assert train(project, STACK, c=0.5) == 2
    row = show(project, STACK, 2, environment=ENV)
    assert row["stage"] == "dev"
    assert row["lineage"]["datasets"]["train"]["sha256"] and row["author"] == AUTHOR
    assert reg.verified_model_dir(spec, ctx, "scorer", 2).joinpath("MLmodel").is_file()

    dep = deployments(project, STACK)
    with pytest.raises(Denied):
        dep.deploy("scorer", 1, environment=ENV, strategy="direct")  # not gated, not approved

    release(project, 1)
    first = dep.deploy("scorer", 1, environment=ENV, strategy="direct")
    assert routes(first) == [("primary", 1, 100)]

    release(project, 2)
    # sharing with other teams: only the production version leaves the team; Azure copies it into the shared
    # registry, providers without shared registries say so
    with pytest.raises(Denied, match="production"):
        call(project, STACK, "models.share", name="scorer", version=1)
    if driver.name == "azure":
        shared = call(project, STACK, "models.share", name="scorer", version=2, registry=driver.shared_registry())
        assert (shared["registry"], shared["shared_version"]) == ("mlr-shared", "2")
    else:
        with pytest.raises(MlplatError, match="sharing") as unsupported:  # through a server: by exit code
            call(project, STACK, "models.share", name="scorer", version=2)
        assert unsupported.value.exit_code == ExitCode.NOT_SUPPORTED
    canary = dep.deploy("scorer", 2, environment=ENV, strategy="canary")
    assert routes(canary) == [("canary", 2, 10), ("stable", 1, 90)]
    assert canary["rollout_id"] is not None

    assert driver.judge_step() == "step"
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

    actions = [e["action"] for e in call(project, STACK, "audit.log", limit=1_000_000)]
    verification = call(project, STACK, "audit.verify")
    for action in ("model.registered", "approval.approved", "stage.changed", "deployment.created",
                   "deployment.step", "deployment.rolled_back"):
        assert action in actions, action
    assert ("model.shared" in actions) is (driver.name == "azure")
    assert verification["ok"], verification["problems"]
    assert verification["entries"] == len(actions)

    if driver.server is not None:  # every write of the user was the server's, refusals included
        answered = requests_answered(driver.server)
        expected = {("models.register", "200"): 2, ("models.promote", "200"): 4, ("models.promote", "403"): 2,
                    ("models.approve", "200"): 2, ("models.approve", "403"): 2, ("deployments.create", "200"): 2,
                    ("deployments.create", "403"): 1, ("deployments.rollback", "200"): 1}
        assert {key: answered.get(key, 0) for key in expected} == expected, answered
