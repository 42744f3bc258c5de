"""`mlplat monitor run | status | labels`."""
from __future__ import annotations

from pathlib import Path

import click

from mlplat.cli.completion import complete_models
from mlplat.cli.options import emit_json, json_option, pass_ctx, stack_option, wide_option
from mlplat.errors import ExitCode
from mlplat.formatting import Column, print_table, when

# The monitoring services import numpy and pandas: each command imports them when it runs, so
# `mlplat monitor --help` stays light.


@click.group()
def monitor() -> None:
    """Drift, quality with delayed labels, calibration, alerts and retraining on captured traffic."""


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@monitor.command("run")
@stack_option
@click.option("--no-retrain", is_flag=True, help="Record retraining triggers without running them.")
@click.option("--fail-on-breach", is_flag=True, help="Exit 1 when a window drifted, quality breached or an alert fired.")
@wide_option
@json_option
@pass_ctx
def run_cmd(ctx, stack: str, no_retrain: bool, fail_on_breach: bool, wide: bool, as_json: bool) -> int:
    """One monitoring pass: judge the newest window of every served version, alert, retrain if due."""
    from mlplat.api.plane import plane_for

    spec = ctx.stack(stack)
    report = plane_for(spec, ctx).call("monitoring.run", retrain=not no_retrain)
    if as_json:
        emit_json(report)
    else:
        _print_pass(ctx, report, wide=wide)
    breached = any((w["drift"] or {}).get("verdict") == "drift" or (w["quality"] or {}).get("verdict") == "breach"
                   for w in report["windows"]) or any(e["event"] == "fired" for e in report["events"])
    return ExitCode.FAILED if (breached and fail_on_breach) else ExitCode.OK


PASS_COLUMNS = (Column("model"), Column("version"), Column("env", 1), Column("drift"), Column("rows", 4, justify="right"),
                Column("drifted features", 2, wrap=True), Column("quality"), Column("labelled", 5, justify="right"),
                Column("accuracy", 3, justify="right"), Column("roc_auc", 6, justify="right"),
                Column("ece", 7, justify="right"))


def _print_pass(ctx, report: dict, *, wide: bool = False) -> None:
    c = ctx.console
    if not report["windows"]:
        c.print(f"No captured traffic on stack '{report['stack']}' yet: serve a model (`mlplat serve`) and send requests.")
    rows = []
    for w in report["windows"]:
        d, q, m = w["drift"] or {}, w["quality"] or {}, w["metrics"]
        colour = {"drift": "red", "ok": "green", "breach": "red"}
        rows.append([w["model"], str(w["version"]), w["environment"],
                     f"[{colour.get(d.get('verdict'), 'yellow')}]{d.get('verdict')}[/]", str(d.get("rows", 0)),
                     ", ".join(d.get("drifted_features", [])) or "-",
                     f"[{colour.get(q.get('verdict'), 'yellow')}]{q.get('verdict')}[/]", str(q.get("rows", 0)),
                     _fmt(m.get("quality.accuracy")), _fmt(m.get("quality.roc_auc")), _fmt(m.get("quality.ece"))])
    if report["windows"]:
        print_table(c, PASS_COLUMNS, rows, wide=wide, title=f"monitoring pass {report['pass_id']}")
    cost = report["cost"]
    if cost:
        share = cost.get("cost.budget_share")
        c.print(f"cost this month: ${cost.get('cost.usd', 0):.4f} for {int(cost.get('cost.predictions', 0))} "
                f"predictions" + (f", {share:.1%} of the prorated budget" if share is not None else ""))
    for e in report["events"]:
        c.print(f"alert {e['event']}: [{e['severity']}] {e['message']}", highlight=False, markup=False)
    for r in report["retraining"]:
        c.print(f"retraining {r.get('id')}: {r.get('status')}"
                + (f", new version {r['new_version']}" if r.get("new_version") else "")
                + (f" ({r['error'][:300]})" if r.get("error") else ""), highlight=False)
    for note in report["notes"]:
        c.print(f"note: {note}", highlight=False)


