"""The dashboard's pages: HTML documents with inline CSS and server-drawn SVG.

A page is a list of parts (``<section id=...>``); :func:`parts` and :func:`model_parts` render
them one by one, so the page's script can fetch the parts again as JSON and swap the ones that
changed, without reloading the page.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from mlplat.dashboard import svg
from mlplat.formatting import when

# Tables never leave their card: cells wrap (ids and names break anywhere rather than being cut), the
# lowest-priority columns drop out when the card is narrow (container queries), and as a last resort the
# table scrolls inside its card.
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f8fafc;color:#0f172a}
header{background:#0f172a;color:#fff;padding:12px 24px;display:flex;flex-wrap:wrap;gap:8px 24px;align-items:baseline}
header h1{font-size:20px;margin:0} header span{opacity:.85;font-size:13px} header a{color:#fff}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(560px,100%),1fr));grid-auto-flow:row dense;
gap:16px;padding:16px}
main.model{grid-template-columns:repeat(auto-fit,minmax(min(720px,100%),1fr))}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px 16px;min-width:0;
container-type:inline-size}
section.wide{grid-column:1/-1}
section h2{font-size:15px;margin:0 0 8px} h3{font-size:13px;margin:12px 0 4px}
.table-wrap{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:12px}
td,th{border-bottom:1px solid #e2e8f0;padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{color:#475569;font-weight:600;overflow-wrap:normal}
@container (max-width:640px){.p2{display:none}}
@container (max-width:480px){.p1{display:none}}
.muted{color:#64748b;font-size:12px} a{color:#1d4ed8}
svg.chart{max-width:100%;height:auto;display:block}
.charts{display:flex;gap:12px 24px;flex-wrap:wrap;align-items:flex-start} .charts>*{flex:0 1 auto;min-width:0}
.placeholder{border:1px dashed #cbd5e1;border-radius:6px;color:#64748b;font-size:13px;display:flex;
align-items:center;justify-content:center;text-align:center;padding:8px;background:#f8fafc}
.figures{display:flex;flex-wrap:wrap;gap:8px 24px;font-size:13px;margin:4px 0 8px} .figures b{font-size:15px}
.badge{display:inline-block;padding:1px 6px;border-radius:9px;font-size:11px;font-weight:600;white-space:nowrap;
overflow-wrap:normal}
.ok{background:#dcfce7;color:#166534} .drift,.breach,.critical,.failed,.rolled_back,.over{background:#fee2e2;color:#991b1b}
.warning,.pending,.running,.training,.waiting{background:#fef3c7;color:#92400e}
.info,.staged,.succeeded,.promoted,.deployed,.step{background:#dbeafe;color:#1e40af}
.production{background:#dcfce7;color:#166534} .staging{background:#fef3c7;color:#92400e}
.dev,.archived,.superseded{background:#f1f5f9;color:#475569}
.insufficient{background:#f1f5f9;color:#475569}
.latest{font-size:13px;margin:4px 0}
"""

HIGHER_IS_BETTER = ("accuracy", "roc_auc", "f1", "precision", "recall", "r2")
LOWER_IS_BETTER = ("ece", "brier", "log_loss", "mae", "rmse", "mse")


def _badge(text: Any) -> str:
    text = str(text)
    cls = text.split()[0].replace(" ", "_") if text.split() else ""
    return f'<span class="badge {escape(cls)}">{escape(text)}</span>'


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def model_href(name: str) -> str:
    return "/models/" + quote(str(name), safe="")


def _model(name: Any) -> str:
    """A model's name as a link to its page (every table that names a model uses this)."""
    if not name:
        return "-"
    return f'<a class="model-link" href="{escape(model_href(str(name)))}">{escape(str(name))}</a>'


