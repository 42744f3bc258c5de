"""`mlplat init`: the stack file it writes validates and passes the policy pack; bad answers are
refused with one message naming the option (flags) or asked again (prompts); nothing is ever
overwritten; company templates from a folder or a git repository."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlplat.cli import cli
from mlplat.context import Context
from mlplat.services import team_init as ti

LOCAL = ["--team", "churn", "--env", "dev", "--provider", "local", "--owner", "churn-leads@example.com",
         "--cost-center", "CC-2040", "--risk-tier", "critical", "--approver", "risk-office@example.com",
         "--approver", "head-of-ds@example.com"]
AWS = ["--team", "churn", "--env", "production", "--provider", "aws", "--region", "eu-west-1",
       "--account-id", "123456789012", "--owner", "churn-leads@example.com", "--cost-center", "CC-2040",
       "--risk-tier", "critical", "--approver", "risk-office@example.com", "--approver", "head-of-ds@example.com",
       "--admin", "group:ml-platform-admins"]


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input, obj=Context(), standalone_mode=False)


def code_of(result) -> int:
    """The exit code `mlplat.cli.main` maps the outcome to."""
    from mlplat.errors import MlplatError

    if isinstance(result.exception, MlplatError):
        return int(result.exception.exit_code)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import click

        if isinstance(result.exception, click.ClickException):
            return result.exception.exit_code
        raise result.exception
    return result.exit_code


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_flags_write_a_stack_that_validates_and_passes_the_policy_pack(tmp_path):
    from mlplat.services.policy_check import check
    from mlplat.stack import load_stack

    project = tmp_path / "churn"
    result = run("init", "--dir", str(project), *LOCAL, "--no-input")
    assert code_of(result) == 0, result.output
    written = snapshot(project)
    assert {"Pulumi.yaml", "stacks/Pulumi.churn-dev.yaml", "train.py", "data/train.csv", "data/holdout.csv",
            ".gitignore", ".github/workflows/mlplat-policy.yml", "README.md"} <= set(written)
    spec = load_stack("churn-dev", project)
    assert (spec.team, spec.environment, spec.provider.kind) == ("churn", "dev", "local")
    assert spec.governance.required_approvals == 2 and spec.tags.cost_center == "CC-2040"
    assert spec.gate.holdout is not None and (project / spec.gate.holdout.path).is_file()
    report = check(["churn-dev"], project, Context(project_dir=project))
    assert report.ok and report.stacks[0].status == "passed", report.to_dict()
    # the starter's files are rendered: no placeholder is left, the workflow runs the policy pack
    text = b"".join(v for k, v in written.items() if not k.startswith("data/")).decode()
    assert "{{" not in text and "mlplat policy check" in written[".github/workflows/mlplat-policy.yml"].decode()
    assert 'MODEL = "classifier"' in written["train.py"].decode()


@pytest.mark.pulumi
def test_an_aws_team_passes_the_policy_pack_under_mocks(tmp_path):
    from mlplat.services.policy_check import check

    project = tmp_path / "churn-aws"
    result = run("init", "--dir", str(project), *AWS, "--no-input", "--stack-only")
    assert code_of(result) == 0, result.output
    assert set(snapshot(project)) == {"Pulumi.yaml", "stacks/Pulumi.churn-production.yaml"}
    report = check(["churn-production"], project, Context(project_dir=project))
    assert report.ok and report.stacks[0].status == "passed", report.to_dict()


CLOUD = ["--team", "churn", "--env", "staging", "--owner", "churn-leads@example.com", "--cost-center", "CC-2040",
         "--approver", "risk-office@example.com", "--admin", "group:ml-platform-admins",
         "--oidc-issuer", "https://login.example.com", "--oidc-audience", "mlplat"]


@pytest.mark.pulumi
@pytest.mark.parametrize("provider, ids, status", [
    ("gcp", ["--gcp-project", "acme-churn-ml", "--region", "europe-west4", "--billing-account",
             "01A2B3-C4D5E6-F7A8B9"], "passed"),
    ("azure", ["--subscription-id", "00000000-0000-0000-0000-000000000000", "--resource-group", "rg-churn",
               "--region", "westeurope"], "passed"),
])
def test_gcp_and_azure_teams_validate_and_pass_the_policy_pack(tmp_path, provider, ids, status):
    from mlplat.services.policy_check import check

    project = tmp_path / provider
    result = run("init", "--dir", str(project), "--provider", provider, *ids, *CLOUD, "--no-input", "--stack-only")
    assert code_of(result) == 0, result.output
    report = check(["churn-staging"], project, Context(project_dir=project))
    assert report.ok and report.stacks[0].status in status, report.to_dict()
    missing = run("init", "--dir", str(tmp_path / "q"), "--provider", provider, *ids[:-2], *CLOUD, "--no-input")
    assert code_of(missing) == 2 and missing.exception.where == ids[-2]


@pytest.mark.parametrize("change, option, words", [
    (["--team", "Churn Team"], "--team", "not a valid name"),
    (["--provider", "openstack"], "--provider", "unknown provider 'openstack'"),
    (["--risk-tier", "medium"], "--risk-tier", "unknown risk tier"),
    (["--approver", "risk-office@example.com"], "--approver", "need 2 approval(s) but only 1"),
    (["--approver", "churn-leads@example.com", "--approver", "risk-office@example.com"], "--approver",
     "owner churn-leads@example.com is also listed as an approver"),
    (["--region", "europe", "--account-id", "123456789012"], "--region", "aws provider region"),
    (["--account-id", "1234"], "--account-id", "accountId"),
    (["--access", "trusted-local"], "--access/--admin", "access: stack on aws declares mode 'trusted-local'"),
])
def test_a_bad_flag_is_one_message_naming_the_option_and_nothing_is_written(tmp_path, change, option, words):
    argv: list[str] = []
    replaced = set(change[::2])
    for key, value in zip(AWS[::2], AWS[1::2]):
        if key not in replaced:
            argv += [key, value]
    argv += change
    project = tmp_path / "p"
    result = run("init", "--dir", str(project), *argv, "--no-input")
    exc = result.exception
    assert code_of(result) == 2, result.output
    assert exc.where == option and words in exc.message and exc.hint, (exc.where, exc.message)
    assert not project.exists()


def test_a_missing_answer_with_no_input_names_the_option(tmp_path):
    result = run("init", "--dir", str(tmp_path / "p"), "--team", "churn", "--no-input")
    assert code_of(result) == 2 and result.exception.where == "--owner"
    result = run("init", "--dir", str(tmp_path / "p"), *[a for a in AWS if a not in ("--admin",
                                                                                       "group:ml-platform-admins")],
                 "--no-input")
    assert code_of(result) == 2 and result.exception.where == "--admin"
    assert not (tmp_path / "p").exists()


def test_prompts_ask_again_until_the_answer_is_valid(tmp_path):
    project = tmp_path / "p"
    answers = "\n".join([
        "Bad Team", "churn",          # team: refused, then accepted
        "",                           # environment: default dev
        "openstack", "local",         # provider
        "",                           # owner: default churn-leads@example.com
        "CC-2040",                    # cost center
        "medium", "critical",         # risk tier
        "risk-office@example.com",    # approvers: one is too few for critical (2 required)
        "churn-leads@example.com, risk-office@example.com",   # the owner is refused
        "risk-office@example.com, head-of-ds@example.com",
    ]) + "\n"
    result = run("init", "--dir", str(project), input=answers)
    assert code_of(result) == 0, result.output
    assert result.output.count("not a valid name") == 1 and "unknown provider 'openstack'" in result.output
    assert "unknown risk tier" in result.output and "need 2 approval(s) but only 1" in result.output
    assert "is also listed as an approver" in result.output
    text = (project / "stacks" / "Pulumi.churn-dev.yaml").read_text()
    assert "approvers: [risk-office@example.com, head-of-ds@example.com]" in text
    assert "owner: churn-leads@example.com" in text


def test_prompts_ask_what_a_cloud_provider_needs(tmp_path):
    project = tmp_path / "p"
    answers = "\n".join(["churn", "production", "aws", "eu-west", "eu-west-1", "12", "123456789012",
                         "", "CC-1", "low", "", "group:platform-admins"]) + "\n"
    result = run("init", "--dir", str(project), "--stack-only", input=answers)
    assert code_of(result) == 0, result.output
    assert "aws provider region" in result.output and "accountId" in result.output
    text = (project / "stacks" / "Pulumi.churn-production.yaml").read_text()
    assert "accountId: '123456789012'" in text and "admin: ['group:platform-admins']" in text


def test_nothing_is_overwritten_and_nothing_written_when_one_file_exists(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "README.md").write_text("ours\n")
    result = run("init", "--dir", str(project), *LOCAL, "--no-input")
    assert code_of(result) == 5
    assert "README.md" in result.exception.message and "nothing was written" in result.exception.message
    assert snapshot(project) == {"README.md": b"ours\n"}
    # a second team in an existing project: only its stack file, beside the first
    assert code_of(run("init", "--dir", str(tmp_path / "q"), *LOCAL, "--no-input")) == 0
    before = snapshot(tmp_path / "q")
    again = run("init", "--dir", str(tmp_path / "q"), *LOCAL, "--no-input", "--stack-only")
    assert code_of(again) == 5 and snapshot(tmp_path / "q") == before
    other = run("init", "--dir", str(tmp_path / "q"), *LOCAL[:2], "--env", "staging", *LOCAL[4:], "--no-input",
                "--stack-only")
    assert code_of(other) == 0 and set(snapshot(tmp_path / "q")) == set(before) | {"stacks/Pulumi.churn-staging.yaml"}


def make_template(root: Path) -> Path:
    (root / "dot-github").mkdir(parents=True)
    (root / "src" / "{{ team }}").mkdir(parents=True)
    (root / "README.md").write_text("# {{ team }} ({{stack}}) on {{ provider }}\n")
    (root / "src" / "{{ team }}" / "model.py").write_text("MODEL = '{{ model }}'\n")
    (root / "dot-github" / "ci.yml").write_text("run: mlplat policy check --stack {{ stack }}\n")
    (root / "logo.bin").write_bytes(b"\xff\x00{{ team }}")
    return root


def test_a_template_folder_is_rendered(tmp_path):
    template = make_template(tmp_path / "tpl")
    project = tmp_path / "p"
    result = run("init", "--dir", str(project), *LOCAL, "--no-input", "--from", str(template))
    assert code_of(result) == 0, result.output
    files = snapshot(project)
    assert files["README.md"] == b"# churn (churn-dev) on local\n"
    assert files["src/churn/model.py"] == b"MODEL = 'classifier'\n"
    assert files[".github/ci.yml"] == b"run: mlplat policy check --stack churn-dev\n"
    assert files["logo.bin"] == b"\xff\x00{{ team }}"  # binary files are copied as they are
    assert "train.py" not in files  # the company's starter replaces the built-in one


def test_a_template_in_a_git_repository_is_cloned(tmp_path):
    git = shutil.which("git")
    assert git, "git is needed to make the template repository"
    source = make_template(tmp_path / "src-tpl")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": "/usr/bin:/bin"}
    subprocess.run([git, "init", "-q", str(source)], check=True, env=env)
    subprocess.run([git, "-C", str(source), "add", "."], check=True, env=env)
    subprocess.run([git, "-C", str(source), "commit", "-qm", "template"], check=True, env=env)
    bare = tmp_path / "starter.git"
    subprocess.run([git, "clone", "-q", "--bare", str(source), str(bare)], check=True, env=env)
    project = tmp_path / "p"
    result = run("init", "--dir", str(project), *LOCAL, "--no-input", "--from", str(bare))
    assert code_of(result) == 0, result.output
    files = snapshot(project)
    assert files["src/churn/model.py"] == b"MODEL = 'classifier'\n" and not any(".git/" in f for f in files)
    missing = run("init", "--dir", str(tmp_path / "q"), *LOCAL, "--no-input", "--from", str(tmp_path / "nope.git"))
    assert code_of(missing) == 2 and missing.exception.where == "--from"
    unreachable = run("init", "--dir", str(tmp_path / "q"), *LOCAL, "--no-input", "--from",
                      (tmp_path / "gone.git").as_uri())
    assert code_of(unreachable) == 9 and "git clone" in unreachable.exception.message
    assert not (tmp_path / "q").exists()


def test_template_problems_are_refused_before_anything_is_written(tmp_path):
    template = make_template(tmp_path / "tpl")
    (template / "notes.md").write_text("ok\nteam {{ tem }}\n")
    project = tmp_path / "p"
    result = run("init", "--dir", str(project), *LOCAL, "--no-input", "--from", str(template))
    assert code_of(result) == 3 and result.exception.where == "notes.md:2" and "{{ team }}" in result.exception.hint
    (template / "notes.md").unlink()
    (template / "stacks").mkdir()
    (template / "stacks" / "Pulumi.{{ stack }}.yaml").write_text("config: {}\n")
    clash = run("init", "--dir", str(project), *LOCAL, "--no-input", "--from", str(template))
    assert code_of(clash) == 3 and "generates" in clash.exception.message
    assert not project.exists()


def test_render_is_plain_substitution():
    assert ti.render("{{team}}-{{ stack }} {x} {{ x }}x", {"team": "a", "stack": "a-dev", "x": "{{ team }}"},
                     where="f") == "a-a-dev {x} {{ team }}x"
