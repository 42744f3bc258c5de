"""Servers without authentication bind to loopback only, whoever starts them."""
from __future__ import annotations

import pytest

from mlplat.errors import Denied, ExitCode
from mlplat.netguard import require_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_loopback_addresses_are_allowed(host):
    require_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.com", "localhost.evil.com",
                                  ""])
def test_anything_else_is_refused_with_the_reason_and_the_way_out(host):
    with pytest.raises(Denied) as refused:
        require_loopback(host)
    assert refused.value.exit_code == ExitCode.DENIED
    assert f"refusing to bind to {host}: this server has no authentication" in refused.value.message
    assert "127.0.0.1" in refused.value.hint and "SSH tunnel" in refused.value.hint
