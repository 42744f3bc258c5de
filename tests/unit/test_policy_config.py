"""Policy settings: enforcement levels (pack x policy), setting validation, the stack field, the CrossGuard adapter."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mlplat.errors import StackError
from mlplat.stack import parse_stack
from mlplat_policies import rules
from tests.conftest import REPO
from tests.policies.graphs import aws_graph, replace

CANARY_20 = {"autoRollbackConfiguration": {"alarms": [{"alarmName": "card-5xx"}]},
             "blueGreenUpdatePolicy": {"trafficRoutingConfiguration": {
                 "type": "CANARY", "canarySize": {"type": "CAPACITY_PERCENT", "value": 20}}}}


def violating_graph():
    """Violates safe-rollout only."""
    return replace(aws_graph(), "endpoint", deploymentConfig=CANARY_20)


@pytest.mark.parametrize("pack, policy, expected", [
    (None, None, "mandatory"),            # the policy's default
    ("advisory", None, "advisory"),       # the pack level applies to policies without their own
    ("disabled", None, None),
    ("advisory", "mandatory", "mandatory"),  # the policy's own level wins over the pack's
    ("mandatory", "advisory", "advisory"),
    ("mandatory", "disabled", None),
    ("disabled", "advisory", "advisory"),
    (None, {"enforcementLevel": "advisory", "maxFirstCanaryStep": 10}, "advisory"),
    (None, {"maxFirstCanaryStep": 10}, "mandatory"),   # settings without a level keep the default
])
def test_enforcement_level_combinations(pack, policy, expected):
    settings = {"enforcementLevel": pack, "policies": {"safe-rollout": policy} if policy is not None else {}}
    findings = rules.evaluate(violating_graph(), settings)
    levels = {f.level for f in findings if f.policy == "safe-rollout"}
    assert levels == ({expected} if expected else set())
    assert {f.policy for f in findings} <= {"safe-rollout"}


def test_policy_settings_change_the_verdict():
    settings = {"policies": {"safe-rollout": {"maxFirstCanaryStep": 25}}}
    assert rules.evaluate(violating_graph(), settings) == []


def test_findings_carry_resource_and_remediation():
    finding = rules.evaluate(violating_graph())[0]
    assert finding.resource_type == "aws:sagemaker/endpoint:Endpoint" and finding.resource_name == "endpoint"
    assert finding.remediation == rules.BY_NAME["safe-rollout"].remediation
    assert finding.urn.startswith("urn:pulumi:")


@pytest.mark.parametrize("policies, fragment", [
    ({"spnd": "advisory"}, "unknown policy 'spnd'; did you mean 'spend'?"),
    ({"spend": "strict"}, "'strict' is not one of advisory, mandatory, disabled"),
    ({"spend": {"maxGpu": 1}}, "unknown setting 'maxGpu'; did you mean 'maxGpuInstances'?"),
    ({"spend": {"maxGpuInstances": "two"}}, "maxGpuInstances must be a integer"),
    ({"safe-rollout": {"maxShadowPercent": 80}}, "between 0 and 50"),
    ({"approval-required": {"approvalFor": "some"}}, "one of critical, all"),
    ({"spend": ["mandatory"]}, "expected an enforcement level or a mapping"),
])
def test_bad_settings_are_clear_errors(policies, fragment):
    errors = rules.config_errors(policies)
    assert any(fragment in e for e in errors), errors
    with pytest.raises(ValueError, match="spnd|strict|maxGpu|maxShadowPercent|approvalFor|expected"):
        rules.evaluate([], {"policies": policies})


STACK = (REPO / "stacks" / "Pulumi.dev.yaml").read_text()


def test_stack_policy_field_accepts_a_crossguard_shaped_config(tmp_path):
    text = STACK + "  mlplat:policy:\n    enforcementLevel: advisory\n    policies:\n      spend: {maxGpuInstances: 0}\n"
    spec = parse_stack(text, path=tmp_path / "Pulumi.x.yaml", name="x", project_dir=tmp_path)
    assert spec.policy.as_settings() == {"enforcementLevel": "advisory", "policies": {"spend": {"maxGpuInstances": 0}}}
    assert rules.crossguard_config(spec.policy.as_settings()) == {"all": "advisory", "spend": {"maxGpuInstances": 0}}


def test_stack_with_unknown_policy_name_fails_validation_at_its_line(tmp_path):
    text = STACK + "  mlplat:policy:\n    policies:\n      cost-tag: mandatory\n"
    with pytest.raises(StackError) as caught:
        parse_stack(text, path=tmp_path / "Pulumi.x.yaml", name="x", project_dir=tmp_path)
    message = str(caught.value)
    assert "unknown policy 'cost-tag'" in message and "required-cost-tags" in message
    assert f"Pulumi.x.yaml:{STACK.count(chr(10)) + 2}" in message


def test_default_policy_config_is_empty_so_existing_stacks_stay_valid(tmp_path):
    spec = parse_stack(STACK, path=tmp_path / "Pulumi.dev.yaml", name="dev", project_dir=tmp_path)
    assert spec.policy.enforcement_level is None and spec.policy.policies == {}


# --- the CrossGuard adapter -----------------------------------------------------------------


def test_crossguard_policies_wrap_the_same_validators():
    from pulumi_policy import ResourceValidationArgs, ResourceValidationPolicy, StackValidationArgs, StackValidationPolicy
    from pulumi_policy.policy import PolicyCustomTimeouts, PolicyResource, PolicyResourceOptions

    from mlplat_policies.__main__ import build_policies

    built = {p.name: p for p in build_policies()}
    assert list(built) == list(rules.NAMES)
    assert isinstance(built["required-cost-tags"], ResourceValidationPolicy)
    assert isinstance(built["safe-rollout"], StackValidationPolicy)
    assert built["spend"].remediation_steps == rules.BY_NAME["spend"].remediation

    opts = PolicyResourceOptions(protect=False, ignore_changes=[], delete_before_replace=None, aliases=[],
                                 additional_secret_outputs=[], custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
                                 parent=None)
    seen: list[str] = []
    bucket = ResourceValidationArgs("aws:s3/bucket:Bucket", {"tags": {"team": "x"}}, "urn:b", "b", opts, None, {})
    built["required-cost-tags"].validate(bucket, lambda message, urn=None: seen.append(message))
    assert seen and "cost-center" in seen[0]

    seen.clear()
    resources = [PolicyResource(r.type, dict(r.props), r.urn, r.name, opts, None, None, [], {})
                 for r in violating_graph()]
    built["safe-rollout"].validate(StackValidationArgs(resources, {"maxFirstCanaryStep": 10}),
                                   lambda message, urn=None: seen.append(message))
    assert len(seen) == 1 and "above the stack's limit" in seen[0]


def test_pack_runs_as_a_script_like_the_policy_runtime_runs_it(tmp_path):
    """Pulumi's policy runtime starts policies/__main__.py as a script; it must serve its analyzer port."""
    process = subprocess.Popen([sys.executable, str(REPO / "policies" / "__main__.py")], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = process.stdout.readline().strip()
        assert line.isdigit() and int(line) > 0, process.stderr.read() if process.poll() is not None else line
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def test_pack_metadata_files():
    pack = REPO / "policies"
    assert "runtime:" in (pack / "PulumiPolicy.yaml").read_text()
    assert "pulumi-policy" in (pack / "requirements.txt").read_text()
    source = (pack / "rules.py").read_text() + (pack / "__main__.py").read_text()
    assert "import mlplat" not in source.replace("import mlplat_policies", "") and "from mlplat" not in source
