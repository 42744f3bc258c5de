"""Who is calling: the principal a request or command acts as, and how that was established.

Identity is established, never typed in:

* **server** (``mlplat server`` with ``mlplat:access.mode`` oidc, aws-iam, google or entra):
  every request carries a credential — a bearer token verified against the issuer's
  published keys, or a presigned ``sts:GetCallerIdentity`` request the server executes —
  and :mod:`mlplat.identity.verifiers` turns it into a :class:`Principal`;
* **embedded** (a local stack on one machine): the operating-system user running the
  command (``os-user``); ``MLPLAT_USER`` is believed only where the stack declares
  ``mlplat:access: {mode: trusted-local}`` (tests and demos).

Every audit entry records the principal's name and :attr:`Principal.method`.
What a principal may do is decided by :mod:`mlplat.identity.rbac` from the roles the
stack maps to principal patterns (:func:`matches`).
"""
from __future__ import annotations

import getpass
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

USER_ENV = "MLPLAT_USER"

# How a principal was established (recorded in every audit entry).
OIDC, AWS_IAM, GOOGLE, ENTRA = "oidc", "aws-iam", "google", "entra"
OS_USER, TRUSTED_LOCAL, API_KEY, SYSTEM = "os-user", "trusted-local", "api-key", "system"
AUTHENTICATED_METHODS = (OIDC, AWS_IAM, GOOGLE, ENTRA)
METHODS = (*AUTHENTICATED_METHODS, OS_USER, TRUSTED_LOCAL, API_KEY, SYSTEM)  # the audit log's CHECK lists these


@dataclass(frozen=True)
class Principal:
    """An identity the platform acts for.

    ``name`` is what the audit log and the registry record (an e-mail, an IAM ARN, an OS
    user); ``ids`` are further names patterns may match (the token's ``sub``, the IAM role
    ARN behind an assumed-role session); ``groups`` come from the identity provider.
    """

    name: str
    method: str
    groups: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    issuer: str | None = None
    expires_at: float | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def authenticated(self) -> bool:
        return self.method in AUTHENTICATED_METHODS

    def describe(self) -> dict[str, Any]:
        return {"principal": self.name, "method": self.method, "groups": list(self.groups), "ids": list(self.ids),
                "issuer": self.issuer, "expires_at": self.expires_at}


class Authenticator(Protocol):
    """Turns a request's headers into a :class:`Principal` (``Unauthenticated`` otherwise)."""

    method: str

    def authenticate(self, headers: Mapping[str, str]) -> Principal: ...

    def check(self) -> None:
        """Raise ``StackError`` naming the setting when the configuration cannot work (the
        issuer does not answer, its discovery document is wrong): the server refuses to start."""
        ...


_ARN_ASSUMED = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/(.+)$")


def iam_role_arn(arn: str) -> str | None:
    """``arn:aws:sts::123:assumed-role/Role/session`` → ``arn:aws:iam::123:role/Role``."""
    m = _ARN_ASSUMED.match(arn)
    return f"arn:{m.group(1)}:iam::{m.group(2)}:role/{m.group(3)}" if m else None


def matches(pattern: str, principal: Principal) -> bool:
    """Whether a stack file's principal pattern names ``principal``.

    ``*``: anyone authenticated (or anyone, embedded); ``group:NAME``: a member of the IdP
    group; ``user:NAME`` or a bare name: the principal's name or one of its ids (an e-mail
    compares case-insensitively); an IAM role ARN also matches every assumed-role session of
    that role.
    """
    pattern = pattern.strip()
    if pattern == "*":
        return True
    if pattern.startswith("group:"):
        return pattern[len("group:"):] in principal.groups
    if pattern.startswith("user:"):
        pattern = pattern[len("user:"):]
    names = (principal.name, *principal.ids)
    if "@" in pattern:
        return any(pattern.lower() == n.lower() for n in names)
    return pattern in names


def embedded_principal(mode: str | None, env: Mapping[str, str] | None = None) -> Principal:
    """The caller of an embedded command: the OS user, or ``MLPLAT_USER`` under ``trusted-local``."""
    env = os.environ if env is None else env
    if mode == TRUSTED_LOCAL:
        typed = (env.get(USER_ENV) or "").strip()
        if typed:
            return Principal(typed, TRUSTED_LOCAL)
        return Principal(os_user(), TRUSTED_LOCAL)
    return Principal(os_user(), OS_USER)


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return f"uid-{os.getuid()}"
