"""API keys on the gateway's scoring routes (``serving.auth.apiKeys`` in the stack).

``off``: no key is asked for or looked at. ``optional``: a request without a key is served, one that
presents a key must present a valid key for the model it calls. ``required``: every scoring request
(MLflow ``/endpoints/NAME/invocations``, Open Inference Protocol ``/v2/models/NAME/infer``) carries
``Authorization: Bearer mlp_...`` or ``X-Api-Key: mlp_...``. Health, metrics and metadata routes never
ask for one.

The keys live in memory (:class:`mlplat.services.api_keys.KeyTable`), reloaded from the ledger
whenever ``serving_revision`` moves, which every key change bumps: a revoked key is refused from the
gateway's next routing poll on, without a restart, and no request costs a ledger query.
"""
from __future__ import annotations

from typing import Any

from mlplat.errors import Forbidden, Unauthenticated
from mlplat.services.api_keys import CREATE_HINT, KeyTable
from mlplat.serving import asgi

MODES = ("off", "optional", "required")


class Refused(Exception):
    """A scoring request refused for its credentials: ``status`` 401 or 403, with a JSON body."""

    def __init__(self, status: int, message: str, hint: str | None):
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint

    def body(self, request_id: str, *, v2: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message} if v2 else {}
        out.update({"error_code": "UNAUTHENTICATED" if self.status == 401 else "PERMISSION_DENIED",
                    "message": self.message, "hint": self.hint, "request_id": request_id})
        return out

    def headers(self) -> list[tuple[bytes, bytes]]:
        # RFC 6750 section 3: a 401 to a bearer-token request names the scheme it expects
        return [(b"www-authenticate", b'Bearer realm="mlplat-gateway"')] if self.status == 401 else []


def presented_key(scope: dict[str, Any]) -> str | None:
    """The key a request carries: ``Authorization: Bearer <key>`` first, else ``X-Api-Key``."""
    auth = asgi.header(scope, b"authorization")
    if auth is not None:
        scheme, _, value = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise Refused(401, "the Authorization header is not 'Bearer <API key>'", CREATE_HINT)
    given = asgi.header(scope, b"x-api-key")
    return given.decode("latin-1").strip() if given is not None else None


class GatewayAuth:
    """The gateway's key check for one environment."""

    def __init__(self, mode: str, environment: str):
        if mode not in MODES:
            raise ValueError(f"serving.auth.apiKeys must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.table = KeyTable(environment)

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def reload(self, conn: Any) -> None:
        if self.enabled:
            self.table = KeyTable.load(conn, self.table.environment)  # one reference swap

    def check(self, scope: dict[str, Any], model: str, now: float) -> str | None:
        """The key id a request was admitted with (None: no key, and none needed); ``Refused`` otherwise."""
        if not self.enabled:
            return None
        presented = presented_key(scope)
        if presented is None and self.mode == "optional":
            return None
        try:
            return self.table.check(presented, model, now)
        except Unauthenticated as exc:
            raise Refused(401, exc.message, exc.hint) from None
        except Forbidden as exc:
            raise Refused(403, exc.message, exc.hint) from None
