"""Opt-in Azure Machine Learning monitoring schedules on an Azure stack's deployments.

With ``mlplat:provider.modelMonitoring.enabled`` each monitoring pass keeps one ``MonitorSchedule`` per
platform deployment of the stack's endpoints (a schedule watches one ``<endpoint>:<deployment>`` target),
through ``MLClient.schedules`` and the SDK's ``MonitorDefinition``: a data drift signal on the deployment's
collected ``model_inputs`` and a prediction drift signal on its ``model_outputs`` (the SDK fills production and
reference data from the deployment's data collector assets), both at the stack's PSI threshold, plus a model
performance signal when ``groundTruth`` names a data asset of labels keyed by correlation id; run every
``intervalHours`` on serverless Spark. Schedules carry the stack's tags and ``mlplat-managed: "true"``; a
schedule of that name without the tag is never changed. The schedules' verdicts stay Azure's; the platform's
own pass is what the drift metric alert watches.
https://learn.microsoft.com/azure/machine-learning/how-to-monitor-model-performance
"""
from __future__ import annotations

import re
from typing import Any

from mlplat.errors import NotFound
from mlplat_providers.azure.runtime.session import MANAGED_TAG

A_SCHEDULES = "Microsoft.MachineLearningServices/workspaces/schedules"
SIGNALS = ("data-drift", "prediction-drift", "model-performance")


def schedule_name(endpoint: str, deployment: str) -> str:
    """``mlplat-<endpoint>-<deployment>``: letters, digits, ``-`` and ``_`` (at most 255 characters)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"mlplat-{endpoint}-{deployment}")[:255]


def schedule_for(azure: Any, spec: Any, endpoint: str, deployment: str) -> Any:
    """The schedule a deployment should have."""
    import warnings

    from azure.ai.ml import Input
    from azure.ai.ml.entities import (
        CategoricalDriftMetrics,
        DataDriftMetricThreshold,
        DataDriftSignal,
        MonitorDefinition,
        MonitoringTarget,
        MonitorSchedule,
        NumericalDriftMetrics,
        PredictionDriftMetricThreshold,
        PredictionDriftSignal,
        RecurrenceTrigger,
        ServerlessSparkCompute,
    )

    settings = spec.provider.model_monitoring
    psi = float(spec.monitoring.drift.psi)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK marks these classes experimental
        signals: dict[str, Any] = {
            "data-drift": DataDriftSignal(
                features="all_features", alert_enabled=True,
                metric_thresholds=DataDriftMetricThreshold(
                    numerical=NumericalDriftMetrics(population_stability_index=psi),
                    categorical=CategoricalDriftMetrics(population_stability_index=psi))),
            "prediction-drift": PredictionDriftSignal(
                alert_enabled=True,
                metric_thresholds=PredictionDriftMetricThreshold(
                    numerical=NumericalDriftMetrics(population_stability_index=psi),
                    categorical=CategoricalDriftMetrics(population_stability_index=psi))),
        }
        if settings.ground_truth:
            from azure.ai.ml.constants import MonitorDatasetContext
            from azure.ai.ml.entities import (
                ModelPerformanceClassificationThresholds,
                ModelPerformanceMetricThreshold,
                ModelPerformanceSignal,
                ProductionData,
                ReferenceData,
            )

            name, version = settings.ground_truth.split(":", 1)
            outputs = f"{endpoint}-{deployment}-model_outputs"
            signals["model-performance"] = ModelPerformanceSignal(
                alert_enabled=True,
                production_data=ProductionData(
                    input_data=Input(type="uri_folder", path=f"azureml:{outputs}:1"),
                    data_context=MonitorDatasetContext.MODEL_OUTPUTS,
                    data_column_names={"correlation_id": "correlationid", "prediction": "prediction"}),
                reference_data=ReferenceData(
                    input_data=Input(type="mltable", path=f"azureml:{name}:{version}"),
                    data_context=MonitorDatasetContext.GROUND_TRUTH_DATA,
                    data_column_names={"correlation_id": "correlationid", "actual": settings.label_column}),
                metric_thresholds=ModelPerformanceMetricThreshold(
                    classification=ModelPerformanceClassificationThresholds(accuracy=0.5)))
        return MonitorSchedule(
            name=schedule_name(endpoint, deployment),
            trigger=RecurrenceTrigger(frequency="hour", interval=int(settings.interval_hours)),
            create_monitor=MonitorDefinition(
                compute=ServerlessSparkCompute(instance_type=settings.spark_instance_type,
                                               runtime_version=settings.spark_runtime),
                monitoring_target=MonitoringTarget(endpoint_deployment_id=f"azureml:{endpoint}:{deployment}",
                                                   ml_task="classification"),
                monitoring_signals=signals),
            description=f"mlplat: drift of {deployment} on {endpoint}",
            tags={**azure.tags, "mlplat-endpoint": endpoint, "mlplat-deployment": deployment})


def ensure_schedules(azure: Any, spec: Any, targets: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Schedule name → ``{target, action, signals}`` after creating or updating each ``(endpoint, deployment)``'s
    schedule; a schedule of that name the platform did not create is left alone (``action: "not managed"``)."""
    ml = azure.ml()
    out: dict[str, dict[str, Any]] = {}
    for endpoint, deployment in targets:
        name = schedule_name(endpoint, deployment)
        try:
            current = azure.call(ml.schedules.get, name, not_found=True, action=f"{A_SCHEDULES}/read",
                                 what=f"monitoring schedule {name}")
        except NotFound:
            current = None
        if current is not None and (current.tags or {}).get(MANAGED_TAG) != "true":
            out[name] = {"target": f"{endpoint}:{deployment}", "action": "not managed", "signals": []}
            continue
        wanted = schedule_for(azure, spec, endpoint, deployment)
        made = azure.run(ml.schedules.begin_create_or_update, wanted, action=f"{A_SCHEDULES}/write",
                         what=f"{'updating' if current else 'creating'} monitoring schedule {name}")
        out[name] = {"target": f"{endpoint}:{deployment}", "action": "update" if current else "create",
                     "signals": sorted(getattr(getattr(made, "create_monitor", None), "monitoring_signals", None)
                                       or wanted.create_monitor.monitoring_signals)}
    return out
