"""`mlplat policy check` as CI runs it: stack files in, verdicts and exit codes out (subprocesses)."""
from __future__ import annotations

import json
import re
from xml.etree import ElementTree as ET

import pytest

from tests.conftest import REPO, run_cli, write_project

pytestmark = pytest.mark.pulumi

AWS = (REPO / "stacks" / "Pulumi.fraud-prod.yaml").read_text()
LOCAL = (REPO / "stacks" / "Pulumi.dev.yaml").read_text().replace("environment: dev", "environment: production")


def with_policy(text: str, block: str) -> str:
    return text + "  mlplat:policy:\n" + "".join(f"    {line}\n" for line in block.strip().splitlines())


# stack name → (stack file, expected status, policies expected to fire)
CASES = {
    "ok-aws": (AWS, "passed", set()),
    "ok-local": (LOCAL, "passed", set()),
    "tags-extra": (with_policy(AWS, "policies:\n  required-cost-tags: {requiredTags: [team, cost-center, environment, owner, project]}"),
                   "failed", {"required-cost-tags"}),
    "tags-ok-extra": (with_policy(AWS.replace("    owner: fraud-leads@example.com\n",
                                              "    owner: fraud-leads@example.com\n    project: cards\n"),
                                  "policies:\n  required-cost-tags: {requiredTags: [team, project]}"), "passed", set()),
    "tags-missing": (LOCAL.replace("    owner: ml-core@example.com\n", ""), "failed", {"stack-valid"}),
    # on AWS every version registers PendingManualApproval (the runtime's registry; the program's pipelines
    # register nothing themselves) and each group has its approval rule: approvalFor: all holds
    "approval-all": (with_policy(AWS, "policies:\n  approval-required: {approvalFor: all}"), "passed", set()),
    "approval-local": (with_policy(LOCAL, "policies:\n  approval-required: {approvalFor: all}"), "failed",
                       {"approval-required"}),
    "monitoring-off": (AWS.replace("    instanceType: ml.m5.large\n", "    instanceType: ml.m5.large\n    captureSampling: 0\n"),
                       "failed", {"monitoring-required"}),
    "monitoring-local": (LOCAL.replace("    drift: {psi: 0.2, ksPValue: 0.01}\n",
                                       "    drift: {psi: 0.2, ksPValue: 0.01}\n    channels: []\n"),
                         "failed", {"monitoring-required"}),
    "rollout-canary": (AWS.replace("steps: [1, 10, 50, 100]", "steps: [20, 60, 100]"), "failed", {"safe-rollout"}),
    "rollout-shadow": (with_policy(LOCAL.replace("shadow: {percent: 10}", "shadow: {percent: 40}"),
                                   "policies:\n  safe-rollout: {maxShadowPercent: 25}"), "failed", {"safe-rollout"}),
    "storage-kms": (with_policy(AWS, "policies:\n  storage: {requireKms: true}"), "passed", set()),
    "storage-local": (with_policy(LOCAL, "policies:\n  storage: {allowHostFilesystemEncryption: false}"), "failed",
                      {"storage"}),
    "spend-instance": (AWS.replace("instanceType: ml.m5.large", "instanceType: ml.p4d.24xlarge"), "failed", {"spend"}),
    "spend-gpu": (with_policy(AWS.replace("instanceType: ml.m5.large", "instanceType: ml.g5.xlarge"),
                              "policies:\n  spend: {maxGpuInstances: 1}"), "failed", {"spend"}),
    "spend-budget": (LOCAL.replace("  mlplat:budget: {monthlyUsd: 200}\n", ""), "failed", {"spend"}),
    "level-advisory": (with_policy(AWS.replace("steps: [1, 10, 50, 100]", "steps: [20, 60, 100]"),
                                   "policies:\n  safe-rollout: advisory"), "warned", {"safe-rollout"}),
    "level-pack-disabled": (with_policy(AWS.replace("steps: [1, 10, 50, 100]", "steps: [20, 60, 100]"),
                                        "enforcementLevel: disabled"), "passed", set()),
    "level-pack-advisory-policy-mandatory": (with_policy(
        AWS.replace("steps: [1, 10, 50, 100]", "steps: [20, 60, 100]").replace("instanceType: ml.m5.large",
                                                                               "instanceType: ml.c4.large"),
        "enforcementLevel: advisory\npolicies:\n  safe-rollout: mandatory"), "failed", {"safe-rollout", "spend"}),
    "bad-policy-name": (with_policy(AWS, "policies:\n  spnd: advisory"), "failed", {"stack-valid"}),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return write_project(tmp_path_factory.mktemp("policy") / "project", {k: v[0] for k, v in CASES.items()})


def check(project, *args):
    return run_cli("policy", "check", *args, cwd=project, env={"MLPLAT_PROJECT_DIR": str(project)}, timeout=600)


@pytest.fixture(scope="module")
def all_json(project):
    result = check(project, "--all", "--format", "json")
    return result, json.loads(result.stdout)


def test_all_stacks_in_one_run(all_json):
    result, report = all_json
    assert result.returncode == 1, result.stderr
    by_stack = {s["stack"]: s for s in report["stacks"]}
    assert set(by_stack) == set(CASES)
    for name, (_text, status, fired) in CASES.items():
        got = by_stack[name]
        assert got["status"] == status, (name, got)
        assert {f["policy"] for f in got["findings"]} == fired, (name, got["findings"])


def test_findings_name_resource_level_and_remediation(all_json):
    _result, report = all_json
    stack = next(s for s in report["stacks"] if s["stack"] == "rollout-canary")
    finding = stack["findings"][0]
    assert finding["resource_type"] == "mlplat:aws:Serving"  # the component declaring the runtime's endpoints
    assert finding["level"] == "mandatory" and "20" in finding["message"] and finding["remediation"]


def test_invalid_stack_and_failing_program_are_reported_not_crashes(all_json):
    _result, report = all_json
    by_stack = {s["stack"]: s for s in report["stacks"]}
    assert "unknown policy 'spnd'; did you mean 'spend'?" in by_stack["bad-policy-name"]["findings"][0]["message"]
    assert "owner" in by_stack["tags-missing"]["findings"][0]["message"]
    assert by_stack["ok-aws"]["resources"] > 40


def test_a_failing_program_is_reported_and_the_next_stacks_are_still_checked(project, monkeypatch):
    """Every setting a program could trip on is refused at stack validation, so no stack file breaks the
    AWS program any more; a program failing (a provider bug, a missing SDK) is made here in process."""
    from mlplat.context import Context
    from mlplat.errors import MlplatError
    from mlplat.services import policy_check, policy_formats
    from mlplat_providers.aws.provisioner import AwsProvisioner

    planned = AwsProvisioner.planned_resources

    def failing(self):
        if self.spec.name == "rollout-canary":
            raise MlplatError("the program failed: no image is known for this region")
        return planned(self)

    monkeypatch.setattr(AwsProvisioner, "planned_resources", failing)
    report = policy_check.check(["rollout-canary", "ok-aws"], project, Context(project_dir=project))
    broken, ok = report.stacks
    assert broken.status == policy_check.ERROR and "no image is known" in (broken.error or "")
    assert ok.status == policy_check.PASSED and len(ok.resources) > 40  # checked after the broken one
    suites = {s.get("name"): s for s in ET.fromstring(policy_formats.render_junit(report))}
    assert int(suites["rollout-canary"].get("errors")) > 0 and suites["ok-aws"].get("errors") == "0"


@pytest.mark.parametrize("stack, code", [("level-advisory", 0), ("ok-local", 0), ("bad-policy-name", 1)])
def test_exit_codes_per_stack(project, stack, code):
    result = check(project, "--stack", stack)
    assert result.returncode == code, result.stdout + result.stderr


def test_text_report_groups_by_stack_and_resource_with_remediation(project):
    result = check(project, "--stack", "rollout-canary", "--stack", "level-advisory")
    out = result.stdout
    assert result.returncode == 1
    assert "stack rollout-canary (aws" in out and "FAILED" in out and "stack level-advisory" in out and "WARNED" in out
    assert "mlplat:aws:Serving 'mlplat-fraud-production-serving'" in out and "card-scorer" in out
    assert "fix: Start serving.canary.steps" in out
    assert "2 stack(s) checked" in out


def test_dropping_a_cost_tag_turns_ci_red(tmp_path):
    project = write_project(tmp_path / "p", {"team": AWS})
    assert check(project, "--stack", "team").returncode == 0
    stack = project / "stacks" / "Pulumi.team.yaml"
    stack.write_text(stack.read_text().replace("    cost-center: CC-1042\n", ""))
    result = check(project, "--stack", "team")
    assert result.returncode == 1
    assert "cost-center" in result.stdout and "stack-valid" in result.stdout


def test_unknown_stack_is_a_config_error(project):
    result = check(project, "--stack", "no-such-stack")
    assert result.returncode == 3 and "not found" in result.stderr


def test_junit_and_sarif_reports(project, tmp_path):
    names = ["ok-aws", "rollout-canary", "level-advisory"]
    stacks = [a for n in names for a in ("--stack", n)]
    junit = check(project, *stacks, "--format", "junit", "-o", str(tmp_path / "r.xml"))
    assert junit.returncode == 1 and "written to" in junit.stderr
    suites = {s.get("name"): s for s in ET.parse(tmp_path / "r.xml").getroot()}
    assert suites["ok-aws"].get("failures") == "0" and suites["ok-aws"].get("errors") == "0"
    assert suites["rollout-canary"].get("failures") == "1"
    failed = [c for c in suites["rollout-canary"] if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["safe-rollout"]
    assert "advisory" in ET.tostring(suites["level-advisory"], encoding="unicode")

    sarif = check(project, *stacks, "--format", "sarif")
    document = json.loads(sarif.stdout)
    assert document["version"] == "2.1.0"
    run = document["runs"][0]
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert "safe-rollout" in rule_ids and "stack-valid" in rule_ids
    results = {(r["ruleId"], r["level"]) for r in run["results"]}
    assert ("safe-rollout", "error") in results and ("safe-rollout", "warning") in results
    located = next(r for r in run["results"] if r["ruleId"] == "safe-rollout" and r["level"] == "error")
    location = located["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "stacks/Pulumi.rollout-canary.yaml"
    line = (project / "stacks" / "Pulumi.rollout-canary.yaml").read_text().splitlines()[location["region"]["startLine"] - 1]
    assert re.match(r"\s*mlplat:serving:", line)


def test_save_graph_writes_each_stack_graph(project, tmp_path):
    result = check(project, "--stack", "ok-aws", "--stack", "ok-local", "--save-graph", str(tmp_path / "g"))
    assert result.returncode == 0, result.stderr
    graph = json.loads((tmp_path / "g" / "ok-aws.json").read_text())
    assert any(r["type"] == "mlplat:aws:Serving" and r["props"]["endpoints"] for r in graph)
    assert (tmp_path / "g" / "ok-local.json").is_file()


def test_policy_list_and_crossguard_config(project):
    listed = run_cli("policy", "list", "--json", cwd=project, env={"MLPLAT_PROJECT_DIR": str(project)})
    assert [p["name"] for p in json.loads(listed.stdout)][0] == "required-cost-tags"
    config = run_cli("policy", "config", "--stack", "level-pack-advisory-policy-mandatory", cwd=project,
                     env={"MLPLAT_PROJECT_DIR": str(project)})
    assert json.loads(config.stdout) == {"all": "advisory", "safe-rollout": {"enforcementLevel": "mandatory"}}


def test_offline_preview_prints_the_tree_and_online_needs_the_cli(project):
    offline = run_cli("preview", "--stack", "ok-aws", "--offline", cwd=project, env={"MLPLAT_PROJECT_DIR": str(project)})
    assert offline.returncode == 0, offline.stderr
    assert "mlplat:aws:Serving" in offline.stdout and "CANARY" in offline.stdout and "capture 100" in offline.stdout
    online = run_cli("up", "--stack", "ok-aws", "--yes", cwd=project,
                     env={"MLPLAT_PROJECT_DIR": str(project), "PATH": "/usr/bin:/bin"})
    assert online.returncode == 7 and "pulumi CLI is not installed" in online.stderr and "get.pulumi.com" in online.stderr
