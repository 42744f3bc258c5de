"""What runs in a provider's account beside the platform: the endpoint inventory the adoption report reads
(``EndpointDeployer.inventory``)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServedEndpoint:
    """A model endpoint running in the provider's account and region, made by the platform or not.

    ``platform``: it carries the tags the platform puts on every endpoint it makes; ``model``: the
    platform model it serves, when the platform made it and its name says which; ``tags``: every tag
    it carries (owners are read from them); ``created_at``: seconds since the epoch, when known."""

    name: str
    platform: bool
    tags: dict[str, str] = field(default_factory=dict)
    created_at: float | None = None
    model: str | None = None
    status: str | None = None
    location: str | None = None  # the account/region (or project/location) it runs in
