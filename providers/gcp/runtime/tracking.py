"""Experiment tracking of GCP stacks: the stack's MLflow.

The Pulumi program runs MLflow's tracking server beside the control plane on Cloud Run (artifacts
in the stack's bucket); set ``MLPLAT_GCP_TRACKING_URI`` to its URL to track there. By default runs
are tracked in the stack's local store (``.mlplat/<stack>/mlflow.db``), so ``start_run`` /
``log_model`` work on a GCP stack from any machine, and registered versions still land in Vertex
AI's Model Registry and the stack's bucket.
"""
from __future__ import annotations

from mlplat.mlflow_tracking import CloudStackTracker
from mlplat_providers.gcp.runtime.state import GcpState


class GcpTracker(CloudStackTracker):
    state_class = GcpState
    ui_hint = "open the stack's MLflow tracking server (its Cloud Run URL)"
