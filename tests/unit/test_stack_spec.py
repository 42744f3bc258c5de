"""StackSpec: good files load, bad files fail with file, line, key path, value and expected form."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlplat.errors import ExitCode, StackError
from mlplat.stack import (
    RiskTier,
    duration_seconds,
    json_schema,
    list_stacks,
    load_stack,
    parse_stack,
)

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
config:
  aws:region: eu-west-1
  mlplat:team: fraud
  mlplat:environment: production
  mlplat:provider: {kind: aws, region: eu-west-1}
  mlplat:tags: {team: fraud, cost-center: CC-1042, environment: production, owner: fraud@example.com, project: cards}
  mlplat:governance:
    riskTier: low
    approvers: [a@example.com, b@example.com]
    requiredApprovals: 2
    models: {card-scorer: {riskTier: critical}}
  mlplat:gate: {thresholds: {roc_auc: 0.9, brier: 0.2}, maxRegressionVsChampion: 0.01}
  mlplat:serving: {instanceType: ml.m5.large, pricePerHour: 0.115, priceTable: {ml.g4dn.xlarge: 0.736}}
  mlplat:monitoring: {schedule: 15m, retrain: {command: python train.py, violationWindows: 2, evaluationWindows: 5}}
  mlplat:budget: {monthlyUsd: 5000}
"""


def parse(text: str, tmp_path: Path, name: str = "t"):
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(text)
    return parse_stack(text, path=path, name=name, project_dir=tmp_path)


def error_of(text: str, tmp_path: Path) -> str:
    with pytest.raises(StackError) as info:
        parse(text, tmp_path)
    assert info.value.exit_code == ExitCode.CONFIG
    return str(info.value)


def test_good_stack_loads_every_section(tmp_path):
    spec = parse(GOOD, tmp_path)
    assert spec.provider.kind == "aws" and spec.provider.region == "eu-west-1"
    assert spec.tags.as_dict()["cost-center"] == "CC-1042"
    assert spec.tags.as_dict()["project"] == "cards"  # extra cost tags are kept
    assert spec.risk_tier_for("card-scorer") == RiskTier.critical
    assert spec.risk_tier_for("other") == RiskTier.low
    assert spec.serving.price_for("ml.g4dn.xlarge") == 0.736
    assert spec.serving.price_for() == 0.115
    assert spec.serving.canary.steps == [1, 10, 50, 100]
    assert spec.monitoring.retrain.violation_windows == 2
    assert spec.pulumi_config == {"aws:region": "eu-west-1"}
    assert spec.name == "t"


def test_shipped_stacks_are_valid_one_per_provider():
    names = list_stacks(REPO)
    kinds = {load_stack(n, REPO).provider.kind for n in names}
    assert {"local", "aws", "gcp", "azure"} <= kinds
    assert "dev" in names and load_stack("dev", REPO).provider.kind == "local"


def test_bare_keys_belong_to_the_mlplat_namespace(tmp_path):
    text = GOOD.replace("mlplat:team: fraud", "team: fraud")
    assert parse(text, tmp_path).team == "fraud"


def test_malformed_yaml_names_line_and_column(tmp_path):
    message = error_of("config:\n  mlplat:team: [unclosed\n  mlplat:environment: dev\n", tmp_path)
    assert "malformed YAML" in message and "Pulumi.t.yaml:3" in message


def test_not_a_stack_document(tmp_path):
    assert "'config:'" in error_of("- just\n- a list\n", tmp_path)


def test_missing_cost_tag_names_key_line_and_expected_form(tmp_path):
    text = GOOD.replace(" cost-center: CC-1042,", "")
    message = error_of(text, tmp_path)
    assert "Pulumi.t.yaml:6: mlplat:tags.cost-center: missing required cost tag" in message
    assert "CC-1042" in message  # the expected form, by example


def test_wrong_type_shows_value_and_expectation(tmp_path):
    message = error_of(GOOD.replace("pricePerHour: 0.115", "pricePerHour: cheap"), tmp_path)
    assert "mlplat:serving.pricePerHour" in message and "'cheap'" in message and "Price per instance-hour" in message


