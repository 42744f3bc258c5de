"""Exit codes are part of the interface: pinned here, mapped in one place."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlplat.errors import (
    Aborted,
    CapabilityNotSupported,
    CheckFailed,
    Conflict,
    Denied,
    ExitCode,
    ExternalError,
    IntegrityError,
    NotFound,
    StackError,
    ToolMissing,
    TrackingRequired,
)
from tests.conftest import run_cli


def test_exit_code_values_are_pinned():
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0, "FAILED": 1, "USAGE": 2, "CONFIG": 3, "NOT_FOUND": 4, "CONFLICT": 5, "DENIED": 6,
        "NOT_SUPPORTED": 7, "INTEGRITY": 8, "EXTERNAL": 9, "INTERNAL": 70, "ABORTED": 130,
    }


@pytest.mark.parametrize(("cls", "code"), [
    (StackError, 3), (NotFound, 4), (Conflict, 5), (Denied, 6), (TrackingRequired, 6), (CheckFailed, 1),
    (IntegrityError, 8), (ExternalError, 9), (Aborted, 130), (ToolMissing, 7),
])
def test_each_error_class_has_its_code(cls, code):
    assert cls("x").exit_code == code


def test_capability_not_supported_names_provider_and_capability():
    err = CapabilityNotSupported("gcp", "serving")
    assert err.exit_code == 7 and "'gcp'" in str(err) and "'serving'" in str(err)
    assert err.to_dict()["details"] == {"provider": "gcp", "capability": "serving"}


def test_help_lists_every_command_and_exit_codes():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("up", "preview", "destroy", "status", "stack", "runs", "ui", "providers"):
        assert f"  {command} " in result.stdout
    assert "130 aborted" in result.stdout


def test_help_does_not_import_heavy_libraries():
    code = ("import sys\nfrom mlplat.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy=[m for m in ('mlflow','pandas','sklearn','pulumi','boto3','duckdb','uvicorn','pydantic') "
            "if m in sys.modules]\nprint('HEAVY', heavy, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in result.stderr


def test_usage_error_is_2(project):
    assert run_cli("runs", "list", "--limit", "zero", cwd=project).returncode == 2
    assert run_cli("no-such-command", cwd=project).returncode == 2


def test_missing_stack_is_3_and_lists_stacks(project):
    result = run_cli("up", "--stack", "prod", "--yes", cwd=project)
    assert result.returncode == 3
    assert "stack 'prod' not found" in result.stderr and "existing stacks: dev" in result.stderr
    assert not (project / ".mlplat").exists()


def test_json_errors_are_machine_readable(project):
    result = run_cli("runs", "show", "deadbeef", "--json", cwd=project)
    payload = json.loads(result.stderr)
    # the fixture's stack was never provisioned: a stack error (3), named as such
    assert payload["exit_code"] == result.returncode == 3 and payload["error"] == "NotProvisioned"


@pytest.mark.parametrize("example", ["search-staging", "nlp-prod"])  # gcp, azure: both track runs now
def test_cloud_stack_read_before_up_exits_3_and_creates_nothing(project, example):
    text = (Path(__file__).resolve().parents[2] / "stacks" / f"Pulumi.{example}.yaml").read_text()
    (project / "stacks" / "Pulumi.cloud.yaml").write_text(text)
    result = run_cli("runs", "list", "--stack", "cloud", cwd=project)
    assert result.returncode == 3, result.stderr
    assert "mlplat up --stack cloud" in result.stderr and "does not support" not in result.stderr
    assert not (project / ".mlplat" / "cloud" / "platform.db").exists()


def test_verbose_shows_the_traceback(project):
    quiet = run_cli("up", "--stack", "nope", "--yes", cwd=project)
    loud = run_cli("--verbose", "up", "--stack", "nope", "--yes", cwd=project)
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr
    assert quiet.returncode == loud.returncode == 3
