"""What a stack's ledger knows by name: models and environments, for reads that name one.

A read that names an unknown model or environment answers ``NotFound`` with the names it does
know (and the nearest one), never an empty listing that looks like an answer.
"""
from __future__ import annotations

import difflib
from typing import Any

from mlplat.errors import NotFound

# Every ledger table that records an environment (all created by the baseline migration).
_ENVIRONMENT_TABLES = ("model_stages", "endpoints", "deployments", "gate_reports", "promotions", "approvals",
                       "monitor_windows")
_MODEL_TABLES = ("model_versions", "endpoints", "monitor_windows")


def _distinct(conn: Any, column: str, tables: tuple[str, ...]) -> set[str]:
    sql = " UNION ".join(f"SELECT DISTINCT {column} FROM {table}" for table in tables)
    return {str(row[0]) for row in conn.execute(sql) if row[0] is not None}


def _near(word: str, names: set[str]) -> str:
    found = difflib.get_close_matches(word, sorted(names), n=1, cutoff=0.5)
    return f"did you mean '{found[0]}'? " if found else ""


# The lifecycle's environments, which every stack may deploy to and promote in (--env) before its
# ledger has recorded anything there.
STANDARD_ENVIRONMENTS = frozenset({"dev", "staging", "production"})


def environments(conn: Any, spec: Any) -> set[str]:
    """The stack's own environment, the lifecycle's (dev, staging, production) and every environment
    its ledger has recorded."""
    return {spec.environment} | STANDARD_ENVIRONMENTS | _distinct(conn, "environment", _ENVIRONMENT_TABLES)


def require_environment(conn: Any, spec: Any, environment: str) -> None:
    """``NotFound`` (exit 4) unless ``environment`` is the stack's or one its ledger has recorded."""
    known = environments(conn, spec)
    if environment not in known:
        raise NotFound(f"environment '{environment}' is unknown to stack '{spec.name}'", where="--env",
                       hint=_near(environment, known) + "known environments: " + ", ".join(sorted(known)))


def require_model(conn: Any, name: str) -> None:
    """``NotFound`` (exit 4) unless ``name`` is registered, deployed or monitored in the ledger."""
    known = _distinct(conn, "model", _MODEL_TABLES)
    if name not in known:
        raise NotFound(f"model '{name}' is not registered", hint=_near(name, known) + (
            "`mlplat models list` shows the registered models" if known else
            "register one with run.log_model(model, name=...) inside mlplat.start_run"))
