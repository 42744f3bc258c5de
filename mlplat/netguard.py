"""Where the platform's unauthenticated servers may listen: loopback only.

The serving gateway, the model server and the MLflow UI have no authentication: they bind
to a loopback address and are reached from elsewhere through an SSH tunnel or an
authenticating proxy. (The dashboard binds 127.0.0.1 itself and takes no host.)
"""
from __future__ import annotations

import ipaddress

from mlplat.errors import Denied


def require_loopback(host: str) -> None:
    """Refuse (``Denied``) to bind a server without authentication beyond this machine:
    ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``) pass, anything else is refused."""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise Denied(f"refusing to bind to {host}: this server has no authentication",
                 hint="bind to 127.0.0.1 and reach it through an SSH tunnel or an authenticating proxy")
