"""`mlplat models list | show | evaluate | promote | approve | reject | share | register-image`."""
from __future__ import annotations

import time

import click

from mlplat.cli.completion import complete_models, complete_versions
from mlplat.cli.options import VERSION, emit_json, env_option, json_option, pass_ctx, stack_option, wide_option
from mlplat.formatting import Column, print_table, when

# The platform API and the services load the stack model (pydantic) on import: each command imports
# them when it runs, so `mlplat models --help` stays light.

STAGE_COLOUR = {"dev": "white", "staging": "yellow", "production": "green", "archived": "dim"}


@click.group()
def models() -> None:
    """Registered models: list, show, promote, approve, reject, share, register-image."""


@models.command("list")
@stack_option
@env_option
@wide_option
@json_option
@pass_ctx
def list_models(ctx, stack: str, environment: str | None, wide: bool, as_json: bool) -> None:
    """Every registered version with its stage."""
    from mlplat.api.plane import plane_for

    spec = ctx.stack(stack)
    doc = plane_for(spec, ctx).call("models.list", environment=environment)
    environment, rows = doc["environment"], doc["versions"]
    if as_json:
        emit_json({"environment": environment, "versions": rows})
        return
    if not rows:
        ctx.console.print("No registered models yet. Register one with run.log_model(model, name=...) "
                          "inside mlplat.start_run.")
        return
    cells = []
    for r in rows:
        colour = STAGE_COLOUR.get(r["stage"], "white")
        cells.append([r["model"], str(r["version"]), f"[{colour}]{r['stage']}[/]", r["risk_tier"], when(r["created_at"]),
                      r["author"], r["run_id"], r["framework"], r["task"] or "-",
                      r["artifact_digest"] if wide else r["artifact_digest"][:12]])
    print_table(ctx.console, LIST_COLUMNS, cells, wide=wide, title=f"models in '{environment}' (stack {spec.name})")


# What a reader acts on first (name, version, stage) always shows; the run id and digest whole or not at all.
CHECK_COLUMNS = (Column("check"), Column("value", justify="right"), Column("limit", justify="right"),
                 Column("margin", 1, justify="right"), Column("ok"))
LIST_COLUMNS = (Column("model"), Column("version"), Column("stage"), Column("risk", 1), Column("registered", 2),
                Column("author", 3), Column("run", 4), Column("framework", 5), Column("task", 6), Column("digest", 7))
DEPLOYMENT_COLUMNS = (Column("environment"), Column("variant"), Column("from", 1), Column("until", 1),
                      Column("instance type", 2), Column("instances", 3, justify="right"),
                      Column("price/hour", 2, justify="right"), Column("id", 4, justify="right"))


@models.command("show")
@click.argument("name", shell_complete=complete_models)
@click.argument("version", type=VERSION, required=False, shell_complete=complete_versions)
@stack_option
@env_option
@wide_option
@json_option
@pass_ctx
def show(ctx, name: str, version: int | None, stack: str, environment: str | None, wide: bool, as_json: bool) -> None:
    """Stage, lineage, gate reports, approvals, promotions and deployments of a model (latest version by default)."""
    from mlplat.api.plane import plane_for

    spec = ctx.stack(stack)
    plane = plane_for(spec, ctx)
    if version is None:
        doc = plane.call("models.show_latest", name=name, environment=environment)
    else:
        doc = plane.call("models.show", name=name, version=version, environment=environment)
    if as_json:
        emit_json(doc)
        return
    _print_show(ctx, doc, wide=wide)


