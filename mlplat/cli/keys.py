"""`mlplat keys create|list|revoke|rotate`: API keys for the serving gateway's scoring routes.

The commands run the ``keys.*`` operations (:mod:`mlplat.api.ops.keys`) through the stack's control
plane. A key's secret is printed once, by ``create`` and ``rotate``; the ledger keeps only its digest.
"""
from __future__ import annotations

import re

import click

from mlplat.cli.options import emit_json, env_option, json_option, pass_ctx, stack_option, stack_plane, wide_option
from mlplat.formatting import when

_DURATION = re.compile(r"^(\d+)([smhd]?)$")


class Duration(click.ParamType):
    """``0``, ``90`` (seconds), ``30s``, ``15m``, ``1h``, ``30d``."""

    name = "duration"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, int | float):
            return float(value)
        m = _DURATION.match(str(value).strip())
        if not m:
            self.fail(f"{value!r} is not a duration: give seconds or a number with s, m, h or d (e.g. 0, 90, 1h, 30d)",
                      param, ctx)
        return float(int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])


def _print_key(ctx, doc: dict, verb: str) -> None:
    # the messages go to stderr, the key alone to stdout: `mlplat keys create m > key.txt` keeps just the key
    expiry = f", expires {when(doc['expires_at'])}" if doc.get("expires_at") else ""
    ctx.err.print(f"{verb} key {doc['id']} for {doc['model']} in {doc['environment']}{expiry}", highlight=False)
    ctx.err.print("the key (shown once; store it now, the platform keeps only its digest):", highlight=False)
    click.echo(doc["key"])


@click.group()
def keys() -> None:
    """API keys for the gateway's scoring routes, scoped to a model and an environment."""


@keys.command("create")
@click.argument("model")
@stack_option
@env_option
@click.option("--description", "-d", default=None, help="What the key is for (shown by `keys list`).")
@click.option("--expires-in", type=Duration(), default=None, help="Lifetime, e.g. 90d (default: no expiry).")
@json_option
@pass_ctx
def create_cmd(ctx, model: str, stack: str, environment: str | None, description: str | None,
               expires_in: float | None, as_json: bool) -> None:
    """A new key for MODEL's endpoint in the stack's environment (or --env); its secret is printed once."""
    doc = stack_plane(ctx, stack)[1].call("keys.create", model=model, environment=environment, description=description,
                                  expires_in=expires_in)
    if as_json:
        emit_json(doc)
        return
    _print_key(ctx, doc, "created")


@keys.command("list")
@click.argument("model", required=False)
@stack_option
@click.option("--env", "environment", default=None, help="Only this environment (default: all).")
@wide_option
@json_option
@pass_ctx
def list_cmd(ctx, model: str | None, stack: str, environment: str | None, wide: bool, as_json: bool) -> None:
    """Keys (of MODEL, if given) with their state; never their secrets."""
    rows = stack_plane(ctx, stack)[1].call("keys.list", model=model, environment=environment)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        ctx.console.print("No API keys yet. Create one with `mlplat keys create MODEL`.")
        return
    from mlplat.formatting import Column, print_table

    columns = (Column("id"), Column("model"), Column("environment"), Column("state"), Column("expires", 1),
               Column("created", 2), Column("by", 3), Column("description", 4, wrap=True))
    print_table(ctx.console, columns, [[r["id"], r["model"], r["environment"], r["state"],
                                        when(r["expires_at"]) if r["expires_at"] else "-", when(r["created_at"]),
                                        r["created_by"], r["description"] or ""] for r in rows], wide=wide)


@keys.command("revoke")
@click.argument("model")
@click.argument("key_id")
@stack_option
@click.option("--reason", default=None, help="Why, for the audit log.")
@json_option
@pass_ctx
def revoke_cmd(ctx, model: str, key_id: str, stack: str, reason: str | None, as_json: bool) -> None:
    """Revoke MODEL's key KEY_ID; running gateways refuse it within their routing poll, without a restart."""
    doc = stack_plane(ctx, stack)[1].call("keys.revoke", key_id=key_id, model=model, reason=reason)
    if as_json:
        emit_json(doc)
        return
    verb = "revoked" if doc["changed"] else "already revoked:"
    ctx.console.print(f"{verb} key {doc['id']} of {doc['model']} in {doc['environment']}", highlight=False)


@keys.command("rotate")
@click.argument("model")
@click.argument("key_id")
@stack_option
@click.option("--grace", type=Duration(), default="1h", show_default=True,
              help="How long the old key stays valid (0: it stops now).")
@click.option("--description", "-d", default=None, help="Description of the new key (default: the old one's).")
@json_option
@pass_ctx
def rotate_cmd(ctx, model: str, key_id: str, stack: str, grace: float, description: str | None,
               as_json: bool) -> None:
    """A new key with KEY_ID's scope; KEY_ID stays valid for --grace, then stops."""
    doc = stack_plane(ctx, stack)[1].call("keys.rotate", key_id=key_id, model=model, grace=grace, description=description)
    if as_json:
        emit_json(doc)
        return
    _print_key(ctx, doc, "rotated: new")
    old = doc["previous"]
    ctx.err.print(f"the old key {old['id']} stops {when(old['expires_at'])}", highlight=False)