def _table(headers: Iterable[str | tuple[str, int]], rows: Iterable[Sequence[str]], *, empty: str) -> str:
    """A table; a header given as ``(name, priority)`` marks a column that drops out on a narrow card
    (priority 2 below a 640 px card, 1 below 480 px). Cells are HTML already escaped by the caller."""
    rows = list(rows)
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    cols = [(h, 0) if isinstance(h, str) else h for h in headers]
    cls = [f' class="p{p}"' if p else "" for _, p in cols]
    head = "".join(f"<th{c}>{escape(h)}</th>" for (h, _), c in zip(cols, cls, strict=True))
    body = "".join("<tr>" + "".join(f"<td{c}>{v}</td>" for v, c in zip(row, cls, strict=True)) + "</tr>"
                   for row in rows)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _head(title: str, refresh: int, csrf: str | None, poll: str) -> str:
    # no inline script (the CSP allows scripts from this origin only): the script reads its settings here
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            + (f"<meta name='csrf-token' content='{escape(csrf)}'>" if csrf else "")
            + f"<meta name='refresh-seconds' content='{int(refresh)}'><meta name='parts-url' content='{escape(poll)}'>"
            + f"<title>{escape(title)}</title><style>{CSS}</style>"
            + ("<script src='/static/dashboard.js' defer></script>" if csrf else "") + "</head><body>")


def _header(doc: dict[str, Any], identity: dict[str, Any] | None, extra: str = "") -> str:
    who = ""
    if identity:
        who = (f"<span>signed in as <b id='identity'>{escape(str(identity.get('principal')))}</b> "
               f"({escape(str(identity.get('method')))})</span>")
    return (f"<header><h1>mlplat dashboard</h1>{extra}<span>stack <b id='stack'>{escape(doc['stack'])}</b></span>"
            f"<span>team {escape(str(doc.get('team', '-')))}</span><span>environment "
            f"{escape(doc['environment'])}</span><span>provider {escape(str(doc.get('provider', '-')))}</span>"
            f"<span>updated <span id='updated'>{when(doc['now'])}</span></span>{who}</header>")


def page(doc: dict[str, Any], *, refresh: int = 10, identity: dict[str, Any] | None = None,
         csrf: str | None = None) -> str:
    """The stack's page. ``refresh``: seconds between the script's fetches of the parts (0: never);
    ``identity``: who the dashboard acts as (``principal``, ``method``), shown in the header; ``csrf``: the
    session's token, which the page's script sends with every state-changing request."""
    body = "".join(parts(doc).values())
    return (_head(f"mlplat · {doc['stack']}", refresh, csrf, "/api/v1/parts") + _header(doc, identity)
            + f"<main>{body}{_labels() if csrf else ''}</main></body></html>")


def parts(doc: dict[str, Any]) -> dict[str, str]:
    """The stack page's sections by element id (the live-update unit)."""
    return _stamped({"models": _models(doc), "serving": _serving(doc), "drift": _drift(doc),
                     "quality": _quality(doc), "cost": _cost(doc), "alerts": _alerts(doc),
                     "approvals": _approvals(doc), "audit": _audit(doc), "sla": _sla(doc)})


def _stamped(sections: dict[str, str]) -> dict[str, str]:
    """Each section tagged with a digest of its HTML (``data-v``): the script swaps a section only when the
    digest it fetched differs from the one on the page."""
    out = {}
    for element, html in sections.items():
        opening = f"<section id='{element}'"
        if not html.startswith(opening):
            raise ValueError(f"part {element!r} must be one <section id='{element}'>")
        digest = hashlib.sha256(html.encode()).hexdigest()[:16]
        out[element] = f"<section data-v='{digest}' id='{element}'" + html[len(opening):]
    return out


def _labels() -> str:
    """Delayed labels typed in the page, sent by ``dashboard.js`` as JSON with the session's CSRF token."""
    return ("<section id='labels'><h2>Record labels</h2><form id='labels-form'>"
            "<p class='muted'>One <code>request id,label</code> per line (request ids from the captures).</p>"
            "<textarea id='labels-input' name='labels' rows='4' style='width:100%;box-sizing:border-box'></textarea>"
            "<br><button type='submit'>Record labels</button> <span id='labels-result' class='muted'></span>"
            "</form></section>")


def login_required(message: str) -> str:
    """The short page a browser without a session gets (401)."""
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>mlplat · login</title>"
            f"<style>{CSS}</style></head><body><header><h1>mlplat dashboard</h1></header><main><section>"
            f"<h2>Login required</h2><p>{escape(message)}</p><p>Open the login link printed by "
            "<code>mlplat dashboard</code> (it ends in <code>/login?token=...</code>).</p></section></main></body></html>")


