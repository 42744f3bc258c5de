"""`mlplat init`: a new team's stack file and starter project, checked before anything is written.

The stack document is built from the answers, then validated through the same code path as
``mlplat stack validate`` (:func:`mlplat.stack.parse_stack`) and the policies that read a stack
file's own settings (those of ``mlplat policy check`` that need no program), so a file `init`
writes always validates and passes them. Each answer is also checked on its own, with the stack
models' rules, so an interactive session can ask again right away.

Nothing is written until every target has been checked: a file that already exists makes `init`
refuse (:class:`~mlplat.errors.Conflict`, exit 5) and write nothing at all.

Starter files come from a template: the built-in one (``mlplat/templates/starter``) or a company
template (``--from``: a folder, or a git repository cloned with ``--depth 1``). Paths and contents
may use placeholders, ``{{ team }}``, ``{{ environment }}``, ``{{ stack }}``, ``{{ provider }}``,
``{{ region }}``, ``{{ owner }}``, ``{{ cost_center }}``, ``{{ model }}``, ``{{ label }}``,
``{{ holdout }}``, ``{{ pip_extras }}``: plain substitution, no code runs. A name starting with
``dot-`` is written with a leading ``.`` (``dot-gitignore`` → ``.gitignore``), so templates can
ship as package data.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlplat.errors import Conflict, ExitCode, ExternalError, MlplatError, StackError
from mlplat.stack import (
    MODEL_NAME,
    MODEL_NAME_RULE,
    SLUG,
    STACK_NAME_RULE,
    CostTags,
    Governance,
    RiskTier,
    parse_stack,
    provider_settings,
)

PROVIDERS = ("local", "aws", "gcp", "azure")
BUILTIN_TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "starter"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
ACCESS_MODES = ("os-user", "trusted-local", "aws-iam", "oidc")
CLOUD_PROVIDERS = ("aws", "gcp", "azure")

# What each provider's stack starts with: a serving instance type the default spend policy allows
# (or the cloud's own where no program checks it yet) and its list price per hour.
SERVING_DEFAULTS: dict[str, tuple[str, float]] = {
    "local": ("local.cpu", 0.05), "aws": ("ml.m5.large", 0.115),
    "gcp": ("n1-standard-4", 0.19), "azure": ("Standard_DS3_v2", 0.293),
}
DEFAULT_REGION = {"aws": "eu-west-1", "gcp": "europe-west4", "azure": "westeurope"}


class AnswerError(MlplatError):
    """One answer to `mlplat init` is not acceptable: ``where`` names the option (``--team``). Exit 2,
    a bad command line, like any option click refuses."""

    exit_code = ExitCode.USAGE


class TemplateError(StackError):
    """A template cannot be used (unknown placeholder, a path leaving the project, a link): exit 3."""


@dataclass
class Answers:
    """What `mlplat init` asks for. ``region`` is the AWS/GCP region or the Azure location."""

    team: str
    environment: str
    provider: str = "local"
    owner: str = ""
    cost_center: str = ""
    approvers: list[str] = field(default_factory=list)
    risk_tier: str = "low"
    required_approvals: int | None = None
    region: str | None = None
    account_id: str | None = None
    gcp_project: str | None = None
    billing_account: str | None = None
    subscription_id: str | None = None
    resource_group: str | None = None
    access: str | None = None
    admins: list[str] = field(default_factory=list)
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    model: str = "classifier"
    budget: float = 500.0
    holdout: str = "data/holdout.csv"
    label: str = "label"

    @property
    def stack(self) -> str:
        return f"{self.team}-{self.environment}"

    @property
    def approvals_needed(self) -> int:
        if self.required_approvals is not None:
            return self.required_approvals
        return 2 if self.risk_tier == RiskTier.critical.value else 1

    @property
    def access_mode(self) -> str:
        if self.access:
            return self.access
        return {"aws": "aws-iam", "gcp": "oidc", "azure": "oidc"}.get(self.provider, "os-user")


# --- one answer at a time (the stack models' rules) ------------------------------------------


def _pydantic_message(exc: ValidationError) -> str:
    return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())


def check_slug(value: str, what: str, option: str) -> str:
    value = value.strip()
    if not re.fullmatch(SLUG, value):
        raise AnswerError(f"{what} {value!r} is not a valid name", where=option,
                          hint=f"use {STACK_NAME_RULE}, e.g. 'churn'")
    return value


def check_team_environment(team: str, environment: str) -> None:
    """The stack's name, ``<team>-<environment>``, must be a slug too (at most 63 characters)."""
    stack = f"{team}-{environment}"
    if not re.fullmatch(SLUG, stack):
        raise AnswerError(f"the stack name {stack!r} (team-environment) is longer than 63 characters",
                          where="--team/--env", hint="shorten the team or environment name")


