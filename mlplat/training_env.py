"""What a training job tells the script it runs, through environment variables (provider-neutral).

A job runs the project from an archive of its commit, where git cannot say which commit that
was; the submitting side passes the code version, the job's run tags and where to report the run
and the versions it registers. ``mlplat.start_run`` reads them, so a script needs no change to
run as a job:

* ``MLPLAT_TRAINING_JOB``: the job id; the run is tagged ``mlplat.training.job``.
* ``MLPLAT_JOB_CODE``: JSON of the packaged code version (commit, branch, dirty, diff_sha256,
  repo_root, remote, and ``diff_file``: where the recorded diff is, when dirty).
* ``MLPLAT_RUN_TAGS``: JSON of tags every run of the job carries (instance type, price, cost tags).
* ``MLPLAT_JOB_EVENTS``: a file the SDK appends one JSON line to when the run starts and when it
  registers a version (a backend that can read the job's files links the job to them this way;
  others find the run by its ``mlplat.training.job`` tag).
* ``MLPLAT_DATA_<NAME>``: the URI of each data channel.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

JOB_ENV = "MLPLAT_TRAINING_JOB"
CODE_ENV = "MLPLAT_JOB_CODE"
TAGS_ENV = "MLPLAT_RUN_TAGS"
EVENTS_ENV = "MLPLAT_JOB_EVENTS"
DATA_PREFIX = "MLPLAT_DATA_"
CONTROL_PLANE_ENV = "MLPLAT_CONTROL_PLANE_URL"
JOB_TAG = "mlplat.training.job"
CHANNEL = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")


def data_variable(channel: str) -> str:
    """``train`` → ``MLPLAT_DATA_TRAIN``."""
    return DATA_PREFIX + channel.upper()


def current_job(environ: Mapping[str, str] | None = None) -> str | None:
    return (environ if environ is not None else os.environ).get(JOB_ENV) or None


def _json(name: str, environ: Mapping[str, str]) -> dict[str, Any]:
    text = environ.get(name)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def job_code(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The packaged code version of the job this process runs in ({} outside a job)."""
    environ = environ if environ is not None else os.environ
    return _json(CODE_ENV, environ) if current_job(environ) else {}


def job_tags(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tags every run of this process's job carries ({} outside a job)."""
    environ = environ if environ is not None else os.environ
    job = current_job(environ)
    if not job:
        return {}
    return {**{str(k): str(v) for k, v in _json(TAGS_ENV, environ).items()}, JOB_TAG: job}


def report(event: str, **fields: Any) -> None:
    """Append ``{"event": event, ...}`` to the job's events file, when this process runs in a job."""
    path = os.environ.get(EVENTS_ENV)
    if not path or not current_job():
        return
    line = json.dumps({"event": event, **fields}, sort_keys=True) + "\n"
    # O_APPEND: one short write per line, so lines of concurrent writers never interleave
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
