"""The entry of the platform's runtime image (``mlplat/train``) in SageMaker training and processing jobs.

The entry contract (what the AWS provider sends, what this module does with it):

* **Training job** (SageMaker starts the image with the argument ``train``): the command is the
  hyperparameter ``mlplat_command``, a JSON list of strings (``/opt/ml/input/config/hyperparameters.json``).
  Channels arrive under ``/opt/ml/input/data/<channel>/``; the model directory SageMaker uploads is
  ``/opt/ml/model`` (``MLPLAT_MODEL_DIR``); a failure's reason goes to ``/opt/ml/output/failure``, which
  DescribeTrainingJob reports as ``FailureReason``.
* **Processing job** (pipeline steps): ``ContainerEntrypoint`` is ``python -m
  mlplat_providers.aws.runtime.job_entry`` and ``ContainerArguments`` are
  ``[--output NAME]... [--report FILE] -- ARGV...``. Inputs arrive under ``/opt/ml/processing/input/<name>/``;
  each declared output is a directory ``/opt/ml/processing/output/<name>/`` (``MLPLAT_OUTPUT_<NAME>``, created
  here) that SageMaker uploads at the end.
* Both: the ``code`` channel/input holds the project's archive at the run's commit (``*.tar.gz``); it is
  unpacked into a work directory, which is the command's working directory and ``MLPLAT_PROJECT_DIR`` (so
  ``--stack`` finds ``stacks/``). Every other channel/input ``<name>`` is ``MLPLAT_INPUT_<NAME>`` (what a
  pipeline's command step reads, as on the local provider) and ``MLPLAT_DATA_<NAME>`` (a training job's data
  channel), upper case with non-alphanumerics as ``_``; a training job's model directory is also
  ``MLPLAT_OUTPUT_MODEL``. The job's ``Environment`` (``MLPLAT_STACK``, ``MLPLAT_CONTROL_PLANE_URL``,
  the tracking URI) passes through: platform steps reach the ledger through the stack's control plane.
* A model version written ``latest`` (the newest registered version of the model) or ``approved`` (the
  newest version whose model package is Approved) in ``mlplat models evaluate|promote|show NAME VERSION`` or
  ``mlplat deploy NAME VERSION`` is resolved to its number before the command runs.
* ``--report FILE``: the command's JSON output and outcome are written to FILE as ``{"passed": bool,
  "exit_code": int, "command": [...], "result": <its JSON or null>}`` — the pipeline's property file. Exit
  code 1 (a check said no: the gate refused) is a result, not a failure: the job succeeds and the
  pipeline's condition decides; any other non-zero exit fails the job.

``MLPLAT_JOB_ROOT`` (default ``/opt/ml``) moves the whole layout, for tests.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CHECK_FAILED = 1  # mlplat's exit code for "a check ran and said no" (mlplat.errors.ExitCode.FAILED)
Runner = Callable[[list[str], Path, dict[str, str]], subprocess.CompletedProcess[str]]


def env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def _root() -> Path:
    return Path(os.environ.get("MLPLAT_JOB_ROOT", "/opt/ml"))


def unpack_code(code_dir: Path, work: Path) -> Path:
    """Unpack the project's archive from ``code_dir`` into ``work``; refuses members outside it."""
    archives = sorted(code_dir.glob("*.tar.gz")) if code_dir.is_dir() else []
    if len(archives) != 1:
        raise SystemExit(f"mlplat job: expected one project archive (*.tar.gz) in {code_dir}, found "
                         f"{len(archives)}")
    work.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archives[0]) as tar:
        tar.extractall(work, filter="data")
    return work


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True, check=False)


def version_position(argv: Sequence[str]) -> int | None:
    """Where the model version sits in a platform command, or ``None``."""
    if len(argv) >= 5 and list(argv[:2]) == ["mlplat", "models"] and argv[2] in ("evaluate", "promote", "show"):
        return 4
    if len(argv) >= 4 and list(argv[:2]) == ["mlplat", "deploy"]:
        return 3
    return None


