"""`mlplat init`: a new team's stack file and starter project in one command.

Interactive (a missing answer is asked for, and a bad one asked again) or, with ``--no-input``
(CI), from options only: a missing or bad option is one error naming it, and nothing is written.
The rules live in :mod:`mlplat.services.team_init`.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mlplat.cli.options import emit_json, json_option, pass_ctx

RISK_TIERS = ("low", "critical")


def _ask(text: str, check: Callable[[str], Any], default: str | None = None) -> Any:
    """Prompt until ``check`` accepts the answer (its error is shown, then the question again)."""
    from mlplat.services.team_init import AnswerError

    def convert(value: str) -> Any:
        try:
            return check(value)
        except AnswerError as exc:
            raise click.BadParameter(f"{exc.message}; {exc.hint}" if exc.hint else exc.message) from None

    return click.prompt(text, default=default, value_proc=convert)


@click.command("init")
@click.option("--team", help="Team name: a lowercase slug (letters, digits, '-').")
@click.option("--env", "environment", help="Environment name, e.g. dev, staging, production. The stack is <team>-<env>.")
@click.option("--provider", help="Where the platform runs: local (this machine), aws, gcp or azure.")
@click.option("--region", help="aws/gcp: the region; azure: the location (e.g. eu-west-1, europe-west4, westeurope).")
@click.option("--account-id", help="aws: the 12-digit account id.")
@click.option("--gcp-project", help="gcp: the project id.")
@click.option("--billing-account", help="gcp: the billing account the team's budget watches (XXXXXX-XXXXXX-XXXXXX).")
@click.option("--subscription-id", help="azure: the subscription id (a GUID).")
@click.option("--resource-group", help="azure: the resource group of the workspace.")
@click.option("--owner", help="Owning contact of the team's resources (cost tag): an e-mail or group.")
@click.option("--cost-center", help="Finance cost center (cost tag), e.g. CC-1042.")
@click.option("--risk-tier", help="Default risk tier of the team's models: low (promoted automatically) or "
              "critical (production promotions wait for approvers).")
@click.option("--approver", "approvers", multiple=True,
              help="Who may approve production promotions of critical models (repeatable; never the owner).")
@click.option("--required-approvals", type=click.IntRange(1, 10),
              help="Approvals a critical model needs (default: 2 for a critical team, else 1).")
@click.option("--access", type=click.Choice(["os-user", "trusted-local", "aws-iam", "oidc"]),
              help="How callers are identified (default: os-user locally, aws-iam on aws, oidc on gcp/azure). "
                   "trusted-local believes MLPLAT_USER: one machine, tutorials and demos only.")
@click.option("--admin", "admins", multiple=True,
              help="Cloud stacks: who may apply governance and roles (an IdP group as group:NAME, a principal, an "
                   "IAM role ARN); repeatable.")
@click.option("--oidc-issuer", help="oidc access: the identity provider's issuer URL.")
@click.option("--oidc-audience", help="oidc access: the audience of the tokens.")
@click.option("--model", default="classifier", show_default=True, help="Name of the starter model.")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=500.0, show_default=True,
              help="Monthly budget of the team in USD.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder of the new project (created if missing).")
@click.option("--from", "template", metavar="TEMPLATE",
              help="A company template instead of the built-in starter: a folder, a git URL or a local git "
                   "repository (cloned with --depth 1). Files may use {{ team }}, {{ stack }}, ... placeholders.")
@click.option("--stack-only", is_flag=True,
              help="Write only the stack file (and Pulumi.yaml if the folder has none): a team added to an "
                   "existing project.")
@click.option("--no-input", "--yes", "-y", "no_input", is_flag=True,
              help="Never prompt (CI): every answer comes from options; a missing or bad one is an error.")
@json_option
@pass_ctx
def init(ctx, team: str | None, environment: str | None, provider: str | None, region: str | None,
         account_id: str | None, gcp_project: str | None, billing_account: str | None,
         subscription_id: str | None, resource_group: str | None,
         owner: str | None, cost_center: str | None, risk_tier: str | None, approvers: tuple[str, ...],
         required_approvals: int | None, access: str | None, admins: tuple[str, ...], oidc_issuer: str | None,
         oidc_audience: str | None, model: str, budget: float, directory: Path, template: str | None,
         stack_only: bool, no_input: bool, as_json: bool) -> None:
    """Create a new team's stack file (stacks/Pulumi.<team>-<env>.yaml) and a starter project.

    \b
    The stack file validates (`mlplat stack validate`) and passes the policy pack
    (`mlplat policy check`); the starter project has a train script, its data and held-out
    set, a .gitignore, a CI workflow running `mlplat policy check`, and a README.
    A file that already exists is never replaced: init refuses (exit 5) and writes nothing.
    """
    from mlplat.services import team_init as ti

    interactive = not no_input

    def value(given: str | None, check: Callable[[str], Any], question: str, default: str | None = None,
              option: str = "", suggest: str | None = None) -> Any:
        """The option's value, else the answer to ``question`` (``suggest`` offered), else ``default``."""
        if given is not None:
            return check(given)  # an option's bad value is an error, never a question
        if interactive:
            return _ask(question, check, default or suggest)
        if default is not None:
            return check(default)
        raise ti.AnswerError(f"{option} is required with --no-input", where=option,
                             hint=f"pass {option}, or run without --no-input to be asked")

    team_v = value(team, lambda v: ti.check_slug(v, "team", "--team"), "Team name (lowercase slug)", option="--team")
    env_v = value(environment, lambda v: ti.check_slug(v, "environment", "--env"), "Environment", "dev",
                  option="--env")
    ti.check_team_environment(team_v, env_v)
    provider_v = value(provider, ti.check_provider, "Provider (local, aws, gcp, azure)", "local",
                       option="--provider")
    answers = ti.Answers(team=team_v, environment=env_v, provider=provider_v, access=access, admins=list(admins),
                         oidc_issuer=oidc_issuer, oidc_audience=oidc_audience, budget=budget,
                         model=ti.check_model(model), required_approvals=required_approvals,
                         region=region, account_id=account_id, gcp_project=gcp_project,
                         billing_account=billing_account,
                         subscription_id=subscription_id, resource_group=resource_group)
    if interactive:
        _ask_provider(answers)
    answers.owner = value(owner, ti.check_owner, "Owner (e-mail or group)", option="--owner",
                          suggest=f"{team_v}-leads@example.com")
    answers.cost_center = value(cost_center, ti.check_cost_center, "Cost center", option="--cost-center")
    answers.risk_tier = value(risk_tier, ti.check_risk_tier, "Risk tier of the team's models (low, critical)", "low",
                              option="--risk-tier")

    def check_approvers(text: str | list[str]) -> list[str]:
        items = ti.split_list(text) if isinstance(text, str) else text
        return ti.check_approvers(items, owner=answers.owner, risk_tier=answers.risk_tier,
                                  required=answers.required_approvals)

    if approvers or not interactive:
        answers.approvers = check_approvers(list(approvers))
    else:
        default = "risk-office@example.com" if answers.approvals_needed < 2 else \
            "risk-office@example.com, head-of-ds@example.com"
        answers.approvers = _ask("Approvers of production promotions (comma-separated)", check_approvers, default)
    if interactive:
        _ask_access(answers)

    planned = ti.plan(answers, directory, template=template, stack_only=stack_only)
    written = ti.write(planned)
    if as_json:
        emit_json({"stack": answers.stack, "project": str(planned.project_dir), "written": written})
        return
    ctx.console.print(f"Created team [bold]{answers.team}[/], stack [bold]{answers.stack}[/] "
                      f"({answers.provider}) in {planned.project_dir}:", highlight=False)
    for rel in written:
        ctx.console.print(f"  + {rel}", markup=False, highlight=False)
    where = "" if planned.project_dir == Path.cwd().resolve() else f"cd {directory} && "
    ctx.console.print(f"Next: {where}mlplat stack validate --stack {answers.stack} && "
                      f"mlplat policy check --stack {answers.stack} && mlplat up --stack {answers.stack}",
                      markup=False, highlight=False)