def check_provider(value: str) -> str:
    from mlplat import providers

    value = value.strip()
    known = providers.names()
    if value not in known:
        raise AnswerError(f"unknown provider {value!r}", where="--provider",
                          hint=f"choose one of: {', '.join(known)}")
    return value


def check_owner(value: str) -> str:
    value = value.strip()
    try:
        CostTags.model_validate({"team": "x", "cost-center": "x", "environment": "x", "owner": value})
    except ValidationError as exc:
        raise AnswerError(f"owner {value!r}: {_pydantic_message(exc)}", where="--owner",
                          hint="give the owning contact, an e-mail or group such as churn-leads@example.com") from None
    return value


def check_cost_center(value: str) -> str:
    value = value.strip()
    if not value:
        raise AnswerError("the cost center is empty", where="--cost-center",
                          hint="give the finance cost center, e.g. CC-1042")
    return value


def check_risk_tier(value: str) -> str:
    value = value.strip()
    tiers = [t.value for t in RiskTier]
    if value not in tiers:
        raise AnswerError(f"unknown risk tier {value!r}", where="--risk-tier", hint=f"choose one of: {', '.join(tiers)}")
    return value


def split_list(text: str) -> list[str]:
    return [item.strip() for item in re.split(r"[,\s]+", text) if item.strip()]


def check_approvers(approvers: list[str], *, owner: str, risk_tier: str, required: int | None) -> list[str]:
    """``approvers`` if they can approve the team's models under ``risk_tier``.

    The count is the :class:`~mlplat.stack.Governance` model's own rule. The owner is refused
    among them: the owner's team authors the models, and the four-eyes rule has each version
    approved by someone other than its author, so an owner listed as approver is an approval
    that can never count."""
    approvers = list(dict.fromkeys(a.strip() for a in approvers if a.strip()))
    answers = Answers(team="x", environment="x", risk_tier=risk_tier, required_approvals=required)
    try:
        Governance.model_validate({"riskTier": risk_tier, "approvers": approvers,
                                   "requiredApprovals": answers.approvals_needed})
    except ValidationError as exc:
        raise AnswerError(f"approvers {', '.join(approvers) or '(none)'}: {_pydantic_message(exc)}",
                          where="--approver",
                          hint=f"a {risk_tier} team needs {answers.approvals_needed} distinct approver(s): repeat "
                               "--approver (or answer with a comma-separated list), or pass --required-approvals"
                          ) from None
    if owner and owner.lower() in {a.lower() for a in approvers}:
        raise AnswerError(f"the owner {owner} is also listed as an approver", where="--approver",
                          hint="under the four-eyes rule a version is approved by someone other than its author, and "
                               "the owner's team authors the models: name approvers outside the team (e.g. "
                               "risk-office@example.com)")
    return approvers


def check_model(value: str) -> str:
    value = value.strip()
    if not re.fullmatch(MODEL_NAME, value):
        raise AnswerError(f"model name {value!r} is not valid", where="--model", hint=f"use {MODEL_NAME_RULE}")
    return value


def provider_document(answers: Answers) -> dict[str, Any]:
    """The ``mlplat:provider`` mapping, checked by the provider's own settings model."""
    kind = answers.provider
    document: dict[str, Any] = {"kind": kind}
    if kind == "aws":
        document.update(region=answers.region, accountId=answers.account_id)
    elif kind == "gcp":
        document.update(project=answers.gcp_project, region=answers.region, billingAccount=answers.billing_account)
    elif kind == "azure":
        document.update(subscriptionId=answers.subscription_id, resourceGroup=answers.resource_group,
                        location=answers.region)
    return {k: v for k, v in document.items() if v is not None}


PROVIDER_OPTIONS = {"region": "--region", "accountId": "--account-id", "project": "--gcp-project",
                    "billingAccount": "--billing-account",
                    "location": "--region", "subscriptionId": "--subscription-id", "resourceGroup": "--resource-group"}