def not_found(message: str, hint: str) -> str:
    """A page for a model the stack does not know (404)."""
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>mlplat · not found</title>"
            f"<style>{CSS}</style></head><body><header><h1>mlplat dashboard</h1><span><a href='/'>back to the "
            f"stack</a></span></header><main><section><h2>Not found</h2><p>{escape(message)}</p>"
            f"<p class='muted'>{escape(hint)}</p></section></main></body></html>")


# --- the stack page's parts ----------------------------------------------------------------------


def _models(doc: dict[str, Any]) -> str:
    rows = [(_model(m["model"]), f"v{m['version']}", _badge(m["stage"]), escape(m.get("framework") or "-"),
             escape(m.get("author") or "-"), when(m.get("created_at"))) for m in doc["models"]]
    return ("<section id='models'><h2>Models, versions and stages</h2>"
            + _table(("model", "version", "stage", ("framework", 2), ("author", 1), ("registered", 2)), rows,
                     empty="No registered models yet: train inside mlplat.start_run and call run.log_model.")
            + "</section>")


def _event_text(e: dict[str, Any]) -> str:
    what = {"rolled_back": "rolled back", "promoted": "canary promoted after its last step",
            "step": f"canary step to {e.get('percent')} %", "deployed": "deployed",
            "superseded": "rollout superseded", "waiting": "waiting"}.get(e["event"], e["event"])
    return str(what)


def _serving(doc: dict[str, Any]) -> str:
    out = ["<section id='serving'><h2>Deployments, traffic split and rollouts</h2>"]
    if not doc["endpoints"]:
        out.append('<p class="muted">Nothing deployed yet: <code>mlplat deploy MODEL VERSION</code>.</p>')
    for e in doc["endpoints"]:
        routes = [(f"v{r.get('version')}", float(r.get("weight", 0))) for r in e["routes"]]
        shadow = e.get("shadow")
        out.append(f"<h3>{_model(e['model'])} · {escape(e['environment'])} · {_badge(e['strategy'])}</h3>")
        out.append(svg.split(routes, title=f"traffic split of {e['model']}"))
        out.append("<p class='muted'>serving now: " + ", ".join(
            f"{escape(r.get('variant', ''))} v{r.get('version')} {r.get('weight')} %" for r in e["routes"])
            + (f"; shadow v{shadow.get('version')} mirrors {shadow.get('percent')} %" if shadow else "")
            + f"; stable v{e['stable_version']}</p>")
        if (e.get("verdict") or {}).get("summary"):
            out.append(f"<p class='muted verdict'>{escape(e['verdict']['summary'])}</p>")
        events = e.get("events") or []
        if events:
            latest = events[0]
            out.append(f"<p class='latest' data-model='{escape(e['model'])}'>latest event: "
                       f"{_badge(latest['event'])} <b class='latest-event'>{escape(_event_text(latest))}</b> "
                       f"by {escape(latest['actor'])} at {when(latest['ts'])}"
                       + (f" — {escape(latest['reason'])}" if latest.get("reason") else "") + "</p>")
            rows = [(when(x["ts"]), _badge(x["event"]), escape(x["actor"]), escape(x.get("reason") or ""))
                    for x in events]
            out.append(_table(("when", "event", ("by", 1), ("why", 2)), rows, empty=""))
    if doc["rollouts"]:
        rollouts: list[tuple[str, ...]] = []
        for r in doc["rollouts"]:
            steps = r["policy"].get("steps") or []
            step = steps[r["step_index"]] if steps and r["step_index"] < len(steps) else "-"
            rollouts.append((_model(r["model"]), escape(r["environment"]),
                         f"v{r['stable_version']} → v{r['candidate_version']}", _badge(r["state"]),
                         f"{step} % (step {r['step_index'] + 1} of {len(steps) or '?'})", when(r["created_at"]),
                         escape(r.get("reason") or "")))
        out.append("<h3>Rollouts</h3>" + _table(("model", ("env", 1), "versions", "state", ("step", 2),
                                                  ("started", 2), ("reason", 1)), rollouts, empty=""))
    out.append("</section>")
    return "".join(out)


def _window_time(w: dict[str, Any]) -> float:
    return float(w.get("last_ts") or w["ts"])


