"""The entry of the platform's runtime image on Vertex AI: CustomJobs (``mlplat train``) and pipeline tasks.

The contract is the platform's (:mod:`mlplat.pipelines.job_entry`, what :mod:`.pipelines` and
:mod:`..pipeline_compiler` put in a container's args)::

    python -m mlplat_providers.gcp.runtime.job_entry --source gs://BUCKET/source/COMMIT/SHA.tar.gz
        [--gate] [--input NAME=PATH_OR_URI ...] [--output NAME=PATH ...] -- COMMAND ...

Here the archive is a ``gs://`` object (downloaded through the Cloud Storage client) or a local path;
KFP mounts artifacts under ``/gcs/``, so inputs and outputs are local files.
"""
from __future__ import annotations

from pathlib import Path

from mlplat.pipelines import job_entry as core
from mlplat.pipelines.job_entry import Runner, env_key, gate_passed, parse, unpack

__all__ = ["Runner", "env_key", "fetch_source", "gate_passed", "main", "parse", "unpack"]


def fetch_source(source: str, into: Path) -> Path:
    """The archive as a local file: a ``gs://`` object downloaded, a local path as is."""
    if not source.startswith("gs://"):
        return Path(source)
    from google.cloud import storage

    bucket, _, key = source[5:].partition("/")
    target = into / "source.tar.gz"
    storage.Client().bucket(bucket).blob(key).download_to_filename(str(target))
    return target


def main(argv: list[str] | None = None, *, run: Runner = core.run_command) -> int:
    return core.main(argv, run=run, fetch=fetch_source)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
