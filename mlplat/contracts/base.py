"""The root of every capability contract, and how an optional operation says "not here"."""
from __future__ import annotations

import abc
from typing import NoReturn

from mlplat.errors import CapabilityNotSupported


class Contract(abc.ABC):  # noqa: B024 (the common base; each capability ABC declares its own abstract methods)
    """Base of the capability ABCs.

    An operation a contract marks *optional* has a default that raises
    ``CapabilityNotSupported``; callers call it and handle that error instead of probing
    for the method. ``provider_name`` names the provider in that error:
    :meth:`mlplat.providers.ProviderBundle.get` sets it on every implementation it hands out.
    """

    provider_name: str = ""

    def _unsupported(self, operation: str, *, hint: str | None = None) -> NoReturn:
        """Raise ``CapabilityNotSupported`` for ``operation`` of this implementation's provider."""
        raise CapabilityNotSupported(self.provider_name or type(self).__name__, operation, hint=hint)