def check_provider_settings(answers: Answers, *, ignore_missing: bool = False) -> None:
    """The provider's settings model over the answers so far; the first problem names its option.
    ``ignore_missing``: settings not answered yet are not a problem (an interactive session asks later)."""
    try:
        provider_settings(provider_document(answers))
    except ValidationError as exc:
        errors = [e for e in exc.errors() if not (ignore_missing and e["type"] == "missing")]
        if not errors:
            return
        err = errors[0]
        key = str(err["loc"][0]) if err["loc"] else "kind"
        option = PROVIDER_OPTIONS.get(key, "--provider")
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        raise AnswerError(f"{answers.provider} provider {key}: {err['msg']}{shown}", where=option,
                          hint=f"pass {option} with a valid value; `mlplat stack schema` describes it") from None


def provider_missing(answers: Answers) -> list[str]:
    """The options a provider needs that have no answer yet (AWS: the account id, which every call checks)."""
    needed = {"aws": [("region", "--region"), ("account_id", "--account-id")],
              "gcp": [("gcp_project", "--gcp-project"), ("region", "--region"),
                      ("billing_account", "--billing-account")],
              "azure": [("subscription_id", "--subscription-id"), ("resource_group", "--resource-group"),
                        ("region", "--region")]}.get(answers.provider, [])
    return [option for attr, option in needed if not getattr(answers, attr)]


def access_missing(answers: Answers) -> list[str]:
    missing = []
    if answers.provider in CLOUD_PROVIDERS and not answers.admins:
        missing.append("--admin")
    if answers.access_mode == "oidc":
        missing += [o for o, v in (("--oidc-issuer", answers.oidc_issuer), ("--oidc-audience", answers.oidc_audience))
                    if not v]
    return missing


# --- the stack document ------------------------------------------------------------------------


def stack_document(answers: Answers) -> dict[str, Any]:
    """The stack file's content (Pulumi stack config) for ``answers``."""
    instance_type, price = SERVING_DEFAULTS.get(answers.provider, SERVING_DEFAULTS["local"])
    config: dict[str, Any] = {}
    if answers.provider == "aws":
        config["aws:region"] = answers.region
    elif answers.provider == "gcp":
        config["gcp:project"], config["gcp:region"] = answers.gcp_project, answers.region
    elif answers.provider == "azure":
        config["azure-native:location"] = answers.region
    config.update({
        "mlplat:team": answers.team,
        "mlplat:environment": answers.environment,
        "mlplat:provider": provider_document(answers),
        "mlplat:tags": {"team": answers.team, "cost-center": answers.cost_center,
                        "environment": answers.environment, "owner": answers.owner},
        "mlplat:governance": {"riskTier": answers.risk_tier, "approvers": list(answers.approvers),
                              "requiredApprovals": answers.approvals_needed},
        "mlplat:gate": {"holdout": {"path": answers.holdout, "label": answers.label},
                        "thresholds": {"roc_auc": 0.9, "accuracy": 0.85}, "maxRegressionVsChampion": 0.02},
        "mlplat:serving": {"instanceType": instance_type, "pricePerHour": price,
                           "canary": {"steps": [10, 50, 100],
                                      "bakeSeconds": 60 if answers.provider == "local" else 300}},
        "mlplat:monitoring": {"schedule": "15m", "window": {"size": 1000, "minRows": 100},
                              "drift": {"psi": 0.2, "ksPValue": 0.01}},
        "mlplat:budget": {"monthlyUsd": int(answers.budget) if float(answers.budget).is_integer() else answers.budget},
        "mlplat:access": access_document(answers),
    })
    return {"config": config}


def access_document(answers: Answers) -> dict[str, Any]:
    mode = answers.access_mode
    document: dict[str, Any] = {"mode": mode}
    if mode == "aws-iam":
        document["aws"] = {"region": answers.region or DEFAULT_REGION["aws"]}
    elif mode == "oidc":
        document["oidc"] = {"issuer": answers.oidc_issuer, "audience": answers.oidc_audience}
    if answers.admins:
        document["roles"] = {"admin": list(answers.admins)}
    return document


HEADER = """\
# Team {team}, environment {environment}: written by `mlplat init` ({provider} provider).
# `mlplat stack validate --stack {stack}` checks it; `mlplat stack schema` lists every key.
"""
ACCESS_NOTE = {
    "trusted-local": "  # trusted-local: commands believe MLPLAT_USER (one machine, tutorials and demos only).\n",
    "os-user": "  # os-user: each command acts as the operating-system user running it.\n",
}


