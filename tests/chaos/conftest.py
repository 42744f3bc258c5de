"""Fixtures of the fault-injection suite: the shared trained projects, kill-point censuses, the report."""
from __future__ import annotations

import pytest

from tests.chaos.support import Report, shared_bases


@pytest.fixture(scope="session")
def bases(tmp_path_factory, worker_id):
    """(base, canary): see :func:`tests.chaos.support.build_base` and ``build_canary``."""
    return shared_bases(tmp_path_factory, worker_id)


@pytest.fixture(scope="session")
def worker_id(request) -> str:
    """xdist's worker id ("master" without xdist); xdist's own fixture overrides this one."""
    workerinput = getattr(request.config, "workerinput", None)
    return workerinput["workerid"] if workerinput else "master"


@pytest.fixture(scope="module")
def report(request, tmp_path_factory):
    """The module's trial table: JSON under the session's temp folder, printed at the end (``-s``)."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    rep = Report(tmp_path_factory.getbasetemp() / f"chaos-{name}.json")
    yield rep
    if rep.trials or rep.extra:
        print(f"\n== {name}: fault-injection trials ({rep.path}) ==\n{rep.table()}")


@pytest.fixture(scope="module")
def censuses():
    """Kill points per command, recorded once per module: {command: [(kind, label), ...]}."""
    return {}
