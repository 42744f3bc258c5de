"""The entry of the platform's runtime image on Azure Machine Learning: command jobs (``mlplat train``)
and the command steps of pipeline jobs.

The contract is the platform's (:mod:`mlplat.pipelines.job_entry`)::

    python -m mlplat_providers.azure.runtime.job_entry --source source.tar.gz
        [--gate] [--input NAME=${{inputs.NAME}} ...] [--output NAME=${{outputs.NAME}} ...] -- COMMAND ...

Azure ML downloads the job's code asset (the folder holding the project's archive) into the working
directory and mounts inputs and outputs, substituting their paths for the ``${{...}}`` placeholders, so
every path the entry sees is local.
"""
from __future__ import annotations

from mlplat.pipelines import job_entry as core
from mlplat.pipelines.job_entry import Runner

ARCHIVE = "source.tar.gz"  # the one file of the code asset's folder


def main(argv: list[str] | None = None, *, run: Runner = core.run_command) -> int:
    return core.main(argv, run=run, fetch=core.local_file)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