def stack_text(answers: Answers) -> str:
    header = HEADER.format(team=answers.team, environment=answers.environment, provider=answers.provider,
                           stack=answers.stack)
    body = yaml.safe_dump(stack_document(answers), sort_keys=False, default_flow_style=None, width=110)
    note = ACCESS_NOTE.get(answers.access_mode, "")
    if note:
        body = body.replace("  mlplat:access:", note + "  mlplat:access:", 1)
    return header + body


def validate(answers: Answers, project_dir: Path, stacks_dir: Path) -> str:
    """The stack file's text, validated as ``mlplat stack validate`` validates a file on disk and
    checked by the policies that read the stack file's settings. Raises :class:`StackError`."""
    from mlplat.services.policy_check import SETTINGS_POLICIES, check_resources

    missing = provider_missing(answers) + access_missing(answers)
    if missing:
        raise AnswerError(f"a {answers.provider} stack needs {', '.join(missing)}", where=", ".join(missing),
                          hint="pass them as options, or run `mlplat init` without --no-input to be asked")
    check_provider_settings(answers)
    text = stack_text(answers)
    path = stacks_dir / f"Pulumi.{answers.stack}.yaml"
    spec = parse_stack(text, path=path, name=answers.stack, project_dir=project_dir)
    result = check_resources(spec, [])
    blocking = [f for f in result.mandatory if f.policy in SETTINGS_POLICIES]
    if blocking:
        raise AnswerError("; ".join(f"{f.policy}: {f.message}" for f in blocking), where="--access/--admin",
                          hint=blocking[0].remediation)
    return text


# --- templates -------------------------------------------------------------------------------


def placeholders(answers: Answers) -> dict[str, str]:
    extras = {"aws": "aws,policy", "gcp": "gcp,policy", "azure": "azure,policy"}.get(answers.provider, "policy")
    return {"team": answers.team, "environment": answers.environment, "stack": answers.stack,
            "provider": answers.provider, "region": answers.region or "", "owner": answers.owner,
            "cost_center": answers.cost_center, "model": answers.model, "label": answers.label,
            "holdout": answers.holdout, "pip_extras": extras}


def render(text: str, values: Mapping[str, str], *, where: str) -> str:
    """``text`` with every ``{{ name }}`` replaced; an unknown name is refused with its line."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            line = text.count("\n", 0, match.start()) + 1
            raise TemplateError(f"unknown placeholder {match.group(0)!r}", where=f"{where}:{line}",
                              hint=f"templates may use: {', '.join('{{ ' + k + ' }}' for k in sorted(values))}")
        return values[name]

    return PLACEHOLDER.sub(substitute, text)


def _target_name(part: str) -> str:
    return "." + part[len("dot-"):] if part.startswith("dot-") else part


def template_files(root: Path, values: Mapping[str, str]) -> dict[str, bytes]:
    """Relative target path → content of every file under ``root`` (``.git`` left out), rendered."""
    out: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if ".git" in rel.parts or path.is_dir() or "__pycache__" in rel.parts or path.suffix == ".pyc":
            continue
        if path.is_symlink():
            raise TemplateError("a template may not contain links", where=str(rel),
                              hint="replace the link with the file it points to")
        target = "/".join(_target_name(render(part, values, where=str(rel))) for part in rel.parts)
        if not target or target.startswith("/") or any(p in ("", ".", "..") for p in target.split("/")):
            raise TemplateError(f"template path renders to {target!r}, outside the project", where=str(rel),
                              hint="template paths must stay inside the new project")
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            out[target] = data  # binary files are copied as they are
            continue
        out[target] = render(text, values, where=str(rel)).encode("utf-8")
    return out


def is_git_source(source: str) -> bool:
    if re.match(r"^(https?|ssh|git|file)://", source) or re.match(r"^[\w.-]+@[\w.-]+:", source):
        return True
    path = Path(source)
    return path.is_dir() and ((path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir()))


def fetch_template(source: str, workdir: Path) -> Path:
    """A local folder holding the template ``source`` names: the folder itself, or a shallow clone."""
    if not is_git_source(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise AnswerError(f"template {source!r} is neither a folder nor a git repository", where="--from",
                              hint="give a folder, a git URL (https://, ssh://, git@host:repo) or a local repository")
        return path
    url = source if "://" in source or re.match(r"^[\w.-]+@", source) else Path(source).resolve().as_uri()
    target = workdir / "template"
    git = shutil.which("git")
    if git is None:
        from mlplat.errors import ToolMissing

        raise ToolMissing("git is not installed: a template in a git repository cannot be cloned", where="--from",
                          hint="install git, or pass a template folder")
    result = subprocess.run([git, "clone", "--quiet", "--depth", "1", url, str(target)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    if result.returncode != 0:
        raise ExternalError(f"git clone of {source} failed: {result.stderr.strip()[-500:]}", where="--from",
                            hint="check the URL and your access to the repository")
    return target


# --- the plan ----------------------------------------------------------------------------------


@dataclass
class Plan:
    project_dir: Path
    files: dict[str, bytes]  # relative path → content, in writing order

    def targets(self) -> Iterator[Path]:
        for rel in self.files:
            yield self.project_dir / rel


PULUMI_YAML = """\
name: mlplat
description: Team {team}'s MLOps platform, declared per environment in stacks/.
runtime:
  name: python
  options:
    toolchain: pip
    virtualenv: .venv
