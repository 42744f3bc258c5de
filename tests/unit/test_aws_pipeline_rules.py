"""SageMaker's documented rules for training jobs, pipeline definitions and schedules, and the compiler.

Each rule (``service_rules``) is shown refusing what AWS refuses and accepting what it accepts; the
compiled definitions pass every rule, their step requests pass botocore's service model, and each
rule has a negative case — the program's old hand-written definition among them.
"""
from __future__ import annotations

import copy
import json

import pytest

from mlplat.contracts.pipelines import PipelineDefinition, StepDefinition
from mlplat_providers.aws import pipeline_compiler as pc
from mlplat_providers.aws import service_rules as r

ROLE = "arn:aws:iam::123456789012:role/mlplat-fraud-production-platform"
TARGET = pc.CompileTarget(stack="fraud-aws", bucket="bkt", role_arn=ROLE, image="img:1",
                          source_uri="s3://bkt/source/abc/1.tar.gz",
                          environment={"MLPLAT_STACK": "fraud-aws", "MLPLAT_CONTROL_PLANE_URL": "https://cp"},
                          tags={"team": "fraud"})


def credit_risk(**changes) -> PipelineDefinition:
    steps = {
        "prepare": StepDefinition("prepare", command=("python", "prepare.py"), inputs={"raw": "s3://bkt/raw.csv"},
                                  outputs=("train", "holdout"), retries=2),
        "train": StepDefinition("train", command=("python", "train.py"), inputs={"train": "prepare.train"},
                                outputs=("model",)),
        "evaluate": StepDefinition("evaluate", kind="evaluate", depends_on=("train",),
                                   inputs={"holdout": "prepare.holdout"}),
        "register": StepDefinition("register", kind="register", depends_on=("evaluate",)),
        "promote": StepDefinition("promote", kind="promote", depends_on=("register",)),
    }
    steps.update(changes)
    return PipelineDefinition(name="credit-risk", model="credit-risk", steps=tuple(s for s in steps.values() if s))


@pytest.fixture(scope="module")
def compiled() -> dict:
    return pc.compile_definition(credit_risk(), TARGET)


def everything(definition: dict) -> dict[str, dict]:
    return {s["Name"]: s for s in r._all_steps(definition["Steps"])}


# The training pipeline the program declared before it was built on the compiler: the property file names
# an output the step does not declare, the condition reads it through a reference SageMaker does not
# resolve, and the evaluation calls `mlplat models evaluate` without a version and with a --report it does not take.
OLD_PROGRAM_DEFINITION = {"Version": "2020-12-01", "Parameters": [], "Steps": [
    {"Name": "Train", "Type": "Training", "Arguments": {
        "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"}, "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": "s3://bkt/m"}}},
    {"Name": "Evaluate", "Type": "Processing", "DependsOn": ["Train"], "Arguments": {
        "AppSpecification": {"ImageUri": "img", "ContainerEntrypoint": [
            "mlplat", "models", "evaluate", "card-scorer", "--stack", "fraud-prod", "--report", "/x/report.json"]},
        "RoleArn": ROLE},
     "PropertyFiles": [{"PropertyFileName": "Evaluation", "OutputName": "evaluation", "FilePath": "report.json"}]},
    {"Name": "Gate", "Type": "Condition", "DependsOn": ["Evaluate"], "Arguments": {
        "Conditions": [{"Type": "GreaterThanOrEqualTo", "LeftValue": {"Std:JsonGet": {
            "PropertyFile": {"Get": "Steps.Evaluate.ProcessingOutputConfig.Outputs['evaluation']"},
            "Path": "metrics.roc_auc"}}, "RightValue": 0.9}],
        "IfSteps": [], "ElseSteps": []}},
]}
OLD_DEPLOY_DEFINITION = {"Version": "2020-12-01", "Parameters": [
    {"Name": "ModelPackageArn", "Type": "String", "DefaultValue": "latest-approved"}], "Steps": [
    {"Name": "Deploy", "Type": "Processing", "Arguments": {"AppSpecification": {"ImageUri": "img", "ContainerEntrypoint": [
        "mlplat", "deploy", "card-scorer", "--package", "latest-approved", "--stack", "fraud-prod"]},
        "RoleArn": ROLE}}]}


# --- training jobs -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, ok", [("train-1", True), ("a", True), ("A" * 63, True), ("A" * 64, False),
                                      ("-train", False), ("train-", False), ("train_1", False), ("", False),
                                      ("a--b", True)])
