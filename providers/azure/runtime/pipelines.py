"""``Capability.PIPELINES`` on Azure: Azure ML command jobs for ``mlplat train``, pipeline jobs and job
schedules for ``mlplat pipeline``, through the Azure ML REST API (``{ws}`` = the stack's workspace).

* **Code** = the project's archive at its commit, uploaded once per content digest to the workspace's
  storage account (container ``mlplat``, ``code/<commit>/<digest>/source.tar.gz``) and registered as the
  code asset version ``{ws}/codes/mlplat-source/versions/<digest>``; Azure ML downloads that folder into
  each job's working directory, where the entry (:mod:`.job_entry`) unpacks the archive and runs the command.
* **Environment** = the platform's runtime image (``<registry>.azurecr.io/train:latest``, or
  ``MLPLAT_AZURE_TRAINING_IMAGE``) as the environment version ``{ws}/environments/mlplat-training/versions/
  <digest of the image>``.
* **Training job** = ``PUT {ws}/jobs/{name}`` with a ``CommandJob`` on the program's compute cluster
  (``plan.compute``; another Azure VM size than the cluster's runs on serverless compute), experiment
  ``<model>`` (else ``<team>-training``): Azure ML tracks the job as an MLflow run of the workspace, the
  job's name being the run's id, and ``mlplat.start_run`` in the job tracks there too
  (``MLPLAT_AZURE_TRACKING_URI`` = the workspace's ``mlFlowTrackingUri``, unless the stack names one).
  Data URIs (``azureml://``, ``abfss://``, ``wasbs://``, ``https://``) are
  inputs mounted read-only; the URIs arrive as ``MLPLAT_DATA_<NAME>``, the mounted paths as
  ``MLPLAT_INPUT_<NAME>``. Status = ``GET {ws}/jobs/{name}`` (started = created, ended = last modified once
  terminal); stop = ``POST {ws}/jobs/{name}/cancel``, a long-running operation followed to its end; logs =
  the job's ``user_logs/std_log.txt`` in the workspace's artifact store.
* **Pipeline** = command components (one per step, content-addressed) and ``PUT {ws}/jobs/{run id}`` with
  the ``PipelineJob`` :mod:`..pipeline_compiler` builds (checked by ``pipeline_problems`` and
  ``command_problems`` before anything is sent). Each node carries the run's id as tag, so its child job
  is found by it (a step's status). ``resume`` submits the run's job again under a new name: reuse is on
  (``force_rerun`` off), so the completed steps are taken from Azure ML's cache.
* **Schedule** = ``PUT {ws}/schedules/mlplat-<prefix>-<pipeline>``: a ``CreateJob`` action of that pipeline
  job on a cron trigger (UTC); scheduling a pipeline again updates it; ``unschedule_pipeline`` disables it.

Every resource created carries the stack's tags and ``mlplat-managed: "true"``; a job or schedule without
them is never cancelled or changed. Every call goes through the session (429 retried, denied actions named).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlplat.contracts.pipelines import (
    JobStatus,
    PipelineBackend,
    PipelineDefinition,
    PipelineRunStatus,
    ScheduleInfo,
    SourceBundle,
    StepRun,
    TrainingJobSpec,
)
from mlplat.errors import IntegrityError, NotFound
from mlplat.pipelines import commands
from mlplat_providers.azure import pipeline_compiler as pc
from mlplat_providers.azure.runtime.session import MANAGED_TAG, AzureSession, overridden

API_VERSION = "2024-10-01"
A_WS = "Microsoft.MachineLearningServices/workspaces"
CODE_NAME = "mlplat-source"
ENVIRONMENT_NAME = "mlplat-training"
CODE_CONTAINER = "mlplat"  # the platform's container, as the registry's
LOG_CONTAINER = "azureml"  # the workspace's artifact store (datastore workspaceartifactstore)
RUN_TAG, PIPELINE_TAG, STEP_TAG = "mlplat-pipeline-run", "mlplat-pipeline", "mlplat-step"
PRICE_TAG = "mlplat.training.price_per_hour"
# JobStatus of the Azure ML REST API as the contract's states.
# https://learn.microsoft.com/rest/api/azureml/jobs/get#jobstatus
_STATE = {"NotStarted": "PENDING", "Starting": "PENDING", "Provisioning": "PENDING", "Preparing": "PENDING",
          "Queued": "PENDING", "Scheduled": "PENDING", "Paused": "PENDING", "Unknown": "PENDING",
          "Running": "RUNNING", "Finalizing": "RUNNING", "CancelRequested": "RUNNING", "NotResponding": "RUNNING",
          "Completed": "SUCCEEDED", "Failed": "FAILED", "Canceled": "STOPPED"}


def job_state(properties: dict[str, Any]) -> str:
    return _STATE.get(str(properties.get("status") or "NotStarted"), "PENDING")


def _seconds(stamp: Any) -> float | None:
    if not stamp:
        return None
    from datetime import datetime

    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


class AzureRest:
    """The Azure ML REST API at ARM (the override when set), each call through the session's ``call``:
    an error answer raises azure-core's own exceptions, which the session maps to mlplat errors."""

    def __init__(self, session: AzureSession, sleep: Callable[[float], None]):
        self.azure = session
        self.sleep = sleep
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            from azure.core import PipelineClient
            from azure.core.pipeline import policies

            from mlplat_providers.azure.runtime.session import ARM_SCOPE, override_auth_policy

            credential = self.azure.credential()
            auth = (override_auth_policy(credential) if overridden()
                    else policies.BearerTokenCredentialPolicy(credential, ARM_SCOPE))
            self._client = PipelineClient(base_url=self.azure.arm_endpoint, policies=[
                policies.HeadersPolicy(), policies.UserAgentPolicy("mlplat"), auth, policies.ContentDecodePolicy()])
        return self._client

    def _send(self, method: str, url: str, body: Any = None) -> Any:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceExistsError,
            ResourceNotFoundError,
            map_error,
        )
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        if url.startswith("/"):
            url = self.azure.arm_endpoint + url
        if "api-version=" not in url:
            url += ("&" if "?" in url else "?") + f"api-version={API_VERSION}"
        request = HttpRequest(method, url, json=body) if body is not None else HttpRequest(method, url)
        response = self.client().send_request(request)
        if response.status_code >= 400:
            map_error(response.status_code, response, {401: ClientAuthenticationError, 404: ResourceNotFoundError,
                                                        409: ResourceExistsError})
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        return response

    def request(self, method: str, path: str, body: Any = None, *, what: str, action: str | None = None,
                not_found: bool = False) -> dict[str, Any]:
        """The JSON answer of ``method`` ``{ws}{path}`` (a path starting with ``/subscriptions`` as is)."""
        url = path if path.startswith(("http://", "https://", "/subscriptions")) else self.azure.workspace_id + path
        response = self.azure.call(self._send, method, url, body, what=what, action=action, not_found=not_found)
        try:
            doc = response.json() if response.text() else {}
        except ValueError:
            doc = {}
        if response.status_code == 202 or response.headers.get("Azure-AsyncOperation"):
            self._follow(response, what=what, action=action)
        return doc if isinstance(doc, dict) else {}

    def _follow(self, response: Any, *, what: str, action: str | None, deadline_seconds: float = 3600.0) -> None:
        """Poll a long-running operation's ``Azure-AsyncOperation`` (else ``Location``) until it ends."""
        url = response.headers.get("Azure-AsyncOperation") or response.headers.get("Location")
        if not url:
            return
        waited = 0.0
        while True:
            answer = self.azure.call(self._send, "GET", url, what=what, action=action)
            status = (answer.json() if answer.text() else {}).get("status", "Succeeded") \
                if answer.status_code != 202 else "InProgress"
            if status in ("Succeeded", "Canceled"):
                return
            if status == "Failed":
                error = (answer.json().get("error") or {})
                from mlplat.errors import ExternalError

                raise ExternalError(f"{what} failed: {error.get('message') or 'Azure ML reports Failed'}",
                                    where=what, code=error.get("code"))
            delay = float(answer.headers.get("Retry-After") or 5)
            if waited >= deadline_seconds:
                from mlplat_providers.azure.runtime.session import AzureUnavailable

                raise AzureUnavailable(f"{what} did not finish within {int(deadline_seconds)} s",
                                       hint="check the job in Azure ML studio")
            self.sleep(delay)
            waited += max(delay, 1.0)

    def pages(self, path: str, *, what: str, action: str | None = None) -> Iterator[dict[str, Any]]:
        doc = self.request("GET", path, what=what, action=action)
        while True:
            yield from doc.get("value") or []
            following = doc.get("nextLink")
            if not following:
                return
            doc = self.request("GET", following, what=what, action=action)


