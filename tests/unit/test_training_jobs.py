"""Training jobs without running one: packaging at a commit, the spend policy, data and script checks,
environments cached by lock hash, and training as a cost line."""
from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from mlplat.contracts.pipelines import JobStatus
from mlplat.errors import Denied, ExitCode, MlplatError, NotFound
from mlplat.services import source as source_service
from mlplat.services import training as training
from mlplat.services.monitoring import cost as cost_mod
from mlplat.stack import parse_stack
from tests.conftest import REPO

GIT = ["git", "-c", "user.email=ds@example.com", "-c", "user.name=ds", "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    (root / "proj" / "pkg").mkdir(parents=True)
    (root / "proj" / "train.py").write_text("print('v1')\n")
    (root / "proj" / "pkg" / "util.py").write_text("X = 1\n")
    (root / "proj" / "old.txt").write_text("old\n")
    (root / "proj" / ".gitignore").write_text("*.log\n")
    (root / "outside.txt").write_text("not in the project\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    return root


def members(archive: str) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


# --- packaging at a commit ---------------------------------------------------------------------


def test_a_clean_project_is_packaged_at_its_commit_with_the_lock(repo, tmp_path):
    (repo / "proj" / "run.log").write_text("ignored by git\n")
    bundle = source_service.bundle_source(repo / "proj", allow_dirty=False, dest_dir=tmp_path / "out")
    assert bundle.commit == git(repo, "rev-parse", "HEAD")
    assert not bundle.dirty and bundle.diff is None
    files = members(bundle.archive)
    # the project folder is the archive's root; files outside it and ignored files stay out
    assert set(files) == {"train.py", "pkg/util.py", "old.txt", ".gitignore"}
    lock = Path(bundle.requirements_lock).read_text()  # type: ignore[arg-type]
    assert bundle.lock_hash == hashlib.sha256(lock.encode()).hexdigest()
    assert "scikit-learn==" in lock  # the running environment, pinned as start_run records it


def test_a_committed_lock_wins_over_the_running_environment(repo, tmp_path):
    (repo / "proj" / "requirements.lock").write_text("numpy==1.0\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "lock")
    bundle = source_service.bundle_source(repo / "proj", allow_dirty=False, dest_dir=tmp_path / "out")
    assert Path(bundle.requirements_lock).read_text() == "numpy==1.0\n"  # type: ignore[arg-type]
    assert bundle.lock_hash == hashlib.sha256(b"numpy==1.0\n").hexdigest()


def test_uncommitted_changes_are_refused_naming_them_and_nothing_is_written(repo, tmp_path):
    (repo / "proj" / "train.py").write_text("print('v2')\n")
    (repo / "proj" / "new.py").write_text("print('new')\n")
    with pytest.raises(source_service.SourceError) as err:
        source_service.bundle_source(repo / "proj", allow_dirty=False, dest_dir=tmp_path / "out")
    assert "uncommitted changes" in err.value.message
    assert "proj/new.py" in err.value.message and "proj/train.py" in err.value.message
    assert "--allow-dirty" in (err.value.hint or "")
    assert not (tmp_path / "out").exists()


def test_changes_outside_the_project_folder_do_not_make_it_dirty(repo, tmp_path):
    (repo / "outside.txt").write_text("changed\n")
    bundle = source_service.bundle_source(repo / "proj", allow_dirty=False, dest_dir=tmp_path / "out")
    assert not bundle.dirty


def test_allow_dirty_packages_the_work_tree_and_records_the_diff(repo, tmp_path):
    (repo / "proj" / "train.py").write_text("print('v2')\n")
    (repo / "proj" / "new.py").write_text("print('new')\n")
    (repo / "proj" / "old.txt").unlink()
    bundle = source_service.bundle_source(repo / "proj", allow_dirty=True, dest_dir=tmp_path / "out")
    assert bundle.dirty and bundle.commit == git(repo, "rev-parse", "HEAD")
    files = members(bundle.archive)
    assert files["train.py"] == b"print('v2')\n" and files["new.py"] == b"print('new')\n"
    assert "old.txt" not in files
    # the diff rebuilds the packaged tree from the commit
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(repo), str(checkout)], check=True)
    subprocess.run(["git", "apply"], cwd=checkout, input=bundle.diff, text=True, check=True)
    assert (checkout / "proj" / "train.py").read_text() == "print('v2')\n"
    assert (checkout / "proj" / "new.py").read_text() == "print('new')\n"
    assert not (checkout / "proj" / "old.txt").exists()


def test_a_folder_outside_git_or_without_a_commit_is_a_clear_error(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(source_service.SourceError, match="is not in a git repository") as err:
        source_service.bundle_source(plain, allow_dirty=True, dest_dir=tmp_path / "out")
    assert "git init" in (err.value.hint or "")
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(source_service.SourceError, match="has no commit yet"):
        source_service.bundle_source(empty, allow_dirty=True, dest_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- the spend policy ----------------------------------------------------------------------------


def stack(tmp_path: Path, policy: str = "") -> object:
    text = (REPO / "stacks" / "Pulumi.dev.yaml").read_text() + policy
    return parse_stack(text, path=tmp_path / "stacks" / "Pulumi.dev.yaml", name="dev", project_dir=tmp_path)


def test_the_default_spend_policy_allows_local_instances_and_refuses_others(tmp_path):
    spec = stack(tmp_path)
    assert training.check_spend(spec, "local.cpu", 0) == []
    with pytest.raises(training.SpendRefused) as err:
        training.check_spend(spec, "ml.p3.2xlarge", 0)
    assert err.value.exit_code == ExitCode.DENIED and isinstance(err.value, Denied)
    assert "instance type ml.p3.2xlarge is not allowed by the stack's spend policy" in err.value.message
    assert "allowedInstanceTypes: ml.t3.*, ml.m5.*" in err.value.message  # the allowed values, named
    assert err.value.where == "mlplat:policy.policies.spend.allowedInstanceTypes"


def test_more_gpus_than_the_cap_are_refused_and_a_gpu_type_counts_as_one(tmp_path):
    spec = stack(tmp_path, "  mlplat:policy:\n    policies:\n      spend: {maxGpuInstances: 1, "
                           "allowedInstanceTypes: ['ml.g5.*', 'local.*']}\n")
    assert training.check_spend(spec, "local.gpu", 1) == []
    with pytest.raises(training.SpendRefused) as err:
        training.check_spend(spec, "local.gpu", 2)
    assert "2 GPU(s) asked for" in err.value.message and "maxGpuInstances: 1" in err.value.message
    assert err.value.where == "mlplat:policy.policies.spend.maxGpuInstances"
    capped = stack(tmp_path, "  mlplat:policy:\n    policies:\n      spend: {maxGpuInstances: 0}\n")
    with pytest.raises(training.SpendRefused, match="1 GPU"):
        training.check_spend(capped, "ml.g5.xlarge", 0)


def test_an_advisory_spend_policy_warns_and_a_disabled_one_checks_nothing(tmp_path):
    advisory = stack(tmp_path, "  mlplat:policy:\n    policies:\n      spend: advisory\n")
    warnings = training.check_spend(advisory, "ml.p3.2xlarge", 9)
    assert len(warnings) == 2 and all(w.startswith("advisory spend policy:") for w in warnings)
    disabled = stack(tmp_path, "  mlplat:policy:\n    policies:\n      spend: disabled\n")
    assert training.check_spend(disabled, "ml.p3.2xlarge", 9) == []


def test_training_price_reads_the_stacks_price_table(tmp_path):
    spec = stack(tmp_path)
    assert training.training_price(spec, "local.cpu") == 0.05  # the serving type's pricePerHour
    assert training.training_price(spec, "local.gpu") == 0.0  # unpriced
    priced = stack(tmp_path, "").model_copy(deep=True)  # type: ignore[attr-defined]
    priced.serving.price_table["local.gpu"] = 1.5
    assert training.training_price(priced, "local.gpu") == 1.5


# --- data channels and the command ---------------------------------------------------------------


def test_data_channels_are_parsed_and_checked(tmp_path):
    (tmp_path / "train.csv").write_text("a\n1\n")
    assert training.parse_data(["train=train.csv", "holdout=s3://b/k"]) == {"train": "train.csv", "holdout": "s3://b/k"}
    for bad, message in (("train", "is not NAME=URI"), ("9x=a", "is not valid"), ("a=", "is not NAME=URI")):
        with pytest.raises(MlplatError, match=message):
            training.parse_data([bad])
    with pytest.raises(MlplatError, match="given twice"):
        training.parse_data(["a=x", "A=y"])
    checked = training.check_data({"train": "train.csv", "uri": (tmp_path / "train.csv").as_uri(),
                                   "cloud": "s3://bucket/key"}, tmp_path)
    assert checked == {"train": str(tmp_path / "train.csv"), "uri": str(tmp_path / "train.csv"),
                       "cloud": "s3://bucket/key"}
    with pytest.raises(NotFound, match="data channel 'train': missing.csv does not exist"):
        training.check_data({"train": "missing.csv"}, tmp_path)
    with pytest.raises(MlplatError, match="the scheme of ftp://host/x is not supported"):
        training.check_data({"train": "ftp://host/x"}, tmp_path)


@pytest.mark.parametrize("command, script", [
    (["python", "train.py", "--epochs", "3"], "train.py"),
    (["python3", "-u", "src/train.py"], "src/train.py"),
    (["/usr/bin/python3.11", "train.py"], "train.py"),
    (["python", "-m", "pkg.train"], None),
    (["python", "-c", "print(1)"], None),
    (["./run.sh", "x"], "./run.sh"),
    (["make", "train"], None),
])
def test_the_script_a_command_runs(command, script):
    assert training.script_of(command) == script


def test_a_missing_script_is_not_found(tmp_path):
    with pytest.raises(NotFound, match="the script nope.py does not exist in the project"):
        training.check_command(["python", "nope.py"], tmp_path)
    with pytest.raises(MlplatError, match="no command to run"):
        training.check_command([], tmp_path)


# --- environments cached by lock hash -------------------------------------------------------------


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel, so pip installs offline (--no-index --find-links)."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}

    def record(path: str, data: bytes) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{path},sha256={digest},{len(data)}"

    lines = [record(p, d) for p, d in files.items()] + [f"{dist}/RECORD,,"]
    target = folder / f"{name}-{version}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
        whl.writestr(f"{dist}/RECORD", "\n".join(lines) + "\n")
    return target


def test_environments_are_cached_by_lock_hash_and_install_only_what_is_missing(tmp_path, monkeypatch):
    from mlplat_providers.local.environments import ensure_environment

    envs = tmp_path / "envs"
    numpy_version = __import__("numpy").__version__
    satisfied = tmp_path / "a.lock"
    satisfied.write_text(f"numpy=={numpy_version}\n# local: mlplat==0.1.0\n")
    python, first = ensure_environment(envs, satisfied, "a" * 64, say=lambda _: None)
    assert not first["reused"] and first["installed"] == [] and python == envs / ("a" * 64) / "bin" / "python"
    # the environment layers on the running interpreter's packages (mlplat itself included)
    out = subprocess.run([str(python), "-c", "import sys, mlplat, numpy; print(sys.prefix, numpy.__version__)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(envs / ("a" * 64)), numpy_version]
    _, again = ensure_environment(envs, satisfied, "a" * 64, say=lambda _: None)
    assert again["reused"] and again["dir"] == first["dir"] and again["created"] == first["created"]

    # a lock the running interpreter does not satisfy: a new environment, and only the missing pin installed
    wheels = tmp_path / "wheels"
    _wheel(wheels, "mlplattinypkg", "1.0")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    lacking = tmp_path / "b.lock"
    lacking.write_text(f"numpy=={numpy_version}\nmlplattinypkg==1.0\n")
    python_b, built = ensure_environment(envs, lacking, "b" * 64, say=lambda _: None)
    assert not built["reused"] and built["installed"] == ["mlplattinypkg==1.0"]
    assert subprocess.run([str(python_b), "-c", "import mlplattinypkg; print(mlplattinypkg.VERSION)"],
                          capture_output=True, text=True, check=True).stdout.strip() == "1.0"
    assert subprocess.run([sys.executable, "-c", "import mlplattinypkg"], capture_output=True).returncode != 0
    assert subprocess.run([str(python), "-c", "import mlplattinypkg"], capture_output=True).returncode != 0


def test_an_environment_that_cannot_be_built_is_never_marked_ready(tmp_path, monkeypatch):
    from mlplat_providers.local.environments import READY, ensure_environment

    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    lock = tmp_path / "c.lock"
    lock.write_text("mlplat-no-such-package==9.9\n")
    with pytest.raises(MlplatError, match="pip install failed"):
        ensure_environment(tmp_path / "envs", lock, "c" * 64, say=lambda _: None)
    assert not (tmp_path / "envs" / ("c" * 64) / READY).exists()


# --- training as a cost line -------------------------------------------------------------------------


def test_a_training_job_is_a_cost_line_under_its_team_and_model():
    period = cost_mod.Period(0, 10 * 3600, "p")
    dep = cost_mod.Deployment("scorer", 1, "dev", 0, None, "local.cpu", 1, 1.0, "fraud")
    usage = [cost_mod.Usage("scorer", 1, "dev", 100, 36.0, "fraud")]
    jobs = [cost_mod.TrainingRun("train-1", "fraud", "scorer", 1, "dev", "ml.g5.xlarge", 2.0, 3600, 3 * 3600),
            cost_mod.TrainingRun("train-2", "fraud", "scorer", 2, "dev", "local.cpu", 0.0, 3600, None),
            cost_mod.TrainingRun("train-0", "fraud", "scorer", 1, "dev", "local.cpu", 5.0, -7200, -3600)]
    report = cost_mod.attribute([dep], usage, period, price_for=lambda _: 0.0, default_instance_type="local.cpu",
                                by="model", budgets={"fraud": 100.0}, training=jobs)
    (group,) = report.groups
    assert group.key == "scorer"
    assert group.training_usd == pytest.approx(4.0)  # 2 h × $2; train-2 priced 0; train-0 ended before the period
    assert group.training_hours == pytest.approx(2 + 9)
    assert group.cost_usd == pytest.approx(10 + 4.0)
    assert group.cost_per_prediction == pytest.approx(10 / 100)  # serving only
    assert group.utilisation == pytest.approx(36 / (10 * 3600))
    assert [j["job_id"] for j in report.training] == ["train-1", "train-2"]
    assert report.budget_share("fraud") == pytest.approx(14 / report.budget_for_period("fraud"))
    row = cost_mod.report_rows(report)[0]
    assert row["training_usd"] == pytest.approx(4.0) and row["training_hours"] == pytest.approx(11)


def test_cost_of_a_job_so_far():
    job = JobStatus("j", "RUNNING", started=0.0, price_per_hour=3.0)
    assert training.cost_usd(job, 1800) == pytest.approx(1.5)
    assert training.cost_usd(JobStatus("j", "PENDING", price_per_hour=3.0), 1800) == 0.0
