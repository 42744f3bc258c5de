"""An Azure stack for the provider-neutral feature store suite: the fake ARM with the stack's feature-store
workspace (kind ``FeatureStore``, as the Pulumi program leaves it), the online store as a Redis server on
127.0.0.1 (fakeredis speaking the Redis protocol over TCP, where Azure Cache for Redis would be) and the
stack's local state."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.azure_fake.fixtures import LOCATION, RESOURCE_GROUP, SUBSCRIPTION


class RedisServer:
    """fakeredis's TCP server on a free port of 127.0.0.1, in a daemon thread."""

    def __init__(self) -> None:
        from fakeredis import TcpFakeServer

        self.server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-redis-tcp", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"redis://{host!s}:{port}/0"

    def start(self) -> RedisServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def flush(self) -> None:
        from redis.client import Redis  # not the package's name: a test may patch that

        client = Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()


@pytest.fixture(scope="session")
def azure_redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def azure_redis(azure_redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    from mlplat_providers.azure.runtime.features import REDIS_ENV

    azure_redis_server.flush()
    monkeypatch.setenv(REDIS_ENV, azure_redis_server.url)
    yield azure_redis_server
    azure_redis_server.flush()


def provision_features(root: Path, stack: str, fake: Any) -> None:
    """What ``mlplat up`` leaves for the feature store: the feature-store workspace and the stack's state."""
    from mlplat.stack import load_stack
    from mlplat_providers.azure.plan import stack_plan
    from mlplat_providers.azure.runtime.state import AzureState

    spec = load_stack(stack, root)
    plan = stack_plan(spec)
    AzureState(spec.state_dir, None).ensure()
    workspace = fake.arm.add_workspace(SUBSCRIPTION, RESOURCE_GROUP, plan.feature_store, LOCATION, tags=plan.tags)
    workspace["kind"] = "FeatureStore"
