"""Pipelines and training on the gcp provider: the KFP v2 IR the platform compiles, Vertex AI PipelineJobs and
CustomJobs against the fake Vertex REST server (bodies parsed into aiplatform_v1 types, permissions checked).

The IR is checked against its documented shape (``pipeline_compiler.spec_problems``) and every task's
command against mlplat's own click tree; the fake refuses a pipeline job whose spec or parameters fail the
same rules. Quota errors are retried with backoff (an injected sleeper), a denied permission is named.
"""
from __future__ import annotations

import copy

import pytest

from mlplat.contracts.pipelines import PipelineDefinition, SourceBundle, StepDefinition, TrainingJobSpec
from tests.contract.cloud_stack_support import GIT, commit_pipelines_project, train_archive
from tests.contract.gcp_fake.fixtures import gcp_fake, gcp_servers  # noqa: F401
from tests.contract.gcp_fake.vertex_jobs import advance

pytestmark = pytest.mark.integration

PROJECT = "acme-search-ml"
STACK_TEXT = f"""config:
  mlplat:team: search
  mlplat:environment: staging
  mlplat:provider:
    kind: gcp
    project: {PROJECT}
    region: europe-west4
    billingAccount: 01A2B3-C4D5E6-F7A8B9
  mlplat:tags:
    team: search
    cost-center: CC-2077
    environment: staging
    owner: search-ml@example.com
  mlplat:serving:
    instanceType: n1-standard-4
    pricePerHour: 0.19
  mlplat:controlPlane: {{url: "https://cp.search.example.com"}}
"""


def pipeline(source: SourceBundle | None = None) -> PipelineDefinition:
    return PipelineDefinition(name="scorer_train", model="scorer", source=source, environment={"MLPLAT_STACK": "s"},
                              steps=(StepDefinition("prep", command=("python", "prep.py"),
                                                    inputs={"raw": "gs://data/raw.csv"}, outputs=("table",)),
                                     StepDefinition("train", command=("python", "train.py"), inputs={"table": "prep.table"},
                                                    outputs=("model",), retries=2),
                                     StepDefinition("evaluate", kind="evaluate", depends_on=("train",)),
                                     StepDefinition("promote", kind="promote", depends_on=("evaluate",),
                                                    params={"target": "staging"})))


def target():
    from mlplat_providers.gcp import pipeline_compiler as pc

    return pc.CompileTarget(image="europe-west4-docker.pkg.dev/p/r/train:1", stack="gcp-staging")


def test_the_compiled_ir_has_the_documented_shape_and_runs_existing_commands():
    from mlplat_providers.gcp import pipeline_compiler as pc

    spec = pc.compile_spec(pipeline(), target())
    assert pc.spec_problems(spec) == [] and pc.command_problems(spec) == []
    assert spec["schemaVersion"] == "2.1.0" and spec["pipelineInfo"]["name"] == "scorer-train"
    tasks = spec["root"]["dag"]["tasks"]
    assert list(tasks) == ["prep", "train", "evaluate", "promote"]
    assert tasks["train"]["inputs"]["artifacts"]["table"] == {
        "taskOutputArtifact": {"producerTask": "prep", "outputArtifactKey": "table"}}
    assert tasks["train"]["dependentTasks"] == ["prep"] and tasks["train"]["retryPolicy"]["maxRetryCount"] == 2
    assert tasks["prep"]["inputs"]["parameters"]["input_raw"] == {"runtimeValue": {"constant": "gs://data/raw.csv"}}
    assert spec["root"]["inputDefinitions"]["parameters"] == {
        "model_version": {"parameterType": "STRING", "defaultValue": "latest", "isOptional": True},
        "source_uri": {"parameterType": "STRING"}}
    assert pc.step_commands(spec)["promote"] == ["mlplat", "models", "promote", "scorer",
                                                 "{{$.inputs.parameters['model_version']}}", "--to", "staging",
                                                 "--stack", "gcp-staging"]
    evaluate = spec["deploymentSpec"]["executors"]["exec-evaluate"]["container"]
    assert evaluate["command"] == list(pc.ENTRY) and "--gate" in evaluate["args"]
    assert {"name": "MLPLAT_STACK", "value": "s"} in evaluate["env"]
    # a pipeline with no {version} declares no model_version parameter: every parameter is read
    plain = pc.compile_spec(PipelineDefinition(name="p", steps=(StepDefinition("a", command=("python", "a.py")),)),
                            target())
    assert plain["root"]["inputDefinitions"]["parameters"] == {"source_uri": {"parameterType": "STRING"}}


