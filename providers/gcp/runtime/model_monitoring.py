"""Opt-in Vertex AI Model Monitoring jobs (``ModelDeploymentMonitoringJob``) on a GCP stack's endpoints.

With ``mlplat:provider.modelMonitoring.enabled`` each monitoring pass keeps one job per endpoint (Vertex allows
one per endpoint): prediction drift of every deployed model at the stack's threshold (Vertex's distribution
distance), analysed every ``intervalHours`` from all logged requests, labelled with the stack's labels and
``mlplat-endpoint``. A job whose deployed models changed (a deploy, a rollback) is updated to the endpoint's
current ones. The jobs' verdicts stay Vertex's; the platform's own pass is what the alert policies watch.
https://cloud.google.com/vertex-ai/docs/model-monitoring/using-model-monitoring
"""
from __future__ import annotations

from typing import Any

ENDPOINT_LABEL = "mlplat-endpoint"


def job_for(gcp: Any, spec: Any, endpoint_id: str, deployed_ids: list[str]) -> Any:
    """The job an endpoint's deployed models should have."""
    from google.cloud import aiplatform_v1 as v1

    settings = spec.provider.model_monitoring
    objective = v1.ModelMonitoringObjectiveConfig(
        prediction_drift_detection_config=v1.ModelMonitoringObjectiveConfig.PredictionDriftDetectionConfig(
            default_drift_threshold=v1.ThresholdConfig(value=float(settings.drift_threshold))))
    return v1.ModelDeploymentMonitoringJob(
        display_name=f"mlplat-{gcp.plan.prefix}-{endpoint_id}"[:128],
        endpoint=f"{gcp.location}/endpoints/{endpoint_id}",
        model_deployment_monitoring_objective_configs=[
            v1.ModelDeploymentMonitoringObjectiveConfig(deployed_model_id=d, objective_config=objective)
            for d in sorted(deployed_ids)],
        model_deployment_monitoring_schedule_config=v1.ModelDeploymentMonitoringScheduleConfig(
            monitor_interval=f"{int(settings.interval_hours) * 3600}s"),
        logging_sampling_strategy=v1.SamplingStrategy(
            random_sample_config=v1.SamplingStrategy.RandomSampleConfig(sample_rate=1.0)),
        labels={**gcp.labels, ENDPOINT_LABEL: str(endpoint_id)})


def ensure_jobs(gcp: Any, spec: Any, endpoints: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Endpoint id → ``{job, action, state}`` after making each endpoint's job match its deployed models."""
    client = gcp.vertex("job")
    existing = {j.labels.get(ENDPOINT_LABEL): j for j in gcp.call(
        client.list_model_deployment_monitoring_jobs, request={
            "parent": gcp.location, "filter": f'labels.mlplat-managed="true" AND labels.team="{gcp.plan.team_label}"'},
        method="list_model_deployment_monitoring_jobs", what="listing the stack's model monitoring jobs")}
    out: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        deployed = sorted(str(d) for d in endpoint["deployed"])
        if not deployed:
            continue
        wanted = job_for(gcp, spec, endpoint["id"], deployed)
        current = existing.get(str(endpoint["id"]))
        if current is None:
            made = gcp.call(client.create_model_deployment_monitoring_job, parent=gcp.location,
                            model_deployment_monitoring_job=wanted, method="create_model_deployment_monitoring_job",
                            what=f"creating the model monitoring job of endpoint {endpoint['id']}")
            out[endpoint["id"]] = {"job": made.name, "action": "create", "state": made.state.name}
            continue
        have = sorted(c.deployed_model_id for c in current.model_deployment_monitoring_objective_configs)
        if have == deployed:
            out[endpoint["id"]] = {"job": current.name, "action": "unchanged", "state": current.state.name}
            continue
        wanted.name = current.name
        operation = gcp.call(client.update_model_deployment_monitoring_job, model_deployment_monitoring_job=wanted,
                             update_mask={"paths": ["model_deployment_monitoring_objective_configs"]},
                             method="update_model_deployment_monitoring_job",
                             what=f"updating the model monitoring job of endpoint {endpoint['id']}")
        made = gcp.wait(operation, what=f"updating the model monitoring job of endpoint {endpoint['id']}")
        out[endpoint["id"]] = {"job": made.name, "action": "update", "state": made.state.name}
    return out