class AzurePipelines(PipelineBackend):
    """Training jobs, pipeline jobs and schedules of one Azure stack."""

    def __init__(self, spec: Any, ctx: Any, session: AzureSession | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time):
        self.spec = spec
        self.ctx = ctx
        self.azure = session or AzureSession(spec)
        self.sleep = sleep
        self.clock = clock
        self.rest = AzureRest(self.azure, sleep)
        self._tracking: str | None = None

    # --- names and settings -------------------------------------------------------------------

    @property
    def plan(self) -> Any:
        from mlplat_providers.azure.plan import stack_plan

        return stack_plan(self.spec)

    def image(self) -> str:
        return os.environ.get("MLPLAT_AZURE_TRAINING_IMAGE") or f"{self.plan.container_registry}.azurecr.io/train:latest"

    def control_plane_url(self) -> str:
        return commands.control_plane_url(self.spec, "an Azure ML job")

    def job_environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """What every job and step sees: the stack, its control plane, the workspace's MLflow (where the
        job's run is tracked), and ``extra``."""
        out = {"MLPLAT_STACK": self.spec.name, "MLPLAT_CONTROL_PLANE_URL": self.control_plane_url()}
        return {**out, "MLPLAT_AZURE_TRACKING_URI": self.tracking_uri(), **(extra or {})}

    def tracking_uri(self) -> str:
        """The stack's tracking URI when it names one, else the workspace's MLflow
        (``properties.mlFlowTrackingUri``: ``azureml://<region>.api.azureml.ms/mlflow/v1.0/<workspace id>``)."""
        if self._tracking is None:
            named = self.spec.control_plane.tracking or os.environ.get("MLPLAT_AZURE_TRACKING_URI")
            if named:
                self._tracking = str(named)
            else:
                workspace = self.rest.request("GET", "", what=f"workspace {self.azure.workspace}",
                                              action=f"{A_WS}/read")
                self._tracking = str((workspace.get("properties") or {}).get("mlFlowTrackingUri") or "")
        return self._tracking

    def experiment(self, model: str | None) -> str:
        from mlplat_providers.azure.naming import slug

        return slug(model or f"{self.spec.team}-training", 255) or "mlplat"

    # --- assets ----------------------------------------------------------------------------------

    def _code_ref(self, source: SourceBundle) -> tuple[str, str, bytes]:
        data = Path(source.archive).read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:24]
        return digest, f"{self.azure.workspace_id}/codes/{CODE_NAME}/versions/{digest}", data

    def upload_source(self, source: SourceBundle) -> str:
        """The code asset version holding ``source``'s archive, uploaded and registered once per digest."""
        digest, code_id, data = self._code_ref(source)
        try:
            self.rest.request("GET", f"/codes/{CODE_NAME}/versions/{digest}", what="the project's code asset",
                              action=f"{A_WS}/codes/versions/read", not_found=True)
            return code_id
        except NotFound:
            pass
        folder = f"code/{source.commit}/{digest}"
        blob = self.azure.blob_service().get_blob_client(CODE_CONTAINER, f"{folder}/{pc.ARCHIVE}")
        from azure.core.exceptions import ResourceExistsError

        try:
            self.azure.call(blob.upload_blob, data, overwrite=False,
                            metadata={"mlplat_commit": source.commit, "mlplat_managed": "true"},
                            action="Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
                            what=f"uploading the project at {source.commit[:12]}")
        except ResourceExistsError:  # pragma: no cover - the same content uploaded concurrently
            pass
        code_uri = str(blob.url).rsplit("/", 1)[0]
        self.rest.request("PUT", f"/codes/{CODE_NAME}/versions/{digest}", {"properties": {
            "codeUri": code_uri, "description": f"mlplat project at {source.commit}" + (" (dirty)" if source.dirty else ""),
            "tags": self.azure.tags, "properties": {"mlplat.commit": source.commit}, "isAnonymous": False}},
            what="registering the project's code asset", action=f"{A_WS}/codes/versions/write")
        return code_id

    def ensure_environment(self) -> str:
        """The environment version of the platform's runtime image (registered once per image)."""
        image = self.image()
        version = hashlib.sha256(image.encode()).hexdigest()[:16]
        path = f"/environments/{ENVIRONMENT_NAME}/versions/{version}"
        try:
            self.rest.request("GET", path, what="the training environment", not_found=True,
                              action=f"{A_WS}/environments/versions/read")
        except NotFound:
            self.rest.request("PUT", path, {"properties": {
                "image": image, "osType": "Linux", "description": "mlplat runtime image (training and pipeline steps)",
                "tags": self.azure.tags}}, what="registering the training environment",
                action=f"{A_WS}/environments/versions/write")
        return f"{self.azure.workspace_id}{path}"

    def check_compute(self, name: str) -> None:
        try:
            self.rest.request("GET", f"/computes/{name}", what=f"compute cluster {name}", not_found=True,
                              action=f"{A_WS}/computes/read")
        except NotFound:
            raise pc.PipelineError(f"workspace {self.azure.workspace} has no compute cluster {name!r}",
                                   hint="run `mlplat up` for this stack: the program creates the cluster") from None

    def _target(self, source: SourceBundle | None, model: str | None) -> pc.CompileTarget:
        code_id = self._code_ref(source)[1] if source else f"{self.azure.workspace_id}/codes/{CODE_NAME}/versions/none"
        env_version = hashlib.sha256(self.image().encode()).hexdigest()[:16]
        return pc.CompileTarget(stack=self.spec.name, workspace_id=self.azure.workspace_id, compute=self.plan.compute,
                                code_id=code_id, experiment=self.experiment(model), tags=self.azure.tags,
                                environment_id=f"{self.azure.workspace_id}/environments/{ENVIRONMENT_NAME}/versions/"
                                               f"{env_version}", environment=self.job_environment())

    def _managed(self, resource: dict[str, Any]) -> bool:
        tags = (resource.get("properties") or {}).get("tags") or {}
        return tags.get(MANAGED_TAG) == "true" and tags.get("team") == self.spec.team and \
            tags.get("environment") == self.spec.environment

    # --- training jobs ---------------------------------------------------------------------------

    def _placement(self, job: TrainingJobSpec) -> tuple[bool, dict[str, Any] | None]:
        """``(on the cluster, serverless resources)``: the cluster runs its VM size (and the stack's serving
        size, the default); another Azure VM size runs on serverless compute."""
        from mlplat_providers.azure import service_rules as rules

        wanted = job.instance_type
        cluster = getattr(self.spec.provider, "compute_vm_size", None)
        if wanted in (None, cluster, self.spec.serving.instance_type):
            if job.gpus:
                raise pc.PipelineError(f"{job.gpus} GPU(s) asked for on the stack's CPU cluster: on Azure ML the VM "
                                       "size decides the GPUs", hint="pass --instance-type, e.g. Standard_NC6s_v3")
            return True, None
        if not rules.VM_SIZE_RE.match(str(wanted)):
            raise pc.PipelineError(f"instance type {wanted!r} is not an Azure VM size",
                                   hint="pass an Azure VM size, e.g. Standard_DS3_v2 or Standard_NC6s_v3")
        return False, {"instanceType": wanted, "instanceCount": 1}

    def submit_training(self, job: TrainingJobSpec) -> JobStatus:
        self.control_plane_url()  # refused before anything is sent when the stack has no control plane
        if not pc.JOB_NAME.match(job.name):
            raise pc.PipelineError(f"job name {job.name!r} is not an Azure ML job name",
                                   hint="letters, digits, '-' and '_', starting with a letter or digit")
        if not job.command:
            raise pc.PipelineError("the training job has no command", hint="mlplat train -- python train.py")
        on_cluster, resources = self._placement(job)
        for name, uri in job.data.items():  # data Azure ML cannot read: refused before any call
            pc.data_input(name, uri, f"training job {job.name}")
        target = self._target(job.source, job.tags.get("model"))
        body = pc.command_job(job, target, environment={**self.job_environment(), **job.environment,
                                                        "MLPLAT_TRAINING_JOB": job.name},
                              resources=resources, compute=on_cluster)
        if on_cluster:
            self.check_compute(target.compute)
        self.upload_source(job.source)
        self.ensure_environment()
        made = self.rest.request("PUT", f"/jobs/{job.name}", body, what=f"submitting training job {job.name}",
                                 action=f"{A_WS}/jobs/write")
        return self._job_status(made)

    def _job_status(self, job: dict[str, Any]) -> JobStatus:
        props = job.get("properties") or {}
        state = job_state(props)
        system = job.get("systemData") or {}
        resources = props.get("resources") or {}
        price = str((props.get("tags") or {}).get(PRICE_TAG) or "")
        try:
            price_per_hour = float(price) if price else None
        except ValueError:
            price_per_hour = None
        instance = resources.get("instanceType") or (getattr(self.spec.provider, "compute_vm_size", None)
                                                     if props.get("computeId") else None)
        return JobStatus(job_id=str(job.get("name")), state=state,  # type: ignore[arg-type]
                         started=_seconds(system.get("createdAt")),
                         ended=_seconds(system.get("lastModifiedAt")) if state in ("SUCCEEDED", "FAILED", "STOPPED")
                         else None, instance_type=instance,
                         message="" if state != "FAILED" else f"Azure ML reports the job {props.get('status')}: see "
                         f"`mlplat train logs {job.get('name')}`",
                         run_id=str(job.get("name")), model=(props.get("tags") or {}).get("model"),
                         price_per_hour=price_per_hour)

    def _get_job(self, job_id: str, kind: str = "training job") -> dict[str, Any]:
        try:
            return self.rest.request("GET", f"/jobs/{job_id}", what=f"{kind} {job_id}", not_found=True,
                                     action=f"{A_WS}/jobs/read")
        except NotFound:
            hint = "list them with `mlplat train list`" if kind == "training job" else \
                "list the runs with `mlplat pipeline list`"
            raise NotFound(f"{kind} {job_id!r} does not exist on this stack", hint=hint) from None

    def training_status(self, job_id: str) -> JobStatus:
        return self._job_status(self._get_job(job_id))

    def _log_lines(self, job_id: str, seen: int) -> list[str]:
        blob = self.azure.blob_service().get_blob_client(LOG_CONTAINER,
                                                         f"ExperimentRun/dcid.{job_id}/user_logs/std_log.txt")
        try:
            data = self.azure.call(lambda: blob.download_blob().readall(), not_found=True,
                                   action="Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
                                   what=f"logs of training job {job_id}")
        except NotFound:
            return []  # nothing written yet: the job has not started its command
        return bytes(data).decode("utf-8", "replace").splitlines()[seen:]

    def training_logs(self, job_id: str, *, follow: bool = False) -> Iterator[str]:
        self._get_job(job_id)  # NotFound for an unknown job, before any log read
        seen = 0
        while True:
            done = not follow or self.training_status(job_id).done
            lines = self._log_lines(job_id, seen)
            seen += len(lines)
            yield from lines
            if done:
                return
            self.sleep(5)

    def stop_training(self, job_id: str) -> JobStatus:
        job = self._get_job(job_id)
        status = self._job_status(job)
        if status.done:
            return status
        if not self._managed(job):
            raise IntegrityError(f"job {job_id} is not managed by mlplat for this stack",
                                 hint="the platform stops only the jobs it submitted")
        self.rest.request("POST", f"/jobs/{job_id}/cancel", what=f"stopping job {job_id}",
                          action=f"{A_WS}/jobs/cancel/action")
        return self.training_status(job_id)

    def _jobs(self, kind: str) -> list[dict[str, Any]]:
        found = [j for j in self.rest.pages(f"/jobs?jobType={kind}&listViewType=ActiveOnly",
                                            what="listing the stack's jobs", action=f"{A_WS}/jobs/read")
                 if self._managed(j)]
        return sorted(found, key=lambda j: str((j.get("systemData") or {}).get("createdAt") or ""), reverse=True)

    def training_jobs(self) -> list[JobStatus]:
        return [self._job_status(j) for j in self._jobs("Command")
                if RUN_TAG not in ((j.get("properties") or {}).get("tags") or {})]

    # --- pipelines ----------------------------------------------------------------------------------

    def _compile(self, pipeline: PipelineDefinition, run_tags: dict[str, str]) -> pc.CompiledPipeline:
        compiled = pc.compile_pipeline(pipeline, self._target(pipeline.source, pipeline.model), run_tags=run_tags)
        problems = pc.pipeline_problems(compiled.job, compiled.components) + \
            pc.command_problems(compiled.job, compiled.components)
        if problems:
            raise pc.PipelineError(f"pipeline {pipeline.name!r} does not compile to a pipeline job Azure ML runs: "
                                   + "; ".join(problems), hint="fix the steps named above")
        return compiled

    def compile_pipeline(self, pipeline: PipelineDefinition) -> dict[str, Any]:
        pipeline = dataclasses.replace(pipeline, environment=dict(pipeline.environment))
        compiled = self._compile(pipeline, {PIPELINE_TAG: pipeline.name})
        return {"components": compiled.components, "job": compiled.job}

    def _register(self, pipeline: PipelineDefinition, compiled: pc.CompiledPipeline) -> None:
        """The code, environment and components the job names, and the cluster it runs on, in the workspace."""
        if pipeline.source is None:
            raise pc.PipelineError(f"pipeline {pipeline.name!r} has no source bundle to run",
                                   hint="run it with `mlplat pipeline run` in the project's git repository, which "
                                        "packages the project")
        self.check_compute(self.plan.compute)
        self.upload_source(pipeline.source)
        self.ensure_environment()
        for name, body in compiled.components.items():
            path = f"/components/{name}/versions/{body['properties']['componentSpec']['version']}"
            try:
                self.rest.request("GET", path, what=f"component {name}", not_found=True,
                                  action=f"{A_WS}/components/versions/read")
            except NotFound:
                self.rest.request("PUT", path, body, what=f"registering component {name}",
                                  action=f"{A_WS}/components/versions/write")

    def run_pipeline(self, pipeline: PipelineDefinition, *, resume: str | None = None) -> PipelineRunStatus:
        run_id = f"{pc.io_name(pipeline.name).replace('_', '-')[:80]}-{uuid.uuid4().hex[:8]}"
        tags = {PIPELINE_TAG: pipeline.name, RUN_TAG: run_id}
        if resume:
            previous = self._get_job(resume, "pipeline run")
            props = dict(previous.get("properties") or {})
            if props.get("jobType") != "Pipeline" or not self._managed(previous):
                raise NotFound(f"pipeline run {resume!r} does not exist on this stack",
                               hint="list the runs with `mlplat pipeline list`")
            keep = ("jobType", "displayName", "experimentName", "description", "computeId", "inputs", "jobs",
                    "settings", "properties")
            body = {k: v for k, v in props.items() if k in keep}
            body["jobs"] = {n: {**node, "tags": {**(node.get("tags") or {}), RUN_TAG: run_id}}
                            for n, node in (props.get("jobs") or {}).items()}
            body["tags"] = {**(props.get("tags") or {}), RUN_TAG: run_id, "mlplat-resumes": resume}
            job = {"properties": body}
        else:
            compiled = self._compile(pipeline, tags)
            self._register(pipeline, compiled)
            job = compiled.job
        made = self.rest.request("PUT", f"/jobs/{run_id}", job, what=f"starting pipeline {pipeline.name}",
                                 action=f"{A_WS}/jobs/write")
        return self._run_status(made)

    def _run_status(self, job: dict[str, Any]) -> PipelineRunStatus:
        props = job.get("properties") or {}
        run_id = str(job.get("name"))
        state = job_state(props)
        terminal = state in ("SUCCEEDED", "FAILED", "STOPPED")
        children = {str(((c.get("properties") or {}).get("tags") or {}).get(STEP_TAG)): c
                    for c in self._children(run_id)}
        steps = []
        for node in (props.get("jobs") or {}).values():
            step = str((node.get("tags") or {}).get(STEP_TAG) or node.get("name"))
            child = children.get(step)
            if child is None:
                steps.append(StepRun(name=step, state="SKIPPED" if terminal else "PENDING"))
                continue
            cprops = child.get("properties") or {}
            cstate = job_state(cprops)
            if cstate == "SUCCEEDED" and (cprops.get("properties") or {}).get("azureml.isreused") == "true":
                cstate = "CACHED"
            status = self._job_status(child)
            steps.append(StepRun(name=step, state=cstate, attempts=1, started=status.started,  # type: ignore[arg-type]
                                 ended=status.ended))
        failed = [s.name for s in steps if s.state == "FAILED"]
        message = f"step {failed[0]} failed" if state == "FAILED" and failed else (
            f"Azure ML reports the pipeline job {props.get('status')}" if state == "FAILED" else "")
        system = job.get("systemData") or {}
        return PipelineRunStatus(run_id=run_id, pipeline=str((props.get("tags") or {}).get(PIPELINE_TAG) or
                                                              props.get("displayName")),
                                 state=state, steps=tuple(steps),  # type: ignore[arg-type]
                                 started=_seconds(system.get("createdAt")),
                                 ended=_seconds(system.get("lastModifiedAt")) if terminal else None, message=message)

    def _children(self, run_id: str) -> list[dict[str, Any]]:
        return [j for j in self.rest.pages(f"/jobs?jobType=Command&tag={RUN_TAG}&listViewType=All",
                                           what=f"steps of pipeline run {run_id}", action=f"{A_WS}/jobs/read")
                if ((j.get("properties") or {}).get("tags") or {}).get(RUN_TAG) == run_id]

    def pipeline_status(self, run_id: str) -> PipelineRunStatus:
        job = self._get_job(run_id, "pipeline run")
        if (job.get("properties") or {}).get("jobType") != "Pipeline" or not self._managed(job):
            raise NotFound(f"pipeline run {run_id!r} does not exist on this stack",
                           hint="list the runs with `mlplat pipeline list`")
        return self._run_status(job)

    def pipeline_runs(self, pipeline: str | None = None) -> list[PipelineRunStatus]:
        return [self._run_status(j) for j in self._jobs("Pipeline")
                if pipeline is None or ((j.get("properties") or {}).get("tags") or {}).get(PIPELINE_TAG) == pipeline]

    # --- schedules -------------------------------------------------------------------------------------

    def schedule_pipeline(self, pipeline: PipelineDefinition, cron: str) -> ScheduleInfo:
        """A job schedule creating this pipeline's job (the code as it is now) on ``cron`` (UTC); an
        existing schedule of the pipeline is updated in place."""
        from mlplat.pipelines import cron as cron_mod

        cron_mod.validate(cron)
        if pipeline.source is None:  # a schedule runs the code it was scheduled with, packaged at its commit
            from mlplat.services.pipelines import with_source

            pipeline = with_source(self.spec, pipeline, allow_dirty=False)
        compiled = self._compile(pipeline, {PIPELINE_TAG: pipeline.name})
        name = pc.schedule_name(self.plan.prefix, pipeline.name)
        self._owned_schedule(name)
        self._register(pipeline, compiled)
        body = pc.schedule_body(compiled.job, cron, pipeline=pipeline.name, tags=self.azure.tags)
        self.rest.request("PUT", f"/schedules/{name}", body, what=f"scheduling pipeline {pipeline.name}",
                          action=f"{A_WS}/schedules/write")
        return ScheduleInfo(pipeline=pipeline.name, cron=cron, target=f"{self.azure.workspace_id}/schedules/{name}",
                            next_run=cron_mod.parse(cron).next_after(self.clock()))

    def _owned_schedule(self, name: str) -> dict[str, Any] | None:
        try:
            found = self.rest.request("GET", f"/schedules/{name}", what=f"schedule {name}", not_found=True,
                                      action=f"{A_WS}/schedules/read")
        except NotFound:
            return None
        if not self._managed(found):
            raise IntegrityError(f"schedule {name} exists but is not managed by mlplat for this stack",
                                 hint="the platform changes only what it created; rename the pipeline")
        return found

    def unschedule_pipeline(self, pipeline: str) -> ScheduleInfo | None:
        """Disable the pipeline's schedule (kept, with its history); ``None`` when it has none."""
        name = pc.schedule_name(self.plan.prefix, pipeline)
        found = self._owned_schedule(name)
        if found is None:
            return None
        props = {k: v for k, v in (found.get("properties") or {}).items()
                 if k not in ("provisioningState", "provisioningStatus")}
        self.rest.request("PUT", f"/schedules/{name}", {"properties": {**props, "isEnabled": False}},
                          what=f"disabling the schedule of {pipeline}", action=f"{A_WS}/schedules/write")
        return ScheduleInfo(pipeline=pipeline, cron=str((props.get("trigger") or {}).get("expression")),
                            target=f"{self.azure.workspace_id}/schedules/{name}")

    def schedules(self) -> list[ScheduleInfo]:
        from mlplat.pipelines import cron as cron_mod

        out = []
        for item in self.rest.pages("/schedules?listViewType=EnabledOnly", what="listing the stack's schedules",
                                    action=f"{A_WS}/schedules/read"):
            props = item.get("properties") or {}
            pipeline = (props.get("properties") or {}).get("mlplat.pipeline")
            if not self._managed(item) or not pipeline or not props.get("isEnabled", True):
                continue
            expression = str((props.get("trigger") or {}).get("expression") or "")
            try:
                next_run: float | None = cron_mod.parse(expression).next_after(self.clock())
            except cron_mod.CronError:
                next_run = None
            out.append(ScheduleInfo(pipeline=str(pipeline), cron=expression, target=str(item.get("id")),
                                    next_run=next_run))
        return out