stackConfigDir: stacks
"""


def existing_stacks_dir(project_dir: Path) -> Path | None:
    """The stack directory of the project already at ``project_dir`` (None: no Pulumi.yaml there)."""
    from mlplat.stack import stacks_dir

    if not (project_dir / "Pulumi.yaml").is_file():
        return None
    return stacks_dir(project_dir)


def plan(answers: Answers, project_dir: Path, *, template: str | None = None, stack_only: bool = False,
         starter_data: bool = True) -> Plan:
    """Every file `init` would write, validated; raises before anything is written."""
    project_dir = project_dir.resolve()
    existing = existing_stacks_dir(project_dir)
    stacks = existing if existing is not None else project_dir / "stacks"
    text = validate(answers, project_dir, stacks)
    files: dict[str, bytes] = {}
    if existing is None:
        files["Pulumi.yaml"] = PULUMI_YAML.format(team=answers.team).encode()
    stack_rel = (stacks / f"Pulumi.{answers.stack}.yaml").relative_to(project_dir).as_posix()
    files[stack_rel] = text.encode()
    if not stack_only:
        values = placeholders(answers)
        with tempfile.TemporaryDirectory(prefix="mlplat-init-") as tmp:
            root = fetch_template(template, Path(tmp)) if template else BUILTIN_TEMPLATE
            rendered = template_files(root, values)
        for rel, content in rendered.items():
            if rel in files:
                raise TemplateError(f"the template writes {rel}, which `mlplat init` generates", where=f"--from {rel}",
                                  hint="remove that file from the template")
            files[rel] = content
        if template is None and starter_data:
            files.update(starter_datasets(answers))
    return Plan(project_dir, files)


def starter_datasets(answers: Answers) -> dict[str, bytes]:
    """The starter's training and held-out sets: scikit-learn's breast cancer dataset (it ships with
    scikit-learn, no download), split 75/25 with a fixed seed, as CSV."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [re.sub(r"\W+", "_", str(c)).strip("_") for c in frame.columns]
    frame = frame.rename(columns={"target": answers.label})
    train, holdout = train_test_split(frame, test_size=0.25, random_state=7, stratify=frame[answers.label])
    holdout_rel = answers.holdout
    train_rel = str(Path(holdout_rel).with_name("train.csv"))
    return {train_rel: train.to_csv(index=False).encode(), holdout_rel: holdout.to_csv(index=False).encode()}


def conflicts(planned: Plan) -> list[str]:
    """The planned files that already exist (or whose folder is a file)."""
    found = []
    for rel in planned.files:
        target = planned.project_dir / rel
        if target.exists() or target.is_symlink() or any(p.is_file() for p in target.parents
                                                         if p.is_relative_to(planned.project_dir)):
            found.append(rel)
    return found


def write(planned: Plan) -> list[str]:
    """Write every planned file, refusing (nothing written) when any already exists."""
    existing = conflicts(planned)
    if existing:
        raise Conflict(f"{len(existing)} file(s) already exist in {planned.project_dir}: {', '.join(existing)}; "
                       "nothing was written", where=str(planned.project_dir),
                       hint="run `mlplat init` in an empty folder (--dir), remove those files, or add only the stack "
                            "file to an existing project with --stack-only", existing=existing)
    written: list[str] = []
    for rel, content in planned.files.items():
        target = planned.project_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as handle:  # never replaces a file that appeared meanwhile
            handle.write(content)
        if rel.endswith(".sh"):
            target.chmod(0o755)
        written.append(rel)
    return written