def _drift(doc: dict[str, Any]) -> str:
    out = ["<section id='drift' class='wide'><h2>Drift per feature (newest window)</h2>"]
    if not doc["drift"]:
        out.append(svg.placeholder("No monitoring pass yet: run mlplat monitor run.", title="no drift windows"))
    for w in doc["drift"]:
        out.append(_drift_window(w, doc["drift_history"].get(w["model"], [])))
    out.append("</section>")
    return "".join(out)


def _drift_window(w: dict[str, Any], history: list[dict[str, Any]]) -> str:
    d = w["details"]
    out = [f"<h3>{_model(w['model'])} v{w['version']} · {escape(w['environment'])} · {_badge(w['verdict'])} · "
           f"{w['rows']} rows, window {when(w.get('first_ts'))} – {when(w.get('last_ts'))}</h3>"]
    features = d.get("features") or []
    th = d.get("thresholds") or {}
    numerical = [(f["feature"], f["psi"], f["verdict"] == "drift") for f in features
                 if f["kind"] == "numerical" and f.get("psi") is not None]
    categorical = [(f["feature"], f["js_distance"], f["verdict"] == "drift") for f in features
                   if f["kind"] == "categorical" and f.get("js_distance") is not None]
    pred = d.get("prediction")
    if pred and pred.get("psi") is not None:
        numerical.append(("prediction", pred["psi"], pred["verdict"] == "drift"))
    elif pred and pred.get("js_distance") is not None:
        categorical.append(("prediction", pred["js_distance"], pred["verdict"] == "drift"))
    charts = []
    if numerical:
        charts.append(svg.bars(numerical, threshold=th.get("psi"), title=f"PSI per feature of {w['model']}",
                               axis="population stability index (PSI, unitless; drift above the dashed line)"))
    if categorical:
        charts.append(svg.bars(categorical, threshold=th.get("js_distance"),
                               title=f"Jensen-Shannon distance per categorical feature of {w['model']}",
                               axis="Jensen-Shannon distance (0–1; drift above the dashed line)"))
    share = [(_window_time(h), 100 * h["metrics"]["drift.share"]) for h in history if "drift.share" in h["metrics"]]
    if len(share) > 1:
        charts.append(svg.time_lines({"features drifted": share}, title=f"drift share of {w['model']} over time",
                                     y_title="features drifted (%)", x_title="window end (UTC)", y_min=0, y_max=100,
                                     guides=[("alarm", 100 * th["share"])] if th.get("share") is not None else ()))
    if charts:
        out.append("<div class='charts'>" + "".join(f"<div>{c}</div>" for c in charts) + "</div>")
    drifted = [f for f in features + ([pred] if pred else []) if f.get("verdict") == "drift"]
    if drifted:
        out.append("<h3>Drifted features: reference vs current window</h3><div class='charts histograms'>")
        for f in drifted:
            name = "prediction" if f["feature"] == "__prediction__" else f["feature"]
            h = f.get("histogram")
            title = f"{name}: reference vs current"
            stat = (f"PSI {_fmt(f.get('psi'))}, KS p={_fmt(f.get('ks_p_value'))}" if f["kind"] == "numerical"
                    else f"JS {_fmt(f.get('js_distance'))}, χ² p={_fmt(f.get('chi2_p_value'))}")
            chart = (svg.histogram(h["bins"], h["reference"], h["current"], title=title,
                                   x_title=f"{name} ({'value bins' if f['kind'] == 'numerical' else 'category'})")
                     if h else svg.placeholder(f"{name}: this window was judged before histograms were kept; "
                                               "the next monitoring pass stores them", title=title))
            out.append(f"<figure class='feature-histogram' data-feature='{escape(name)}' style='margin:0'>"
                       f"<figcaption class='muted'><b>{escape(name)}</b> · {stat}</figcaption>{chart}</figure>")
        out.append("</div>")
    rows = [(escape(f["feature"]), f["kind"], _badge(f["verdict"]),
             _fmt(f.get("psi") if f["kind"] == "numerical" else f.get("js_distance")),
             _fmt(f.get("ks_p_value") if f["kind"] == "numerical" else f.get("chi2_p_value")),
             escape(", ".join(f.get("new_categories") or [])) or "-") for f in features]
    out.append(_table(("feature", ("kind", 1), "verdict", "PSI / JS", ("p-value", 2), ("new categories", 2)), rows,
                      empty=d.get("note") or "no features judged"))
    return "".join(out)


