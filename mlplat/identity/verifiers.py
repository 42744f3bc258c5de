"""Verifying callers' credentials on the server, one authenticator per ``mlplat:access.mode``.

    authenticator = authenticator_for(spec)     # None: the stack does not authenticate callers
    authenticator.check()                       # StackError naming the setting: refuse to start
    principal = authenticator.authenticate(request.headers)   # Unauthenticated (401) otherwise

* **oidc**: ``Authorization: Bearer <JWT>`` from the company's OpenID Connect provider. Discovery
  from ``<issuer>/.well-known/openid-configuration``, whose ``issuer`` must be the configured one
  (OpenID Connect Discovery 1.0 §4.3); keys from its ``jwks_uri`` (cached, see :mod:`.jwks`).
* **google**: Google-signed ID tokens, checked as Google's "Verify the Google ID token" page says
  (https://developers.google.com/identity/gsi/web/guides/verify-google-id-token): signed by a key at
  https://www.googleapis.com/oauth2/v3/certs, ``iss`` ``https://accounts.google.com`` or
  ``accounts.google.com``, ``aud`` the configured audience, unexpired; the principal is the e-mail
  address, which must be verified (``email_verified``), and ``hd`` must be the Workspace domain when
  one is configured.
* **entra**: Microsoft Entra ID access tokens, as "Access tokens in the Microsoft identity platform"
  says (https://learn.microsoft.com/en-us/entra/identity-platform/access-tokens): keys at
  ``{authority}/{tenant}/discovery/v2.0/keys``, ``iss`` ``{authority}/{tenant}/v2.0`` (v2 tokens) or
  ``https://sts.windows.net/{tenant}/`` (v1), ``tid`` the tenant, ``aud`` the configured audience. The
  principal is ``preferred_username`` (v2) or ``upn`` (v1), else the object id ``oid``; ``ids``
  hold ``oid`` (immutable: the safest thing for a role pattern to name). Groups are the token's
  ``groups`` (object ids) and, for each app role in ``roles``, ``approle:<name>`` — so a stack maps a
  role with ``group:approle:Platform.Admin``. (A user in too many groups gets an overage claim
  instead of ``groups``; it is not resolved through Microsoft Graph: prefer app roles.)
* **aws-iam**: a signed ``sts:GetCallerIdentity`` request, see :mod:`.aws_sign`.

Every token check (RFC 7519 §7.2 and OpenID Connect Core §3.1.3.7): the header's ``alg`` must be
one of the configured asymmetric algorithms (so ``alg: none`` and HS256 signed with the public key
are refused before any key is touched) and agree with its key's own ``alg``/``kty``; the signature
verifies (PyJWT); ``exp``, ``iss``, ``aud``, ``sub`` are required; ``exp`` and ``nbf`` (RFC 7519
§4.1.4, §4.1.5) are checked against the server's clock with a leeway of :data:`LEEWAY_S` seconds
for clock skew between the server and the identity provider. Every refusal is ``Unauthenticated``
(HTTP 401) naming the reason (expired, wrong audience...) and ``mlplat login``, never key material.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from mlplat.errors import IdentityProviderUnavailable, StackError, Unauthenticated
from mlplat.identity import ENTRA, GOOGLE, OIDC, Authenticator, Principal
from mlplat.identity.jwks import KeyRefused, KeySet, UnusableDocument, fetch_json

LEEWAY_S = 30  # clock skew tolerated on exp/nbf/iat between this server and the identity provider
MAX_CREDENTIAL_BYTES = 16 * 1024
JWKS_COOLDOWN_S = 60.0
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v3/certs"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
ENTRA_V1_ISSUER = "https://sts.windows.net/{tenant}/"
BEARER = "Bearer"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def authenticator_for(spec: Any, *, http: Any = None, clock: Callable[[], float] = time.time,
                      jwks_cooldown: float = JWKS_COOLDOWN_S, google_certs_url: str = GOOGLE_CERTS_URL,
                      entra_authority: str | None = None) -> Authenticator | None:
    """The authenticator of ``spec``'s access mode; None where callers are not authenticated
    (no mode, ``os-user``, ``trusted-local``).

    The keywords are for tests, never read from the environment: ``http`` (an ``httpx.Client``),
    ``clock``, ``jwks_cooldown``, and the trust anchors a local issuer stands in for
    (``google_certs_url``, ``entra_authority``).
    """
    access = getattr(spec, "access", None)
    if access is None or not access.authenticated:
        return None
    mode = access.mode.value
    stack = getattr(spec, "name", "") or "STACK"
    client = http if http is not None else _client()
    if mode == OIDC:
        return OidcAuthenticator(access.oidc, stack=stack, http=client, clock=clock, jwks_cooldown=jwks_cooldown)
    if mode == GOOGLE:
        return GoogleAuthenticator(access.google, stack=stack, http=client, clock=clock,
                                   jwks_cooldown=jwks_cooldown, certs_url=google_certs_url)
    if mode == ENTRA:
        return EntraAuthenticator(access.entra, stack=stack, http=client, clock=clock, jwks_cooldown=jwks_cooldown,
                                  authority=entra_authority)
    from mlplat.identity.aws_sign import AwsIamAuthenticator

    return AwsIamAuthenticator(access.aws, server_id=access.aws.server_id or stack, stack=stack, http=client,
                               clock=clock)


def _client() -> Any:
    import httpx

    # No redirects: a key set or an STS answer comes from the URL configured, not from where it points.
    return httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0), follow_redirects=False)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header, whatever the case of its name (Starlette's headers are lower-case)."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def login_hint(stack: str) -> str:
    return f"run `mlplat login --stack {stack}` to sign in again (the CLI then sends a fresh token)"


def bearer_token(headers: Mapping[str, str], *, hint: str) -> str:
    """The token of ``Authorization: Bearer <token>`` (RFC 6750 §2.1); ``Unauthenticated`` otherwise."""
    value = header(headers, "Authorization")
    if value is None or not value.strip():
        raise Unauthenticated("the request carries no credentials (no Authorization header)",
                              where="Authorization", hint=hint)
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(f"this server takes a bearer token (Authorization: Bearer <token>), not "
                              f"'{scheme[:32]}' credentials", where="Authorization", hint=hint)
    token = token.strip()
    if len(token) > MAX_CREDENTIAL_BYTES:
        raise Unauthenticated(f"the bearer token is longer than {MAX_CREDENTIAL_BYTES} bytes",
                              where="Authorization", hint=hint)
    return token


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class TokenVerifier:
    """The checks every bearer token gets (see the module docstring); ``verify`` returns its claims."""

    def __init__(self, *, keys: KeySet, algorithms: Collection[str], issuers: Callable[[], Collection[str]],
                 audience: str, clock: Callable[[], float], hint: str, leeway: float = LEEWAY_S):
        self.keys = keys
        self.algorithms = tuple(algorithms)
        self.issuers = issuers
        self.audience = audience
        self.clock = clock
        self.hint = hint
        self.leeway = leeway

    def refuse(self, reason: str) -> Unauthenticated:
        return Unauthenticated(f"the bearer token was refused: {reason}", where="Authorization", hint=self.hint)

    def verify(self, token: str) -> dict[str, Any]:
        import jwt
        from jwt import exceptions as e

        try:
            head = jwt.get_unverified_header(token)
        except e.PyJWTError:
            raise self.refuse("it is not a JSON Web Token (three base64url parts, a JSON header)") from None
        alg = head.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise self.refuse(f"its algorithm {str(alg)[:16]!r} is not accepted here "
                              f"(accepted: {', '.join(self.algorithms)})")
        try:
            key = self.keys.key(head.get("kid"), alg)
        except KeyRefused as exc:
            raise self.refuse(str(exc)) from None
        issuers = list(self.issuers())
        try:
            claims = jwt.decode(token, key=key, algorithms=[alg], audience=self.audience, issuer=issuers,
                                options={"require": ["exp", "iss", "aud", "sub"], "verify_exp": False,
                                         "verify_nbf": False, "verify_iat": False})
        except e.InvalidSignatureError:
            raise self.refuse("its signature does not verify with the identity provider's key") from None
        except e.InvalidAudienceError:
            raise self.refuse(f"it is not meant for this server (its audience is not '{self.audience}')") from None
        except e.InvalidIssuerError:
            raise self.refuse(f"it was not issued by the configured issuer ({' or '.join(issuers)})") from None
        except e.MissingRequiredClaimError as exc:
            raise self.refuse(f"it has no '{exc.claim}' claim") from None
        except e.InvalidAlgorithmError:
            raise self.refuse(f"its algorithm {alg} does not fit its key") from None
        except e.PyJWTError as exc:
            raise self.refuse(f"it is malformed ({type(exc).__name__})") from None
        self._check_times(claims)
        return claims

    def _check_times(self, claims: dict[str, Any]) -> None:
        # PyJWT reads the wall clock; these are its checks against the server's (injectable) clock.
        now = self.clock()
        for name in ("exp", "nbf", "iat"):
            if name in claims and not _number(claims[name]):
                raise self.refuse(f"its '{name}' claim is not a number of seconds")
        if claims["exp"] <= now - self.leeway:
            raise self.refuse(f"it expired {int(now - claims['exp'])} s ago")
        if "nbf" in claims and claims["nbf"] > now + self.leeway:
            raise self.refuse(f"it is not valid yet (nbf is {int(claims['nbf'] - now)} s ahead of this server's clock)")
        if "iat" in claims and claims["iat"] > now + self.leeway:
            raise self.refuse("it was issued in the future (iat ahead of this server's clock)")


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _keys_unusable(where: str, hint: str, what: str, exc: Exception) -> StackError:
    return StackError(f"{what} cannot be used: {exc}", where=where, hint=hint)


class OidcAuthenticator:
    """Bearer tokens from an OpenID Connect provider (``mlplat:access.oidc``)."""

    method = OIDC
    scheme = BEARER
    where = "mlplat:access.oidc.issuer"

    def __init__(self, settings: Any, *, stack: str, http: Any, clock: Callable[[], float],
                 jwks_cooldown: float = JWKS_COOLDOWN_S):
        self.settings = settings
        self.stack = stack
        self.http = http
        self.clock = clock
        self.jwks_cooldown = jwks_cooldown
        self.issuer: str | None = None  # the discovery document's issuer, exactly
        self.keys: KeySet | None = None
        self.hint = login_hint(stack)
        self.verifier: TokenVerifier | None = None

    def discovery_url(self) -> str:
        return f"{self.settings.issuer}/.well-known/openid-configuration"

    def discover(self) -> TokenVerifier:
        """Read the discovery document (OpenID Connect Discovery 1.0 §4): ``UnusableDocument`` when it
        is wrong, ``IdentityProviderUnavailable`` when it cannot be read."""
        if self.verifier is not None:
            return self.verifier
        doc = fetch_json(self.http, self.discovery_url(), "the OpenID Connect discovery document")
        issuer = doc.get("issuer")
        # §4.3: the issuer in the document must be identical to the issuer the document was read for
        # (a trailing slash the stack file's validator removed aside).
        if not isinstance(issuer, str) or issuer.rstrip("/") != self.settings.issuer:
            raise UnusableDocument(f"the discovery document at {self.discovery_url()} names issuer "
                                   f"{str(issuer)[:200]!r}, not {self.settings.issuer!r}")
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not _safe_url(jwks_uri):
            raise UnusableDocument(f"the discovery document at {self.discovery_url()} has no https jwks_uri "
                                   f"(got {str(jwks_uri)[:200]!r})")
        self.issuer = issuer
        self.keys = KeySet(jwks_uri, http=self.http, clock=self.clock, cooldown=self.jwks_cooldown)
        self.verifier = TokenVerifier(keys=self.keys, algorithms=self.settings.algorithms,
                                      issuers=lambda: (issuer,), audience=self.settings.audience,
                                      clock=self.clock, hint=self.hint)
        return self.verifier

    def check(self) -> None:
        hint = ("set it to the identity provider's issuer URL (the `iss` of its tokens; discovery is read from "
                "<issuer>/.well-known/openid-configuration) and make sure this machine reaches it")
        try:
            self.discover()
            assert self.keys is not None
            self.keys.load()
        except (UnusableDocument, IdentityProviderUnavailable) as exc:
            self.verifier = None
            raise _keys_unusable(self.where, hint, f"the OIDC issuer {self.settings.issuer}", exc) from None

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        token = bearer_token(headers, hint=self.hint)
        try:
            verifier = self.discover()
        except UnusableDocument as exc:
            raise IdentityProviderUnavailable(f"the OIDC issuer cannot be used: {exc}",
                                              hint="retry shortly; the server's operator should check "
                                                   "mlplat:access.oidc.issuer") from None
        claims = verifier.verify(token)
        settings = self.settings
        name = claims.get(settings.principal_claim)
        if settings.principal_claim == "email" and isinstance(name, str) and claims.get("email_verified") is False:
            # OpenID Connect Core §5.1: an e-mail the provider has not verified names nobody for sure.
            raise verifier.refuse("its e-mail address is not verified (email_verified is false)")
        if not isinstance(name, str) or not name.strip():
            name = claims["sub"]
        return Principal(str(name), OIDC, groups=_strings(claims.get(settings.groups_claim)),
                         ids=(str(claims["sub"]),), issuer=claims["iss"], expires_at=float(claims["exp"]),
                         claims=claims)


def _safe_url(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


class GoogleAuthenticator:
    """Google-signed ID tokens (``mlplat:access.google``)."""

    method = GOOGLE
    scheme = BEARER
    where = "mlplat:access.google"

    def __init__(self, settings: Any, *, stack: str, http: Any, clock: Callable[[], float],
                 jwks_cooldown: float = JWKS_COOLDOWN_S, certs_url: str = GOOGLE_CERTS_URL):
        self.settings = settings
        self.stack = stack
        self.hint = login_hint(stack)
        self.keys = KeySet(certs_url, http=http, clock=clock, cooldown=jwks_cooldown)
        self.verifier = TokenVerifier(keys=self.keys, algorithms=("RS256",), issuers=lambda: GOOGLE_ISSUERS,
                                      audience=settings.audience, clock=clock, hint=self.hint)

    def check(self) -> None:
        try:
            self.keys.load()
        except (UnusableDocument, IdentityProviderUnavailable) as exc:
            raise _keys_unusable(self.where, f"this machine must reach {self.keys.uri}",
                                 "Google's signing keys", exc) from None

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        claims = self.verifier.verify(bearer_token(headers, hint=self.hint))
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            raise self.verifier.refuse("it carries no e-mail address (ask for the `email` scope)")
        if claims.get("email_verified") not in (True, "true"):
            raise self.verifier.refuse("its e-mail address is not verified (email_verified is not true)")
        domain = self.settings.hosted_domain
        if domain is not None and claims.get("hd") != domain:
            raise self.verifier.refuse(f"the account is not in the Google Workspace domain {domain} (hd)")
        return Principal(email, GOOGLE, ids=(str(claims["sub"]),), issuer=claims["iss"],
                         expires_at=float(claims["exp"]), claims=claims)


class EntraAuthenticator:
    """Microsoft Entra ID access tokens (``mlplat:access.entra``)."""

    method = ENTRA
    scheme = BEARER
    where = "mlplat:access.entra.tenantId"

    def __init__(self, settings: Any, *, stack: str, http: Any, clock: Callable[[], float],
                 jwks_cooldown: float = JWKS_COOLDOWN_S, authority: str | None = None):
        self.settings = settings
        self.stack = stack
        self.hint = login_hint(stack)
        self.tenant = settings.tenant_id.strip()
        self.authority = (authority or settings.authority).rstrip("/")
        self.issuers = (f"{self.authority}/{self.tenant}/v2.0", ENTRA_V1_ISSUER.format(tenant=self.tenant))
        self.keys = KeySet(f"{self.authority}/{self.tenant}/discovery/v2.0/keys", http=http, clock=clock,
                           cooldown=jwks_cooldown)
        self.verifier = TokenVerifier(keys=self.keys, algorithms=("RS256",), issuers=lambda: self.issuers,
                                      audience=settings.audience, clock=clock, hint=self.hint)

    def check(self) -> None:
        if not _GUID.match(self.tenant):
            raise StackError(f"tenantId {self.tenant!r} is not a tenant id: tokens carry the tenant's GUID in "
                             "`tid`, so `common`, `organizations` or a domain name would admit no one, or anyone",
                             where=self.where, hint="set it to the directory (tenant) id shown in the Entra admin "
                                                    "center, e.g. 72f988bf-86f1-41af-91ab-2d7cd011db47")
        try:
            self.keys.load()
        except (UnusableDocument, IdentityProviderUnavailable) as exc:
            raise _keys_unusable(self.where, "check the tenant id and mlplat:access.entra.authority, and that "
                                 "this machine reaches them", f"the Entra tenant's keys ({self.keys.uri})",
                                 exc) from None

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        claims = self.verifier.verify(bearer_token(headers, hint=self.hint))
        if str(claims.get("tid", "")).lower() != self.tenant.lower():
            raise self.verifier.refuse("it was issued for another tenant (tid)")
        oid = claims.get("oid")
        if not isinstance(oid, str) or not oid:
            raise self.verifier.refuse("it has no 'oid' claim (the caller's object id)")
        name = next((claims[c] for c in ("preferred_username", "upn")
                     if isinstance(claims.get(c), str) and claims[c]), oid)
        groups = _strings(claims.get("groups")) + tuple(f"approle:{r}" for r in _strings(claims.get("roles")))
        return Principal(name, ENTRA, groups=groups, ids=(oid,), issuer=claims["iss"],
                         expires_at=float(claims["exp"]), claims=claims)
