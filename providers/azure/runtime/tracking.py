"""Experiment tracking of Azure stacks: MLflow.

Every Azure Machine Learning workspace is an MLflow tracking server: set ``MLPLAT_AZURE_TRACKING_URI``
to the workspace's ``azureml://<region>.api.azureml.ms/mlflow/v1.0/subscriptions/.../workspaces/<name>``
URI (``az ml workspace show --query mlflow_tracking_uri``; it needs the ``azureml-mlflow`` plugin) to
track there. By default runs are tracked in the stack's local store (``.mlplat/<stack>/mlflow.db``), so
``start_run`` / ``log_model`` work on an Azure stack from any machine, and registered versions still
land in the workspace's model registry.
"""
from __future__ import annotations

from mlplat.mlflow_tracking import CloudStackTracker
from mlplat_providers.azure.runtime.state import AzureState


class AzureTracker(CloudStackTracker):
    state_class = AzureState
    ui_hint = "open the workspace's Jobs page in Azure Machine Learning studio"