def _quality_metric_series(judged: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Sequence[tuple[float, float]]]:
    series: dict[str, Sequence[tuple[float, float]]] = {}
    for name in names:
        points = [(_window_time(w), float(w["metrics"][f"quality.{name}"])) for w in judged
                  if w["metrics"].get(f"quality.{name}") is not None]
        if points:
            series[name] = points
    return series


def quality_block(model: str, windows: list[dict[str, Any]]) -> str:
    """One model's quality over time: higher-is-better and lower-is-better metrics on separate charts, the
    newest calibration, or a placeholder while no window has enough labels."""
    judged = [w for w in windows if w["verdict"] != "insufficient data"]
    if not judged:
        return (f"<h3>{_model(model)}</h3>"
                + svg.placeholder(f"Waiting for labels: {len(windows)} window(s) of traffic, none with enough "
                                  "labels yet. Send them with mlplat monitor labels --file labels.csv (or the form "
                                  "below).", title=f"quality of {model}: waiting for labels"))
    latest = judged[-1]
    m = latest["metrics"]
    out = [f"<h3>{_model(model)} v{latest['version']} · {_badge(latest['verdict'])} · newest window "
           f"{latest['rows']} labelled rows</h3>",
           "<p class='muted'>" + " · ".join(f"{k.split('.', 1)[1]} {_fmt(v)}" for k, v in sorted(m.items())
                                            if k != "quality.rows") + "</p>"]
    higher = _quality_metric_series(judged, HIGHER_IS_BETTER)
    lower = _quality_metric_series(judged, LOWER_IS_BETTER)
    charts = []
    if higher:
        charts.append(svg.time_lines(higher, title=f"quality of {model}, higher is better",
                                     y_title="score (0–1, higher is better)", x_title="window end (UTC)",
                                     y_min=0, y_max=1))
    if lower:
        charts.append(svg.time_lines(lower, title=f"errors of {model}, lower is better",
                                     y_title="error (lower is better)", x_title="window end (UTC)", y_min=0))
    charts.append(svg.reliability(latest["details"].get("calibration") or [], title=f"calibration of {model}"))
    out.append("<div class='charts'>" + "".join(f"<div>{c}</div>" for c in charts) + "</div>")
    return "".join(out)


def _quality(doc: dict[str, Any]) -> str:
    out = ["<section id='quality' class='wide'><h2>Quality and calibration over time</h2>"]
    if not doc["quality"]:
        out.append(svg.placeholder("Waiting for labels: no monitored traffic yet. Labels join captured requests "
                                   "by request id (mlplat monitor labels --file labels.csv).",
                                   title="quality: waiting for labels"))
    for model, windows in doc["quality"].items():
        out.append(quality_block(model, windows))
    out.append("</section>")
    return "".join(out)


def _money(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:,.4f}" if abs(value) >= 0.01 else f"${value:.6f}"