def _broken(mutate) -> list[str]:
    from mlplat_providers.gcp import pipeline_compiler as pc

    spec = copy.deepcopy(pc.compile_spec(pipeline(), target()))
    mutate(spec)
    return pc.spec_problems(spec) + pc.command_problems(spec)


@pytest.mark.parametrize(("mutate", "problem"), [
    (lambda s: s.update(schemaVersion="2.0.0"), "schemaVersion is '2.0.0'"),
    (lambda s: s["pipelineInfo"].update(name="Scorer_Train"), "pipelineInfo.name 'Scorer_Train'"),
    (lambda s: s["root"]["dag"]["tasks"]["train"]["componentRef"].update(name="comp-nope"), "is not a component"),
    (lambda s: s["root"]["dag"]["tasks"]["train"]["inputs"]["artifacts"].clear(), "input artifact 'table'"),
    (lambda s: s["root"]["dag"]["tasks"]["train"].pop("dependentTasks"), "does not list it in dependentTasks"),
    (lambda s: s["root"]["dag"]["tasks"]["prep"].update(dependentTasks=["promote"]), "has a cycle"),
    (lambda s: s["root"]["inputDefinitions"]["parameters"].update(extra={"parameterType": "STRING"}),
     "no task reads: extra"),
    (lambda s: s["deploymentSpec"]["executors"]["exec-prep"]["container"]["args"].append(
        "{{$.inputs.parameters['nope']}}"), "names no declared input parameter"),
    (lambda s: s["deploymentSpec"]["executors"]["exec-evaluate"]["container"]["args"].__setitem__(
        -6, "evaluat"), "`mlplat models evaluat` is not a command"),
    (lambda s: s["deploymentSpec"]["executors"]["exec-promote"]["container"]["args"].append("--bogus"),
     "No such option"),
])
def test_the_ir_rules_refuse_what_vertex_pipelines_refuses(mutate, problem):
    assert any(problem in p for p in _broken(mutate)), _broken(mutate)


def test_bad_pipelines_are_refused_before_anything_is_sent():
    from mlplat_providers.gcp import pipeline_compiler as pc

    with pytest.raises(pc.PipelineError, match="declares no output 'nope'"):
        pc.compile_spec(PipelineDefinition(name="p", steps=(StepDefinition("a", command=("python", "a.py")),
                                                            StepDefinition("b", command=("x",), inputs={"i": "a.nope"}))),
                        target())
    with pytest.raises(pc.PipelineError, match="names no model"):
        pc.compile_spec(PipelineDefinition(name="p", steps=(StepDefinition("e", kind="evaluate"),)), target())
    with pytest.raises(pc.PipelineError, match="cycle"):
        pc.compile_spec(PipelineDefinition(name="p", steps=(StepDefinition("a", command=("x",), depends_on=("b",)),
                                                            StepDefinition("b", command=("x",), depends_on=("a",)))),
                        target())


@pytest.fixture
def backend(tmp_path, gcp_fake):  # noqa: F811
    from mlplat.stack import load_stack
    from mlplat_providers.gcp.runtime.pipelines import GcpPipelines
    from mlplat_providers.gcp.runtime.session import GcpSession, RetryPolicy

    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text("name: mlplat\nruntime: python\nstackConfigDir: stacks\n")
    (project / "stacks" / "Pulumi.gcp-staging.yaml").write_text(STACK_TEXT)
    spec = load_stack("gcp-staging", project)
    sleeps: list[float] = []
    session = GcpSession(spec, retry=RetryPolicy(attempts=3, sleep=sleeps.append))
    gcp_fake.vertex.buckets.add(session.plan.bucket)
    archive = tmp_path / "source.tar.gz"
    train_archive(archive)
    source = SourceBundle(archive=str(archive), commit="abc123")
    return GcpPipelines(spec, None, session), gcp_fake.vertex, source, sleeps


