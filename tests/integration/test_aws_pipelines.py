"""Training jobs, pipelines and schedules of the AWS provider against moto in this process.

Every request the provider sends is checked as it is sent against botocore's service model
(``moto_pipelines.validating``) and the training job's against SageMaker's own rules; what moto
lacks (StopTrainingJob, ListPipelineExecutionSteps, RetryPipelineExecution, job and execution
progress) is filled in ``tests/contract/moto_pipelines.py``. Each test reads SageMaker, S3 and
EventBridge Scheduler back, so a wrong mapping fails here.
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from mlplat.contracts.pipelines import PipelineDefinition, SourceBundle, StepDefinition, TrainingJobSpec
from mlplat.errors import NotFound, StackError
from mlplat_providers.aws import service_rules as rules
from mlplat_providers.aws.pipeline_compiler import PipelineError
from tests.contract import moto_pipelines as mp
from tests.contract import moto_support as ms
from tests.contract.lifecycle import context

pytestmark = pytest.mark.integration

CONTROL_PLANE = "https://cp.fraud.example.com"
STACK, BARE = "fraud-aws", "no-control-plane"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def aws(tmp_path, monkeypatch):
    from moto import mock_aws

    from tests.conftest import write_project

    ms.use_fake_aws(monkeypatch)
    monkeypatch.delenv("MLPLAT_CONTROL_PLANE_URL", raising=False)
    monkeypatch.delenv("MLPLAT_AWS_TRAINING_IMAGE", raising=False)
    mp.install_pipeline_gaps()
    project = write_project(tmp_path / "project", {
        STACK: ms.aws_stack_text(extra=f"  mlplat:controlPlane: {{url: '{CONTROL_PLANE}'}}\n"),
        BARE: ms.aws_stack_text()})
    with mock_aws():
        ms.provision_cloud(context(project).stack(STACK))
        yield project


class Backend:
    def __init__(self, project: Path, stack: str = STACK):
        from mlplat_providers.aws.runtime.pipelines import AwsPipelines

        ctx = context(project)
        self.pipelines = AwsPipelines(ctx.stack(stack), ctx, sleep=lambda s: None)
        self.problems: list[str] = []
        self.sent: list[tuple[str, dict]] = []
        mp.validating(self.pipelines.aws, self.problems, self.sent)

    def ops(self) -> list[str]:
        return [name for name, _ in self.sent]


def bundle(tmp_path: Path, *, dirty: bool = False) -> SourceBundle:
    tree = tmp_path / "tree"
    (tree / "stacks").mkdir(parents=True, exist_ok=True)
    (tree / "train.py").write_text("print('training')\n")
    archive = tmp_path / f"source{'-dirty' if dirty else ''}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname=".")
    return SourceBundle(str(archive), COMMIT, dirty=dirty, diff="--- a\n+++ b\n" if dirty else None)


def put_data(key: str) -> str:
    import boto3

    bucket = "mlplat-fraud-production-artifacts-123456789012"
    boto3.client("s3", region_name=ms.REGION).put_object(Bucket=bucket, Key=key, Body=b"a,b\n1,2\n")
    return f"s3://{bucket}/{key}"


def sm():
    import boto3

    return boto3.client("sagemaker", region_name=ms.REGION)


def source_objects() -> list[str]:
    import boto3

    listed = boto3.client("s3", region_name=ms.REGION).list_objects_v2(
        Bucket="mlplat-fraud-production-artifacts-123456789012", Prefix="source/")
    return [o["Key"] for o in listed.get("Contents", [])]


# --- training jobs -------------------------------------------------------------------------------


def test_a_training_job_is_a_sagemaker_job_on_the_runtime_image_with_code_data_and_tags(aws, tmp_path):
    backend = Backend(aws)
    data = put_data("datasets/train.csv")
    source = bundle(tmp_path)
    job = TrainingJobSpec("credit-risk-20261202-1", ("python", "train.py", "--epochs", "3"), source,
                          instance_type="ml.m5.xlarge", data={"train": data}, max_runtime_seconds=7200,
                          tags={"model": "credit-risk"})
    status = backend.pipelines.submit_training(job)
    assert status.state == "PENDING" and status.job_id == job.name
    assert backend.problems == []
    [request] = [p for op, p in backend.sent if op == "CreateTrainingJob"]
    assert rules.training_job_problems(request) == []
    described = sm().describe_training_job(TrainingJobName=job.name)
    assert described["AlgorithmSpecification"]["TrainingImage"] == \
        f"{ms.ACCOUNT}.dkr.ecr.{ms.REGION}.amazonaws.com/mlplat/train:latest"
    assert json.loads(described["HyperParameters"]["mlplat_command"]) == ["python", "train.py", "--epochs", "3"]
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in described["InputDataConfig"]}
    [key] = [k for k in source_objects() if k != "source/current.tar.gz"]
    assert key.startswith(f"source/{COMMIT}/") and channels == {
        "code": f"s3://mlplat-fraud-production-artifacts-123456789012/{key}", "train": data}
    assert described["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    assert described["RoleArn"] == f"arn:aws:iam::{ms.ACCOUNT}:role/mlplat-fraud-production-platform"
    env = request["Environment"]  # moto keeps no Environment: the request as sent is the record
    assert env["MLPLAT_CONTROL_PLANE_URL"] == CONTROL_PLANE and env["MLPLAT_STACK"] == STACK
    tags = {t["Key"]: t["Value"] for t in sm().list_tags(ResourceArn=described["TrainingJobArn"])["Tags"]}
    # the platform role creates only with the stack's tag keys (aws:TagKeys): the job's own "model" tag stays off
    assert tags == {"team": "fraud", "cost-center": "CC-1042", "environment": "production",
                    "owner": "fraud-leads@example.com"}
    # a second job from the same commit reuses the uploaded code
    backend.pipelines.submit_training(TrainingJobSpec("credit-risk-20261202-2", ("python", "train.py"), source))
    assert sorted(source_objects()) == sorted([key, "source/current.tar.gz"])
    # a clean commit's code is also what the program's pipelines run by default; a dirty tree's never is
    backend.pipelines.submit_training(TrainingJobSpec("credit-risk-20261202-3", ("python", "train.py"),
                                                      bundle(tmp_path, dirty=True)))
    dirty = [k for k in source_objects() if k.endswith("-dirty.tar.gz")]
    assert len(dirty) == 1 and dirty[0].startswith(f"source/{COMMIT}/")
    import boto3

    current = boto3.client("s3", region_name=ms.REGION).get_object(
        Bucket="mlplat-fraud-production-artifacts-123456789012", Key="source/current.tar.gz")["Body"].read()
    assert current == Path(source.archive).read_bytes()


def test_spot_training_waits_at_least_its_runtime_and_checkpoints(aws, tmp_path):
    backend = Backend(aws)
    backend.pipelines.submit_training(TrainingJobSpec("spot-1", ("python", "train.py"), bundle(tmp_path),
                                                      spot=True, max_runtime_seconds=3600))
    [request] = [p for op, p in backend.sent if op == "CreateTrainingJob"]
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"]["MaxWaitTimeInSeconds"] >= request["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert request["CheckpointConfig"]["S3Uri"].endswith("/training/spot-1/checkpoints")
    assert backend.problems == [] and rules.training_job_problems(request) == []


@pytest.mark.parametrize("status, secondary, state, message", [
    ("InProgress", "Downloading", "PENDING", ""),
    ("InProgress", "Training", "RUNNING", ""),
    ("Completed", "Completed", "SUCCEEDED", ""),
    ("Failed", "Failed", "FAILED", "AlgorithmError: train.py exited with 1"),
    ("Stopped", "MaxRuntimeExceeded", "FAILED", "the job ran longer than its max runtime"),
    ("Stopped", "Stopped", "STOPPED", "stopped"),
])
def test_job_states_map_from_describe_training_job(aws, tmp_path, status, secondary, state, message):
    backend = Backend(aws)
    backend.pipelines.submit_training(TrainingJobSpec("states-1", ("python", "train.py"), bundle(tmp_path)))
    mp.set_training_job("states-1", status, secondary,
                        failure="AlgorithmError: train.py exited with 1" if status == "Failed" else None)
    found = backend.pipelines.training_status("states-1")
    assert (found.state, found.message) == (state, message)
    assert found.instance_type == "ml.m5.xlarge"


def test_stop_stops_a_running_job_and_leaves_a_finished_one(aws, tmp_path):
    backend = Backend(aws)
    backend.pipelines.submit_training(TrainingJobSpec("stop-1", ("python", "train.py"), bundle(tmp_path)))
    mp.set_training_job("stop-1", "InProgress", "Training")
    assert backend.pipelines.stop_training("stop-1").state == "STOPPED"
    assert backend.ops().count("StopTrainingJob") == 1
    # finished: StopTrainingJob would be refused; the job's status comes back unchanged
    assert backend.pipelines.stop_training("stop-1").state == "STOPPED"
    assert backend.ops().count("StopTrainingJob") == 1 and backend.problems == []


def test_the_stacks_jobs_are_listed_and_no_other_stacks(aws, tmp_path):
    backend = Backend(aws)
    for name in ("list-1", "list-2"):
        backend.pipelines.submit_training(TrainingJobSpec(name, ("python", "train.py"), bundle(tmp_path)))
    mp.set_training_job("list-2", "InProgress", "Training")
    other = {**[p for op, p in backend.sent if op == "CreateTrainingJob"][0], "TrainingJobName": "other-team-1",
             "Tags": [{"Key": "team", "Value": "risk"}, {"Key": "environment", "Value": "production"}]}
    sm().create_training_job(**other)
    listed = {j.job_id: j.state for j in backend.pipelines.training_jobs()}
    assert listed == {"list-1": "SUCCEEDED", "list-2": "RUNNING"}
    assert backend.problems == []


def test_logs_come_from_the_jobs_cloudwatch_streams(aws, tmp_path):
    backend = Backend(aws)
    backend.pipelines.submit_training(TrainingJobSpec("logs-1", ("python", "train.py"), bundle(tmp_path)))
    assert list(backend.pipelines.training_logs("logs-1")) == []  # nothing logged yet
    mp.sagemaker_log("logs-1", ["epoch 1 loss 0.7", "epoch 2 loss 0.4"])
    mp.sagemaker_log("logs-10", ["another job's line"])
    assert list(backend.pipelines.training_logs("logs-1", follow=True)) == ["epoch 1 loss 0.7", "epoch 2 loss 0.4"]
    assert backend.problems == []
    with pytest.raises(NotFound):
        list(backend.pipelines.training_logs("no-such-job"))
    with pytest.raises(NotFound):
        backend.pipelines.training_status("no-such-job")


@pytest.mark.parametrize("changes, message", [
    ({"name": "credit_risk_1"}, "is not 1-63 letters"),
    ({"data": {"train": "data/train.csv"}}, "reads its data from S3"),
    ({"data": {"train": "s3://mlplat-fraud-production-artifacts-123456789012/nothing/here"}},
     "nothing can be read at s3://"),
    ({"gpus": 1}, "the instance type decides the GPUs"),
    ({"environment": {"BAD-NAME": "x"}}, "[a-zA-Z_]"),
    ({"command": ("python", "train.py", "x" * 2500)}, "SageMaker takes at most 2500"),
])
def test_bad_jobs_are_refused_and_nothing_is_submitted(aws, tmp_path, changes, message):
    backend = Backend(aws)
    fields = {"name": "bad-1", "command": ("python", "train.py"), "source": bundle(tmp_path), **changes}
    with pytest.raises(PipelineError) as exc:
        backend.pipelines.submit_training(TrainingJobSpec(**fields))
    assert message in str(exc.value)
    assert "CreateTrainingJob" not in backend.ops() and "PutObject" not in backend.ops()
    assert sm().list_training_jobs()["TrainingJobSummaries"] == [] and source_objects() == []


def test_a_stack_without_a_control_plane_is_refused_before_any_call(aws, tmp_path):
    backend = Backend(aws, BARE)
    with pytest.raises(StackError, match="reaches the ledger .* only through the stack's control plane") as exc:
        backend.pipelines.submit_training(TrainingJobSpec("cp-1", ("python", "train.py"), bundle(tmp_path)))
    assert "mlplat:controlPlane.url" in exc.value.hint
    assert "CreateTrainingJob" not in backend.ops() and source_objects() == []


# --- pipelines -----------------------------------------------------------------------------------


def credit_risk(tmp_path, *, raw: str, name: str = "credit-risk") -> PipelineDefinition:
    return PipelineDefinition(name=name, model="scorer", source=bundle(tmp_path), steps=(
        StepDefinition("prepare", command=("python", "prepare.py"), inputs={"raw": raw}, outputs=("train",),
                       retries=1),
        StepDefinition("train", command=("python", "train.py"), inputs={"train": "prepare.train"}, outputs=("model",)),
        StepDefinition("evaluate", kind="evaluate", depends_on=("train",)),
        StepDefinition("register", kind="register", depends_on=("evaluate",)),
        StepDefinition("promote", kind="promote", depends_on=("register",)),
    ))


def test_a_pipeline_run_creates_the_compiled_pipeline_and_starts_it_with_the_code(aws, tmp_path):
    backend = Backend(aws)
    pipeline = credit_risk(tmp_path, raw=put_data("datasets/raw.csv"))
    run = backend.pipelines.run_pipeline(pipeline)
    assert backend.problems == []
    name = "mlplat-fraud-production-credit-risk"
    assert run.pipeline == "credit-risk" and run.run_id.startswith(
        f"arn:aws:sagemaker:{ms.REGION}:{ms.ACCOUNT}:pipeline/{name}/execution/")
    stored = json.loads(sm().describe_pipeline(PipelineName=name)["PipelineDefinition"])
    assert stored == backend.pipelines.compile_pipeline(pipeline)
    assert rules.pipeline_definition_problems(stored) == []
    [source] = [k for k in source_objects() if k != "source/current.tar.gz"]
    parameters = sm().list_pipeline_parameters_for_execution(PipelineExecutionArn=run.run_id)["PipelineParameters"]
    assert parameters == [{"Name": "SourceUri", "Value": f"s3://mlplat-fraud-production-artifacts-123456789012/{source}"}]
    assert (run.state, [(s.name, s.state) for s in run.steps]) == ("RUNNING", [("prepare", "PENDING")])
    mp.set_execution(run.run_id, "Succeeded")
    run = backend.pipelines.pipeline_status(run.run_id)
    assert run.state == "SUCCEEDED"
    assert [(s.name, s.state) for s in run.steps] == [
        ("prepare", "SUCCEEDED"), ("train", "SUCCEEDED"), ("evaluate", "SUCCEEDED"), ("evaluate-passed", "SUCCEEDED"),
        ("register", "SUCCEEDED"), ("promote", "SUCCEEDED")]
    # a second run updates the same pipeline
    again = backend.pipelines.run_pipeline(pipeline)
    assert backend.ops().count("CreatePipeline") == 1 and backend.ops().count("UpdatePipeline") == 1
    assert [r.run_id for r in backend.pipelines.pipeline_runs("credit-risk")][:2] in (
        [again.run_id, run.run_id], [run.run_id, again.run_id])  # moto stamps both within one second
    assert {r.run_id for r in backend.pipelines.pipeline_runs()} == {run.run_id, again.run_id}


def test_a_failed_step_fails_the_run_by_name_and_resume_retries_it(aws, tmp_path):
    backend = Backend(aws)
    run = backend.pipelines.run_pipeline(credit_risk(tmp_path, raw=put_data("datasets/raw.csv")))
    mp.set_execution(run.run_id, "Failed", [("prepare", "Succeeded", ""),
                                            ("train", "Failed", "AlgorithmError: out of memory")])
    failed = backend.pipelines.pipeline_status(run.run_id)
    assert failed.state == "FAILED" and failed.message == "step train failed: AlgorithmError: out of memory"
    assert [s.state for s in failed.steps] == ["SUCCEEDED", "FAILED"]
    resumed = backend.pipelines.run_pipeline(credit_risk(tmp_path, raw="unused"), resume=run.run_id)
    assert resumed.run_id == run.run_id and resumed.state == "RUNNING"
    assert [s.state for s in resumed.steps] == ["SUCCEEDED", "RUNNING"]
    assert backend.ops().count("StartPipelineExecution") == 1 and backend.problems == []
    with pytest.raises(NotFound):
        backend.pipelines.pipeline_status(run.run_id.replace("/execution/", "/execution/x"))


def test_bad_pipelines_are_refused_and_nothing_is_created(aws, tmp_path):
    backend = Backend(aws)
    with pytest.raises(PipelineError, match="nothing can be read at s3://"):
        backend.pipelines.run_pipeline(credit_risk(tmp_path, raw="s3://mlplat-fraud-production-artifacts-123456789012/none"))
    with pytest.raises(PipelineError, match="reads data from S3"):
        backend.pipelines.run_pipeline(credit_risk(tmp_path, raw="data/raw.csv"))
    with pytest.raises(PipelineError, match="which the stack's program owns"):
        backend.pipelines.run_pipeline(credit_risk(tmp_path, raw=put_data("d.csv"), name="fraud-model-train"))
    unknown = PipelineDefinition(name="p", model="scorer", source=bundle(tmp_path), steps=(
        StepDefinition("deploy", command=("mlplat", "deploy", "scorer", "{version}", "--package", "x")),))
    with pytest.raises(PipelineError, match="No such option '--package'"):
        backend.pipelines.run_pipeline(unknown)
    with pytest.raises(PipelineError, match="no source bundle"):
        backend.pipelines.run_pipeline(PipelineDefinition(name="p", steps=(StepDefinition("a", command=("python",)),)))
    assert not {"CreatePipeline", "UpdatePipeline", "StartPipelineExecution", "PutObject"} & set(backend.ops())
    assert sm().list_pipelines()["PipelineSummaries"] == [] and source_objects() == []


# --- schedules -----------------------------------------------------------------------------------


def test_a_schedule_is_an_eventbridge_schedule_starting_the_pipeline(aws, tmp_path):
    import boto3

    backend = Backend(aws)
    pipeline = credit_risk(tmp_path, raw=put_data("datasets/raw.csv"))
    info = backend.pipelines.schedule_pipeline(pipeline, "0 3 * * 1-5")
    assert backend.problems == []
    name = "mlplat-fraud-production-credit-risk"
    schedule = boto3.client("scheduler", region_name=ms.REGION).get_schedule(Name=name)
    assert info.target == schedule["Arn"] and info.cron == "0 3 * * 1-5"
    assert schedule["ScheduleExpression"] == "cron(0 3 ? * 2-6 *)"
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    target = schedule["Target"]
    assert target["Arn"] == "arn:aws:scheduler:::aws-sdk:sagemaker:startPipelineExecution"
    assert target["RoleArn"] == f"arn:aws:iam::{ms.ACCOUNT}:role/mlplat-fraud-production-scheduler"
    payload = json.loads(target["Input"])
    assert payload["PipelineName"] == name and payload["PipelineParameters"][0]["Name"] == "SourceUri"
    # the payload is a StartPipelineExecution request SageMaker takes (the token is filled per invocation)
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("sagemaker")
    validate_parameters({**payload, "ClientRequestToken": "0" * 36},
                        model.operation_model("StartPipelineExecution").input_shape)
    assert sm().describe_pipeline(PipelineName=name)["PipelineName"] == name
    # rescheduling replaces the cron
    backend.pipelines.schedule_pipeline(pipeline, "30 6 1 * *")
    assert boto3.client("scheduler", region_name=ms.REGION).get_schedule(Name=name)["ScheduleExpression"] == \
        "cron(30 6 1 * ? *)"


def test_a_cron_eventbridge_cannot_run_is_refused_before_anything_is_created(aws, tmp_path):
    backend = Backend(aws)
    with pytest.raises(PipelineError, match="restricts both the day of month and the day of week"):
        backend.pipelines.schedule_pipeline(credit_risk(tmp_path, raw=put_data("d.csv")), "0 3 1 * 1")
    assert backend.sent == [] or not {"CreatePipeline", "CreateSchedule", "PutObject"} & set(backend.ops())
    assert sm().list_pipelines()["PipelineSummaries"] == []


def test_the_aws_provider_offers_pipelines(aws):
    from mlplat import providers
    from mlplat.contracts import Capability, PipelineBackend
    from mlplat_providers.aws.runtime.pipelines import AwsPipelines

    ctx = context(aws)
    backend = providers.get("aws").get(Capability.PIPELINES, ctx.stack(STACK), ctx)
    assert isinstance(backend, AwsPipelines) and isinstance(backend, PipelineBackend)


# --- through the training service: governance first, then SageMaker ------------------------------

GIT = ["git", "-c", "user.email=ds@example.com", "-c", "user.name=ds", "-c", "commit.gpgsign=false"]
GPU_ONLY = "  mlplat:policy:\n    policies:\n      spend:\n        allowedInstanceTypes: [ml.m5.*]\n" \
           "        maxGpuInstances: 0\n"


@pytest.fixture
def git_project(aws):
    import subprocess

    (aws / "stacks" / "Pulumi.governed.yaml").write_text(
        ms.aws_stack_text(extra=f"  mlplat:controlPlane: {{url: '{CONTROL_PLANE}'}}\n" + GPU_ONLY))
    (aws / "train.py").write_text("print('training')\n")
    (aws / ".gitignore").write_text(".mlplat/\n")
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "project"]):
        subprocess.run([*GIT, *args], cwd=aws, check=True, capture_output=True)
    return aws


def test_a_disallowed_instance_type_is_refused_before_any_aws_call(git_project, monkeypatch):
    from mlplat.services import training
    from mlplat_providers.aws.runtime.session import AwsSession

    calls: list[tuple] = []
    real = AwsSession.call
    monkeypatch.setattr(AwsSession, "call", lambda self, *a, **k: calls.append(a) or real(self, *a, **k))
    ctx = context(git_project)
    spec = ctx.stack("governed")
    for instance_type, gpus, where in (("ml.p4d.24xlarge", 0, "allowedInstanceTypes"),
                                       ("ml.m5.xlarge", 2, "maxGpuInstances")):
        with pytest.raises(training.SpendRefused) as exc:
            training.submit(spec, ctx, ["python", "train.py"], instance_type=instance_type, gpus=gpus,
                            cwd=git_project)
        assert exc.value.where.endswith(where) and exc.value.exit_code == 6
    assert calls == []
    assert sm().list_training_jobs()["TrainingJobSummaries"] == [] and source_objects() == []


def test_mlplat_train_on_an_aws_stack_submits_a_sagemaker_job_sagemaker_accepts(git_project, monkeypatch):
    from mlplat.services import training
    from mlplat_providers.aws.runtime.pipelines import AwsPipelines

    sent: list[dict] = []
    real = AwsPipelines.training_request
    monkeypatch.setattr(AwsPipelines, "training_request",
                        lambda self, job, uri: sent.append(real(self, job, uri)) or sent[-1])
    ctx = context(git_project)
    done = training.submit(ctx.stack("governed"), ctx, ["python", "train.py"], instance_type="ml.m5.xlarge",
                           data={"train": put_data("datasets/train.csv")}, cwd=git_project)
    assert done.status.state == "PENDING"
    [request] = sent
    assert rules.training_job_problems(request) == []
    described = sm().describe_training_job(TrainingJobName=done.job.name)
    assert json.loads(described["HyperParameters"]["mlplat_command"]) == ["python", "train.py"]
    assert request["Environment"]["MLPLAT_TRAINING_JOB"] == done.job.name
    assert request["Environment"]["MLPLAT_CONTROL_PLANE_URL"] == CONTROL_PLANE
    assert {t["Key"] for t in request["Tags"]} == {"team", "cost-center", "environment", "owner"}


def test_mlplat_pipeline_run_and_schedule_on_an_aws_stack(git_project):
    """The credit-risk example through the pipelines service, as `mlplat pipeline run|schedule` calls it: the
    project packaged at its commit, the pipeline compiled, created and started on SageMaker, scheduled on
    EventBridge Scheduler."""
    import shutil
    import subprocess

    import boto3

    from mlplat.services import pipelines as service
    from tests.conftest import REPO

    shutil.copytree(REPO / "examples" / "pipelines", git_project / "examples" / "pipelines")
    for args in (["add", "."], ["commit", "-q", "-m", "pipeline"]):
        subprocess.run([*GIT, *args], cwd=git_project, check=True, capture_output=True)
    ctx = context(git_project)
    spec = ctx.stack("governed")
    run = service.run(spec, ctx, "examples/pipelines/credit_risk.py")
    assert run.state == "RUNNING" and run.pipeline == "credit-risk"  # SageMaker runs it; status follows it
    name = "mlplat-fraud-production-credit-risk"
    definition = json.loads(sm().describe_pipeline(PipelineName=name)["PipelineDefinition"])
    assert rules.pipeline_definition_problems(definition) == []
    assert {s["Name"] for s in rules._all_steps(definition["Steps"])} >= {
        "prepare", "train", "evaluate", "register", "promote"}
    head = subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=git_project, check=True, capture_output=True,
                          text=True).stdout.strip()
    assert any(k.startswith(f"source/{head}/") for k in source_objects())
    scheduled = service.schedule(spec, ctx, "examples/pipelines/credit_risk.py", "0 3 * * 1")
    schedule = boto3.client("scheduler", region_name=ms.REGION).get_schedule(Name=name)
    assert scheduled["target"] == schedule["Arn"] and schedule["ScheduleExpression"] == "cron(0 3 ? * 2 *)"
    # a schedule runs the code it was scheduled with: uncommitted changes are refused, nothing changes
    from mlplat.services.source import SourceError

    (git_project / "train.py").write_text("print('changed')\n")
    before = boto3.client("scheduler", region_name=ms.REGION).get_schedule(Name=name)["ScheduleExpression"]
    with pytest.raises(SourceError, match="train.py"):
        backend = Backend(git_project, "governed")
        backend.pipelines.schedule_pipeline(service.resolve(spec, ctx, "examples/pipelines/credit_risk.py"),
                                            "0 4 * * *")
    assert boto3.client("scheduler", region_name=ms.REGION).get_schedule(Name=name)["ScheduleExpression"] == before