def _cost(doc: dict[str, Any]) -> str:
    c = doc["cost"]
    out = ["<section id='cost'><h2>Cost and budget</h2>"]
    if "error" in c:
        out.append(f"<p class='muted'>{escape(c['error'])}</p></section>")
        return "".join(out)
    trend = c.get("trend")
    per = c["total_usd"] / c["predictions"] if c["predictions"] else None
    monthly = sum(b["monthly_usd"] for b in c["budget"].values()) or None
    figures = [f"<span>period <b class='cost-period'>{escape(c['period'])}</b></span>",
               f"<span>spent <b>{_money(c['total_usd'])}</b></span>",
               f"<span>{c['predictions']} predictions" + (f", {_money(per)} each" if per is not None else "")
               + "</span>"]
    if trend:
        forecast = trend["forecast_usd"]
        verdict = ""
        if monthly:
            share = forecast / monthly
            verdict = " " + _badge("over budget" if share > 1 else "ok") + f" ({share:.0%} of {_money(monthly)})"
        figures.append(f"<span>month-end forecast <b class='cost-forecast'>{_money(forecast)}</b>{verdict}</span>")
    out.append("<div class='figures'>" + "".join(figures) + "</div>")
    if trend and trend["days"]:
        running, points = 0.0, []
        for d in trend["days"]:
            running += d["cost_usd"]
            points.append((d["start"] + 86400 if d is not trend["days"][-1] else doc["now"], running))
        points.insert(0, (trend["month_start"], 0.0))
        series = {"spent": points, "forecast": [(doc["now"], running), (trend["month_end"], trend["forecast_usd"])]}
        out.append(svg.time_lines(series, title=f"cost of {trend['month']}: spent, forecast and budget",
                                  y_title="cumulative cost (USD)", x_title="date (UTC)", y_min=0,
                                  x_range=(trend["month_start"], trend["month_end"]), dashed=("forecast",),
                                  guides=[(f"budget {_money(monthly)}", monthly)] if monthly else ()))
    for team, b in c["budget"].items():
        spent = sum(r["cost_usd"] for r in c["teams"] if r["team"] == team)
        out.append(f"<h3>{escape(team)}: {_money(b['monthly_usd'])} a month, {_money(b['period_usd'])} for this "
                   "period</h3>" + svg.gauge(spent, b["period_usd"] or 0.0, title=f"budget used by {team}"))
    rows = []
    for r in c["versions"]:
        name, _, version = str(r["version"]).rpartition(" v")
        rows.append((_model(name) + f" v{escape(version)}" if name else escape(str(r["version"])),
                     f"${r['cost_usd']:,.4f}", _fmt(r["instance_hours"]), str(r["predictions"]),
                     "-" if r["cost_per_prediction_usd"] is None else f"${r['cost_per_prediction_usd']:.6f}",
                     "-" if r["utilisation"] is None else f"{r['utilisation']:.2%}"))
    out.append(_table(("version", "cost", ("instance-hours", 2), "predictions", ("per prediction", 1), ("busy", 2)),
                      rows, empty="No serving this period."))
    out.append("</section>")
    return "".join(out)


STATUS_BADGE = {"met": "ok", "breached": "breach"}


def _sla_value(unit: str, value: Any) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return "above the histogram"
    return {"share": f"{value:.3%}", "ms": f"{value:g} ms", "minutes": f"{value:.1f} min",
            "seconds": f"{value:.2f} s"}.get(unit, f"{value:g} h")


def _sla(doc: dict[str, Any]) -> str:
    """The platform's service levels (`mlplat sla`, the last 30 days) and its adoption share."""
    out = ["<section id='sla'><h2>Platform SLA and adoption</h2>"]
    adoption = doc.get("adoption") or {}
    if "error" in adoption:
        out.append(f"<p class='muted'>adoption: {escape(adoption['error'])}</p>")
    elif adoption:
        share = adoption.get("share")
        out.append(f"<p class='adoption'>served through the platform: <b class='adoption-share'>"
                   f"{'-' if share is None else f'{share:.1%}'}</b> ({adoption['managed']} production model(s) "
                   f"and platform endpoints, {adoption['unmanaged']} endpoint(s) outside it)</p>")
    sla = doc.get("sla") or {}
    if "error" in sla:
        out.append(f"<p class='muted'>{escape(sla['error'])}</p></section>")
        return "".join(out)
    if not sla:
        return "".join(out) + "</section>"
    rows = []
    for f in sla["figures"]:
        cls = STATUS_BADGE.get(f["status"], "")
        badge = f'<span class="badge {cls}">{escape(f["status"])}</span>'
        target = ("≥ " if f["better"] == "higher" else "≤ ") + _sla_value(f["unit"], f["objective"])
        rows.append((escape(f["name"]), escape(_sla_value(f["unit"], f["value"])), escape(target), badge,
                     escape(f["detail"])))
    out.append(f"<p class='muted'>{escape(sla['period']['label'])}; objectives from mlplat:sla (docs/SLA.md)</p>")
    out.append(_table(("objective", "measured", "target", "status", ("detail", 2)), rows, empty="no objectives"))
    return "".join(out) + "</section>"


def _subject(subject: str) -> str:
    model, at, env = str(subject).partition("@")
    return _model(model) + escape(at + env) if at and not model.startswith("team:") else escape(subject)