def _option(argv: Sequence[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def resolve_version(argv: list[str], cwd: Path, env: dict[str, str], run: Runner = _run,
                    approved: Callable[[str, str], int] | None = None) -> list[str]:
    """``argv`` with ``latest``/``approved`` in its version position replaced by a number."""
    at = version_position(argv)
    if at is None or argv[at] not in ("latest", "approved"):
        return argv
    model = argv[at - 1]
    stack = _option(argv, "--stack", "-s") or env.get("MLPLAT_STACK", "")
    if argv[at] == "approved":
        number = (approved or newest_approved)(stack, model)
    else:
        shown = run(["mlplat", "models", "show", model, "--stack", stack, "--json"], cwd, env)
        if shown.returncode != 0:
            raise SystemExit(f"mlplat job: cannot find the latest version of {model} (exit {shown.returncode})")
        number = int(json.loads(shown.stdout)["version"])
    return [*argv[:at], str(number), *argv[at + 1:]]


def newest_approved(stack: str, model: str) -> int:
    """The newest Approved version of ``model`` in the stack's model package group."""
    from mlplat.stack import load_stack
    from mlplat_providers.aws.plan import stack_plan
    from mlplat_providers.aws.runtime.session import AwsSession

    spec = load_stack(stack, Path(os.environ.get("MLPLAT_PROJECT_DIR", ".")))
    group = next((m.group for m in stack_plan(spec).models if m.model == model), None)
    if group is None:
        raise SystemExit(f"mlplat job: stack {stack} declares no model {model}")
    found = AwsSession(spec).call("sagemaker", "list_model_packages", ModelPackageGroupName=group,
                                  ModelApprovalStatus="Approved", SortBy="CreationTime", SortOrder="Descending",
                                  MaxResults=1)["ModelPackageSummaryList"]
    if not found:
        raise SystemExit(f"mlplat job: {model} has no Approved version")
    return int(found[0]["ModelPackageVersion"])


def job_environment(inputs: Path, outputs: Path | None, work: Path, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    env["MLPLAT_PROJECT_DIR"] = str(work)
    for channel in sorted(inputs.iterdir()) if inputs.is_dir() else []:
        if channel.name != "code":
            env[f"MLPLAT_DATA_{env_name(channel.name)}"] = str(channel)
            env[f"MLPLAT_INPUT_{env_name(channel.name)}"] = str(channel)
    for output in sorted(outputs.iterdir()) if outputs is not None and outputs.is_dir() else []:
        env[f"MLPLAT_OUTPUT_{env_name(output.name)}"] = str(output)
    return env


def write_report(path: Path, argv: list[str], done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        result = json.loads(done.stdout) if done.stdout and done.stdout.strip() else None
    except json.JSONDecodeError:
        result = None
    report = {"passed": done.returncode == 0, "exit_code": done.returncode, "command": argv, "result": result}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, sort_keys=True))
    return report


def processing(args: list[str], *, root: Path, run: Runner = _run) -> int:
    report: Path | None = None
    outputs = root / "processing" / "output"
    while args[:1] in (["--output"], ["--report"]) and len(args) > 1:
        if args[0] == "--report":
            report = Path(args[1])
        else:
            (outputs / args[1]).mkdir(parents=True, exist_ok=True)
        args = args[2:]
    if args[:1] != ["--"] or len(args) < 2:
        raise SystemExit("usage: job_entry [--output NAME]... [--report FILE] -- COMMAND ARGS...")
    argv = args[1:]
    work = unpack_code(root / "processing" / "input" / "code", root / "work")
    env = job_environment(root / "processing" / "input", outputs, work, dict(os.environ))
    argv = resolve_version(argv, work, env, run)
    done = run(argv, work, env)
    if done.stdout:
        sys.stdout.write(done.stdout)  # CloudWatch keeps the step's output
    if report is None:
        return done.returncode
    write_report(report, argv, done)
    return 0 if done.returncode in (0, CHECK_FAILED) else done.returncode


def training(*, root: Path, run: Runner = _run) -> int:
    hyper = json.loads((root / "input" / "config" / "hyperparameters.json").read_text())
    argv = json.loads(hyper["mlplat_command"])
    work = unpack_code(root / "input" / "data" / "code", root / "work")
    env = job_environment(root / "input" / "data", None, work, dict(os.environ))
    env["MLPLAT_MODEL_DIR"] = env["MLPLAT_OUTPUT_MODEL"] = str(root / "model")
    (root / "model").mkdir(parents=True, exist_ok=True)
    done = run(argv, work, env)
    if done.stdout:
        sys.stdout.write(done.stdout)
    if done.returncode != 0:
        failure = root / "output" / "failure"
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(f"{' '.join(argv)} exited with {done.returncode}")
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in ([], ["train"]):
        return training(root=_root())
    return processing(args, root=_root())


if __name__ == "__main__":
    raise SystemExit(main())
