"""`up` and `destroy` touch only directories the platform created, as a user runs them.

A state directory is the platform's when `up` created it (or adopted it empty, inside the
project) and wrote its ownership marker; `destroy` removes what the marker lists and keeps
everything else.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from mlplat.errors import ExitCode

pytestmark = pytest.mark.integration

MARKER = ".mlplat-state.json"


def flat(text: str) -> str:
    """Messages as one line: the console wraps long ones (a deep temp path) at the terminal width."""
    return " ".join(text.split())


def add_stack(project: Path, name: str, state_dir: str) -> None:
    text = (project / "stacks" / "Pulumi.dev.yaml").read_text()
    assert "stateDir: .mlplat/dev" in text
    (project / "stacks" / f"Pulumi.{name}.yaml").write_text(text.replace("stateDir: .mlplat/dev",
                                                                         f"stateDir: '{state_dir}'"))


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root`` (``root`` included) with its mode and, for files, its bytes."""
    out = {".": (stat.S_IMODE(root.stat().st_mode), None)}
    for path in sorted(root.rglob("*")):
        out[str(path.relative_to(root))] = (stat.S_IMODE(path.lstat().st_mode),
                                           path.read_bytes() if path.is_file() and not path.is_symlink() else None)
    return out


def user_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "results.csv").write_text("a,b\n1,2\n")
    (path / "sub").mkdir()
    (path / "sub" / "notes.txt").write_text("mine")
    path.chmod(0o755)
    return path


def test_a_stack_named_dotdot_is_refused_and_the_project_is_untouched(project, cli):
    (project / "stacks" / "Pulumi....yaml").write_text((project / "stacks" / "Pulumi.dev.yaml").read_text())
    before = snapshot(project)

    validated = cli("stack", "validate", "--all")
    assert validated.returncode == ExitCode.CONFIG
    assert "'..' is not a valid stack name" in validated.stdout + validated.stderr
    for command in ("up", "destroy"):
        result = cli(command, "--stack", "..", "--yes")
        assert result.returncode == ExitCode.CONFIG, result.stdout + result.stderr
        assert "stack name '..' is not a valid stack name" in flat(result.stderr)
    assert snapshot(project) == before  # not chmodded, nothing created, nothing removed


def test_a_state_dir_outside_the_project_is_refused_and_left_untouched(project, cli):
    somewhere = user_dir(project.parent / "somewhere")
    add_stack(project, "out", "../somewhere")
    before = snapshot(somewhere)

    for command in ("up", "destroy"):
        result = cli(command, "--stack", "out", "--yes")
        assert result.returncode == ExitCode.CONFIG, result.stdout + result.stderr
        assert "mlplat:provider.stateDir: the state directory resolves to" in flat(result.stderr)
        assert "outside the project" in flat(result.stderr)
    assert snapshot(somewhere) == before
    assert not (project.parent / ".somewhere.lock").exists()


def test_up_never_adopts_a_non_empty_directory_it_did_not_create(project, cli):
    data = user_dir(project / "data")
    add_stack(project, "adopt", "data")
    before = snapshot(data)

    refused = cli("up", "--stack", "adopt", "--yes")
    assert refused.returncode == ExitCode.CONFIG, refused.stdout + refused.stderr
    assert f"the state directory {data} is not empty and was not created by `mlplat up`" in refused.stderr
    assert "stateDir" in refused.stderr  # how to fix it
    assert cli("preview", "--stack", "adopt").returncode == ExitCode.CONFIG
    not_ours = cli("destroy", "--stack", "adopt", "--yes")
    assert not_ours.returncode == ExitCode.CONFIG and "destroy deletes nothing there" in not_ours.stderr
    assert snapshot(data) == before  # mode 0755 kept: never chmodded
    assert not (project / ".data.lock").exists()


def test_an_empty_directory_inside_the_project_is_adopted_and_left_in_place(project, cli):
    (project / "state").mkdir(mode=0o755)
    add_stack(project, "empty", "state")
    assert cli("up", "--stack", "empty", "--yes").returncode == 0
    marker = json.loads((project / "state" / MARKER).read_text())
    assert marker["stack"] == "empty" and marker["createdRoot"] is False
    assert stat.S_IMODE((project / "state").stat().st_mode) == 0o700

    result = cli("destroy", "--stack", "empty", "--yes")
    assert result.returncode == 0, result.stderr
    assert (project / "state").is_dir() and list((project / "state").iterdir()) == []


def test_destroy_removes_what_up_created_and_keeps_the_rest(up_project, cli):
    state = up_project / ".mlplat" / "dev"
    (state / "notes.txt").write_text("my notes")
    (state / "mine").mkdir()
    (state / "mine" / "model.pkl").write_bytes(b"\x80\x04N.")
    (state / "locks").mkdir(exist_ok=True)  # the platform's own, created at run time
    (state / "locks" / "promote-x-staging.lock").write_text("")
    marker = json.loads((state / MARKER).read_text())
    assert marker["createdRoot"] is True
    assert {"platform.db", "mlflow.db", "artifacts", "keys", "tmp", "locks"} <= set(marker["entries"])

    plan = cli("destroy", "--stack", "dev")
    assert plan.returncode == ExitCode.ABORTED and "mine, notes.txt" in plan.stdout

    result = cli("destroy", "--stack", "dev", "--yes")
    assert result.returncode == 0, result.stderr
    assert f"Kept {state}" in result.stdout and "mine, notes.txt" in result.stdout
    assert sorted(p.name for p in state.iterdir()) == [MARKER, "mine", "notes.txt"]
    assert (state / "notes.txt").read_text() == "my notes" and (state / "mine" / "model.pkl").read_bytes() == b"\x80\x04N."
    assert cli("status", "--stack", "dev").returncode == ExitCode.FAILED

    # the directory is still the platform's: up uses it again, and once it holds nothing else destroy removes it
    assert cli("up", "--stack", "dev", "--yes").returncode == 0
    (state / "notes.txt").unlink()
    (state / "mine" / "model.pkl").unlink()
    (state / "mine").rmdir()
    assert cli("destroy", "--stack", "dev", "--yes").returncode == 0
    assert not state.exists()


