"""A real PostgreSQL server for the tests that need one (``@pytest.mark.postgres``).

One server per test session (per pytest-xdist worker), started with the distribution's own
``initdb``/``pg_ctl`` (``/usr/lib/postgresql/<version>/bin``) in a private temporary directory, on a
free loopback port, trust authentication on loopback only. As root it runs as the ``postgres``
user (``runuser``), since PostgreSQL refuses to run as root. Each test takes a new, empty database
from :func:`fresh_database`; its default collation is ICU's ``en-US`` where the server has ICU, as
on a typical production server, so nothing can lean on a bytewise default.

Without the binaries the tests skip on a developer's machine and fail under ``CI=true``.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import in_ci
from tests.server_support import free_port

INSTALL = "apt-get install postgresql (Debian), or run .ci/system-packages.sh"


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb`` and ``pg_ctl``."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb") if Path(p).with_name("pg_ctl").exists()]

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.parent.name.split(".") if part.isdigit())

    return max(found, key=version) if found else None


@dataclass
class PostgresServer:
    bin: Path
    root: Path
    port: int
    as_postgres: bool

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run one of the server's programs (as ``postgres`` when we are root); raise with its output."""
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}\n{log}")
        return result

    def _options(self) -> str:
        # loopback only; the socket directory is ours; durability is not what these tests are about
        return (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                "-c fsync=off -c full_page_writes=off -c max_connections=200")

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options(), "-w", "-t", "60", "start")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """Stop (every session is cut) and start again on the same port, waiting until it accepts connections."""
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options(), "-m", "fast", "-w",
                 "-t", "60", "restart")

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)


def start_server() -> PostgresServer:
    binaries = postgres_bin()
    if binaries is None:
        message = f"PostgreSQL (initdb, pg_ctl under /usr/lib/postgresql/*/bin) is not installed ({INSTALL})"
        if in_ci():
            pytest.fail(f"CI=true and {message}; CI must provide it (.ci/system-packages.sh)", pytrace=False)
        pytest.skip(message)
    as_postgres = os.geteuid() == 0
    if as_postgres and shutil.which("runuser") is None:
        pytest.fail("running as root needs runuser to start PostgreSQL as the postgres user", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="mlplat-pg-"))
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    server = PostgresServer(binaries, root, free_port(), as_postgres)
    server.run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
    server.start()
    return server


def fresh_database(server: PostgresServer) -> str:
    """A new, empty database on the session's server; its URL."""
    name = f"ledger_{uuid.uuid4().hex[:12]}"
    import psycopg

    try:  # a production-like default collation: ICU's en-US sorts punctuation unlike bytes
        server.admin(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
    except psycopg.Error:  # a server built without ICU: the cluster's default
        server.admin(f"CREATE DATABASE {name} TEMPLATE template0")
    return server.url(name)


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server (see the module docstring)."""
    server = start_server()
    try:
        yield server
    finally:
        from mlplat.db import dispose_engines

        dispose_engines()
        try:
            server.stop()
        finally:
            shutil.rmtree(server.root, ignore_errors=True)