def _print_show(ctx, doc: dict, *, wide: bool = False) -> None:
    c = ctx.console
    colour = STAGE_COLOUR.get(doc["stage"], "white")
    c.print(f"[bold]{doc['model']} version {doc['version']}[/]  [{colour}]{doc['stage']}[/] in '{doc['environment']}'"
            f"  ({doc['risk_tier']} risk; production version: {doc['production_version'] or 'none'})")
    for warning in doc["alias_warnings"]:
        c.print(f"[yellow]warning:[/] {warning}", highlight=False)
    lin = doc["lineage"] or {}
    code = lin.get("code") or {}
    c.print(f"author {doc['author']}, registered {when(doc['created_at'])}, run {doc['run_id']}", highlight=False)
    c.print(f"framework {doc['framework']}, task {doc['task'] or '-'}, artifact sha256 {doc['artifact_digest'][:16]} "
            f"({len(doc['files'])} files sealed)", highlight=False)
    if code.get("in_git"):
        c.print(f"code: commit {str(code.get('commit'))[:12]}{' (dirty)' if code.get('dirty') else ''}", highlight=False)
    env = lin.get("environment") or {}
    c.print(f"environment: Python {env.get('python')}, hash {str(env.get('hash'))[:12]}, "
            f"requirements: {', '.join(env.get('requirements') or [])}", highlight=False)
    if lin.get("datasets"):
        c.print("data: " + ", ".join(f"{k} sha256 {v['sha256'][:12]} ({v.get('rows')} rows)"
                                     for k, v in lin["datasets"].items()), highlight=False)
    if lin.get("features"):
        c.print("features: " + ", ".join(lin["features"]) + " (view@version read by the training run)", highlight=False)
    ref = lin.get("reference") or {}
    c.print(f"reference sample: {ref.get('rows', 0)} rows from {ref.get('source')}" if ref.get("reference") else
            f"reference sample: none ({ref.get('reason', '-')})", highlight=False)
    for g in doc["gate_reports"][-3:]:
        rep = g["report"]
        print_table(c, CHECK_COLUMNS,
                    [[check["check"], _num(check.get("value")), _num(check.get("limit")), _num(check.get("margin")),
                      "[green]yes[/]" if check["passed"] else "[red]no[/]"] for check in rep["checks"]], wide=wide,
                    title=f"gate {'passed' if g['passed'] else 'FAILED'} in '{g['environment']}' {when(g['created_at'])} "
                          f"(report {g['digest'][:12]}, holdout {rep['holdout']['rows']} rows)")
        c.print("metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(rep["metrics"].items())), highlight=False)
    ap = doc["approvals"]
    c.print(f"approvals: {ap['state']} ({ap['approvals']}/{ap['required']} required)", highlight=False)
    for d in ap["decisions"]:
        c.print(f"  {d['decision']} by {d['approver']} {when(d['created_at'])}: {d['reason']}"
                + ("" if d["valid"] else "  [dim](void: artifact or gate report changed)[/]"), highlight=False)
    for p in doc["promotions"][-5:]:
        steps = ", ".join(f"{k}:{v.get('status')}" for k, v in p["steps"].items())
        c.print(f"promotion #{p['id']} to {p['target']}: {p['state']} ({steps})"
                + (f"  {p['error']}" if p.get("error") else ""), highlight=False)
    if doc["deployments"]:
        rows = [[d["environment"], d["variant"], when(d["started_at"]), when(d["ended_at"]) if d["ended_at"] else "serving now",
                 d.get("instance_type") or "-", str(d.get("instances") or "-"),
                 "-" if d.get("price_per_hour") is None else f"${d['price_per_hour']:,.4f}", str(d["id"])]
                for d in doc["deployments"]]
        print_table(c, DEPLOYMENT_COLUMNS, rows, wide=wide, title="deployments")
    else:
        c.print("deployments: none", highlight=False)


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


@models.command("evaluate")
@click.argument("name", shell_complete=complete_models)
@click.argument("version", type=VERSION, shell_complete=complete_versions)
@stack_option
@env_option
@json_option
@pass_ctx
def evaluate(ctx, name: str, version: int, stack: str, environment: str | None, as_json: bool) -> None:
    """The evaluation gate alone on NAME VERSION (held-out set, thresholds, champion); exit 1 when it fails.

    The report is stored and audited as the promotion's gate step stores it (a pipeline's evaluate step)."""
    from mlplat.api.plane import plane_for
    from mlplat.errors import CheckFailed

    spec = ctx.stack(stack)
    report = plane_for(spec, ctx).call("models.evaluate", name=name, version=version, environment=environment)
    failed = [c["check"] for c in report.get("checks") or [] if not c.get("passed")]
    if as_json:
        emit_json(report)
    elif report["passed"]:
        ctx.console.print(f"[bold green]{name} version {version} passed the evaluation gate[/]")
    if not report["passed"]:
        raise CheckFailed(f"{name} version {version} failed the evaluation gate ({'; '.join(failed)})",
                          hint="train a better model, or change mlplat:gate in the stack if the thresholds are wrong")


@models.command("promote")
@click.argument("name", shell_complete=complete_models)
@click.argument("version", type=VERSION, shell_complete=complete_versions)
@click.option("--to", "target", type=click.Choice(["staging", "production"]), required=True,
              help="Target stage.")
@stack_option
@env_option
@json_option
@pass_ctx
def promote(ctx, name: str, version: int, target: str, stack: str, environment: str | None, as_json: bool) -> None:
    """Gate -> (approvals) -> package -> staging endpoint -> integration tests -> stage change.

    Rerunning after an interruption resumes where it stopped."""
    from mlplat.api.plane import plane_for

    spec = ctx.stack(stack)
    if not as_json:
        ctx.console.print(f"Promoting [bold]{name}[/] version {version} to [bold]{target}[/] "
                          f"in '{environment or spec.environment}'")
    t0 = time.perf_counter()
    result = plane_for(spec, ctx).call("models.promote", name=name, version=version, target=target,
                                       environment=environment, progress=not as_json)
    if as_json:
        emit_json(result | {"seconds": round(time.perf_counter() - t0, 3)})
    else:
        verb = "is now" if result["changed"] else "was already"
        ctx.console.print(f"[bold green]{name} version {version} {verb} in {result['stage']}[/] "
                          f"({time.perf_counter() - t0:.1f}s)")


@models.command("share")
@click.argument("name", shell_complete=complete_models)
@click.argument("version", type=VERSION, shell_complete=complete_versions)
@click.option("--registry", default=None,
              help="The registry shared across teams (default: the stack's, e.g. mlplat:provider.registry on Azure).")
@stack_option
@json_option
@pass_ctx
def share(ctx, name: str, version: int, registry: str | None, stack: str, as_json: bool) -> None:
    """Share the production version NAME VERSION with other teams: a copy in the shared registry, lineage kept.

    Only the production version of the stack's environment (approved, for critical models) is shared."""
    from mlplat.api.plane import plane_for

    spec = ctx.stack(stack)
    result = plane_for(spec, ctx).call("models.share", name=name, version=version, registry=registry)
    if as_json:
        emit_json(result)
    else:
        ctx.console.print(f"[bold green]{name} version {version} is shared[/] as {result['shared_name']} version "
                          f"{result['shared_version']} in registry {result['registry']}", highlight=False)


@models.command("register-image")
@click.argument("name")
@click.option("--image", required=True, help="The OCI image (as podman names it in the platform's container storage).")
@click.option("--protocol", type=click.Choice(["mlflow", "v2"]), default="mlflow", show_default=True,
              help="mlflow: POST /invocations, ready on GET /ping; v2: POST /v2/models/<model>/infer, "
                   "ready on GET /v2/health/ready (Open Inference Protocol).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="The port the image always listens on (default: it listens on $PORT, a free port given to it).")
@click.option("--v2-model", default=None, help="The model name in the image's /v2 routes (default: NAME).")
@click.option("--holdout", default=None, help="Held-out set (Parquet or CSV) the gate scores (default: the stack's).")
@click.option("--label", default=None, help="The label column of --holdout.")
@stack_option
@json_option
@pass_ctx
def register_image(ctx, name: str, image: str, protocol: str, port: int | None, v2_model: str | None,
                   holdout: str | None, label: str | None, stack: str, as_json: bool) -> None:
    """Register an OCI image that serves a model over HTTP as the next version of NAME.

    Its lineage records the image reference, id and digest podman resolves; the gate, the staging
    endpoint and the gateway run the image itself (podman, host network, a free loopback port)."""
    import mlplat
    from mlplat.errors import MlplatError
    from mlplat.services import container_models
    from mlplat.services.registry import NAME
    from mlplat.stack import MODEL_NAME_RULE

    if bool(holdout) != bool(label):
        raise click.UsageError("--holdout and --label go together")
    if not NAME.fullmatch(name):
        raise MlplatError(f"invalid model name {name!r}", hint=f"use {MODEL_NAME_RULE}")
    ctx.stack(stack)  # a missing or invalid stack is reported before podman is asked
    found = container_models.inspect_image(image, protocol=protocol, port=port, model_name=v2_model or name)
    holdout_doc = {"path": holdout, "label": label} if holdout else None
    with mlplat.start_run(experiment=name, name=f"image {image}"[:250], stack=stack, ctx=ctx,
                          datasets={"holdout": holdout} if holdout else None,
                          tags={"mlplat.image": found.reference, "mlplat.image.id": found.image_id,
                                "mlplat.image.digest": found.digest}) as run:
        version = run.log_model(found, name=name, holdout=holdout_doc)
    out = {"model": name, "version": version, "run_id": run.run_id, "image": found.lineage()}
    if as_json:
        emit_json(out)
        return
    ctx.console.print(f"registered {name} version {version} from image {found.reference} "
                      f"({found.digest or found.image_id[:12]}, protocol {protocol})", highlight=False)


def _decide(ctx, decision: str, name: str, version: int, reason: str, stack: str, environment: str | None,
            as_json: bool) -> None:
    from mlplat.api.plane import plane_for

    spec = ctx.stack(stack)
    operation = {"approved": "models.approve", "rejected": "models.reject"}[decision]
    status = plane_for(spec, ctx).call(operation, name=name, version=version, reason=reason, environment=environment)
    if as_json:
        emit_json(status)
        return
    ctx.console.print(f"{decision} {name} version {version} as {ctx.user}: now {status['state']} "
                      f"({status['approvals']}/{status['required']} approvals)", highlight=False)
    if status["state"] == "approved":
        ctx.console.print(f"next: `mlplat models promote {name} {version} --to production`", highlight=False)


@models.command("approve")
@click.argument("name", shell_complete=complete_models)
@click.argument("version", type=VERSION, shell_complete=complete_versions)
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@stack_option
@env_option
@json_option
@pass_ctx
def approve(ctx, name, version, reason, stack, environment, as_json) -> None:
    """Approve the production promotion of NAME VERSION (bound to its artifact and gate report)."""
    _decide(ctx, "approved", name, version, reason, stack, environment, as_json)


@models.command("reject")
@click.argument("name", shell_complete=complete_models)
@click.argument("version", type=VERSION, shell_complete=complete_versions)
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@stack_option
@env_option
@json_option
@pass_ctx
def reject(ctx, name, version, reason, stack, environment, as_json) -> None:
    """Reject the production promotion of NAME VERSION (final for this artifact and gate report)."""
    _decide(ctx, "rejected", name, version, reason, stack, environment, as_json)