def test_unknown_provider_lists_the_kinds(tmp_path):
    message = error_of(GOOD.replace("{kind: aws, region: eu-west-1}", "{kind: oracle}"), tmp_path)
    assert "unknown provider kind 'oracle'; expected one of: aws, azure, gcp, local" in message


def test_unknown_key_is_rejected_with_a_suggestion(tmp_path):
    message = error_of(GOOD.replace("requiredApprovals: 2", "requiredAprovals: 2"), tmp_path)
    assert "unknown key 'requiredAprovals'" in message and "did you mean 'requiredApprovals'" in message
    message = error_of(GOOD.replace("mlplat:budget:", "mlplat:budjet:"), tmp_path)
    assert "unknown key 'budjet'" in message and "did you mean 'budget'" in message


def test_internal_fields_cannot_be_set_from_the_file(tmp_path):
    assert "unknown key 'name'" in error_of(GOOD + "  mlplat:name: x\n", tmp_path)


def test_provider_specific_fields_are_checked(tmp_path):
    message = error_of(GOOD.replace("{kind: aws, region: eu-west-1}", "{kind: aws, region: Europe}"), tmp_path)
    assert "mlplat:provider.region" in message and "'Europe'" in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("steps: [1, 10, 50, 100]", "steps: [1, 10, 5, 100]", "increase strictly"),
        ("{thresholds: {roc_auc: 0.9, brier: 0.2}", "{thresholds: {roc_auc: 0.9, recal: 0.2}", "did you mean 'recall'"),
        ("violationWindows: 2", "violationWindows: 9", "cannot exceed evaluationWindows"),
        ("requiredApprovals: 2", "requiredApprovals: 3", "only 2 distinct approver"),
        ("schedule: 15m", "schedule: often", "mlplat:monitoring.schedule"),
        ("environment: production, owner", "environment: dev, owner", "tags.environment"),
    ],
)
def test_semantic_rules(tmp_path, old, new, expected):
    text = GOOD if old in GOOD else GOOD.replace(
        "mlplat:serving: {", "mlplat:serving: {canary: {steps: [1, 10, 50, 100]}, ")
    assert old in text
    assert expected in error_of(text.replace(old, new), tmp_path)


def test_several_problems_are_reported_together(tmp_path):
    text = GOOD.replace(" cost-center: CC-1042,", "").replace("pricePerHour: 0.115", "pricePerHour: -1")
    message = error_of(text, tmp_path)
    assert "2 problems" in message


