"""`mlplat serve | deploy | rollback | deployments list|show | rollout status`.

`serve` runs the gateway, a platform process that opens the ledger itself. The other commands
run platform operations (:mod:`mlplat.api.ops.serving`) through the stack's control plane and
render what comes back.
"""
from __future__ import annotations

import click

from mlplat.cli.completion import complete_models, complete_versions
from mlplat.cli.options import VERSION, emit_json, env_option, json_option, pass_ctx, stack_option, stack_plane, wide_option
from mlplat.formatting import Column, print_table, when
from mlplat.netguard import require_loopback

# The provider registry, the contracts and the monitoring loop load the stack model (pydantic) on import: each command
# imports them when it runs, so `mlplat serve --help` stays light.

STRATEGIES = ("direct", "ab", "canary", "shadow")


def _serving(ctx, spec):
    from mlplat import providers
    from mlplat.contracts import Capability

    return providers.capability(spec, ctx, Capability.SERVING)


def _int_list(_ctx, _param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of percentages, e.g. 1,10,50,100") from None


def _routes(endpoint: dict) -> str:
    text = ", ".join(f"{r['variant']} v{r['version']} {r['weight']}%" for r in endpoint["routes"] if r["weight"])
    if endpoint.get("shadow"):
        text += f"; shadow v{endpoint['shadow']['version']} {endpoint['shadow']['percent']}% mirrored"
    return text


@click.command()
@stack_option
@env_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind: loopback only, unless the stack sets serving.auth.apiKeys: required.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port (default: serving.port of the stack; 0 picks a free one).")
@click.option("--port-file", type=click.Path(dir_okay=False), default=None, help="Write the bound port here once serving.")
@click.option("--no-controller", is_flag=True, help="Do not run the canary controller in this gateway.")
@click.option("--no-monitor", is_flag=True, help="Do not run monitoring passes on the stack's schedule.")
@click.option("--database", "database", default=None, metavar="URL",
              help="The ledger database, as `mlplat server` opens it: postgresql://… or sqlite:///… (default: "
                   "$MLPLAT_DATABASE_URL, then the stack's controlPlane.database, then SQLite in the stack's "
                   "state directory).")
@click.option("--workers", type=click.IntRange(1, 256), default=None, envvar="MLPLAT_SERVE_WORKERS", show_envvar=True,
              help="Gateway processes sharing the port, each with its own warm models (default: the number of "
                   "cores; 1 serves in this process).")
@click.option("--listen-fd", type=click.IntRange(0), default=None, hidden=True,
              help="Serve on this inherited listening socket (set by `serve --workers N` for its workers).")
@pass_ctx
def serve(ctx, stack: str, environment: str | None, host: str, port: int | None, port_file: str | None,
          no_controller: bool, no_monitor: bool, database: str | None, workers: int | None,
          listen_fd: int | None) -> None:
    """Run the serving gateway for every deployment of the stack's environment (blocks).

    \b
    POST /endpoints/NAME/invocations   MLflow scoring format
    POST /v2/models/NAME/infer         Open Inference Protocol v2
    GET  /metrics                      Prometheus text (of the worker that answers)
    Deploys, canary steps and rollbacks apply within a second, without restart.
    With --workers N (default: one per core) N processes serve one port, each with its
    own warm models; one that dies is restarted, and SIGTERM stops them all.
    Monitoring passes (drift, quality, cost, alerts, retraining) run on the stack's
    monitoring.schedule in the background unless --no-monitor.
    The gateway is a platform process: with a control plane it runs beside `mlplat server`
    and opens the same ledger database itself. Any number of gateways (and workers) may run;
    one at a time judges and steps each rollout.
    """
    import os

    listener = None
    if listen_fd is not None:  # a worker of a supervising `serve`: first of all, die with it
        from mlplat.serving.workers import inherit

        listener = inherit(listen_fd)
    spec = ctx.stack(stack)
    require_loopback(host, authenticated=spec.serving.auth.api_keys == "required",
                     how="set mlplat:serving.auth.apiKeys: required in the stack")
    ctx.ledger_owner = True
    ctx.database_url = database or os.environ.get("MLPLAT_DATABASE_URL") or spec.control_plane.database
    serving = _serving(ctx, spec)
    environment = environment or spec.environment
    if listener is not None:
        serving.serve_socket(listener, environment=environment, port_file=port_file, controller=not no_controller)
        return
    if workers is not None and workers > 1 and not serving.serves_http:
        raise click.UsageError(f"--workers applies to a gateway on this machine; stack {spec.name}'s provider "
                               f"'{spec.provider.kind}' serves its traffic itself (run `mlplat serve` without --workers)")
    from mlplat.serving.workers import default_workers

    count = (workers or default_workers()) if serving.serves_http else 1
    loop = None
    if not no_monitor:
        from mlplat.services.monitoring.scheduler import MonitorLoop

        loop = MonitorLoop(spec, ctx).start()
    try:
        if count == 1:
            serving.serve(environment=environment, host=host, port=spec.serving.port if port is None else port,
                          port_file=port_file, controller=not no_controller)
        else:
            _supervise(ctx, spec, serving, count, stack=stack, environment=environment, host=host,
                       port=spec.serving.port if port is None else port, port_file=port_file,
                       controller=not no_controller)
    finally:
        if loop is not None:
            loop.stop()


def _supervise(ctx, spec, serving, count: int, *, stack: str, environment: str, host: str, port: int,
               port_file: str | None, controller: bool) -> None:
    """Bind the port here, run ``count`` workers of `mlplat serve` on it (:mod:`mlplat.serving.workers`)."""
    import os
    import sys
    from pathlib import Path

    from mlplat.serving.model_server import bind
    from mlplat.serving.workers import Supervisor

    sock = bind(host, port)  # PortInUse (exit 9) before any worker starts
    bound = sock.getsockname()[1]

    def command(fd: int, ready: Path) -> list[str]:
        argv = [sys.executable, "-m", "mlplat", *(["--verbose"] if ctx.verbose else []), "serve", "--stack", stack,
                "--env", environment, "--host", host, "--port", str(bound), "--port-file", str(ready),
                "--no-monitor", "--workers", "1", "--listen-fd", str(fd)]
        if ctx.database_url:
            argv += ["--database", ctx.database_url]
        return argv + ([] if controller else ["--no-controller"])

    env = {**os.environ, "MLPLAT_PROJECT_DIR": str(ctx.project())}
    supervisor = Supervisor(sock, command, count, env=env)

    def announce(pids: list[int]) -> None:
        if port_file:
            tmp = Path(port_file + ".tmp")
            tmp.write_text(str(bound))
            tmp.replace(port_file)
        names = ", ".join(sorted(e["model"] for e in serving.list(environment))) or "none yet"
        ctx.console.print(f"gateway for stack {spec.name}, environment {environment}: http://{host}:{bound}  "
                          f"(endpoints: {names}; {count} workers, pids {', '.join(map(str, pids))})", highlight=False)
        ctx.console.file.flush()

    try:
        supervisor.run(announce)
    finally:
        sock.close()


@click.command()
@click.argument("name", shell_complete=complete_models)
@click.argument("version", type=VERSION, shell_complete=complete_versions)
@stack_option
@env_option
@click.option("--strategy", type=click.Choice(STRATEGIES), default="direct", show_default=True)
@click.option("--weights", default=None, help="ab: '90,10' (current stable, this version) or '3=90,4=10'.")
@click.option("--steps", callback=_int_list, default=None, help="canary: percentages, e.g. 1,10,50,100 (default: stack).")
@click.option("--bake", type=click.FloatRange(min=0), default=None, help="canary: seconds per step (default: stack).")
@click.option("--percent", type=click.IntRange(1, 50), default=None, help="shadow: share mirrored (default: stack).")
@json_option
@pass_ctx
def deploy(ctx, name: str, version: int, stack: str, environment: str | None, strategy: str, weights: str | None,
           steps: list[int] | None, bake: float | None, percent: int | None, as_json: bool) -> None:
    """Deploy VERSION of model NAME with a rollout strategy (only gated, and for production approved, versions)."""
    if weights and strategy != "ab":
        raise click.UsageError("--weights applies to --strategy ab")
    if (steps or bake is not None) and strategy != "canary":
        raise click.UsageError("--steps and --bake apply to --strategy canary")
    if percent is not None and strategy != "shadow":
        raise click.UsageError("--percent applies to --strategy shadow")
    _, plane = stack_plane(ctx, stack)
    endpoint = plane.call("deployments.create", model=name, version=version, environment=environment,
                          strategy=strategy, weights=weights, steps=steps, bake_seconds=bake, percent=percent)
    env = endpoint["environment"]
    if as_json:
        emit_json(endpoint)
        return
    ctx.console.print(f"deployed {name} v{version} to {env} ({strategy}): {_routes(endpoint)}", highlight=False)
    if strategy == "canary":
        ctx.console.print("the gateway's canary controller advances or rolls back each step; watch it with "
                          f"`mlplat rollout status {name} --env {env}`", highlight=False)


@click.command()
@click.argument("name", shell_complete=complete_models)
@stack_option
@env_option
@click.option("--to", "to_version", type=VERSION, default=None,
              help="Version to return to (default: the stable version, or the previous one).")
@click.option("--reason", default=None, help="Why, for the audit log.")
@json_option
@pass_ctx
def rollback(ctx, name: str, stack: str, environment: str | None, to_version: int | None, reason: str | None,
             as_json: bool) -> None:
    """Move 100 % of NAME's traffic back to its stable (kept warm) version, ending any rollout."""
    _, plane = stack_plane(ctx, stack)
    endpoint = plane.call("deployments.rollback", model=name, environment=environment, to=to_version, reason=reason)
    env = endpoint["environment"]
    if as_json:
        emit_json(endpoint)
        return
    ctx.console.print(f"rolled back {name} in {env}: {_routes(endpoint)} (recorded in {endpoint['applied_in_s']} s; "
                      "a running gateway applies it within a second)", highlight=False)


@click.group()
def deployments() -> None:
    """List and inspect deployments."""


@deployments.command("list")
@stack_option
@click.option("--env", "environment", default=None, help="Only this environment (default: all).")
@wide_option
@json_option
@pass_ctx
def list_cmd(ctx, stack: str, environment: str | None, wide: bool, as_json: bool) -> None:
    """Every deployment with its strategy and routing."""
    _, plane = stack_plane(ctx, stack)
    rows = plane.call("deployments.list", environment=environment)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        ctx.console.print("No deployments yet. Deploy with `mlplat deploy NAME VERSION`.")
        return
    from mlplat.formatting import Column, print_table

    columns = (Column("model"), Column("environment"), Column("routing", wrap=True), Column("strategy", 1),
               Column("stable", 1), Column("previous", 2), Column("updated", 3), Column("by", 4))
    print_table(ctx.console, columns, [[e["model"], e["environment"], _routes(e), e["strategy"], f"v{e['stable_version']}",
                                        f"v{e['previous_version']}" if e["previous_version"] else "-",
                                        when(e["updated_at"]), e["updated_by"]] for e in rows], wide=wide)


@deployments.command("show")
@click.argument("name", shell_complete=complete_models)
@stack_option
@env_option
@wide_option
@json_option
@pass_ctx
def show_cmd(ctx, name: str, stack: str, environment: str | None, wide: bool, as_json: bool) -> None:
    """One deployment: routing, served-version history, recent decisions."""
    _, plane = stack_plane(ctx, stack)
    data = plane.call("deployments.show", model=name, environment=environment)
    if as_json:
        emit_json(data)
        return
    c = ctx.console
    c.print(f"[bold]{data['model']}[/] in {data['environment']}: {data['strategy']}, {_routes(data)}", highlight=False)
    c.print(f"now: {data['verdict']['summary']}", highlight=False)
    target = data["rollback_target"]
    c.print(f"stable v{data['stable_version']}, rollback target " + (f"v{target}" if target else "- (none)"),
            highlight=False)
    print_table(c, HISTORY_COLUMNS, [[f"v{h['version']}", h["variant"], when(h["started_at"]),
                                      when(h["ended_at"]) if h["ended_at"] else "now"] for h in data["history"]],
                wide=wide, title="served versions")
    _print_events(ctx, data["events"], wide=wide)


HISTORY_COLUMNS = (Column("version"), Column("variant"), Column("from", 1), Column("until", 1))
EVENT_COLUMNS = (Column("when"), Column("event"), Column("step", 2, justify="right"), Column("percent", justify="right"),
                 Column("by", 1), Column("reason", 3, wrap=True))
ANALYSIS_COLUMNS = (Column("variant"), Column("requests", justify="right"), Column("errors", 1, justify="right"),
                    Column("error rate", justify="right"), Column("p50 ms", 3, justify="right"),
                    Column("p95 ms", 2, justify="right"), Column("mean prediction", 4, justify="right"))
AB_COLUMNS = (Column("variant"), Column("version"), Column("weight", justify="right"), Column("captured", 2, justify="right"),
              Column("errors", 3, justify="right"), Column("mean ms", 4, justify="right"),
              Column("labelled", 1, justify="right"), Column("accuracy", justify="right"))


def _print_events(ctx, events: list[dict], *, wide: bool = False) -> None:
    if not events:
        return
    from rich.markup import escape

    print_table(ctx.console, EVENT_COLUMNS,
                [[when(e["ts"]), e["event"], "-" if e["step_index"] is None else str(e["step_index"] + 1),
                  "-" if e["percent"] is None else f"{e['percent']}%", escape(e["actor"]), escape(e["reason"] or "")]
                 for e in events], wide=wide, title="decisions")


@click.group()
def rollout() -> None:
    """Follow rollouts: current step, metrics per variant, decision history."""


@rollout.command("status")
@click.argument("name", shell_complete=complete_models)
@stack_option
@env_option
@wide_option
@json_option
@pass_ctx
def status_cmd(ctx, name: str, stack: str, environment: str | None, wide: bool, as_json: bool) -> None:
    """Current step, latest analysis per variant (canary), A/B readout, shadow comparison, decisions."""
    _, plane = stack_plane(ctx, stack)
    data = plane.call("rollouts.status", model=name, environment=environment)
    if as_json:
        emit_json(data)
        return
    from rich.markup import escape

    c = ctx.console
    endpoint = data["endpoint"]
    c.print(f"[bold]{name}[/] in {endpoint['environment']}: {endpoint['strategy']}, {_routes(endpoint)}", highlight=False)
    c.print(f"now: {data['verdict']['summary']}", highlight=False)
    earlier = data.get("previous_rollout")
    if earlier:
        c.print(f"canary #{earlier['id']} v{earlier['stable_version']} → v{earlier['candidate_version']} "
                f"({earlier['state']}) no longer applies: {earlier['overridden_by']['event']} "
                f"{when(earlier['overridden_by']['ts'])} by {earlier['overridden_by']['actor']}", highlight=False)
    r = data.get("rollout")
    if r:
        steps = r["policy"]["steps"]
        c.print(f"canary #{r['id']} v{r['stable_version']} → v{r['candidate_version']}: [bold]{r['state']}[/], "
                f"step {r['step_index'] + 1}/{len(steps)} ({r['percent']}%) of {steps}, bake {r['policy']['bake_seconds']:g}s, "
                f"step started {when(r['step_started_at'])}", highlight=False)
        analysis = r.get("last_analysis")
        if analysis and r["state"] == "running":
            metrics = [analysis["metrics"].get(variant, {}) for variant in ("stable", "candidate")]
            print_table(c, ANALYSIS_COLUMNS, [[variant, str(m.get("requests")), str(m.get("errors")), str(m.get("error_rate")),
                                               str(m.get("p50_ms")), str(m.get("p95_ms")), str(m.get("mean_prediction"))]
                                              for variant, m in zip(("stable", "candidate"), metrics, strict=True)],
                        wide=wide, title=f"latest analysis: {analysis['action']} ({escape('; '.join(analysis['reasons']))})")
        elif r.get("reason"):
            c.print(f"ended: {r['reason']}", highlight=False)
    if data.get("ab"):
        print_table(c, AB_COLUMNS, [[variant, f"v{m['version']}", f"{m['weight']}%", str(m["captured"]), str(m["errors"]),
                                     str(m["mean_latency_ms"]), str(m.get("labelled", "-")), str(m.get("accuracy", "-"))]
                                    for variant, m in data["ab"]["variants"].items()], wide=wide, title="A/B")
        sig = data["ab"].get("significance")
        if sig:
            verdict = "significant" if sig["significant_at_0.05"] else "not significant"
            c.print(f"accuracy {sig['compared'][0]} vs {sig['compared'][1]}: z={sig['z']}, p={sig['p_value']} "
                    f"({verdict} at 0.05)", highlight=False)
        else:
            c.print("no significance readout yet: it needs labels for both variants (mlplat monitor labels)")
    if data.get("shadow"):
        s = data["shadow"]
        c.print(f"shadow v{s['version']}: {s['compared']} captured pairs, agreement {s['agreement']}, errors "
                f"{s['errors']}, p95 {s['shadow_p95_ms']} ms vs primary {s['primary_p95_ms']} ms", highlight=False)
    _print_events(ctx, data["events"], wide=wide)