def _alerts(doc: dict[str, Any]) -> str:
    a = doc["alerts"]
    firing = [(escape(f["rule"]), _subject(f["subject"]), _badge(f["severity"]), _fmt(f["last_value"]), when(f["since"]))
              for f in a["firing"]]
    recent = [(when(e["ts"]), _badge(e["kind"] if e["kind"] == "resolved" else e["severity"]), escape(e["message"]))
              for e in a["recent"][:15]]
    retrain = [(when(t["ts"]), _model(t["model"]), f"v{t['from_version']}", _badge(t["status"]),
                f"v{t['new_version']}" if t.get("new_version") else "-", escape(t.get("error") or ""))
               for t in doc["retraining"]]
    return ("<section id='alerts'><h2>Alerts and retraining</h2><h3>Firing now</h3>"
            + _table(("rule", "subject", "severity", ("value", 1), ("since", 2)), firing, empty="All clear.")
            + "<h3>Recent events</h3>" + _table(("when", ("kind", 1), "message"), recent, empty="No alert events.")
            + (f"<p class='muted'>{a['undelivered']} webhook message(s) waiting, {a['failed_deliveries']} failed.</p>"
               if a["undelivered"] or a["failed_deliveries"] else "")
            + "<h3>Retraining</h3>"
            + _table(("when", "model", "from", "status", ("new", 1), ("error", 2)), retrain,
                     empty="No retraining triggered.")
            + "</section>")


def _approvals(doc: dict[str, Any]) -> str:
    rows = [(_model(p["model"]), f"v{p['version']}", _badge(p["stage"]), escape(p.get("author") or "-"),
             f"{p.get('approvals', 0)} of {p.get('required', '?')}", _badge(p.get("state", "pending")))
            for p in doc["approvals"]]
    return ("<section id='approvals'><h2>Pending approvals</h2>"
            + _table(("model", "version", "stage", ("author", 1), "approvals", ("state", 2)), rows,
                     empty="Nothing waits for an approval.") + "</section>")


def _audit(doc: dict[str, Any]) -> str:
    rows = [(str(r["seq"]), when(r["ts"]), escape(r["actor"]), escape(r["action"]),
             (_model(r["model"]) + (f" v{r['version']}" if r.get("version") else "")) if r.get("model") else "-",
             escape(r.get("reason") or "")) for r in doc["audit"]]
    return ("<section id='audit' class='wide'><h2>Audit trail</h2>"
            + _table((("#", 2), "when", ("who", 1), "action", "model", ("why", 1)), rows,
                     empty="The audit log is empty.") + "</section>")


# --- a model's page ------------------------------------------------------------------------------


def model_page(doc: dict[str, Any], *, refresh: int = 10, identity: dict[str, Any] | None = None,
               csrf: str | None = None) -> str:
    """One model: its versions and stages, each version's lineage (with a link to its run in the tracking
    UI), its deployment and rollout events, and its monitoring."""
    name = doc["model"]
    body = "".join(model_parts(doc).values())
    back = "<span><a href='/'>← all models</a></span>"
    return (_head(f"mlplat · {name}", refresh, csrf, f"/api/v1/models/{quote(name, safe='')}/parts")
            + _header(doc, identity, back)
            + f"<main class='model'><section id='model-title' class='wide'><h2 id='model-name'>{escape(name)}</h2>"
            f"<p class='muted'>risk tier {escape(str(doc.get('risk_tier') or '-'))} · "
            f"{len(doc['versions'])} version(s) in {escape(doc['environment'])}</p></section>{body}</main></body></html>")


def model_parts(doc: dict[str, Any]) -> dict[str, str]:
    """The model page's sections by element id."""
    return _stamped({"versions": _model_versions(doc), "lineage": _model_lineage(doc),
                     "deployment": _model_deployment(doc), "monitoring": _model_monitoring(doc)})


def _model_versions(doc: dict[str, Any]) -> str:
    rows = [(f"v{v['version']}", _badge(v["stage"]), escape(v.get("framework") or "-"), escape(v.get("author") or "-"),
             when(v.get("created_at"))) for v in doc["versions"]]
    return ("<section id='versions'><h2>Versions and stages</h2>"
            + _table(("version", "stage", ("framework", 2), ("author", 1), ("registered", 2)), rows,
                     empty="No version registered.") + "</section>")