@monitor.command("status")
@click.argument("name", required=False, shell_complete=complete_models)
@stack_option
@click.option("--history", "-n", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Windows per model version to show.")
@wide_option
@json_option
@pass_ctx
def status_cmd(ctx, name: str | None, stack: str, history: int, wide: bool, as_json: bool) -> None:
    """Latest windows, firing alerts and retraining of the stack's models (or of NAME)."""
    from mlplat.api.plane import plane_for

    spec = ctx.stack(stack)
    doc = plane_for(spec, ctx).call("monitoring.status", model=name, history=history)
    if as_json:
        emit_json(doc)
        return

    c = ctx.console
    if not doc["windows"]:
        c.print("No monitoring windows yet: run `mlplat monitor run`" + (f" (model '{name}')" if name else "") + ".")
    else:
        from mlplat.formatting import Column, print_table

        columns = (Column("model"), Column("version"), Column("env"), Column("kind"), Column("verdict"),
                   Column("when", 1), Column("rows", 2, justify="right"), Column("metrics", 3, wrap=True))
        print_table(c, columns, [[w["model"], str(w["version"]), w["environment"], w["kind"], w["verdict"], when(w["ts"]),
                                  str(w["rows"]), ", ".join(f"{k.split('.', 1)[1]}={_fmt(v)}"
                                                            for k, v in sorted(w["metrics"].items())
                                                            if k not in ("quality.rows",))]
                                 for w in doc["windows"]], wide=wide)
    firing = doc["alerts"]["firing"]
    c.print(f"firing alerts: {len(firing)}" + ("" if firing else " (all clear)"))
    for f in firing:
        c.print(f"  [{f['severity']}] since {when(f['since'])}: "
                + (f.get("message") or f"{f['rule']} on {f['subject']}: value {_fmt(f['last_value'])}"),
                highlight=False, markup=False)
    for t in doc["retraining"]:
        c.print(f"retraining {t['id']} {when(t['ts'])}: {t['model']} v{t['from_version']} → {t['status']}"
                + (f" v{t['new_version']}" if t.get("new_version") else ""), highlight=False)
    undelivered = doc["alerts"]["undelivered"]
    if undelivered:
        c.print(f"[yellow]{undelivered} webhook message(s) not delivered yet[/]")


@monitor.command("labels")
@click.argument("name", required=False, shell_complete=complete_models)
@click.option("--file", "-f", "path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV or Parquet file with request ids and labels.")
@click.option("--id-column", default="request_id", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@stack_option
@json_option
@pass_ctx
def labels_cmd(ctx, name: str | None, path: Path, id_column: str, label_column: str, stack: str, as_json: bool) -> None:
    """Join ground truth to captured predictions by request id (NAME is informational).

    The file is read and validated here as a whole, then sent in batches of at most 5,000 labels,
    each under its own batch id (a batch delivered twice is stored once)."""
    from mlplat.services.monitoring.quality import read_label_file

    spec = ctx.stack(stack)
    batch = read_label_file(path, id_column=id_column, label_column=label_column)
    from mlplat.api.labels import send_labels
    from mlplat.api.plane import plane_for

    result = send_labels(plane_for(spec, ctx), batch, source=str(path))
    if as_json:
        emit_json(result)
        return
    c = ctx.console
    c.print(f"{result['received']} rows: {result['stored']} labels stored, {result['updated']} updated, "
            f"{result['unknown']} unknown request id(s), {result['missing_ids']} without an id, "
            f"{result['duplicates']} duplicate(s)", highlight=False)
    if result["unknown_ids"]:
        c.print(f"[yellow]unknown ids (not captured on stack '{spec.name}'):[/] {', '.join(result['unknown_ids'])}"
                + (" ..." if result["unknown"] > len(result["unknown_ids"]) else ""), highlight=False)
    if result["conflicting"]:
        c.print(f"[yellow]ids with conflicting labels in the file (last one kept):[/] {', '.join(result['conflicting'])}",
                highlight=False)