def test_destroy_does_not_follow_links_out_of_the_state_dir(up_project, cli, tmp_path):
    state = up_project / ".mlplat" / "dev"
    outside = user_dir(tmp_path / "outside")
    before = snapshot(outside)
    os.rename(state / "tmp", tmp_path / "old-tmp")
    (state / "tmp").symlink_to(outside, target_is_directory=True)  # a name the marker lists, now a link

    result = cli("destroy", "--stack", "dev", "--yes")
    assert result.returncode == 0, result.stderr
    assert snapshot(outside) == before
    assert (state / "tmp").is_symlink() and "tmp" in result.stdout


def test_an_absolute_state_dir_must_be_created_by_up(project, cli, tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    add_stack(project, "absent", str(tmp_path / "srv" / "mlplat-absent"))
    add_stack(project, "exists", str(existing))

    refused = cli("up", "--stack", "exists", "--yes")
    assert refused.returncode == ExitCode.CONFIG and "already exists and was not created by `mlplat up`" in refused.stderr
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755 and list(existing.iterdir()) == []

    assert cli("up", "--stack", "absent", "--yes").returncode == 0
    created = tmp_path / "srv" / "mlplat-absent"
    assert json.loads((created / MARKER).read_text())["createdRoot"] is True
    assert cli("destroy", "--stack", "absent", "--yes").returncode == 0
    assert not created.exists() and (tmp_path / "srv").is_dir()


def test_two_stacks_cannot_share_a_state_dir(up_project, cli):
    add_stack(up_project, "twin", ".mlplat/dev")
    before = snapshot(up_project / ".mlplat" / "dev")
    for command in ("up", "destroy"):
        result = cli(command, "--stack", "twin", "--yes")
        assert result.returncode == ExitCode.CONFIG, result.stdout + result.stderr
        assert "belongs to stack 'dev'" in flat(result.stderr)
    assert snapshot(up_project / ".mlplat" / "dev") == before


def test_a_tampered_marker_deletes_nothing(up_project, cli, tmp_path):
    state = up_project / ".mlplat" / "dev"
    victim = user_dir(tmp_path / "victim")
    marker = json.loads((state / MARKER).read_text())
    marker["entries"].append(f"../../../{victim.name}")
    (state / MARKER).write_text(json.dumps(marker))
    before = snapshot(state)

    result = cli("destroy", "--stack", "dev", "--yes")
    assert result.returncode == ExitCode.INTEGRITY and "ownership marker is not one `mlplat up` wrote" in flat(result.stderr)
    assert victim.is_dir() and (victim / "results.csv").is_file()
    assert snapshot(state) == before


def test_a_state_dir_from_before_markers_is_recognised_by_its_database(up_project, cli):
    state = up_project / ".mlplat" / "dev"
    (state / MARKER).unlink()
    preview = cli("preview", "--stack", "dev")
    assert preview.returncode == 0 and "write the ownership marker" in preview.stdout
    assert cli("up", "--stack", "dev", "--yes").returncode == 0
    assert json.loads((state / MARKER).read_text())["stack"] == "dev"
    assert "No changes" in cli("up", "--stack", "dev", "--yes").stdout


def test_a_destroy_cut_short_is_finished_by_the_next(up_project, monkeypatch):
    from mlplat.context import Context
    from mlplat.stack import load_stack
    from mlplat_providers.local import provisioner as module

    spec = load_stack("dev", up_project)
    real = module.shutil.rmtree

    def crash_on_keys(path, *args, **kwargs):
        if Path(path).name == "keys":
            raise OSError("killed")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module.shutil, "rmtree", crash_on_keys)
    with pytest.raises(OSError):
        module.LocalProvisioner(spec, Context()).destroy()
    assert (spec.state_dir / MARKER).is_file()  # the marker goes last
    monkeypatch.setattr(module.shutil, "rmtree", real)
    module.LocalProvisioner(spec, Context()).destroy()
    assert not spec.state_dir.exists()


def test_up_killed_before_its_state_dir_appeared_leaves_nothing_behind(project, monkeypatch):
    from mlplat.context import Context
    from mlplat.stack import load_stack
    from mlplat_providers.local import provisioner as module

    spec = load_stack("dev", project)
    real = module.os.rename

    def killed(src, dst):
        raise KeyboardInterrupt  # as if the process died between building the directory and renaming it

    monkeypatch.setattr(module.os, "rename", killed)
    boom = module.LocalProvisioner(spec, Context())
    with pytest.raises(KeyboardInterrupt):
        boom.apply(boom.plan())
    assert not spec.state_dir.exists()
    # a hard kill skips the cleanup: the rerun removes the marker-only leftover and builds the directory
    (spec.state_dir.parent / ".dev.new-leftover").mkdir()
    (spec.state_dir.parent / ".dev.new-leftover" / MARKER).write_text("{}")
    monkeypatch.setattr(module.os, "rename", real)
    again = module.LocalProvisioner(spec, Context())
    again.apply(again.plan())
    assert (spec.state_dir / MARKER).is_file()
    assert [p.name for p in spec.state_dir.parent.iterdir() if p.name.startswith(".dev.new-")] == []
