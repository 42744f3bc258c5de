"""The team demo (examples/team-server.sh) run as a newcomer would, in a copy of the repository:
a throw-away PostgreSQL, `mlplat server` with its tracking server and a gateway, two project folders.
Everything it started is stopped, and its temporary folders removed, when it ends."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import in_ci
from tests.e2e.test_demo import REPO, tracked_files
from tests.pg import INSTALL, postgres_bin

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SCRIPT = Path("examples") / "team-server.sh"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_team_demo_runs_end_to_end_and_stops_everything(tmp_path):
    if postgres_bin() is None:
        message = f"PostgreSQL (initdb, pg_ctl under /usr/lib/postgresql/*/bin) is not installed ({INSTALL})"
        if in_ci():
            pytest.fail(f"CI=true and {message}; CI must provide it (.ci/system-packages.sh)", pytrace=False)
        pytest.skip(message)
    copy = tmp_path / "repo"
    for rel in {*tracked_files(), str(SCRIPT)}:
        source = REPO / rel
        if source.is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / rel)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLAT_") or k == "MLPLAT_CONTAINER_ENGINE"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    result = subprocess.run(["bash", str(SCRIPT)], cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]

    for line in ("Nothing to provision on this machine",
                 "registered credit-risk version 1",
                 "credit-risk version 1 is now in staging",
                 "approved credit-risk version 1 as risk-office@example.com: now approved (1/1 approvals)",
                 "credit-risk version 1 is now in production",
                 "deployed credit-risk v1 to dev (direct): primary v1 100%",
                 "20 predictions served by version(s) ['1']",
                 "credit-risk in dev: direct, primary v1 100%",
                 "ok audit log intact"):
        assert line in out, line
    assert "(ledger: postgresql, tracking: http://127.0.0.1:" in out
    assert "never applied" not in out  # the governance `up` applied moved into PostgreSQL with the ledger
    assert "ds@example.com" in out and "risk-office@example.com" in out

    # stopped: PostgreSQL, the server, its tracking server, the gateway; the temporary folders are gone
    ports = [int(p) for p in re.findall(r"(?:ledger: postgresql://postgres@127\.0\.0\.1:|on http://127\.0\.0\.1:|"
                                        r"tracking: http://127\.0\.0\.1:|gateway: http://127\.0\.0\.1:)(\d+)", out)]
    assert len(set(ports)) >= 4, ports
    assert [p for p in set(ports) if listening(p)] == []
    state = re.search(r"State: (\S+)/platform/\.mlplat/dev", out)
    assert state and not Path(state.group(1)).exists(), state
