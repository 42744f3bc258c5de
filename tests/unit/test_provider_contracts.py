"""Providers hand out implementations of the capability contracts, typed and checked.

Every installed provider, on the stacks shipped in stacks/ that use it: each capability it offers
builds an instance of that capability's ABC (the local stack provisioned for real, the AWS stack's
clients built without a call to AWS); each capability it lacks, and each optional operation an
implementation leaves out, raises ``CapabilityNotSupported`` naming the provider. A bundle whose
factory returns anything else is refused with an error naming the provider and the capability.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from mlplat import providers
from mlplat.context import Context
from mlplat.contracts import CONTRACTS, Capability, Contract, CostSource, Monitor, ProviderSettings
from mlplat.errors import CapabilityNotSupported, MlplatError
from mlplat.providers import ProviderBundle
from mlplat.stack import list_stacks
from tests.conftest import REPO, run_cli, write_project

SHIPPED = {path.name[len("Pulumi."):-len(".yaml")]: path.read_text()
           for path in sorted((REPO / "stacks").glob("Pulumi.*.yaml"))}


def quiet_context(project: Path) -> Context:
    from rich.console import Console

    return Context(project_dir=project, console=Console(file=open(os.devnull, "w")),
                   err=Console(file=open(os.devnull, "w")))


@pytest.fixture(scope="module")
def shipped_project(tmp_path_factory) -> Path:
    """A copy of the shipped stacks; the local ones provisioned by the local provider itself."""
    project = write_project(tmp_path_factory.mktemp("contracts") / "project", SHIPPED)
    ctx = quiet_context(project)
    for name in list_stacks(project):
        spec = ctx.stack(name)
        if spec.provider.kind == "local":
            provisioner = providers.capability(spec, ctx, Capability.PROVISIONER)
            provisioner.apply(provisioner.plan())
    return project


def test_every_capability_has_an_abstract_contract():
    assert set(CONTRACTS) == set(Capability)
    for capability, contract in CONTRACTS.items():
        assert issubclass(contract, Contract) and inspect.isabstract(contract), capability


def test_every_installed_provider_is_used_by_a_shipped_stack():
    kinds = {quiet_context(REPO).stack(name).provider.kind for name in SHIPPED}
    assert set(providers.names()) <= kinds  # so the test below covers every provider


@pytest.mark.parametrize("stack", sorted(SHIPPED))
def test_each_capability_of_a_shipped_stack_is_an_instance_of_its_contract(shipped_project, stack):
    ctx = quiet_context(shipped_project)
    spec = ctx.stack(stack)
    bundle = providers.get(spec.provider.kind)
    offered = [c for c in Capability if bundle.supports(c)]
    for capability in Capability:
        if capability in offered:
            impl = bundle.get(capability, spec, ctx)
            assert isinstance(impl, CONTRACTS[capability]), (stack, capability)
            assert impl.provider_name == spec.provider.kind
        else:
            with pytest.raises(CapabilityNotSupported) as info:
                bundle.get(capability, spec, ctx)
            assert (info.value.provider, info.value.capability) == (spec.provider.kind, capability.value)
    if spec.provider.kind == "local":
        assert set(offered) == set(Capability)  # the local provider is the complete one


def test_optional_operations_a_provider_leaves_out_name_it(shipped_project):
    ctx = quiet_context(shipped_project)
    local, aws = ctx.stack("dev"), ctx.stack("fraud-prod")
    cases = [
        (lambda: providers.capability(local, ctx, Capability.PROVISIONER).program(), "local", "Pulumi program"),
        (lambda: providers.capability(local, ctx, Capability.COST).billed(0.0, 1.0), "local", "billed cost"),
        (lambda: providers.capability(local, ctx, Capability.SERVING).step("scorer", environment="dev"),
         "local", "canary step"),
        (lambda: providers.capability(aws, ctx, Capability.PROVISIONER).set_lock_wait(5.0), "aws",
         "waiting for the stack lock"),
    ]
    for call, provider, operation in cases:
        with pytest.raises(CapabilityNotSupported) as info:
            call()
        assert (info.value.provider, info.value.capability) == (provider, operation)
        assert info.value.exit_code == 7
    # and the ones they implement do not raise
    assert callable(providers.capability(aws, ctx, Capability.PROVISIONER).program())
    providers.capability(local, ctx, Capability.PROVISIONER).set_lock_wait(5.0)


# --- a provider whose bundle breaks the contract ------------------------------------------------------


class TinyProviderSpec(ProviderSettings):
    kind: Literal["tiny"] = Field(description="A provider that only exists in this test.")


class OnlyAMonitor(Monitor):
    """A real Monitor, handed out where a CostSource is due."""

    def database(self):
        raise NotImplementedError

    def deployed(self):
        return []

    def captures(self, model, version, *, limit=None, since=None, until=None, labelled_only=False):
        return []

    def known_request_ids(self, ids):
        return set()


@pytest.fixture
def tiny():
    providers.reset()
    bundle = ProviderBundle("tiny", "test: returns the wrong types", {
        Capability.COST: lambda spec, ctx: OnlyAMonitor(),
        Capability.TRACKING: lambda spec, ctx: {"not": "a tracker"},
        Capability.MONITORING: lambda spec, ctx: OnlyAMonitor(),
    }, settings_model=TinyProviderSpec)
    providers.register(bundle)
    yield bundle
    providers.reset()


def test_a_factory_returning_another_type_is_refused_naming_provider_and_capability(tiny, tmp_path):
    text = SHIPPED["dev"].replace("    kind: local\n    stateDir: .mlplat/dev\n", "    kind: tiny\n")
    project = write_project(tmp_path / "project", {"t": text})
    ctx = quiet_context(project)
    spec = ctx.stack("t")
    assert isinstance(spec.provider, TinyProviderSpec)
    with pytest.raises(MlplatError) as info:
        providers.capability(spec, ctx, Capability.COST)
    message = str(info.value)
    assert "provider 'tiny'" in message and "capability 'cost'" in message
    assert "OnlyAMonitor" in message and "mlplat.contracts.cost.CostSource" in message
    assert not isinstance(info.value, CapabilityNotSupported)
    with pytest.raises(MlplatError, match="provider 'tiny' returned builtins.dict for capability 'tracking'"):
        tiny.get(Capability.TRACKING, spec, ctx)
    assert isinstance(tiny.get(Capability.MONITORING, spec, ctx), Monitor)  # the right type passes
    assert not isinstance(OnlyAMonitor(), CostSource)


def test_a_settings_model_must_accept_exactly_the_bundle_name():
    from mlplat_providers.aws.settings import AwsProviderSpec

    with pytest.raises(MlplatError, match=r"provider 'tiny': AwsProviderSpec.kind must be Literal\['tiny'\]"):
        ProviderBundle("tiny", "test", {}, settings_model=AwsProviderSpec)
    with pytest.raises(MlplatError, match="not a ProviderSettings subclass"):
        ProviderBundle("tiny", "test", {}, settings_model=dict)
    with pytest.raises(TypeError):
        ProviderBundle("tiny", "test", {})  # a bundle declares its settings model


# --- the CLI calls optional operations and handles the refusal -------------------------------------


def test_lock_wait_on_a_stack_locked_by_pulumi_is_refused_and_creates_nothing(tmp_path):
    project = write_project(tmp_path / "project", {"fraud-prod": SHIPPED["fraud-prod"]})
    result = run_cli("up", "--stack", "fraud-prod", "--yes", "--lock-wait", "5", cwd=project)
    assert result.returncode == 7, result.stderr
    assert "provider 'aws' does not support 'waiting for the stack lock'" in result.stderr
    assert "drop --lock-wait" in result.stderr
    assert not (project / ".mlplat").exists()


def test_cost_report_all_stacks_reads_only_stacks_metered_on_this_machine(tmp_path):
    from mlplat.db import Database

    project = write_project(tmp_path / "project", {"dev": SHIPPED["dev"], "fraud-prod": SHIPPED["fraud-prod"]})
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    refused = run_cli("cost", "report", "--all-stacks", "--json", cwd=project)
    assert refused.returncode == 4 and "no provisioned local stack" in refused.stderr
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before
    Database(project / ".mlplat" / "dev" / "platform.db").migrate()  # the local stack's meter, empty
    report = run_cli("cost", "report", "--all-stacks", "--json", cwd=project)
    assert report.returncode == 0, report.stderr
    assert not (project / ".mlplat" / "fraud-prod").exists()  # the AWS stack's cost source was never built


def test_stack_files_and_schema_need_no_cloud_sdk(tmp_path):
    """Each provider's settings model imports no cloud SDK (as ZenML flavors keep their config apart)."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('boto3', 'botocore', 'pulumi', 'pulumi_aws', 'google', 'azure', 'mlflow'):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from mlplat.stack import json_schema, list_stacks, load_stack\n"
        f"root = {str(REPO)!r}\n"
        "kinds = sorted({load_stack(n, __import__('pathlib').Path(root)).provider.kind for n in list_stacks("
        "__import__('pathlib').Path(root))})\n"
        "refs = sorted(r['$ref'] for r in json_schema()['properties']['provider']['oneOf'])\n"
        "print(kinds, refs)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("['aws', 'azure', 'gcp', 'local'] ['#/$defs/AwsProviderSpec', "
                                     "'#/$defs/AzureProviderSpec', '#/$defs/GcpProviderSpec', "
                                     "'#/$defs/LocalProviderSpec']")