def test_stack_not_found_lists_existing_stacks(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text("name: mlplat\nruntime: python\nstackConfigDir: stacks\n")
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.dev.yaml").write_text(GOOD)
    with pytest.raises(StackError) as info:
        load_stack("deev", tmp_path)
    assert "stack 'deev' not found" in str(info.value) and "did you mean 'dev'" in str(info.value)


def test_local_state_dir_defaults_under_the_project(tmp_path):
    text = """config:
  mlplat:team: a
  mlplat:environment: dev
  mlplat:tags: {team: a, cost-center: C1, environment: dev, owner: a@example.com}
"""
    spec = parse(text, tmp_path, name="mine")
    assert spec.provider.kind == "local"
    assert spec.state_dir == (tmp_path / ".mlplat" / "mine").resolve()


def test_schema_documents_every_key():
    schema = json_schema()
    json.dumps(schema)
    props = schema["properties"]
    assert {"team", "environment", "provider", "tags", "governance", "gate", "serving", "monitoring", "budget"} <= set(props)
    assert "name" not in props and "projectDir" not in props
    assert all("description" in v for v in props.values())


def test_durations():
    assert duration_seconds("15m") == 900 and duration_seconds("2h") == 7200
    with pytest.raises(ValueError):
        duration_seconds("soon")


# --- names are slugs, state directories stay inside the project -------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "dev\n", "a/b", "../dev", "Dev", "-dev", "dev_1", ""])
def test_a_stack_name_must_be_a_slug(tmp_path, name):
    with pytest.raises(StackError) as info:
        parse_stack(GOOD, path=tmp_path / "Pulumi.t.yaml", name=name, project_dir=tmp_path)
    assert info.value.exit_code == ExitCode.CONFIG
    assert f"stack name {name!r} is not a valid stack name" in str(info.value)
    assert "lowercase letters, digits and '-'" in str(info.value)


@pytest.mark.parametrize("name", ["..", "../stacks/Pulumi.dev", "dev\n"])
def test_load_stack_refuses_a_name_that_is_not_a_slug_before_building_a_path(tmp_path, name):
    (tmp_path / "Pulumi.yaml").write_text("name: mlplat\nruntime: python\nstackConfigDir: stacks\n")
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.dev.yaml").write_text(GOOD)
    (tmp_path / "stacks" / "Pulumi.....yaml").write_text(GOOD)  # the file a stack named '..' would have
    with pytest.raises(StackError, match="is not a valid stack name") as info:
        load_stack(name, tmp_path)
    assert info.value.exit_code == ExitCode.CONFIG


LOCAL = """\
config:
  mlplat:team: a
  mlplat:environment: dev
  mlplat:provider:
    kind: local
    stateDir: {state_dir}
  mlplat:tags: {{team: a, cost-center: C1, environment: dev, owner: a@example.com}}
"""


@pytest.mark.parametrize("state_dir", ["../somewhere", ".", "./", "a/../..", "a/../../b", "/", "'{parent}'",
                                       "'{project}'", "''"])
def test_a_state_dir_outside_the_project_or_holding_it_is_refused(tmp_path, state_dir):
    project = tmp_path / "project"
    project.mkdir()
    text = LOCAL.format(state_dir=state_dir.format(parent=tmp_path, project=project))
    with pytest.raises(StackError) as info:
        parse(text, project)
    message = str(info.value)
    assert info.value.exit_code == ExitCode.CONFIG
    assert "Pulumi.t.yaml:6: mlplat:provider.stateDir:" in message
    assert "outside the project" in message or "project root or one of its parents" in message \
        or "must be a path" in message


def test_a_state_dir_through_a_link_that_leaves_the_project_is_refused(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (project / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StackError, match="outside the project"):
        parse(LOCAL.format(state_dir="link/state"), project)


def test_state_dirs_inside_the_project_or_absolute_elsewhere_are_accepted(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    assert parse(LOCAL.format(state_dir=".mlplat/x"), project).state_dir == (project / ".mlplat" / "x").resolve()
    assert parse(LOCAL.format(state_dir="state/../other"), project).state_dir == (project / "other").resolve()
    outside = tmp_path / "srv" / "mlplat-a"
    assert parse(LOCAL.format(state_dir=str(outside)), project).state_dir == outside.resolve()


# --- names are checked whole: a trailing newline is not a name --------------------------------------


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("mlplat:team: fraud", 'mlplat:team: "fraud\\n"', "mlplat:team"),
    ("{card-scorer: {riskTier: critical}}", '{"card-scorer\\n": {riskTier: critical}}', "model name 'card-scorer\\n'"),
    ("project: cards}", 'project: cards, "extra\\n": x}', "tag key 'extra\\n'"),
    ("schedule: 15m", 'schedule: "15m\\n"', "mlplat:monitoring.schedule"),
])
def test_names_with_a_trailing_newline_are_refused(tmp_path, old, new, expected):
    assert old in GOOD
    assert expected in error_of(GOOD.replace(old, new), tmp_path)


def test_durations_are_matched_whole():
    with pytest.raises(ValueError):
        duration_seconds("15m\n")


# --- gate thresholds within each metric's range ---------------------------------------------------------


@pytest.mark.parametrize(("metric", "value", "shown"), [
    ("roc_auc", "1.5", "roc_auc: 1.5 is outside the range of roc_auc ([0, 1])"),
    ("accuracy", "-0.1", "accuracy: -0.1 is outside the range of accuracy ([0, 1])"),
    ("precision", "1.01", "[0, 1]"), ("recall", "2", "[0, 1]"), ("f1", "-1", "[0, 1]"),
    ("brier", "1.2", "[0, 1]"), ("ece", "-0.01", "[0, 1]"),
    ("rmse", "-0.5", "rmse: -0.5 is outside the range of rmse (>= 0)"),
    ("mae", "-1", "(>= 0)"),
    ("r2", "1.1", "r2: 1.1 is outside the range of r2 (<= 1)"),
    ("roc_auc", ".nan", "roc_auc: nan"), ("rmse", ".inf", "rmse: inf"),
])
def test_a_gate_threshold_outside_its_metric_range_is_refused(tmp_path, metric, value, shown):
    message = error_of(GOOD.replace("{roc_auc: 0.9, brier: 0.2}", f"{{{metric}: {value}}}"), tmp_path)
    assert "mlplat:gate.thresholds" in message and shown in message


@pytest.mark.parametrize(("metric", "value"), [
    ("roc_auc", 1), ("roc_auc", 0), ("accuracy", 0.5), ("brier", 0), ("rmse", 0), ("rmse", 1e6), ("mae", 3.5),
    ("r2", 1), ("r2", -4.0),
])
def test_gate_thresholds_at_the_edges_of_their_range_are_accepted(tmp_path, metric, value):
    spec = parse(GOOD.replace("{roc_auc: 0.9, brier: 0.2}", f"{{{metric}: {value}}}"), tmp_path)
    assert spec.gate.thresholds == {metric: value}


def test_every_gate_metric_has_a_range():
    from mlplat.stack import GATE_METRICS, METRIC_RANGES

    assert set(METRIC_RANGES) == set(GATE_METRICS)


# --- each provider declares its own settings model -------------------------------------------------


def test_a_provider_brings_its_own_settings_model_without_an_edit_in_core(tmp_path):
    from typing import Literal

    from pydantic import Field

    from mlplat import providers
    from mlplat.contracts import ProviderSettings
    from mlplat.providers import ProviderBundle

    class OnPremProviderSpec(ProviderSettings):
        kind: Literal["onprem"] = Field(description="A cluster in the company's own data centre.")
        rack: str = Field(pattern=r"^r\d+$", description="Rack of the cluster.", examples=["r12"])

    providers.reset()
    providers.register(ProviderBundle("onprem", "test: settings only", settings_model=OnPremProviderSpec))
    try:
        spec = parse(GOOD.replace("{kind: aws, region: eu-west-1}", "{kind: onprem, rack: r7}"), tmp_path)
        assert isinstance(spec.provider, OnPremProviderSpec) and spec.provider.rack == "r7"
        assert spec.model_dump(by_alias=True)["provider"] == {"kind": "onprem", "rack": "r7"}
        message = error_of(GOOD.replace("{kind: aws, region: eu-west-1}", "{kind: onprem, rack: seven}"), tmp_path)
        assert ("Pulumi.t.yaml:5: mlplat:provider.rack: String should match pattern '^r\\d+$' (got 'seven'); "
                "expected Rack of the cluster; for example 'r12'") in message
        message = error_of(GOOD.replace("{kind: aws, region: eu-west-1}", "{kind: onprem, rack: r7, region: x}"),
                           tmp_path)
        assert "mlplat:provider.region: unknown key 'region'; allowed keys: kind, rack" in message
        message = error_of(GOOD.replace("{kind: aws, region: eu-west-1}", "{kind: oracle}"), tmp_path)
        assert "expected one of: aws, azure, gcp, local, onprem" in message
        provider_schema = json_schema()["properties"]["provider"]
        assert provider_schema["discriminator"]["mapping"]["onprem"] == "#/$defs/OnPremProviderSpec"
        assert json_schema()["$defs"]["OnPremProviderSpec"]["properties"]["rack"]["description"] == "Rack of the cluster."
    finally:
        providers.reset()
    assert "onprem" not in providers.names()


def test_the_schema_documents_each_installed_provider():
    from mlplat import providers

    schema = json_schema()
    mapping = schema["properties"]["provider"]["discriminator"]["mapping"]
    assert set(mapping) == set(providers.names())
    for kind, ref in mapping.items():
        model = schema["$defs"][ref.rsplit("/", 1)[1]]
        assert model["properties"]["kind"]["const"] == kind and model["additionalProperties"] is False
        assert all("description" in field for field in model["properties"].values())
