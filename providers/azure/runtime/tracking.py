"""Experiment tracking of Azure stacks: MLflow.

Every Azure Machine Learning workspace is an MLflow tracking server: set ``MLPLAT_AZURE_TRACKING_URI``
to the workspace's ``azureml://<region>.api.azureml.ms/mlflow/v1.0/subscriptions/.../workspaces/<name>``
URI (``az ml workspace show --query mlflow_tracking_uri``; it needs the ``azureml-mlflow`` plugin) to
track there. By default runs are tracked in the stack's local store (``.mlplat/<stack>/mlflow.db``), so
``start_run`` / ``log_model`` work on an Azure stack from any machine, and registered versions still
land in the workspace's model registry.
"""
from __future__ import annotations

import os
from functools import cached_property
from typing import Any

from mlplat.contracts import MetricPoint, RunRecord
from mlplat.mlflow_tracking import MlflowTracker


class AzureTracker(MlflowTracker):
    def __init__(self, spec: Any) -> None:
        import logging

        from mlplat_providers.azure.runtime.state import AzureState

        self.spec = spec
        self.state = AzureState(spec.state_dir)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        super().__init__(self.state.tracking_uri, str(self.state.artifacts))

    @cached_property
    def client(self) -> Any:
        """MLflow's client over the stack's store, which a first write creates (reads check it exists)."""
        self.state.ensure()
        return super().client

    def _readable(self) -> None:
        if not os.environ.get("MLPLAT_AZURE_TRACKING_URI"):
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
        self._unsupported("tracking UI", hint="open the workspace's Jobs page in Azure Machine Learning studio")
