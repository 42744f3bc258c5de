"""Experiment tracking of AWS stacks: MLflow with a store under the stack's state directory.

The stack's SageMaker managed MLflow server (created by the Pulumi program) is reached
through the ``sagemaker-mlflow`` plugin with an ARN tracking URI; set
``MLPLAT_AWS_TRACKING_URI`` to that ARN where the plugin and the network allow. By
default runs are tracked in the stack's local store (``.mlplat/<stack>/mlflow.db``),
so ``start_run`` / ``log_model`` work on an AWS stack from any machine, and the
registered versions still land in SageMaker's model registry and the stack's bucket.
"""
from __future__ import annotations

from mlplat.mlflow_tracking import MlflowTracker


class AwsTracker(MlflowTracker):
    def __init__(self, spec):
        import logging

        from mlplat_providers.aws.runtime.state import AwsState

        self.spec = spec
        self.state = AwsState(spec.state_dir).ensure()
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        super().__init__(self.state.tracking_uri, str(self.state.artifacts))

    def ui_command(self, *, host: str, port: int) -> list[str]:
        self._unsupported("tracking UI", hint="open the stack's SageMaker MLflow tracking server in the AWS console")
