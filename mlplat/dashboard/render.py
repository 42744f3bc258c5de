"""The dashboard page: one HTML document with inline CSS and SVG, refreshed by the browser."""
from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any

from mlplat.dashboard import svg
from mlplat.formatting import when

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f8fafc;color:#0f172a}
header{background:#0f172a;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:baseline}
header h1{font-size:20px;margin:0} header span{opacity:.8;font-size:13px}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:16px;padding:16px}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px 16px}
section h2{font-size:15px;margin:0 0 8px} h3{font-size:13px;margin:12px 0 4px}
table{border-collapse:collapse;width:100%;font-size:12px} td,th{border-bottom:1px solid #e2e8f0;padding:3px 6px;text-align:left}
th{color:#475569;font-weight:600} .muted{color:#64748b;font-size:12px}
.badge{display:inline-block;padding:1px 6px;border-radius:9px;font-size:11px;font-weight:600}
.ok{background:#dcfce7;color:#166534} .drift,.breach,.critical,.failed,.rolled_back{background:#fee2e2;color:#991b1b}
.warning,.pending,.running,.training{background:#fef3c7;color:#92400e} .info,.staged,.succeeded{background:#dbeafe;color:#1e40af}
.production{background:#dcfce7;color:#166534} .staging{background:#fef3c7;color:#92400e}
.dev,.archived{background:#f1f5f9;color:#475569}
.insufficient{background:#f1f5f9;color:#475569}
"""



def _badge(text: Any) -> str:
    text = str(text)
    cls = text.split()[0].replace(" ", "_")
    return f'<span class="badge {escape(cls)}">{escape(text)}</span>'


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]], *, empty: str) -> str:
    rows = list(rows)
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(doc: dict[str, Any], *, refresh: int = 10, identity: dict[str, Any] | None = None,
         csrf: str | None = None) -> str:
    """The page. ``identity``: who the dashboard acts as (``principal``, ``method``), shown in the header;
    ``csrf``: the session's token, which the page's script sends with every state-changing request."""
    who = ""
    if identity:
        who = (f"<span>signed in as <b id='identity'>{escape(str(identity.get('principal')))}</b> "
               f"({escape(str(identity.get('method')))})</span>")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='refresh' content='{int(refresh)}'>" if refresh else "",
        f"<meta name='csrf-token' content='{escape(csrf)}'>" if csrf else "",
        f"<title>mlplat · {escape(doc['stack'])}</title><style>{CSS}</style>",
        "<script src='/static/dashboard.js' defer></script></head><body>" if csrf else "</head><body>",
        f"<header><h1>mlplat dashboard</h1><span>stack <b id='stack'>{escape(doc['stack'])}</b></span>"
        f"<span>team {escape(doc['team'])}</span><span>environment {escape(doc['environment'])}</span>"
        f"<span>provider {escape(doc['provider'])}</span><span>updated {when(doc['now'])}</span>{who}</header><main>",
        _models(doc), _serving(doc), _drift(doc), _quality(doc), _cost(doc), _alerts(doc), _approvals(doc),
        _audit(doc), _labels() if csrf else "", "</main></body></html>",
    ]
    return "".join(parts)


def _labels() -> str:
    """Delayed labels typed in the page, sent by ``dashboard.js`` as JSON with the session's CSRF token."""
    return ("<section id='labels'><h2>Record labels</h2><form id='labels-form'>"
            "<p class='muted'>One <code>request id,label</code> per line (request ids from the captures).</p>"
            "<textarea id='labels-input' name='labels' rows='4' cols='60'></textarea><br>"
            "<button type='submit'>Record labels</button> <span id='labels-result' class='muted'></span>"
            "</form></section>")


def login_required(message: str) -> str:
    """The short page a browser without a session gets (401)."""
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>mlplat · login</title>"
            f"<style>{CSS}</style></head><body><header><h1>mlplat dashboard</h1></header><main><section>"
            f"<h2>Login required</h2><p>{escape(message)}</p><p>Open the login link printed by "
            "<code>mlplat dashboard</code> (it ends in <code>/login?token=...</code>).</p></section></main></body></html>")


def _models(doc) -> str:
    rows = [(escape(m["model"]), str(m["version"]), _badge(m["stage"]), escape(m.get("framework") or "-"),
             escape(m.get("author") or "-"), when(m.get("created_at"))) for m in doc["models"]]
    return ("<section id='models'><h2>Models, versions and stages</h2>"
            + _table(("model", "version", "stage", "framework", "author", "registered"), rows,
                     empty="No registered models yet: train inside mlplat.start_run and call run.log_model.")
            + "</section>")


def _serving(doc) -> str:
    out = ["<section id='serving'><h2>Deployments, traffic split and rollouts</h2>"]
    if not doc["endpoints"]:
        out.append('<p class="muted">Nothing deployed yet.</p>')
    for e in doc["endpoints"]:
        routes = [(f"v{r.get('version')}", float(r.get("weight", 0))) for r in e["routes"]]
        shadow = e.get("shadow")
        out.append(f"<h3>{escape(e['model'])} · {escape(e['environment'])} · {_badge(e['strategy'])}</h3>")
        out.append(svg.split(routes, title=f"traffic split of {e['model']}"))
        out.append("<p class='muted'>" + ", ".join(f"{escape(r.get('variant', ''))}: v{r.get('version')} "
                                                  f"{r.get('weight')}%" for r in e["routes"])
                   + (f"; shadow v{shadow.get('version')} mirrors {shadow.get('percent')}%" if shadow else "")
                   + f"; stable v{e['stable_version']}</p>")
    if doc["rollouts"]:
        rows = []
        for r in doc["rollouts"]:
            steps = r["policy"].get("steps") or []
            step = steps[r["step_index"]] if steps and r["step_index"] < len(steps) else "-"
            rows.append((escape(r["model"]), escape(r["environment"]), f"v{r['stable_version']} → v{r['candidate_version']}",
                         _badge(r["state"]), f"{step}% (step {r['step_index'] + 1} of {len(steps) or '?'})",
                         when(r["created_at"]), escape(r.get("reason") or "")))
        out.append("<h3>Rollouts</h3>" + _table(("model", "env", "versions", "state", "step", "started", "reason"),
                                                 rows, empty=""))
    out.append("</section>")
    return "".join(out)


def _drift(doc) -> str:
    out = ["<section id='drift'><h2>Drift per feature (newest window)</h2>"]
    if not doc["drift"]:
        out.append('<p class="muted">No monitoring pass yet: run <code>mlplat monitor run</code>.</p>')
    for w in doc["drift"]:
        d = w["details"]
        out.append(f"<h3>{escape(w['model'])} v{w['version']} · {escape(w['environment'])} · {_badge(w['verdict'])} · "
                   f"{w['rows']} rows, window {when(w.get('first_ts'))} – {when(w.get('last_ts'))}</h3>")
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
        if numerical:
            out.append(svg.bars(numerical, threshold=th.get("psi"), title=f"PSI per feature of {w['model']}"))
        if categorical:
            out.append(svg.bars(categorical, threshold=th.get("js_distance"),
                                title=f"Jensen-Shannon distance per categorical feature of {w['model']}"))
        rows = [(escape(f["feature"]), f["kind"], _badge(f["verdict"]),
                 _fmt(f.get("psi") if f["kind"] == "numerical" else f.get("js_distance")),
                 _fmt(f.get("ks_p_value") if f["kind"] == "numerical" else f.get("chi2_p_value")),
                 escape(", ".join(f.get("new_categories") or [])) or "-") for f in features]
        out.append(_table(("feature", "kind", "verdict", "PSI / JS", "p-value", "new categories"), rows,
                          empty=d.get("note") or "no features judged"))
        history = doc["drift_history"].get(w["model"], [])
        share = [(i + 1, h["metrics"]["drift.share"]) for i, h in enumerate(history) if "drift.share" in h["metrics"]]
        if len(share) > 1:
            out.append("<h3>Share of drifted features, window by window</h3>"
                       + svg.lines({"drift share": share}, title="drift share over time", y_min=0, y_max=1, height=140))
    out.append("</section>")
    return "".join(out)


def _quality(doc) -> str:
    out = ["<section id='quality'><h2>Quality and calibration over time</h2>"]
    if not any(doc["quality"].values()):
        out.append('<p class="muted">No labelled windows yet: <code>mlplat monitor labels --file labels.csv</code>.</p>')
    for model, windows in doc["quality"].items():
        judged = [w for w in windows if w["verdict"] != "insufficient data"]
        if not judged:
            out.append(f"<h3>{escape(model)}</h3><p class='muted'>{len(windows)} window(s), none with enough labels.</p>")
            continue
        series = {name: [(i + 1, w["metrics"][key]) for i, w in enumerate(judged) if key in w["metrics"]]
                  for name, key in (("accuracy", "quality.accuracy"), ("roc_auc", "quality.roc_auc"),
                                    ("f1", "quality.f1"), ("ece", "quality.ece"), ("brier", "quality.brier"))}
        latest = judged[-1]
        m = latest["metrics"]
        out.append(f"<h3>{escape(model)} v{latest['version']} · {_badge(latest['verdict'])} · newest window "
                   f"{latest['rows']} labelled rows</h3>")
        out.append("<p class='muted'>" + " · ".join(f"{k.split('.', 1)[1]} {_fmt(v)}" for k, v in sorted(m.items())
                                                    if k != "quality.rows") + "</p>")
        out.append("<div style='display:flex;gap:12px;flex-wrap:wrap'>"
                   + svg.lines({k: v for k, v in series.items() if v}, title=f"quality of {model} per window",
                               y_min=0, y_max=1)
                   + svg.reliability(latest["details"].get("calibration") or [], title=f"calibration of {model}")
                   + "</div>")
    out.append("</section>")
    return "".join(out)


def _cost(doc) -> str:
    c = doc["cost"]
    out = ["<section id='cost'><h2>Cost per team, with budget</h2>"]
    if "error" in c:
        out.append(f"<p class='muted'>{escape(c['error'])}</p></section>")
        return "".join(out)
    per = c["total_usd"] / c["predictions"] if c["predictions"] else None
    out.append(f"<p>{escape(c['period'])}: <b>${c['total_usd']:,.4f}</b> for {c['predictions']} predictions"
               + (f" · ${per:.6f} per prediction" if per is not None else "") + "</p>")
    for team, b in c["budget"].items():
        spent = sum(r["cost_usd"] for r in c["teams"] if r["team"] == team)
        out.append(f"<h3>{escape(team)}: ${b['monthly_usd']:,.2f} a month, ${b['period_usd']:,.2f} for this period</h3>"
                   + svg.gauge(spent, b["period_usd"] or 0.0, title=f"budget used by {team}"))
    rows = [(escape(r["version"]), f"${r['cost_usd']:,.4f}", _fmt(r["instance_hours"]), str(r["predictions"]),
             "-" if r["cost_per_prediction_usd"] is None else f"${r['cost_per_prediction_usd']:.6f}",
             "-" if r["utilisation"] is None else f"{r['utilisation']:.2%}") for r in c["versions"]]
    out.append(_table(("version", "cost", "instance-hours", "predictions", "per prediction", "busy"), rows,
                      empty="No serving this period."))
    out.append("</section>")
    return "".join(out)


def _alerts(doc) -> str:
    a = doc["alerts"]
    firing = [(escape(f["rule"]), escape(f["subject"]), _badge(f["severity"]), _fmt(f["last_value"]), when(f["since"]))
              for f in a["firing"]]
    recent = [(when(e["ts"]), _badge(e["kind"] if e["kind"] == "resolved" else e["severity"]), escape(e["message"]))
              for e in a["recent"][:15]]
    retrain = [(when(t["ts"]), escape(t["model"]), f"v{t['from_version']}", _badge(t["status"]),
                f"v{t['new_version']}" if t.get("new_version") else "-", escape((t.get("error") or "")[:120]))
               for t in doc["retraining"]]
    return ("<section id='alerts'><h2>Alerts and retraining</h2><h3>Firing now</h3>"
            + _table(("rule", "subject", "severity", "value", "since"), firing, empty="All clear.")
            + "<h3>Recent events</h3>" + _table(("when", "kind", "message"), recent, empty="No alert events.")
            + (f"<p class='muted'>{a['undelivered']} webhook message(s) waiting, {a['failed_deliveries']} failed.</p>"
               if a["undelivered"] or a["failed_deliveries"] else "")
            + "<h3>Retraining</h3>"
            + _table(("when", "model", "from", "status", "new", "error"), retrain, empty="No retraining triggered.")
            + "</section>")


def _approvals(doc) -> str:
    rows = [(escape(p["model"]), f"v{p['version']}", _badge(p["stage"]), escape(p.get("author") or "-"),
             f"{p.get('approvals', 0)} of {p.get('required', '?')}", _badge(p.get("state", "pending")))
            for p in doc["approvals"]]
    return ("<section id='approvals'><h2>Pending approvals</h2>"
            + _table(("model", "version", "stage", "author", "approvals", "state"), rows,
                     empty="Nothing waits for an approval.") + "</section>")


def _audit(doc) -> str:
    rows = [(str(r["seq"]), when(r["ts"]), escape(r["actor"]), escape(r["action"]),
             escape(f"{r['model'] or ''}{' v' + str(r['version']) if r.get('version') else ''}"),
             escape((r.get("reason") or "")[:140])) for r in doc["audit"]]
    return ("<section id='audit'><h2>Audit trail</h2>"
            + _table(("#", "when", "who", "action", "model", "why"), rows, empty="The audit log is empty.")
            + "</section>")
