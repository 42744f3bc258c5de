"""`mlplat login`, `logout`, `whoami` and `access list`: signing in, and who may do what."""
from __future__ import annotations

from typing import Any

import click

from mlplat.cli.options import emit_json, json_option, pass_ctx, stack_option, wide_option
from mlplat.context import Context
from mlplat.errors import StackError

# Where each cloud's own sign-in lives: mlplat reads the credentials these leave behind.
CLOUD_SIGN_IN = {
    "aws-iam": "`aws sso login` (or `aws configure`, an instance or task role)",
    "google": "a service account (GOOGLE_APPLICATION_CREDENTIALS, or the metadata server on GCP)",
    "entra": "`az login` (or a managed identity, workload identity, AZURE_CLIENT_ID/SECRET)",
}


def _access(spec: Any) -> tuple[str, Any]:
    access = spec.access
    return (access.mode.value if access.mode is not None else "os-user"), access


@click.command()
@stack_option
@json_option
@pass_ctx
def login(ctx: Context, stack: str, as_json: bool) -> None:
    """Sign in to the stack's identity provider (OIDC: the device-code flow) and cache the tokens.

    Prints a URL and a code to enter there, in any browser on any machine; once approved, the
    tokens are cached (mode 0600) and renewed as they expire. For aws-iam, google and entra
    stacks the cloud's own sign-in supplies the credentials: this checks they are found.
    """
    from mlplat.identity import client

    spec = ctx.stack(stack)
    mode, access = _access(spec)
    if mode == "oidc":
        cache = client.TokenCache()

        def show(device: dict[str, Any]) -> None:
            uri, code = device.get("verification_uri"), device["user_code"]
            complete = device.get("verification_uri_complete")
            ctx.err.print(f"To sign in to {access.oidc.issuer}, open {uri} and enter the code {code}", markup=False)
            if complete:
                ctx.err.print(f"  (or open {complete})", markup=False)
            ctx.err.print("Waiting for approval...", markup=False)

        entry = client.device_login(access.oidc, stack=spec.name, cache=cache, show=show)
        result = {"stack": spec.name, "mode": mode, "issuer": entry["issuer"], "principal": entry.get("principal"),
                  "expires_at": entry.get("expires_at"), "cache": str(cache.path)}
        if as_json:
            emit_json(result)
        else:
            ctx.console.print(f"Signed in to {entry['issuer']} as {entry.get('principal') or '(unnamed)'}; tokens "
                              f"cached in {cache.path} (mode 0600)", markup=False)
        return
    if mode in CLOUD_SIGN_IN:
        credentials = client.credentials_for(spec)
        credentials.headers()  # raises Unauthenticated, naming the sign-in to run, when none are found
        result = {"stack": spec.name, "mode": mode, "source": credentials.source}
        if as_json:
            emit_json(result)
        else:
            ctx.console.print(f"Stack '{spec.name}' authenticates with {mode}: its credentials come from "
                              f"{credentials.source}, found. mlplat keeps no tokens of its own for it; when they "
                              f"expire, sign in again with {CLOUD_SIGN_IN[mode]}.", markup=False)
        return
    result = {"stack": spec.name, "mode": mode, "source": "none"}
    if as_json:
        emit_json(result)
    else:
        who = "the name in MLPLAT_USER (or the OS user)" if mode == "trusted-local" else "the operating-system user"
        ctx.console.print(f"Stack '{spec.name}' does not sign in (access mode {mode}): the caller is {who}.",
                          markup=False)


@click.command()
@stack_option
@pass_ctx
def logout(ctx: Context, stack: str) -> None:
    """Forget the tokens `mlplat login` cached for the stack's identity provider."""
    from mlplat.identity import client

    spec = ctx.stack(stack)
    mode, access = _access(spec)
    if mode != "oidc":
        raise StackError(f"stack '{spec.name}' uses access mode {mode}: mlplat caches no tokens for it",
                         where="mlplat:access.mode",
                         hint=("sign out with the cloud's own tool" if mode in CLOUD_SIGN_IN else
                               "nothing to sign out of"))
    cache = client.TokenCache()
    if client.logout(access.oidc, cache=cache):
        ctx.console.print(f"Signed out of {access.oidc.issuer} (its tokens are gone from {cache.path}).", markup=False)
    else:
        ctx.console.print(f"Not signed in to {access.oidc.issuer}: no tokens were cached in {cache.path}.",
                          markup=False)


@click.command()
@stack_option
@json_option
@pass_ctx
def whoami(ctx: Context, stack: str, as_json: bool) -> None:
    """Who the platform takes you for: the principal, how it was established, groups and roles."""
    from mlplat.api.plane import plane_for
    from mlplat.identity import AUTHENTICATED_METHODS

    spec = ctx.stack(stack)
    plane = plane_for(spec, ctx)
    doc = plane.call("access.whoami")
    if as_json:
        emit_json(doc)
        return
    roles = ", ".join(doc.get("roles") or []) or "none"
    if plane.mode == "embedded":
        roles += " (embedded commands act on this machine's own ledger and are not checked against roles)"
    elif roles == "none" and doc.get("method") in AUTHENTICATED_METHODS:
        roles += " (deny by default: an admin grants roles in mlplat:access.roles)"
    rows = [("principal", doc.get("principal")), ("method", doc.get("method")),
            ("groups", ", ".join(doc.get("groups") or []) or "-"), ("roles", roles),
            ("team", doc.get("team")), ("environment", doc.get("environment")), ("stack", doc.get("stack"))]
    ids = [i for i in doc.get("ids") or [] if i != doc.get("principal")]
    if ids:
        rows.insert(2, ("also known as", ", ".join(ids)))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        ctx.console.print(f"{key.ljust(width)}  {value if value is not None else '-'}", markup=False)


@click.group()
def access() -> None:
    """Roles and grants: who may do what on a stack."""


@access.command("list")
@stack_option
@wide_option
@json_option
@pass_ctx
def list_(ctx: Context, stack: str, wide: bool, as_json: bool) -> None:
    """Each role and the principals it is granted to, and the feature views shared with other teams."""
    from mlplat.api.plane import plane_for
    from mlplat.stack import ROLES

    spec = ctx.stack(stack)
    doc = plane_for(spec, ctx).call("access.roles")
    if as_json:
        emit_json(doc)
        return
    from rich.markup import escape

    from mlplat.formatting import Column, print_table

    roles = doc.get("roles") or {}
    # Principals are names a reader copies: kept whole, wrapped between names when many.
    print_table(ctx.console, (Column("role"), Column("granted to", wrap=True)),
                [[role, escape(", ".join(roles.get(role) or []) or "nobody")]
                 for role in [*ROLES, *(r for r in roles if r not in ROLES)]],
                wide=wide, title=f"roles of stack '{spec.name}' (access mode {doc.get('mode')})")
    grants = doc.get("feature_grants") or []
    if grants:
        print_table(ctx.console, (Column("feature views", wrap=True), Column("readable by", wrap=True)),
                    [[escape(", ".join(grant.get("views") or [])), escape(", ".join(grant.get("principals") or []))]
                     for grant in grants], wide=wide, title="feature views shared with other teams")
    else:
        ctx.console.print("No feature views are shared with other teams.")
    if doc.get("applied") is False:
        ctx.console.print("These are the stack file's settings; the server has not had them applied yet "
                          "(an admin runs `mlplat up`): until then they change nothing.", markup=False)