def _model_lineage(doc: dict[str, Any]) -> str:
    rows = []
    ui = doc.get("tracking_ui")
    for v in doc["lineage"]:
        lin = v.get("lineage") or {}
        run = v.get("run_id") or lin.get("run_id") or ""
        link = (f"<a class='run-link' href='{escape(ui.rstrip('/'))}/#/runs/{escape(quote(run, safe=''))}' "
                f"rel='noopener noreferrer' target='_blank'>{escape(run)}</a>") if ui and run else escape(run or "-")
        datasets = ", ".join(f"{escape(n)} ({escape(str(d.get('sha256') or '')[:12])}, {d.get('rows') or '?'} rows)"
                             for n, d in (lin.get("datasets") or {}).items()) or "-"
        code = lin.get("code") or {}
        commit = str(code.get("commit") or "-") + (" (dirty)" if code.get("dirty") else "")
        env = lin.get("environment") or {}
        rows.append((f"v{v['version']}", link, escape(str(lin.get("experiment") or "-")), datasets, escape(commit),
                     escape(str(env.get("python") or "-"))))
    hint = (f"<p class='muted'>Run links open the tracking UI at {escape(ui)} (start it with "
            "<code>mlplat ui</code>).</p>" if ui else "")
    return ("<section id='lineage' class='wide'><h2>Lineage: run, data, code, environment</h2>"
            + _table(("version", "run", ("experiment", 1), "data", ("code commit", 2), ("python", 2)), rows,
                     empty="No lineage recorded.") + hint + "</section>")


def _model_deployment(doc: dict[str, Any]) -> str:
    out = ["<section id='deployment'><h2>Deployment and rollouts</h2>"]
    dep = doc.get("deployment")
    if not dep:
        out.append(f"<p class='muted'>{escape(doc.get('deployment_note') or 'Not deployed in this environment.')}</p>")
    else:
        routes = [(f"v{r.get('version')}", float(r.get("weight", 0))) for r in dep.get("routes", [])]
        out.append(f"<h3>{escape(doc['environment'])} · {_badge(dep.get('strategy', '-'))}</h3>"
                   + svg.split(routes, title=f"traffic split of {doc['model']}"))
        verdict = (dep.get("verdict") or {}).get("summary")
        if verdict:
            out.append(f"<p class='latest'>{escape(verdict)}</p>")
        events = list(reversed(dep.get("events") or []))  # newest first
        if events:
            latest = events[0]
            out.append(f"<p class='latest'>latest event: {_badge(latest['event'])} <b class='latest-event'>"
                       f"{escape(_event_text(latest))}</b> by {escape(latest['actor'])} at {when(latest['ts'])}</p>")
        rows = [(when(e["ts"]), _badge(e["event"]), escape(e["actor"]), escape(e.get("reason") or "")) for e in events]
        out.append(_table(("when", "event", ("by", 1), ("why", 2)), rows, empty="No rollout events."))
        hist = [(f"v{h.get('version')}", escape(str(h.get("variant") or "-")), when(h.get("started_at")),
                 when(h.get("ended_at")) if h.get("ended_at") else "serving") for h in dep.get("history") or []]
        out.append("<h3>Served versions</h3>" + _table(("version", ("variant", 1), "from", "until"), hist,
                                                       empty="No served-version history."))
    out.append("</section>")
    return "".join(out)


def _model_monitoring(doc: dict[str, Any]) -> str:
    out = ["<section id='monitoring' class='wide'><h2>Monitoring</h2>"]
    mon = doc.get("monitoring") or {}
    windows = mon.get("windows") or []
    drift = [w for w in windows if w["kind"] == "drift"]
    quality = sorted((w for w in windows if w["kind"] == "quality"), key=lambda w: w["ts"])
    if not drift:
        out.append(svg.placeholder("No monitoring window yet: run mlplat monitor run once the model serves traffic.",
                                   title="no drift windows"))
    else:
        newest = max(drift, key=lambda w: (w["ts"], w["id"]))
        history = sorted(drift, key=lambda w: w["ts"])
        out.append(_drift_window(newest, [w for w in history if w["version"] == newest["version"]]))
    out.append("<h3>Quality</h3>" + quality_block(doc["model"], quality))
    firing = [(escape(f["rule"]), _badge(f["severity"]), _fmt(f["last_value"]), when(f["since"]))
              for f in (mon.get("alerts") or {}).get("firing", [])]
    out.append("<h3>Firing alerts</h3>" + _table(("rule", "severity", "value", ("since", 1)), firing,
                                                   empty="All clear."))
    out.append("</section>")
    return "".join(out)