def test_training_job_names(name, ok):
    assert (r.training_job_name_problem(name) is None) is ok


def test_hyperparameter_limits():
    assert r.hyperparameters_problem({"k": "v" * 2500}) is None
    assert "2501 characters" in r.hyperparameters_problem({"k": "v" * 2501})
    assert "at most 256" in r.hyperparameters_problem({"k" * 257: "v"})
    assert "at most 100" in r.hyperparameters_problem({str(i): "v" for i in range(101)})
    assert "strings only" in r.hyperparameters_problem({"epochs": 3})


def test_environment_limits():
    assert r.environment_problem({"MLPLAT_STACK": "x" * 512}) is None
    assert "at most 512" in r.environment_problem({"MLPLAT_STACK": "x" * 513})
    assert "[a-zA-Z_]" in r.environment_problem({"1BAD": "x"})
    assert "[a-zA-Z_]" in r.environment_problem({"BAD-NAME": "x"})
    assert "at most 100" in r.environment_problem({f"V{i}": "x" for i in range(101)})


@pytest.mark.parametrize("condition, spot, problem", [
    ({"MaxRuntimeInSeconds": 3600}, False, None),
    ({"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}, True, None),
    ({"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 3600}, True, None),
    ({"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 1800}, True, "less than MaxRuntimeInSeconds"),
    ({"MaxRuntimeInSeconds": 3600}, True, "needs StoppingCondition.MaxWaitTimeInSeconds"),
    ({"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}, False, "managed spot training only"),
    ({"MaxRuntimeInSeconds": 29 * 86_400}, False, "28 days"),
])
def test_spot_needs_a_wait_covering_the_runtime(condition, spot, problem):
    found = r.stopping_condition_problem(condition, spot=spot)
    assert (found is None) if problem is None else (problem in found)


def test_rule_limits_agree_with_botocores_model():
    """The limits written down from the API reference are the ones in SageMaker's service model."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateTrainingJob").input_shape.members
    assert shape["HyperParameters"].metadata["max"] == r.MAX_HYPERPARAMETERS
    assert shape["HyperParameters"].key.metadata["max"] == r.MAX_HYPERPARAMETER_KEY
    assert shape["HyperParameters"].value.metadata["max"] == r.MAX_HYPERPARAMETER_VALUE
    assert shape["Environment"].metadata["max"] == r.MAX_ENVIRONMENT
    assert shape["Environment"].key.metadata["max"] == r.MAX_ENVIRONMENT_KEY
    assert shape["Environment"].value.metadata["max"] == r.MAX_ENVIRONMENT_VALUE
    assert shape["Environment"].key.metadata["pattern"] == r.ENVIRONMENT_KEY.pattern.strip("^$")
    assert shape["TrainingJobName"].metadata["pattern"] == r.JOB_NAME.pattern.strip("^$")
    assert shape["InputDataConfig"].metadata["max"] == r.MAX_CHANNELS
    assert shape["Tags"].metadata["max"] == r.MAX_TAGS


# --- the compiled definition ---------------------------------------------------------------------


def test_the_compiled_definition_keeps_every_rule_and_runs_commands_that_exist(compiled):
    assert r.pipeline_definition_problems(compiled) == []
    assert pc.command_problems(compiled) == []
    steps = everything(compiled)
    assert {n: s["Type"] for n, s in steps.items()} == {
        "prepare": "Processing", "train": "Training", "evaluate": "Processing", "evaluate-passed": "Condition",
        "register": "Processing", "promote": "Processing", "evaluate-refused": "Fail"}


def test_data_edges_are_property_references_and_ordering_is_depends_on(compiled):
    steps = everything(compiled)
    train_channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                      for c in steps["train"]["Arguments"]["InputDataConfig"]}
    assert train_channels == {
        "code": {"Get": "Parameters.SourceUri"},
        "train": {"Get": "Steps.prepare.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}}
    assert steps["train"]["DependsOn"] == ["prepare"]
    assert steps["evaluate"]["DependsOn"] == ["prepare", "train"]
    assert steps["promote"]["DependsOn"] == ["register"]
    assert "DependsOn" not in steps["register"]  # it runs in the gate's IfSteps, after the condition
    retries = steps["prepare"]["RetryPolicies"]
    assert {e for p in retries for e in p["ExceptionType"]} >= {"SageMaker.JOB_INTERNAL_ERROR", "Step.SERVICE_FAULT"}
    assert all(p["MaxAttempts"] == 2 for p in retries)


def test_the_condition_reads_the_path_the_gate_step_writes(compiled):
    steps = everything(compiled)
    evaluate, condition = steps["evaluate"], steps["evaluate-passed"]
    [property_file] = evaluate["PropertyFiles"]
    outputs = {o["OutputName"]: o["S3Output"]["LocalPath"] for o in
               evaluate["Arguments"]["ProcessingOutputConfig"]["Outputs"]}
    # the entry's --report writes FILE inside the output the property file names: the path SageMaker reads
    args = evaluate["Arguments"]["AppSpecification"]["ContainerArguments"]
    at = args.index("--report")
    assert args[at + 1] == f"{outputs[property_file['OutputName']]}/{property_file['FilePath']}"
    assert args[args.index("--") + 1:args.index("--") + 4] == ["mlplat", "models", "evaluate"]
    json_get = condition["Arguments"]["Conditions"][0]["LeftValue"]["Std:JsonGet"]
    assert json_get["PropertyFile"] == {"Get": f"Steps.evaluate.PropertyFiles.{property_file['PropertyFileName']}"}
    assert json_get["Path"] == pc.GATE_PATH == "passed"


def test_parameters_are_declared_only_when_read(compiled):
    assert {p["Name"] for p in compiled["Parameters"]} == {"SourceUri", "ModelVersion"}
    no_platform = pc.compile_definition(credit_risk(evaluate=None, register=None, promote=None), TARGET)
    assert {p["Name"] for p in no_platform["Parameters"]} == {"SourceUri"}
    assert r.pipeline_definition_problems(no_platform) == []


def _placeholders(value):
    """A step's arguments as a request: pipeline expressions stand in for the strings they resolve to."""
    if isinstance(value, dict):
        if set(value) & {"Get", "Std:Join", "Std:JsonGet"}:
            return "s3://bkt/resolved"
        return {k: _placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholders(v) for v in value]
    return value


def test_every_step_is_a_request_botocore_accepts(compiled):
    """A Training step's arguments are a CreateTrainingJob request without its name, a Processing step's a
    CreateProcessingJob request: both as SageMaker's service model takes them, and the training job's
    against the rules botocore does not check."""
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("sagemaker")
    for step in everything(compiled).values():
        args = _placeholders(step["Arguments"])
        if step["Type"] == "Training":
            request = {"TrainingJobName": "pipelines-train", **args}
            validate_parameters(request, model.operation_model("CreateTrainingJob").input_shape)
            assert r.training_job_problems(request) == []
        elif step["Type"] == "Processing":
            validate_parameters({"ProcessingJobName": "pipelines-step", **args},
                                model.operation_model("CreateProcessingJob").input_shape)
    jobs = [s for s in everything(compiled).values() if s["Type"] in ("Training", "Processing")]
    assert all({t["Key"]: t["Value"] for t in s["Arguments"]["Tags"]} == TARGET.tags for s in jobs)
    validate_parameters({"PipelineName": "p", "PipelineDefinition": json.dumps(compiled), "RoleArn": ROLE,
                         "ClientRequestToken": "t" * 32},
                        model.operation_model("CreatePipeline").input_shape)


# --- each rule refuses what SageMaker refuses ----------------------------------------------------


def test_the_programs_old_definitions_fail_the_rules():
    problems = r.pipeline_definition_problems(OLD_PROGRAM_DEFINITION)
    assert any("property file 'Evaluation' is read from output 'evaluation', which the step's "
               "ProcessingOutputConfig does not declare" in p for p in problems)
    assert any("Std:JsonGet's PropertyFile" in p and "ProcessingOutputConfig.Outputs['evaluation']" in p
               for p in problems)
    train, evaluate = pc.command_problems(OLD_PROGRAM_DEFINITION)
    assert train == "step Train runs no command"  # the image's default, with nothing telling it what to train
    assert evaluate.startswith("step Evaluate: `mlplat models evaluate card-scorer") and "No such option '--report'" in evaluate
    assert pc.mlplat_command_problem(["mlplat", "models", "score", "card-scorer"]) == \
        "`mlplat models score` is not a command (see `mlplat models --help`)"
    deploy = r.pipeline_definition_problems(OLD_DEPLOY_DEFINITION)
    assert deploy == ["parameter 'ModelPackageArn' is declared but no step reads it"]
    assert any("No such option '--package'" in p for p in pc.command_problems(OLD_DEPLOY_DEFINITION))


def mutate(compiled, change) -> list[str]:
    definition = copy.deepcopy(compiled)
    change(definition, everything(definition))
    return r.pipeline_definition_problems(definition)


def test_a_reference_to_a_missing_step_or_output_is_refused(compiled):
    def missing_output(d, s):
        s["train"]["Arguments"]["InputDataConfig"][1]["DataSource"]["S3DataSource"]["S3Uri"] = {
            "Get": "Steps.prepare.ProcessingOutputConfig.Outputs['features'].S3Output.S3Uri"}

    def missing_step(d, s):
        s["train"]["DependsOn"] = ["prep"]

    def training_property(d, s):
        s["promote"]["Arguments"]["Environment"]["MODEL"] = {"Get": "Steps.train.ModelArtifacts.S3Uri"}

    assert any("has no output 'features'" in p for p in mutate(compiled, missing_output))
    assert any("DependsOn names no step 'prep'" in p for p in mutate(compiled, missing_step))
    assert any("a Training step has no property 'ModelArtifacts.S3Uri'" in p for p in mutate(compiled, training_property))


def test_a_condition_must_read_a_property_file_its_step_declares(compiled):
    def undeclared(d, s):
        s["evaluate"]["PropertyFiles"][0]["PropertyFileName"] = "other"

    def no_output(d, s):
        s["evaluate"]["Arguments"]["ProcessingOutputConfig"]["Outputs"] = []

    assert any("declares no property file 'evaluate-report'" in p for p in mutate(compiled, undeclared))
    assert any("does not declare" in p for p in mutate(compiled, no_output))


def test_step_names_are_unique_and_short(compiled):
    def duplicate(d, s):
        s["promote"]["Name"] = "register"

    def long(d, s):
        d["Steps"][0]["Name"] = "p" * 65

    assert any("'register' is used more than once" in p for p in mutate(compiled, duplicate))
    assert any("is not 1-64 letters" in p for p in mutate(compiled, long))


def test_parameters_read_and_declared_agree(compiled):
    def undeclared(d, s):
        d["Parameters"] = [p for p in d["Parameters"] if p["Name"] != "ModelVersion"]

    def unread(d, s):
        d["Parameters"].append({"Name": "Threshold", "Type": "Float", "DefaultValue": 0.9})

    assert any("parameter 'ModelVersion' is not declared" in p for p in mutate(compiled, undeclared))
    assert mutate(compiled, unread) == ["parameter 'Threshold' is declared but no step reads it"]


def test_a_step_running_an_unknown_mlplat_command_is_refused(compiled):
    definition = copy.deepcopy(compiled)
    everything(definition)["promote"]["Arguments"]["AppSpecification"]["ContainerArguments"][3] = "advance"
    assert pc.command_problems(definition) == [
        "step promote: `mlplat models advance` is not a command (see `mlplat models --help`)"]
    definition = copy.deepcopy(compiled)
    everything(definition)["promote"]["Arguments"]["AppSpecification"]["ContainerArguments"][7] = "prod"
    assert "'prod' is not one of 'staging', 'production'" in pc.command_problems(definition)[0]


# --- bad pipelines are refused before anything is compiled ---------------------------------------


def test_a_cycle_is_refused_with_its_path():
    cyclic = credit_risk(prepare=StepDefinition("prepare", command=("python", "prepare.py"),
                                                outputs=("train", "holdout"), depends_on=("promote",)))
    with pytest.raises(pc.PipelineError, match="has a cycle: .*prepare.*promote"):
        pc.compile_definition(cyclic, TARGET)


def test_unreadable_inputs_and_unknown_outputs_are_refused():
    local = credit_risk(prepare=StepDefinition("prepare", command=("python", "p.py"), inputs={"raw": "data/raw.csv"},
                                               outputs=("train", "holdout")))
    with pytest.raises(pc.PipelineError, match="reads data from S3") as exc:
        pc.compile_definition(local, TARGET)
    assert exc.value.exit_code == 2
    with pytest.raises(pc.PipelineError, match="declares no output 'features'"):
        pc.compile_definition(credit_risk(train=StepDefinition("train", command=("python", "t.py"),
                                                               inputs={"x": "prepare.features"}, outputs=("model",))),
                              TARGET)


# --- schedules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cron, expression", [
    ("0 3 * * *", "cron(0 3 * * ? *)"),
    ("*/15 * * * *", "cron(0/15 * * * ? *)"),
    ("0 3 * * 1-5", "cron(0 3 ? * 2-6 *)"),        # Monday-Friday: EventBridge counts Sunday as 1
    ("0 3 * * 0", "cron(0 3 ? * 1 *)"),
    ("0 3 * * 7", "cron(0 3 ? * 1 *)"),
    ("0 3 * * 5-7", "cron(0 3 ? * 6-7,1 *)"),      # Friday to Sunday wraps
    ("30 6 1 * *", "cron(30 6 1 * ? *)"),
    ("0 0 * * MON,FRI", "cron(0 0 ? * MON,FRI *)"),
])
def test_five_field_cron_becomes_eventbridges_six_fields(cron, expression):
    converted = pc.eventbridge_cron(cron)
    assert converted == expression
    assert r.schedule_expression_problem(converted) is None


@pytest.mark.parametrize("cron, message", [
    ("0 3 * *", "has 4 fields"),
    ("0 3 1 * 1", "restricts both the day of month and the day of week"),
    ("0 3 * * 9", "day of week '9' is not 0-7"),
])
def test_crons_eventbridge_cannot_run_are_refused(cron, message):
    with pytest.raises(pc.PipelineError, match=message):
        pc.eventbridge_cron(cron)


@pytest.mark.parametrize("expression, problem", [
    ("cron(0 3 * * ? *)", None),
    ("cron(0 3 * * *)", "has 5 fields"),
    ("cron(0 3 * * 1 *)", "exactly one of day-of-month and day-of-week"),
    ("cron(0 3 ? * ? *)", "exactly one of day-of-month and day-of-week"),
    ("rate(5 minutes)", "is not cron("),
])
def test_schedule_expression_rule(expression, problem):
    found = r.schedule_expression_problem(expression)
    assert (found is None) if problem is None else (problem in found)


def test_the_example_pipeline_compiles_to_a_definition_sagemaker_runs(tmp_path):
    """examples/pipelines/credit_risk.py, as `mlplat pipeline run` loads it: data edges by output name, the
    gate and the platform steps, the pipeline's environment in every command step."""
    from dataclasses import replace

    from mlplat import pipelines as dsl
    from tests.conftest import REPO

    pipeline = replace(dsl.load(REPO / "examples" / "pipelines" / "credit_risk.py"),
                       environment={"MLPLAT_RETRAIN_DATA": "s3://bkt/retrain/window.parquet"})
    definition = pc.compile_definition(pipeline, TARGET)
    assert r.pipeline_definition_problems(definition) == [] and pc.command_problems(definition) == []
    steps = everything(definition)
    train = steps["train"]["Arguments"]
    assert {i["InputName"]: i["S3Input"]["S3Uri"] for i in train["ProcessingInputs"]}["dataset"] == {
        "Get": "Steps.prepare.ProcessingOutputConfig.Outputs['dataset'].S3Output.S3Uri"}
    assert train["Environment"]["MLPLAT_RETRAIN_DATA"] == "s3://bkt/retrain/window.parquet"
    assert "MLPLAT_RETRAIN_DATA" not in steps["promote"]["Arguments"]["Environment"]
    assert steps["prepare"]["Arguments"]["AppSpecification"]["ContainerArguments"][:3] == ["--output", "dataset", "--"]
    assert pc.step_commands(definition)["promote"][:5] == ["mlplat", "models", "promote", "credit-risk",
                                                           "<Parameters.ModelVersion>"]


def test_the_programs_default_pipeline_trains_with_the_stacks_retraining_command():
    from mlplat.stack import load_stack
    from mlplat_providers.aws import plan as p
    from tests.conftest import REPO

    spec = load_stack("fraud-prod", REPO)
    plan = p.stack_plan(spec)
    assert p.default_training_pipeline(plan, plan.models[0]).steps[0].command == tuple(
        spec.monitoring.retrain.command.split())
    bare = p.stack_plan(spec.model_copy(update={"monitoring": spec.monitoring.model_copy(update={"retrain": None})}))
    assert p.default_training_pipeline(bare, bare.models[0]).steps[0].command == ("python", "train.py")
