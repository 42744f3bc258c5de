"""The local provider: the whole platform on one machine, with real parts.

MLflow (SQLite backend + local artifact root, or the stack's shared tracking server named by
``mlplat:controlPlane.tracking``) for tracking and model versions, the platform database
(SQLite, WAL) for governance and operations, DuckDB over Parquet for offline features, an ASGI
gateway on 127.0.0.1 for serving.
"""
from __future__ import annotations

from mlplat.contracts import Capability
from mlplat.providers import ProviderBundle
from mlplat_providers.local.settings import LocalProviderSpec


def _provisioner(spec, ctx):
    from mlplat_providers.local.provisioner import LocalProvisioner

    return LocalProvisioner(spec, ctx)


def _tracker(spec, ctx):
    from mlplat.errors import MlplatError
    from mlplat.mlflow_tracking import MlflowTracker
    from mlplat_providers.local.layout import StateLayout

    if spec.control_plane.tracking:  # the stack's shared tracking server: it keeps runs and artifacts
        return MlflowTracker(spec.control_plane.tracking, None)
    layout = StateLayout(spec.state_dir)
    if not layout.exists():
        import os

        url = os.environ.get("MLPLAT_CONTROL_PLANE_URL") or spec.control_plane.url
        if url and not ctx.ledger_owner:
            raise MlplatError(f"stack '{spec.name}' uses the control plane at {url} but names no tracking server, "
                              "so runs of this machine have nowhere to go", where="mlplat:controlPlane.tracking",
                              hint="add `tracking: http://<server>:<port>` under mlplat:controlPlane "
                                   "(`mlplat server --tracking-port N` runs one beside the server)")
        from mlplat.errors import NotProvisioned

        raise NotProvisioned(spec.name, f"stores under {layout.root}")
    return MlflowTracker(layout.tracking_uri, str(layout.artifacts))


def _registry(spec, ctx):
    from mlplat_providers.local.registry import LocalModelRegistry

    return LocalModelRegistry.for_stack(spec, ctx)


def _delivery(spec, ctx):
    from mlplat_providers.local.delivery import LocalDeliveryPipeline

    return LocalDeliveryPipeline(spec, ctx)


def _monitor(spec, ctx):
    from mlplat_providers.local.monitoring import LocalMonitor

    return LocalMonitor(spec, ctx)


def _serving(spec, ctx):
    from mlplat_providers.local.serving import LocalServing

    return LocalServing(spec, ctx)


def _pipelines(spec, ctx):
    from mlplat_providers.local.pipelines import LocalPipelines

    return LocalPipelines(spec, ctx)


def _features(spec, ctx):
    from mlplat_providers.local.features import LocalFeatureStore

    return LocalFeatureStore(spec, ctx)


provider = ProviderBundle(
    settings_model=LocalProviderSpec,
    name="local",
    description="The whole platform on this machine: MLflow on SQLite, SQLite, DuckDB, a gateway on 127.0.0.1.",
    factories={
        Capability.PROVISIONER: _provisioner,
        Capability.TRACKING: _tracker,
        Capability.REGISTRY: _registry,
        Capability.DELIVERY: _delivery,
        Capability.MONITORING: _monitor,
        Capability.COST: _monitor,
        Capability.FEATURES: _features,
        Capability.SERVING: _serving,
        Capability.PIPELINES: _pipelines,
    },
)
