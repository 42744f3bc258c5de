"""Experiment tracking of AWS stacks: MLflow with a store under the stack's state directory.

The stack's SageMaker managed MLflow server (created by the Pulumi program) is reached
through the ``sagemaker-mlflow`` plugin with an ARN tracking URI; set
``MLPLAT_AWS_TRACKING_URI`` to that ARN where the plugin and the network allow. By
default runs are tracked in the stack's local store (``.mlplat/<stack>/mlflow.db``),
so ``start_run`` / ``log_model`` work on an AWS stack from any machine, and the
registered versions still land in SageMaker's model registry and the stack's bucket.
"""
from __future__ import annotations

from mlplat.mlflow_tracking import CloudStackTracker
from mlplat_providers.aws.runtime.state import AwsState


class AwsTracker(CloudStackTracker):
    state_class = AwsState
    ui_hint = "open the stack's SageMaker MLflow tracking server in the AWS console"
