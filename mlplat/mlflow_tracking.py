"""Experiment tracking on an MLflow store, shared by every provider whose tracking speaks MLflow
(the local provider's SQLite store or the stack's shared tracking server, a cloud stack's local store
or its tracking server: SageMaker's managed MLflow, the MLflow server a GCP stack runs on Cloud Run,
Azure ML's MLflow-compatible workspace)."""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from mlplat.contracts import ExperimentTracker, MetricPoint, RunRecord
from mlplat.errors import ExternalError, NotFound

if TYPE_CHECKING:
    from mlplat.cloud_state import CloudState

# MLflow's per-request limits for log_batch
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
# MLflow retries a request to a tracking server 7 times with a doubling backoff: four minutes before a
# command learns the server is down. Three quick retries still ride out a restart.
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def is_server_uri(uri: str) -> bool:
    """True for a tracking server (``http(s)://``), False for a store this process opens itself."""
    return uri.startswith(("http://", "https://"))


def use_tracking_server(uri: str) -> None:
    """Prepare this process to talk to the tracking server at ``uri``: fail in seconds, not minutes,
    when it does not answer (an explicit ``MLFLOW_HTTP_REQUEST_*`` setting wins)."""
    if is_server_uri(uri):
        for key, value in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(key, value)


class MlflowTracker(ExperimentTracker):
    """``artifact_root``: where new experiments keep their artifacts; ``None`` lets the store choose
    (a tracking server started with ``--serve-artifacts`` stores them itself and serves them over HTTP)."""

    def __init__(self, tracking_uri: str, artifact_root: str | None):
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        use_tracking_server(tracking_uri)

    @cached_property
    def client(self):
        """MLflow's client, made on first use: importing MLflow takes seconds, and a command that only
        needs the store's address (``mlplat ui``) never pays for it."""
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    # --- writing -------------------------------------------------------------------------

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = os.path.join(self.artifact_root, _safe(name)) if self.artifact_root else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # lost a creation race with another process
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def ui_command(self, *, host: str, port: int) -> list[str]:
        """MLflow's own UI (``python -m mlflow ui``) over this store and artifact root."""
        if is_server_uri(self.tracking_uri) or not self.artifact_root:
            self._unsupported("tracking UI", hint=f"the stack's tracking server serves its own UI: open "
                                                  f"{self.tracking_uri} in a browser")
        return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", self.tracking_uri,
                "--default-artifact-root", self.artifact_root, "--host", host, "--port", str(port)]

    def start_run(self, experiment: str, *, name: str | None, tags: Mapping[str, str]) -> str:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.create_run(self._experiment_id(experiment), run_name=name, tags=dict(tags))
        except MlflowException as exc:
            if not is_server_uri(self.tracking_uri):
                raise
            raise ExternalError(f"the tracking server at {self.tracking_uri} could not start a run: {exc}"[:600],
                                where="mlplat:controlPlane.tracking",
                                hint="check that it runs (`mlplat server --tracking-port N` starts one) and that "
                                     "the stack file names it") from None
        return run.info.run_id

    def log_batch(self, run_id: str, *, params: Mapping[str, str] = (), metrics: Sequence[MetricPoint] = (),
                  tags: Mapping[str, str] = ()) -> None:
        from mlflow.entities import Metric, Param, RunTag

        params = [Param(k, str(v)[:6000]) for k, v in dict(params).items()]
        tags = [RunTag(k, str(v)[:8000]) for k, v in dict(tags).items()]
        points = [Metric(m.key, float(m.value), m.timestamp_ms, m.step) for m in metrics]
        while params or tags or points:
            self.client.log_batch(run_id, metrics=points[:MAX_METRICS], params=params[:MAX_PARAMS], tags=tags[:MAX_TAGS],
                                  synchronous=True)
            points, params, tags = points[MAX_METRICS:], params[MAX_PARAMS:], tags[MAX_TAGS:]

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        if os.path.isdir(local_path):
            self.client.log_artifacts(run_id, local_path, artifact_path)
        else:
            self.client.log_artifact(run_id, local_path, artifact_path)

    def end_run(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)

    # --- autologging -----------------------------------------------------------------------

    def activate(self, run_id: str) -> Any:
        import importlib.util

        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        active = mlflow.start_run(run_id=run_id)
        common = dict(log_models=False, log_datasets=False, silent=True, log_input_examples=False)
        if importlib.util.find_spec("sklearn") is not None:
            mlflow.sklearn.autolog(**common, log_model_signatures=False, disable_for_unsupported_versions=False)
        if importlib.util.find_spec("xgboost") is not None:
            import mlflow.xgboost

            mlflow.xgboost.autolog(**common, log_model_signatures=False)
        return active

    def deactivate(self, handle: Any, status: str) -> None:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run(status=status)
        try:
            mlflow.sklearn.autolog(disable=True)
        except Exception:  # noqa: BLE001 - autolog teardown must never mask the run's own outcome
            pass

    # --- reading --------------------------------------------------------------------------

    def _record(self, run) -> RunRecord:
        info, data = run.info, run.data
        experiment = self.client.get_experiment(info.experiment_id)
        return RunRecord(
            run_id=info.run_id,
            experiment=experiment.name if experiment else info.experiment_id,
            name=info.run_name or "",
            status=info.status,
            user=data.tags.get("mlplat.user", info.user_id or ""),
            start_time=info.start_time / 1000 if info.start_time else None,
            end_time=info.end_time / 1000 if info.end_time else None,
            params=dict(data.params),
            metrics=dict(data.metrics),
            tags=dict(data.tags),
            artifact_uri=info.artifact_uri,
        )

    def raw_run(self, run_id: str):
        """MLflow's own run entity (``NotFound`` for an unknown id)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
                raise NotFound(f"run '{run_id}' not found", hint="`mlplat runs list` shows the runs of this stack") from None
            raise ExternalError(f"MLflow failed to read run {run_id}: {exc}") from exc

    def get_run(self, run_id: str) -> RunRecord:
        return self._record(self.raw_run(run_id))

    def list_runs(self, *, experiment: str | None = None, limit: int = 50) -> list[RunRecord]:
        if experiment:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                raise NotFound(f"experiment '{experiment}' not found",
                               hint="`mlplat runs list` without --experiment shows every run")
            ids = [found.experiment_id]
        else:
            ids = [e.experiment_id for e in self.client.search_experiments()]
        if not ids:
            return []
        runs = self.client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=limit)
        return [self._record(r) for r in runs]

    def metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        history = self.client.get_metric_history(run_id, key)
        return sorted((MetricPoint(m.key, m.value, m.step, m.timestamp) for m in history), key=lambda p: (p.step, p.timestamp_ms))

    def download_artifacts(self, run_id: str, path: str, dst: str) -> str:
        return self.client.download_artifacts(run_id, path, dst)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "experiment"


class CloudStackTracker(MlflowTracker):
    """Tracking of a cloud stack: MLflow on the stack's local store (``.mlplat/<stack>/mlflow.db``), or on
    the tracking server its state class's environment variable names. A first write creates the local
    store; a read of a stack with no local state raises ``NotProvisioned`` and creates nothing. Each cloud
    provider's subclass sets ``state_class`` and ``ui_hint`` (where that stack's tracking UI is)."""

    state_class: ClassVar[type[CloudState]]
    ui_hint: ClassVar[str]

    def __init__(self, spec: Any) -> None:
        import logging

        self.spec = spec
        self.state = self.state_class(spec.state_dir)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        super().__init__(self.state.tracking_uri, str(self.state.artifacts))

    @cached_property
    def client(self) -> Any:
        """MLflow's client over the stack's store, which a first write creates (reads check it exists)."""
        self.state.ensure()
        return super().client

    def _readable(self) -> None:
        if not os.environ.get(self.state.tracking_env):
            self.state.ensure(create=False)  # NotProvisioned: reading never creates the store

    def get_run(self, run_id: str) -> RunRecord:
        self._readable()
        return super().get_run(run_id)

    def raw_run(self, run_id: str) -> Any:
        self._readable()
        return super().raw_run(run_id)

    def list_runs(self, *, experiment: str | None = None, limit: int = 50) -> list[RunRecord]:
        self._readable()
        return super().list_runs(experiment=experiment, limit=limit)

    def metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        self._readable()
        return super().metric_history(run_id, key)

    def download_artifacts(self, run_id: str, path: str, dst: str) -> str:
        self._readable()
        return super().download_artifacts(run_id, path, dst)

    def ui_command(self, *, host: str, port: int) -> list[str]:
        self._unsupported("tracking UI", hint=self.ui_hint)
