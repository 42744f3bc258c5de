"""Fixtures starting the GCP fakes once per test session and pointing the runtime at them.

Use ``from tests.contract.gcp_fake.fixtures import gcp_fake, gcp_servers  # noqa: F401`` in a test
module: ``gcp_fake`` resets the fakes' state, sets ``MLPLAT_GCP_VERTEX_ENDPOINT``,
``MLPLAT_GCP_MONITORING_ENDPOINT`` and ``MLPLAT_GCP_STORAGE_ENDPOINT`` (the runtime then uses anonymous
credentials) and answers the :class:`FakeGcp` with both states.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.contract.gcp_fake.monitoring import MonitoringServer, MonitoringState
from tests.contract.gcp_fake.vertex import Server, VertexState, create_app

PROJECT = "acme-search-dev"
REGION = "europe-west4"


@dataclass
class FakeGcp:
    vertex: VertexState
    monitoring: MonitoringState
    http: Server
    grpc: MonitoringServer

    @property
    def env(self) -> dict[str, str]:
        return {"MLPLAT_GCP_VERTEX_ENDPOINT": self.http.url, "MLPLAT_GCP_STORAGE_ENDPOINT": self.http.url,
                "MLPLAT_GCP_MONITORING_ENDPOINT": self.grpc.target}

    def reset(self) -> None:
        self.vertex.reset()
        self.monitoring.reset()


@pytest.fixture(scope="session")
def gcp_servers() -> Iterator[FakeGcp]:
    vertex, monitoring = VertexState(), MonitoringState()
    http = Server(create_app(vertex)).start()
    grpc_server = MonitoringServer(monitoring).start()
    try:
        yield FakeGcp(vertex, monitoring, http, grpc_server)
    finally:
        http.stop()
        grpc_server.stop()


@pytest.fixture
def gcp_fake(gcp_servers: FakeGcp, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGcp]:
    gcp_servers.reset()
    for key, value in gcp_servers.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    yield gcp_servers
    gcp_servers.reset()