def test_a_pipeline_runs_as_a_vertex_pipeline_job(backend):
    pipes, vertex, source, _sleeps = backend
    run = pipes.run_pipeline(pipeline(source))
    assert run.state == "PENDING" and run.pipeline == "scorer_train" and run.run_id.startswith("scorer-train-")
    [(name, job)] = vertex.extra["pipeline_jobs"].items()
    values = dict(job.runtime_config.parameter_values)
    assert set(values) == {"source_uri", "model_version"} and values["model_version"] == "latest"
    assert values["source_uri"].startswith(f"gs://{pipes.gcp.plan.bucket}/source/abc123/")
    assert job.labels["mlplat-managed"] == "true" and job.labels["team"] == "search"
    assert job.labels["mlplat-pipeline"] == "scorer-train"

    advance(vertex, name, "RUNNING", tasks={"prep": "SUCCEEDED", "train": "RUNNING"})
    status = pipes.pipeline_status(run.run_id)
    assert status.state == "RUNNING" and [(s.name, s.state) for s in status.steps] == [("prep", "SUCCEEDED"),
                                                                                        ("train", "RUNNING")]
    advance(vertex, name, "FAILED", tasks={"prep": "SUCCEEDED", "train": "SUCCEEDED", "evaluate": "FAILED",
                                           "promote": "NOT_TRIGGERED"}, error="gate did not pass")
    failed = pipes.pipeline_status(run.run_id)
    assert failed.state == "FAILED" and failed.message.startswith("step evaluate failed")
    assert dict((s.name, s.state) for s in failed.steps)["promote"] == "SKIPPED"

    # resume: the same spec and parameters again; Vertex reuses the completed tasks from its cache
    again = pipes.run_pipeline(pipeline(source), resume=run.run_id)
    assert again.run_id != run.run_id
    assert dict(vertex.extra["pipeline_jobs"][f"{pipes.gcp.location}/pipelineJobs/{again.run_id}"]
                .runtime_config.parameter_values) == values
    assert {r.run_id for r in pipes.pipeline_runs("scorer_train")} == {again.run_id, run.run_id}
    assert pipes.pipeline_runs("other") == []
    from mlplat.errors import NotFound

    with pytest.raises(NotFound, match="pipeline run 'nope' does not exist"):
        pipes.pipeline_status("nope")


def test_the_fake_refuses_a_pipeline_job_vertex_refuses(backend):
    from google.cloud import aiplatform_v1 as v1

    from mlplat.errors import ExternalError
    from mlplat_providers.gcp import pipeline_compiler as pc

    pipes, _vertex, _source, _sleeps = backend
    spec = pc.compile_spec(pipeline(), target())
    job = v1.PipelineJob(display_name="x", pipeline_spec=spec, runtime_config=v1.PipelineJob.RuntimeConfig(
        gcs_output_directory="gs://b/x", parameter_values={"source_uri": "gs://b/s.tgz", "stray": "1"}))
    with pytest.raises(ExternalError, match="'stray', which the pipeline does not declare"):
        pipes.gcp.call(pipes.pipelines.create_pipeline_job, parent=pipes.gcp.location, pipeline_job=job,
                       pipeline_job_id="ok-id")
    with pytest.raises(ExternalError, match="pipelineJobId 'Bad_Id'"):
        pipes.gcp.call(pipes.pipelines.create_pipeline_job, parent=pipes.gcp.location, pipeline_job=job,
                       pipeline_job_id="Bad_Id")


