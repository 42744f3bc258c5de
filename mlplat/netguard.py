"""Where the platform's servers may listen: loopback, unless every caller is authenticated.

A server that cannot tell who calls it (the MLflow UI, a gateway without required API keys, a
``trusted-local`` ``mlplat server`` whose callers merely name themselves) binds a loopback address
and is reached from elsewhere through an SSH tunnel or an authenticating proxy. A server that
verifies every caller's credentials (``mlplat server`` with ``mlplat:access.mode`` oidc, aws-iam,
google or entra; the gateway with ``serving.auth.apiKeys: required``) may bind any address.
(The dashboard binds 127.0.0.1 itself and takes no host.)
"""
from __future__ import annotations

import ipaddress

from mlplat.errors import Denied


def is_loopback(host: str) -> bool:
    """``localhost`` and loopback addresses (127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(host: str, *, authenticated: bool = False, how: str | None = None) -> None:
    """Refuse (``Denied``) to bind beyond this machine a server that does not authenticate its callers.

    ``authenticated``: the server verifies every caller's credentials, so any address passes.
    ``how``: what would make it authenticate (for the hint), e.g. "set mlplat:access.mode to oidc".
    """
    if authenticated or is_loopback(host):
        return
    hint = "bind to 127.0.0.1 and reach it through an SSH tunnel or an authenticating proxy"
    raise Denied(f"refusing to bind to {host}: this server has no authentication",
                 hint=f"{how}, or {hint}" if how else hint)