def _ask_provider(answers: Any) -> None:
    """Ask for what the provider needs, re-asking until its settings model accepts the answers."""
    from mlplat.services import team_init as ti

    questions = {"--region": ("region", "Region" if answers.provider != "azure" else "Location"),
                 "--account-id": ("account_id", "AWS account id (12 digits)"),
                 "--gcp-project": ("gcp_project", "GCP project id"),
                 "--billing-account": ("billing_account", "GCP billing account"),
                 "--subscription-id": ("subscription_id", "Azure subscription id"),
                 "--resource-group": ("resource_group", "Azure resource group")}
    ti.check_provider_settings(answers, ignore_missing=True)  # what options gave is never asked again
    for option in ti.provider_missing(answers):
        attr, question = questions[option]

        def check(text: str, attr: str = attr, option: str = option) -> str:
            setattr(answers, attr, text.strip())
            try:
                ti.check_provider_settings(answers, ignore_missing=True)
            except ti.AnswerError as exc:
                setattr(answers, attr, None)
                if exc.where == option:
                    raise
            return text.strip()

        default = ti.DEFAULT_REGION.get(answers.provider) if attr == "region" else None
        setattr(answers, attr, _ask(question, check, default))


def _ask_access(answers: Any) -> None:
    from mlplat.services import team_init as ti

    for option in ti.access_missing(answers):
        if option == "--admin":
            answers.admins = _ask("Admins (group:NAME, principals or IAM role ARNs, comma-separated)",
                                  lambda t: ti.split_list(t) or _empty("--admin"))
        elif option == "--oidc-issuer":
            answers.oidc_issuer = _ask("OIDC issuer URL", lambda t: t.strip() or _empty("--oidc-issuer"))
        elif option == "--oidc-audience":
            answers.oidc_audience = _ask("OIDC audience", lambda t: t.strip() or _empty("--oidc-audience"))


def _empty(option: str) -> Any:
    from mlplat.services.team_init import AnswerError

    raise AnswerError("an answer is needed", where=option)