def test_mlplat_train_is_a_custom_job(backend):
    from mlplat.errors import NotFound
    from mlplat_providers.gcp import pipeline_compiler as pc

    pipes, vertex, source, _sleeps = backend
    spec = TrainingJobSpec(name="scorer-20260101-1", command=("python", "train.py", "--epochs", "3"), source=source,
                           data={"train": "gs://data/train.parquet"}, tags={"model": "scorer"}, spot=True,
                           max_runtime_seconds=3600)
    first = pipes.submit_training(spec)
    assert first.state == "PENDING" and first.job_id == spec.name and first.instance_type == "n1-standard-4"
    [(name, job)] = vertex.extra["custom_jobs"].items()
    container = job.job_spec.worker_pool_specs[0].container_spec
    assert list(container.command) == list(pc.ENTRY)
    assert list(container.args)[-5:] == ["--", "python", "train.py", "--epochs", "3"]
    env = {e.name: e.value for e in container.env}
    assert env["MLPLAT_DATA_TRAIN"] == "gs://data/train.parquet" and env["MLPLAT_TRAINING_JOB"] == spec.name
    assert env["MLPLAT_CONTROL_PLANE_URL"] == "https://cp.search.example.com" and env["MLPLAT_STACK"] == "gcp-staging"
    assert job.job_spec.scheduling.strategy.name == "SPOT" and job.job_spec.scheduling.timeout.total_seconds() == 3600
    assert job.labels["model"] == "scorer" and job.labels["mlplat-job"] == "scorer-20260101-1"
    uploads = [k for k in vertex.objects if k[1].startswith("source/abc123/")]
    pipes.submit_training(TrainingJobSpec(name="scorer-20260101-2", command=("python", "train.py"), source=source))
    assert [k for k in vertex.objects if k[1].startswith("source/abc123/")] == uploads  # uploaded once

    advance(vertex, name, "RUNNING")
    assert pipes.training_status(spec.name).state == "RUNNING"
    assert pipes.stop_training(spec.name).state == "STOPPED"
    assert {j.job_id for j in pipes.training_jobs()} == {"scorer-20260101-2", "scorer-20260101-1"}
    with pytest.raises(NotFound, match="training job 'nope' does not exist"):
        pipes.training_status("nope")
    with pytest.raises(pc.PipelineError, match="must be in Cloud Storage"):
        pipes.submit_training(TrainingJobSpec(name="x", command=("python", "t.py"), source=source,
                                              data={"train": "/home/me/train.csv"}))


def test_quota_is_retried_then_reported_and_a_denied_permission_is_named(backend):
    from mlplat_providers.gcp.runtime.session import GcpPermissionDenied, GcpUnavailable

    pipes, vertex, source, sleeps = backend
    vertex.exhaust("aiplatform.customJobs.create", 2)
    assert pipes.submit_training(TrainingJobSpec(name="j1", command=("python", "t.py"), source=source)).state == "PENDING"
    assert len(sleeps) == 2
    vertex.exhaust("aiplatform.customJobs.create", 5)
    with pytest.raises(GcpUnavailable, match="RESOURCE_EXHAUSTED to create_custom_job 3 times"):
        pipes.submit_training(TrainingJobSpec(name="j2", command=("python", "t.py"), source=source))
    vertex.exhausted.clear()
    vertex.deny("aiplatform.pipelineJobs.create")
    with pytest.raises(GcpPermissionDenied, match="Google denied aiplatform.pipelineJobs.create"):
        pipes.run_pipeline(pipeline(source))


def test_the_job_entry_unpacks_the_project_and_runs_the_command(tmp_path):
    import subprocess

    from mlplat_providers.gcp.runtime import job_entry

    archive = tmp_path / "src.tar.gz"
    train_archive(archive, b"x")
    seen = {}

    def run(argv, cwd, env):
        seen.update(argv=argv, files=sorted(p.name for p in cwd.iterdir()),
                    env={k: v for k, v in env.items() if k.startswith(("MLPLAT_INPUT_", "MLPLAT_OUTPUT_"))})
        return subprocess.CompletedProcess(argv, 0, stdout=seen.get("stdout", '{"passed": true}'), stderr="")

    out = tmp_path / "out" / "model"
    assert job_entry.main(["--source", str(archive), "--input", "train-set=/gcs/b/t", "--output", f"model={out}",
                           "--", "python", "train.py"], run=run) == 0
    assert seen["argv"] == ["python", "train.py"] and seen["files"] == ["train.py"] and out.is_dir()
    assert seen["env"] == {"MLPLAT_INPUT_TRAIN_SET": "/gcs/b/t", "MLPLAT_OUTPUT_MODEL": str(out)}
    seen["stdout"] = '{"passed": false, "reasons": ["accuracy 0.7 < 0.85"]}'
    assert job_entry.main(["--source", str(archive), "--gate", "--", "mlplat", "models", "evaluate"], run=run) == 1
    assert job_entry.main(["--source", str(archive)], run=run) == 2  # no command
    assert job_entry.main(["--bogus", "x", "--", "python"], run=run) == 2


def test_a_stack_without_a_control_plane_is_refused_before_any_call(backend, monkeypatch):
    from mlplat.errors import StackError

    pipes, vertex, source, _sleeps = backend
    monkeypatch.setattr(pipes, "spec", pipes.spec.model_copy(update={
        "control_plane": pipes.spec.control_plane.model_copy(update={"url": None})}))
    monkeypatch.delenv("MLPLAT_CONTROL_PLANE_URL", raising=False)
    before = list(vertex.requests)
    with pytest.raises(StackError, match="only through the stack's control plane") as refused:
        pipes.submit_training(TrainingJobSpec(name="j", command=("python", "t.py"), source=source))
    assert "mlplat:controlPlane.url" in refused.value.hint
    with pytest.raises(StackError, match="only through the stack's control plane"):
        pipes.run_pipeline(pipeline(source))
    assert vertex.requests == before and not vertex.extra.get("custom_jobs")


