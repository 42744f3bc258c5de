"""The CLI modules parse, call the control plane and render: no SQL, no ledger connections.

In server mode a command that opened the ledger itself would write behind the service layer's
back (and find no ledger on a client machine at all)."""
from __future__ import annotations

import re
from pathlib import Path

import mlplat.cli

CLI = Path(mlplat.cli.__file__).parent
SQL = re.compile(r"\.execute(many)?\(|\bsqlite3\b|\.connect\(\)|\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b")


def test_no_cli_module_runs_sql():
    offenders = []
    for path in sorted(CLI.glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if SQL.search(line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


def test_the_check_would_catch_sql():
    assert SQL.search('conn.execute("SELECT 1")') and SQL.search("db.connect()")
