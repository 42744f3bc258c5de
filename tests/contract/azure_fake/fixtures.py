"""Fixtures starting the fake ARM once per test session and pointing the runtime at it.

Use ``from tests.contract.azure_fake.fixtures import azure_fake, azure_server  # noqa: F401`` in a test
module: ``azure_fake`` resets the fake's state (the stack's workspace seeded), sets
``MLPLAT_AZURE_ARM_ENDPOINT`` (the runtime then uses a fixed fake token) and answers the :class:`FakeAzure`.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.contract.azure_fake.arm import ArmState, Server, create_app

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
RESOURCE_GROUP = "rg-fraud-production"
LOCATION = "westeurope"
WORKSPACE = "mlw-fraud-production"


@dataclass
class FakeAzure:
    arm: ArmState
    http: Server

    @property
    def env(self) -> dict[str, str]:
        return {"MLPLAT_AZURE_ARM_ENDPOINT": self.http.url}

    def reset(self, *workspaces: str) -> None:
        self.arm.reset()
        for name in workspaces or (WORKSPACE,):
            self.arm.add_workspace(SUBSCRIPTION, RESOURCE_GROUP, name, LOCATION,
                                   tags={"team": "fraud", "mlplat-managed": "true"})


@pytest.fixture(scope="session")
def azure_server() -> Iterator[FakeAzure]:
    state = ArmState()
    http = Server(create_app(state)).start()
    try:
        yield FakeAzure(state, http)
    finally:
        http.stop()


@pytest.fixture
def azure_fake(azure_server: FakeAzure, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzure]:
    azure_server.reset()
    for key, value in azure_server.env.items():
        monkeypatch.setenv(key, value)
    for key in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(key, raising=False)
    yield azure_server
    azure_server.reset()
