"""What the Azure tests need around the fake ARM: an Azure stack and a session on it."""
from __future__ import annotations

from typing import Any

from tests.contract.azure_fake.fixtures import LOCATION, RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE
from tests.contract.cloud_stack_support import APPROVERS, cloud_stack_text


def azure_stack_text(*, environment: str = "production", risk: str = "critical", approvers: str = APPROVERS,
                     extra: str = "") -> str:
    return cloud_stack_text(
        cloud_config=[f"  azure-native:subscriptionId: {SUBSCRIPTION}", f"  azure-native:location: {LOCATION}"],
        provider=["    kind: azure", f'    subscriptionId: "{SUBSCRIPTION}"', f"    resourceGroup: {RESOURCE_GROUP}",
                  f"    location: {LOCATION}"],
        instance_type="Standard_DS3_v2", price_per_hour="0.29",
        environment=environment, risk=risk, approvers=approvers, extra=extra)


def team_stack(tmp_path: Any, monkeypatch: Any, fake: Any) -> Any:
    """A project holding the Azure stack ``team`` on ``fake``, entered as ds@example.com: ``spec``, ``ctx``, ``fake``."""
    from types import SimpleNamespace

    from tests.conftest import write_project
    from tests.contract.lifecycle import context

    project = write_project(tmp_path / "project", {"team": azure_stack_text()})
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(project))
    monkeypatch.setenv("MLPLAT_USER", "ds@example.com")
    monkeypatch.chdir(project)
    ctx = context(project)
    return SimpleNamespace(spec=ctx.stack("team"), ctx=ctx, fake=fake)


def azure_session(spec: Any, sleeps: list[float] | None = None, attempts: int = 4) -> Any:
    """The runtime's session on ``spec``; its retry sleeps are recorded in ``sleeps`` instead of slept."""
    from mlplat_providers.azure.runtime.session import AzureSession, RetryPolicy

    session = AzureSession(spec, retry=RetryPolicy(attempts=attempts, sleep=(
        sleeps.append if sleeps is not None else lambda _s: None)))
    assert session.workspace == WORKSPACE
    return session


def provision_cloud(spec: Any) -> None:
    """What `mlplat up` leaves for the runtime here: the platform's state on this machine (its ledger; a first
    write would create it too). The workspace is the fake's (seeded by the fixture)."""
    from mlplat_providers.azure.runtime.state import AzureState

    AzureState(spec.state_dir, None).ensure()


def feed_deployment(fake: Any, serving: Any, model: str, environment: str, version: int, *, requests: int,
                    errors: int = 0, latency_ms: float = 5.0, at: float | None = None) -> None:
    """What Azure Monitor publishes for the deployment serving ``version`` of the model's endpoint (``errors``
    of the ``requests`` answered 500)."""
    import time
    from datetime import UTC, datetime

    from tests.contract.azure_fake.metrics import add_requests

    endpoint_id, deployments = serving._deployment_ids(model, environment)
    when = datetime.fromtimestamp(int(time.time() if at is None else at), UTC).isoformat()
    add_requests(fake.arm, endpoint_id, deployments[int(version)], when, requests, latency_ms, errors=errors)
