"""Pipelines and training on the azure provider: command jobs, command components, pipeline jobs and job
schedules against the fake ARM (bodies read into azure-ai-ml's REST models, the documented rules applied).

The compiled pipeline job is checked against the pipeline job schema's rules
(``pipeline_compiler.pipeline_problems``) and every node's command against mlplat's own click tree; the
fake refuses a job whose compute, code, environment or components do not exist, and a schedule whose cron
Azure ML does not take. Throttling is retried (an injected sleeper), a denied action is named.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from mlplat.contracts.pipelines import PipelineDefinition, SourceBundle, StepDefinition, TrainingJobSpec
from tests.contract.azure_fake import jobs as fake_jobs
from tests.contract.azure_fake.fixtures import azure_fake, azure_server  # noqa: F401  (fixtures)
from tests.contract.azure_support import azure_session, azure_stack_text
from tests.contract.cloud_stack_support import GIT, commit_pipelines_project, train_archive

pytestmark = pytest.mark.integration

CONTROL_PLANE = "  mlplat:controlPlane: {url: 'https://cp.fraud.example.com'}\n"
DATA = "azureml://datastores/mlplat_data/paths/raw.csv"
WS_ID = ("/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w")


def pipeline(source: SourceBundle | None = None) -> PipelineDefinition:
    return PipelineDefinition(name="scorer-train", model="scorer", source=source, environment={"EXTRA": "1"}, steps=(
        StepDefinition("prep", command=("python", "prep.py"), inputs={"raw": DATA}, outputs=("table",)),
        StepDefinition("train", command=("python", "train.py"), inputs={"table": "prep.table"}, outputs=("model",),
                       retries=2),
        StepDefinition("evaluate", kind="evaluate", params={"model": "scorer", "training_step": "train"}),
        StepDefinition("register", kind="register", depends_on=("evaluate",),
                       params={"model": "scorer", "training_step": "train"}),
        StepDefinition("promote", kind="promote", params={"model": "scorer", "version_step": "register",
                                                          "target": "staging"})))


def target():
    from mlplat_providers.azure import pipeline_compiler as pc

    return pc.CompileTarget(stack="az-prod", workspace_id=WS_ID, compute="cpu-cluster", code_id=f"{WS_ID}/codes/c/versions/1",
                            environment_id=f"{WS_ID}/environments/e/versions/1", experiment="scorer",
                            environment={"MLPLAT_STACK": "az-prod"})


# --- the compiler: pure ------------------------------------------------------------------------------------


def test_a_pipeline_compiles_to_components_and_a_pipeline_job_bound_by_name():
    from mlplat_providers.azure import pipeline_compiler as pc
    from tests.contract.azure_fake.arm import read_model

    compiled = pc.compile_pipeline(pipeline(), target(), run_tags={"mlplat-pipeline-run": "r1"})
    assert pc.pipeline_problems(compiled.job, compiled.components) == []
    assert pc.command_problems(compiled.job, compiled.components) == []
    assert type(read_model("JobBase", compiled.job).properties).__name__ == "PipelineJob"
    for body in compiled.components.values():
        read_model("ComponentVersion", body)
    props = compiled.job["properties"]
    nodes = props["jobs"]
    assert list(nodes) == ["prep", "train", "evaluate", "register", "promote"]
    assert nodes["train"]["inputs"]["table"] == {"job_input_type": "literal",
                                                 "value": "${{parent.jobs.prep.outputs.table}}"}
    assert nodes["prep"]["inputs"]["raw"]["uri"] == DATA and nodes["prep"]["inputs"]["raw"]["job_input_type"] == "uri_file"
    # an ordering without data is a binding of the upstream step's mlplat_done output
    assert nodes["register"]["inputs"]["after_evaluate"]["value"] == "${{parent.jobs.evaluate.outputs.mlplat_done}}"
    assert props["inputs"] == {"model_version": {"jobInputType": "literal", "value": "latest"}}
    assert props["settings"]["continue_on_step_failure"] is False
    assert nodes["train"]["environment_variables"] == {"EXTRA": "1", "MLPLAT_STACK": "az-prod"}
    assert nodes["evaluate"]["environment_variables"] == {"MLPLAT_STACK": "az-prod"}
    assert nodes["promote"]["tags"] == {"mlplat-pipeline-run": "r1", "mlplat-step": "promote"}
    commands = pc.node_commands(compiled.job, compiled.components)
    assert commands["promote"] == ["mlplat", "models", "promote", "scorer", "${{inputs.model_version}}", "--to",
                                   "staging", "--stack", "az-prod"]
    evaluate = compiled.components["mlplat_scorer_train_evaluate"]["properties"]["componentSpec"]["command"]
    train = compiled.components["mlplat_scorer_train_train"]["properties"]["componentSpec"]["command"]
    assert "--gate" in evaluate and "--attempts 3" in train and "'table=${{inputs.table}}'" in train


def _broken(mutate) -> list[str]:
    from mlplat_providers.azure import pipeline_compiler as pc

    compiled = pc.compile_pipeline(pipeline(), target())
    job, components = copy.deepcopy(compiled.job), copy.deepcopy(compiled.components)
    mutate(job["properties"], {n: c["properties"]["componentSpec"] for n, c in components.items()})
    return pc.pipeline_problems(job, components) + pc.command_problems(job, components)


@pytest.mark.parametrize(("mutate", "problem"), [
    (lambda p, c: p.update(jobType="Command"), "jobType is 'Command'"),
    (lambda p, c: p["jobs"]["train"].update(componentId="nope"), "is not a registered component"),
    (lambda p, c: p["jobs"]["train"]["inputs"].pop("table"), "input 'table' of mlplat_scorer_train_train is not bound"),
    (lambda p, c: p["jobs"]["train"]["inputs"].update(stray={"job_input_type": "literal", "value": "x"}),
     "binds input 'stray'"),
    (lambda p, c: p["jobs"]["train"]["inputs"]["table"].update(value="${{parent.jobs.prep.outputs.nope}}"),
     "reads output 'nope'"),
    (lambda p, c: p["jobs"]["train"]["inputs"]["table"].update(value="${{parent.jobs.gone.outputs.table}}"),
     "reads node 'gone'"),
    (lambda p, c: p["inputs"].update(extra={"jobInputType": "literal", "value": "1"}), "no node reads: extra"),
    (lambda p, c: c["mlplat_scorer_train_prep"].update(command="echo ${{inputs.nope}}"),
     "${{inputs.nope}} names no declared input"),
    (lambda p, c: p["jobs"]["prep"]["inputs"].update(
        cyc={"job_input_type": "literal", "value": "${{parent.jobs.promote.outputs.mlplat_done}}"}), "cycle"),
    (lambda p, c: c["mlplat_scorer_train_evaluate"].update(
        command=c["mlplat_scorer_train_evaluate"]["command"].replace("evaluate scorer", "evaluat scorer")),
     "`mlplat models evaluat` is not a command"),
    (lambda p, c: c["mlplat_scorer_train_promote"].update(
        command=c["mlplat_scorer_train_promote"]["command"] + " --bogus"), "No such option"),
])
def test_the_pipeline_job_rules_refuse_what_azure_ml_refuses(mutate, problem):
    assert any(problem in p for p in _broken(mutate)), _broken(mutate)


def test_bad_pipelines_are_refused_before_anything_is_sent():
    from mlplat_providers.azure import pipeline_compiler as pc

    with pytest.raises(pc.PipelineError, match="does not declare"):
        pc.compile_pipeline(PipelineDefinition(name="p", steps=(
            StepDefinition("a", command=("python", "a.py")),
            StepDefinition("b", command=("x",), inputs={"i": "a.nope"}))), target())
    with pytest.raises(pc.PipelineError, match="reads its data from storage"):
        pc.compile_pipeline(PipelineDefinition(name="p", steps=(
            StepDefinition("a", command=("python", "a.py"), inputs={"raw": "/home/me/raw.csv"}),)), target())
    with pytest.raises(pc.PipelineError, match="cycle"):
        pc.compile_pipeline(PipelineDefinition(name="p", steps=(
            StepDefinition("a", command=("x",), depends_on=("b",)),
            StepDefinition("b", command=("x",), depends_on=("a",)))), target())


# --- the fake's documented rules ---------------------------------------------------------------------------


def test_the_fakes_rules():
    assert fake_jobs.job_name("train-20260101-000000-abc123") is None
    assert "Invalid job name" in fake_jobs.job_name("-bad")
    assert fake_jobs.experiment_name("credit-risk") is None and fake_jobs.experiment_name(None) is None
    assert "Invalid experiment name" in fake_jobs.experiment_name("credit risk")
    assert fake_jobs.cron_trigger("0 3 * * 1", "UTC") is None
    assert fake_jobs.cron_trigger("*/15 0-6 1,15 JAN-MAR MON", None) is None
    assert "five fields" in fake_jobs.cron_trigger("0 3 * *", "UTC")
    assert "five fields" in fake_jobs.cron_trigger("0 3 * * 1 2026", "UTC")
    assert "time zone" in fake_jobs.cron_trigger("0 3 * * 1", "Mars/Olympus")
    assert fake_jobs.job_input("d", {"jobInputType": "uri_folder", "uri": DATA}) is None
    assert "not a path Azure ML reads" in fake_jobs.job_input("d", {"jobInputType": "uri_file", "uri": "/tmp/x"})
    assert fake_jobs.cancel("Running") is None and "already finished" in fake_jobs.cancel("Completed")


# --- the runtime against the fake ---------------------------------------------------------------------------


@pytest.fixture
def backend(tmp_path, monkeypatch, azure_fake):  # noqa: F811
    from mlplat_providers.azure.runtime.pipelines import AzurePipelines
    from tests.conftest import write_project
    from tests.contract.lifecycle import context

    project = write_project(tmp_path / "project", {"team": azure_stack_text(extra=CONTROL_PLANE)})
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(project))
    monkeypatch.delenv("MLPLAT_CONTROL_PLANE_URL", raising=False)
    monkeypatch.delenv("MLPLAT_AZURE_TRACKING_URI", raising=False)
    spec = context(project).stack("team")
    sleeps: list[float] = []
    archive = tmp_path / "source.tar.gz"
    train_archive(archive)
    pipes = AzurePipelines(spec, None, azure_session(spec, sleeps), sleep=sleeps.append, clock=lambda: 1_767_225_600.0)
    return SimpleNamespace(pipes=pipes, fake=azure_fake, arm=azure_fake.arm, state=fake_jobs.jobs_state(azure_fake.arm),
                           source=SourceBundle(archive=str(archive), commit="abc123"), sleeps=sleeps)


def _job(b, **kw) -> TrainingJobSpec:
    values = {"name": "train-1", "command": ("python", "train.py", "--epochs", "3"), "source": b.source,
              "tags": {"model": "scorer", "mlplat.training.price_per_hour": "0.29"}}
    return TrainingJobSpec(**{**values, **kw})


def test_mlplat_train_is_a_command_job_on_the_programs_cluster(backend):
    from mlplat.errors import NotFound
    from mlplat_providers.azure import pipeline_compiler as pc

    b = backend
    first = b.pipes.submit_training(_job(b, data={"train": DATA}, spot=True, max_runtime_seconds=3600))
    assert first.state == "PENDING" and first.job_id == "train-1" and first.run_id == "train-1"
    assert first.instance_type == "Standard_DS3_v2" and first.price_per_hour == 0.29
    [(key, job)] = [(k, j) for k, j in b.state["jobs"].items()]
    props = job["properties"]
    assert props["jobType"] == "Command" and props["computeId"].endswith("/computes/cpu-cluster")
    assert props["experimentName"] == "scorer" and props["limits"]["timeout"] == "PT3600S"
    assert props["queueSettings"] == {"jobTier": "Spot"}
    assert props["command"].startswith(" ".join(pc.ENTRY) + " --source source.tar.gz --input")
    assert props["command"].endswith("-- python train.py --epochs 3")
    assert props["inputs"]["train"] == {"jobInputType": "uri_file", "uri": DATA, "mode": "ReadOnlyMount"}
    env = props["environmentVariables"]
    assert env["MLPLAT_DATA_TRAIN"] == DATA and env["MLPLAT_TRAINING_JOB"] == "train-1"
    assert env["MLPLAT_CONTROL_PLANE_URL"] == "https://cp.fraud.example.com" and env["MLPLAT_STACK"] == "team"
    assert env["MLPLAT_AZURE_TRACKING_URI"] == "azureml://westeurope.api.azureml.ms/mlflow/v1.0" + b.pipes.azure.workspace_id
    assert {"team", "cost-center", "environment", "owner"} <= set(props["tags"])
    assert props["tags"]["mlplat-managed"] == "true" and props["tags"]["model"] == "scorer"
    [(code_key, code)] = b.state["codes"].items()
    assert props["codeId"].lower().endswith(f"/codes/mlplat-source/versions/{code_key[2]}")
    assert code["properties"]["codeUri"].endswith(f"/mlplat/code/abc123/{code_key[2]}")
    assert any(k[1] == "mlplat" and k[2].endswith("/source.tar.gz") for k in b.arm.blobs)
    blobs = len(b.arm.blobs)
    b.pipes.submit_training(_job(b, name="train-2"))
    assert len(b.arm.blobs) == blobs and len(b.state["codes"]) == 1  # uploaded and registered once

    fake_jobs.advance(b.arm, "train-1", "Running", log="epoch 1\nepoch 2\n")
    assert b.pipes.training_status("train-1").state == "RUNNING"
    assert list(b.pipes.training_logs("train-1")) == ["epoch 1", "epoch 2"]
    stopped = b.pipes.stop_training("train-1")  # the cancel LRO followed to its end
    assert stopped.state == "STOPPED" and stopped.ended is not None
    assert b.pipes.stop_training("train-1").state == "STOPPED"  # a finished job: nothing sent
    fake_jobs.advance(b.arm, "train-2", "Failed")
    failed = b.pipes.training_status("train-2")
    assert failed.state == "FAILED" and "mlplat train logs train-2" in failed.message
    assert {j.job_id for j in b.pipes.training_jobs()} == {"train-1", "train-2"}
    with pytest.raises(NotFound, match="training job 'nope' does not exist"):
        b.pipes.training_status("nope")
    with pytest.raises(NotFound):
        list(b.pipes.training_logs("nope"))


def test_completed_jobs_and_serverless_sizes(backend):
    b = backend
    b.pipes.submit_training(_job(b))
    fake_jobs.advance(b.arm, "train-1", "Completed", log="done\n")
    done = b.pipes.training_status("train-1")
    assert done.state == "SUCCEEDED" and done.done and list(b.pipes.training_logs("train-1", follow=True)) == ["done"]
    gpu = b.pipes.submit_training(_job(b, name="train-gpu", instance_type="Standard_NC6s_v3", gpus=1))
    props = b.state["jobs"][next(k for k in b.state["jobs"] if k[1] == "train-gpu")]["properties"]
    assert "computeId" not in props and props["resources"] == {"instanceType": "Standard_NC6s_v3", "instanceCount": 1}
    assert gpu.instance_type == "Standard_NC6s_v3"


def test_bad_training_jobs_are_refused_before_anything_is_sent(backend):
    from mlplat_providers.azure import pipeline_compiler as pc

    b = backend
    before = list(b.arm.calls)
    with pytest.raises(pc.PipelineError, match="reads its data from storage"):
        b.pipes.submit_training(_job(b, data={"train": "/home/me/train.csv"}))
    with pytest.raises(pc.PipelineError, match="not an Azure ML job name"):
        b.pipes.submit_training(_job(b, name="-bad"))
    with pytest.raises(pc.PipelineError, match="the VM size decides the GPUs"):
        b.pipes.submit_training(_job(b, gpus=1))
    with pytest.raises(pc.PipelineError, match="not an Azure VM size"):
        b.pipes.submit_training(_job(b, instance_type="ml.g5.xlarge"))
    assert b.arm.calls == before
    fake_jobs.computes(b.arm, b.pipes.azure.workspace_id).clear()  # the program's cluster is gone
    with pytest.raises(pc.PipelineError, match="has no compute cluster 'cpu-cluster'") as refused:
        b.pipes.submit_training(_job(b))
    assert "mlplat up" in refused.value.hint and not b.state["jobs"]


def test_the_fake_refuses_jobs_azure_ml_refuses(backend):
    from mlplat.errors import ExternalError

    b = backend
    b.pipes.submit_training(_job(b))
    rest = b.pipes.rest
    good = copy.deepcopy(b.state["jobs"][next(iter(b.state["jobs"]))])
    body = {"properties": {k: v for k, v in good["properties"].items() if k != "status"}}

    def refused(name: str, mutate) -> str:
        bad = copy.deepcopy(body)
        mutate(bad["properties"])
        with pytest.raises(ExternalError) as caught:
            rest.request("PUT", f"/jobs/{name}", bad, what="a job")
        return str(caught.value)

    assert "already exists" in refused("train-1", lambda p: None)
    assert "could not find member 'bogus'" in refused("j2", lambda p: p.update(bogus=1))
    assert "Compute" in refused("j3", lambda p: p.update(computeId=p["computeId"].replace("cpu-cluster", "gpu")))
    assert "Environment" in refused("j4", lambda p: p.update(environmentId=p["environmentId"] + "0"))
    assert "Invalid experiment name" in refused("j5", lambda p: p.update(experimentName="a b"))
    assert "serverless" in refused("j6", lambda p: p.pop("computeId"))


def test_throttling_is_retried_and_a_denied_action_is_named(backend):
    from mlplat_providers.azure.runtime.session import AzurePermissionDenied, AzureUnavailable

    b = backend
    b.arm.throttle("Microsoft.MachineLearningServices/workspaces/jobs/write", 2)
    assert b.pipes.submit_training(_job(b)).state == "PENDING"
    assert b.sleeps == [7.0, 7.0]  # the Retry-After the fake sends
    b.arm.throttle("Microsoft.MachineLearningServices/workspaces/jobs/write", 5)
    with pytest.raises(AzureUnavailable, match="429 4 times"):
        b.pipes.submit_training(_job(b, name="train-2"))
    b.arm.throttled.clear()
    b.arm.deny("Microsoft.MachineLearningServices/workspaces/jobs/cancel/action")
    with pytest.raises(AzurePermissionDenied, match="jobs/cancel/action") as denied:
        b.pipes.stop_training("train-1")
    assert "grant a role" in denied.value.hint


def test_a_stack_without_a_control_plane_is_refused_before_any_call(backend, monkeypatch):
    from mlplat.errors import StackError

    b = backend
    monkeypatch.setattr(b.pipes, "spec", b.pipes.spec.model_copy(update={
        "control_plane": b.pipes.spec.control_plane.model_copy(update={"url": None})}))
    before = list(b.arm.calls)
    with pytest.raises(StackError, match="only through the stack's control plane"):
        b.pipes.submit_training(_job(b))
    with pytest.raises(StackError, match="only through the stack's control plane"):
        b.pipes.run_pipeline(pipeline(b.source))
    assert b.arm.calls == before


def test_a_pipeline_runs_as_an_azure_ml_pipeline_job(backend):
    from mlplat.errors import NotFound

    b = backend
    run = b.pipes.run_pipeline(pipeline(b.source))
    assert run.state == "PENDING" and run.pipeline == "scorer-train" and run.run_id.startswith("scorer-train-")
    assert [s.state for s in run.steps] == ["PENDING"] * 5
    assert len(b.state["components"]) == 5 and len(b.state["codes"]) == 1
    job = b.state["jobs"][next(k for k in b.state["jobs"] if k[1] == run.run_id)]
    assert job["properties"]["tags"]["mlplat-managed"] == "true"
    assert job["properties"]["jobs"]["train"]["tags"]["mlplat-pipeline-run"] == run.run_id

    fake_jobs.advance(b.arm, run.run_id, "Running", steps={"prep": "Completed", "train": "Running"})
    status = b.pipes.pipeline_status(run.run_id)
    assert status.state == "RUNNING"
    assert [(s.name, s.state) for s in status.steps][:3] == [("prep", "SUCCEEDED"), ("train", "RUNNING"),
                                                              ("evaluate", "PENDING")]
    fake_jobs.advance(b.arm, run.run_id, "Failed", steps={"train": "Completed", "evaluate": "Failed"})
    failed = b.pipes.pipeline_status(run.run_id)
    assert failed.state == "FAILED" and failed.message == "step evaluate failed"
    assert dict((s.name, s.state) for s in failed.steps)["promote"] == "SKIPPED"
    assert b.pipes.training_jobs() == []  # a pipeline's child jobs are not training jobs

    # resume: the same job again under a new name, reuse on: Azure ML takes the completed steps from its cache
    again = b.pipes.run_pipeline(pipeline(b.source), resume=run.run_id)
    assert again.run_id != run.run_id
    resumed = b.state["jobs"][next(k for k in b.state["jobs"] if k[1] == again.run_id)]["properties"]
    assert resumed["settings"]["force_rerun"] is False and resumed["tags"]["mlplat-resumes"] == run.run_id
    fake_jobs.advance(b.arm, again.run_id, "Completed", steps={"prep": "Completed", "train": "Completed",
                                                               "evaluate": "Completed", "register": "Completed",
                                                               "promote": "Completed"}, reused=("prep", "train"))
    done = b.pipes.pipeline_status(again.run_id)
    assert done.state == "SUCCEEDED" and [s.state for s in done.steps][:3] == ["CACHED", "CACHED", "SUCCEEDED"]
    assert {r.run_id for r in b.pipes.pipeline_runs("scorer-train")} == {run.run_id, again.run_id}
    assert b.pipes.pipeline_runs("other") == []
    with pytest.raises(NotFound, match="pipeline run 'nope' does not exist"):
        b.pipes.pipeline_status("nope")
    b.pipes.submit_training(_job(b, name="train-x"))
    with pytest.raises(NotFound, match="pipeline run 'train-x' does not exist"):
        b.pipes.pipeline_status("train-x")  # a command job is not a pipeline run


def test_a_schedule_is_a_job_schedule_creating_the_pipeline_job(backend):
    from mlplat.errors import IntegrityError
    from mlplat.pipelines.cron import CronError

    b = backend
    first = b.pipes.schedule_pipeline(pipeline(b.source), "0 3 * * 1")
    [(key, schedule)] = b.state["schedules"].items()
    assert first.target.endswith(f"/schedules/{key[1]}") and key[1] == "mlplat-fraud-production-scorer-train"
    props = schedule["properties"]
    assert props["trigger"] == {"triggerType": "Cron", "expression": "0 3 * * 1", "timeZone": "UTC"}
    assert props["action"]["actionType"] == "CreateJob" and props["action"]["jobDefinition"]["jobType"] == "Pipeline"
    assert props["provisioningState"] == "Succeeded" and props["tags"]["mlplat-managed"] == "true"
    assert first.next_run == 1_767_582_000.0  # Monday 2026-01-05 03:00 UTC
    again = b.pipes.schedule_pipeline(pipeline(b.source), "30 4 * * *")  # updated in place
    assert again.target == first.target and len(b.state["schedules"]) == 1
    assert [(s.pipeline, s.cron) for s in b.pipes.schedules()] == [("scorer-train", "30 4 * * *")]
    assert b.pipes.unschedule_pipeline("scorer-train").cron == "30 4 * * *"
    assert b.state["schedules"][key]["properties"]["isEnabled"] is False and b.pipes.schedules() == []
    assert b.pipes.unschedule_pipeline("other") is None
    with pytest.raises(CronError):
        b.pipes.schedule_pipeline(pipeline(b.source), "0 3 * *")
    b.state["schedules"][key]["properties"]["tags"] = {"team": "someone-else"}  # not the platform's
    with pytest.raises(IntegrityError, match="not managed by mlplat"):
        b.pipes.schedule_pipeline(pipeline(b.source), "0 3 * * 1")
    assert b.state["schedules"][key]["properties"]["tags"] == {"team": "someone-else"}


def test_the_azure_provider_offers_pipelines(backend):
    from mlplat import providers
    from mlplat.contracts import Capability, PipelineBackend
    from mlplat_providers.azure.runtime.pipelines import AzurePipelines

    made = providers.get("azure").get(Capability.PIPELINES, backend.pipes.spec, None)
    assert isinstance(made, AzurePipelines) and isinstance(made, PipelineBackend)


# --- through the services, as `mlplat train` and `mlplat pipeline run` call them ---------------------------


@pytest.fixture
def git_project(tmp_path, monkeypatch, azure_fake):  # noqa: F811
    from tests.conftest import write_project
    from tests.contract.azure_support import provision_cloud
    from tests.contract.lifecycle import context

    root = write_project(tmp_path / "project", {"governed": azure_stack_text(extra=CONTROL_PLANE)})
    commit_pipelines_project(root)
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(root))
    monkeypatch.delenv("MLPLAT_CONTROL_PLANE_URL", raising=False)
    monkeypatch.delenv("MLPLAT_AZURE_TRACKING_URI", raising=False)
    provision_cloud(context(root).stack("governed"))
    return root, fake_jobs.jobs_state(azure_fake.arm)


def test_mlplat_train_on_an_azure_stack_submits_a_command_job(git_project):
    from mlplat.services import training
    from tests.contract.lifecycle import context

    root, state = git_project
    ctx = context(root)
    done = training.submit(ctx.stack("governed"), ctx, ["python", "train.py"], cwd=root, data={"train": DATA})
    assert done.status.state == "PENDING"
    [job] = state["jobs"].values()
    props = job["properties"]
    assert props["inputs"]["train"]["uri"] == DATA and props["environmentVariables"]["MLPLAT_DATA_TRAIN"] == DATA
    assert job["name"] == done.job.name and props["command"].endswith("-- python train.py")
    assert props["environmentVariables"]["MLPLAT_TRAINING_JOB"] == done.job.name
    assert props["tags"]["mlplat.training.provider"] == "azure"
    assert training.status(ctx.stack("governed"), ctx, done.job.name).state == "PENDING"


def test_mlplat_pipeline_run_on_an_azure_stack(git_project):
    import subprocess

    from mlplat.services import pipelines as service
    from mlplat_providers.azure import pipeline_compiler as pc
    from tests.contract.lifecycle import context

    root, state = git_project
    ctx = context(root)
    run = service.run(ctx.stack("governed"), ctx, "examples/pipelines/credit_risk.py")
    assert run.state == "PENDING" and run.pipeline == "credit-risk"
    [job] = state["jobs"].values()
    components = {k[1]: c for k, c in state["components"].items()}
    assert pc.pipeline_problems(job, components) == [] and pc.command_problems(job, components) == []
    assert set(job["properties"]["jobs"]) == {"prepare", "train", "evaluate", "register", "promote"}
    head = subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()
    assert job["properties"]["properties"]["mlplat.commit"] == head


def test_the_job_entry_runs_the_command_in_the_unpacked_project_retrying_when_asked(tmp_path):
    import subprocess

    from mlplat_providers.azure.runtime import job_entry

    archive = tmp_path / "source.tar.gz"
    train_archive(archive, b"x")
    codes = iter([1, 1, 0])
    seen: list[dict] = []

    def run(argv, cwd, env):
        seen.append({"argv": argv, "files": sorted(p.name for p in cwd.iterdir()),
                     "env": {k: v for k, v in env.items() if k.startswith(("MLPLAT_INPUT_", "MLPLAT_OUTPUT_"))}})
        return subprocess.CompletedProcess(argv, next(codes), stdout="", stderr="")

    out = tmp_path / "outputs" / "model"
    assert job_entry.main(["--source", str(archive), "--attempts", "3", "--input", "table=/mnt/in/table",
                           "--output", f"model={out}", "--", "python", "train.py"], run=run) == 0
    assert len(seen) == 3 and seen[0]["argv"] == ["python", "train.py"] and seen[0]["files"] == ["train.py"]
    assert seen[0]["env"] == {"MLPLAT_INPUT_TABLE": "/mnt/in/table", "MLPLAT_OUTPUT_MODEL": str(out)} and out.is_dir()
    codes = iter([4, 4])
    assert job_entry.main(["--source", str(archive), "--attempts", "2", "--", "python", "train.py"], run=run) == 4
    assert job_entry.main(["--source", str(archive), "--attempts", "0", "--", "python"], run=run) == 2


def test_train_and_schedule_through_the_cli(git_project, azure_fake):  # noqa: F811
    import json

    from tests.conftest import run_cli

    root, state = git_project
    env = {**azure_fake.env, "MLPLAT_PROJECT_DIR": str(root), "MLPLAT_STACK": "governed", "AZURE_CLIENT_ID": ""}

    def cli(*args: str):
        return run_cli(*args, cwd=root, env=env, timeout=300)

    submitted = cli("train", "--json", "--data", f"train={DATA}", "--", "python", "train.py")
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = json.loads(submitted.stdout)["job_id"]
    assert [k[1] for k in state["jobs"]] == [job_id]
    fake_jobs.advance(azure_fake.arm, job_id, "Running", log="epoch 1\n")
    status = cli("train", "status", job_id, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "RUNNING"
    logs = cli("train", "logs", job_id)
    assert logs.returncode == 0 and "epoch 1" in logs.stdout
    stopped = cli("train", "stop", job_id, "--json")
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["state"] == "STOPPED"
    missing = cli("train", "status", "nope")
    assert missing.returncode != 0 and "training job 'nope' does not exist" in missing.stderr
    # bad input: one clear message, non-zero, nothing submitted
    local = cli("train", "--data", "train=data/none.csv", "--", "python", "train.py")
    assert local.returncode != 0 and "does not exist" in local.stderr and len(state["jobs"]) == 1
    bad_cron = cli("pipeline", "schedule", "examples/pipelines/credit_risk.py", "--cron", "0 3 * *")
    assert bad_cron.returncode != 0 and "5 fields" in bad_cron.stderr and not state["schedules"]
    scheduled = cli("pipeline", "schedule", "examples/pipelines/credit_risk.py", "--cron", "0 3 * * 1", "--json")
    assert scheduled.returncode == 0, scheduled.stderr[-2000:]
    [schedule] = state["schedules"].values()
    assert schedule["properties"]["trigger"]["expression"] == "0 3 * * 1"