def test_the_gcp_provider_offers_pipelines(backend):
    from mlplat import providers
    from mlplat.contracts import Capability, PipelineBackend
    from mlplat_providers.gcp.runtime.pipelines import GcpPipelines

    pipes = backend[0]
    made = providers.get("gcp").get(Capability.PIPELINES, pipes.spec, None)
    assert isinstance(made, GcpPipelines) and isinstance(made, PipelineBackend)


# --- through the training and pipelines services, as `mlplat train` and `mlplat pipeline run` call them ------


@pytest.fixture
def git_project(tmp_path, gcp_fake):  # noqa: F811
    from tests.conftest import write_project
    from tests.contract import gcp_support as gs
    from tests.contract.lifecycle import context

    root = write_project(tmp_path / "project", {"governed": gs.gcp_stack_text(
        extra="  mlplat:controlPlane: {url: 'https://cp.fraud.example.com'}\n")})
    commit_pipelines_project(root)
    gs.provision_cloud(context(root).stack("governed"), gcp_fake)
    return root, gcp_fake.vertex


def test_mlplat_train_on_a_gcp_stack_submits_a_custom_job_vertex_accepts(git_project):
    from mlplat.services import training
    from tests.contract.lifecycle import context

    root, vertex = git_project
    ctx = context(root)
    done = training.submit(ctx.stack("governed"), ctx, ["python", "train.py"], data={"train": "gs://data/train.csv"},
                           cwd=root)
    assert done.status.state == "PENDING"
    [job] = vertex.extra["custom_jobs"].values()
    container = job.job_spec.worker_pool_specs[0].container_spec
    env = {e.name: e.value for e in container.env}
    assert env["MLPLAT_TRAINING_JOB"] == done.job.name and env["MLPLAT_CONTROL_PLANE_URL"] == "https://cp.fraud.example.com"
    assert list(container.args)[-2:] == ["python", "train.py"]
    assert {"team", "cost-center", "environment", "owner", "mlplat-managed"} <= set(job.labels)


def test_mlplat_pipeline_run_on_a_gcp_stack(git_project):
    import subprocess

    from mlplat.services import pipelines as service
    from mlplat_providers.gcp import pipeline_compiler as pc
    from tests.contract.lifecycle import context

    root, vertex = git_project
    ctx = context(root)
    run = service.run(ctx.stack("governed"), ctx, "examples/pipelines/credit_risk.py")
    assert run.state == "PENDING" and run.pipeline == "credit-risk"
    [job] = vertex.extra["pipeline_jobs"].values()
    spec = type(job).to_dict(job)["pipeline_spec"]
    assert pc.spec_problems(spec) == [] and pc.command_problems(spec) == []
    assert set(spec["root"]["dag"]["tasks"]) >= {"prepare", "train", "evaluate", "register", "promote"}
    head = subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()
    assert dict(job.runtime_config.parameter_values)["source_uri"].split("/")[3:5] == ["source", head]


def test_a_schedule_is_a_vertex_schedule_creating_the_pipeline_job(backend):
    pipes, vertex, source, _sleeps = backend
    first = pipes.schedule_pipeline(pipeline(source), "0 3 * * 1")
    [(name, schedule)] = vertex.extra["schedules"].items()
    assert first.target == name and first.cron == "0 3 * * 1" and schedule.cron == "TZ=UTC 0 3 * * 1"
    assert schedule.max_concurrent_run_count == 1 and schedule.display_name == "mlplat-scorer-train"
    job = schedule.create_pipeline_job_request.pipeline_job
    assert dict(job.runtime_config.parameter_values)["source_uri"].startswith(f"gs://{pipes.gcp.plan.bucket}/source/")
    again = pipes.schedule_pipeline(pipeline(source), "30 4 * * *")  # the same pipeline: updated in place
    assert again.target == name and list(vertex.extra["schedules"]) == [name]
    assert vertex.extra["schedules"][name].cron == "TZ=UTC 30 4 * * *"
