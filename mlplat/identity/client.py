"""Credentials a client sends to ``mlplat server``, chosen by the stack's ``mlplat:access.mode``.

    credentials = credentials_for(spec)
    response = http.get(path, headers=credentials.headers())
    if response.status_code == 401 and credentials.refresh():
        response = http.get(path, headers=credentials.headers())   # once

Where each mode's credential comes from:

* **oidc**: ``MLPLAT_TOKEN`` (a bearer token, for CI), else the token cache ``mlplat login``
  writes (:class:`TokenCache`); an access token that has expired is renewed with its refresh
  token at the issuer's token endpoint (RFC 6749 §6), found through OpenID Connect discovery;
* **aws-iam**: the boto3 credential chain (environment, shared config and SSO, instance or task
  role), signed into a presigned ``sts:GetCallerIdentity`` request the server executes
  (:func:`mlplat.identity.aws_sign.identity_header`);
* **google**: ``MLPLAT_TOKEN``, else a Google-signed ID token for the stack's audience from
  google-auth's credential chain (``fetch_id_token``);
* **entra**: ``MLPLAT_TOKEN``, else an access token for ``<audience>/.default`` from
  azure-identity's ``DefaultAzureCredential``;
* anything else (a trusted-local or os-user server on one machine): no credential; the server
  reads the caller's name from the ``Mlplat-User`` header.

:func:`device_login` is the OAuth 2.0 device authorization grant (RFC 8628) ``mlplat login`` runs.
Heavy libraries (httpx, jwt, boto3, google-auth, azure-identity) are imported where used.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlplat.errors import ExternalError, ToolMissing, Unauthenticated

TOKEN_ENV = "MLPLAT_TOKEN"
CACHE_ENV = "MLPLAT_TOKEN_CACHE"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# openid: an ID token; offline_access: a refresh token (OpenID Connect Core §11), so one login lasts.
SCOPE = "openid email profile offline_access"
# A token this close to its expiry is renewed before it is sent, so it does not expire in flight.
EXPIRY_MARGIN_S = 60.0
CACHE_VERSION = 1


def login_hint(stack: str) -> str:
    return f"sign in with `mlplat login --stack {stack}` (CI: put a token in ${TOKEN_ENV})"


class Credentials(ABC):
    """What a client adds to each request so the server can tell who is calling."""

    #: the mlplat.identity method the server will establish from these credentials
    method: str = "none"
    #: where the credential comes from, for people (``mlplat login`` prints it)
    source: str = "none"

    @abstractmethod
    def headers(self) -> dict[str, str]:
        """The headers for the next request (may renew an expiring token first); raises
        ``Unauthenticated`` when no usable credential exists, with a hint to get one."""

    def refresh(self) -> bool:
        """Obtain a fresh credential after the server refused the current one (HTTP 401).
        True when there is a new one worth resending with; False when nothing can change."""
        return False


class NoCredentials(Credentials):
    """A server that does not authenticate (trusted-local, one machine): nothing to send."""

    method, source = "none", "none (the server is not configured to authenticate callers)"

    def headers(self) -> dict[str, str]:
        return {}


class BearerToken(Credentials):
    """A fixed bearer token (``MLPLAT_TOKEN``): sent as is, never renewed here."""

    def __init__(self, token: str, *, method: str, source: str = f"${TOKEN_ENV}"):
        token = token.strip()
        if token.lower().startswith("bearer "):
            token = token[len("bearer "):].strip()
        self.token, self.method, self.source = token, method, source

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


# --- the token cache ---------------------------------------------------------------------------


def default_cache_path(env: Mapping[str, str] | None = None) -> Path:
    """``$MLPLAT_TOKEN_CACHE``, else ``$XDG_CONFIG_HOME/mlplat/tokens.json`` (``~/.config/...``)."""
    env = os.environ if env is None else env
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or ""
    # the XDG Base Directory spec: a relative XDG_CONFIG_HOME is invalid and must be ignored
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "mlplat" / "tokens.json"


class TokenCache:
    """Tokens ``mlplat login`` obtained, in one JSON file readable by its owner only.

    Entries are keyed by issuer and client id. The file is created with mode 0600 (never
    widened then narrowed) and replaced atomically (a temporary file renamed over it), so a
    reader sees the old tokens or the new ones, never half of either. Like ssh with a private
    key, a cache that others may read is refused rather than used.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else default_cache_path()

    @staticmethod
    def key(issuer: str, client_id: str) -> str:
        return f"{issuer.rstrip('/')} {client_id}"

    def get(self, issuer: str, client_id: str) -> dict[str, Any] | None:
        entry = self._read().get(self.key(issuer, client_id))
        return dict(entry) if isinstance(entry, dict) else None

    def put(self, issuer: str, client_id: str, entry: dict[str, Any]) -> None:
        with self._locked():
            entries = self._read()
            entries[self.key(issuer, client_id)] = entry
            self._write(entries)

    def remove(self, issuer: str, client_id: str) -> bool:
        """Forget the entry; False when there was none."""
        with self._locked():
            entries = self._read()
            if entries.pop(self.key(issuer, client_id), None) is None:
                return False
            self._write(entries)
            return True

    def _read(self) -> dict[str, Any]:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Unauthenticated(f"the token cache {self.path} is a symbolic link: it is read only from a "
                                      "regular file of your own", where=str(self.path),
                                      hint=f"point ${CACHE_ENV} at the file itself") from None
            raise Unauthenticated(f"cannot read the token cache {self.path}: {exc.strerror or exc}",
                                  where=str(self.path), hint=f"fix or delete it, then run `mlplat login` "
                                  f"(or point ${CACHE_ENV} at another file)") from None
        try:
            self._check_private(os.fstat(fd))  # the file we opened, not whatever the path names now
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read()
        try:
            doc = json.loads(raw or b"{}")
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("entries", {}), dict):
            raise Unauthenticated(f"the token cache {self.path} is not a token cache mlplat wrote (malformed JSON)",
                                  where=str(self.path), hint="delete it and sign in again with `mlplat login`")
        return dict(doc.get("entries") or {})

    def _check_private(self, info: os.stat_result) -> None:
        if not stat.S_ISREG(info.st_mode):
            raise Unauthenticated(f"the token cache {self.path} is not a regular file", where=str(self.path),
                                  hint=f"point ${CACHE_ENV} at a file (it is created on `mlplat login`)")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise Unauthenticated(
                f"the token cache {self.path} has mode {mode:04o}: other users may read the tokens in it, so it "
                "is not used", where=str(self.path),
                hint=f"`chmod 600 {self.path}`, and sign in again (`mlplat login`) if others may have read it")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise Unauthenticated(f"the token cache {self.path} belongs to another user (uid {info.st_uid}), "
                                  "so it is not used", where=str(self.path),
                                  hint=f"point ${CACHE_ENV} at a file of your own, or delete it")

    def _write(self, entries: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        # created 0600 from the start: never a moment when the tokens sit in a readable file
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"version": CACHE_VERSION, "entries": entries}, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (a login and a refresh in two processes), through a lock file beside it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                import fcntl
            except ImportError:  # not POSIX: the atomic rename still keeps the file whole
                yield
                return
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# --- OpenID Connect ---------------------------------------------------------------------------


def discover(issuer: str, *, timeout: float = 30.0) -> dict[str, Any]:
    """The issuer's discovery document (OpenID Connect Discovery 1.0 §4): its endpoints."""
    import httpx

    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = httpx.get(url, timeout=timeout, headers={"Accept": "application/json"})
        doc = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        raise ExternalError(f"the identity provider's discovery document {url} could not be read: {exc}",
                            where="mlplat:access.oidc.issuer",
                            hint="check the issuer URL in the stack file and that it is reachable") from None
    if not isinstance(doc, dict):
        raise ExternalError(f"{url} answered HTTP {response.status_code}, not an OpenID Connect discovery document",
                            where="mlplat:access.oidc.issuer", hint="check the issuer URL in the stack file")
    # Discovery §4.3: the issuer in the document must be exactly the one it was fetched for
    if str(doc.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise ExternalError(f"{url} names issuer {doc.get('issuer')!r}, not {issuer!r}",
                            where="mlplat:access.oidc.issuer", hint="use the issuer URL the provider publishes")
    return doc


def _endpoint(doc: dict[str, Any], name: str, issuer: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise ExternalError(f"the identity provider {issuer} publishes no {name}",
                            where="mlplat:access.oidc.issuer",
                            hint="enable the OAuth 2.0 device authorization grant (RFC 8628) for the client, or use "
                                 f"a token in ${TOKEN_ENV}")
    return value


def _token_request(endpoint: str, form: dict[str, str], *, timeout: float) -> tuple[int, dict[str, Any]]:
    """POST to a token endpoint (RFC 6749 §3.2, form-encoded); its status and JSON answer."""
    import httpx

    try:
        response = httpx.post(endpoint, data=form, timeout=timeout, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise ExternalError(f"the identity provider's token endpoint {endpoint} is unreachable: {exc}",
                            where="mlplat:access.oidc.issuer") from None
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ExternalError(f"the token endpoint {endpoint} answered HTTP {response.status_code} without a JSON "
                            "document", where="mlplat:access.oidc.issuer")
    return response.status_code, doc


def _unverified_claims(token: Any) -> dict[str, Any] | None:
    """The claims of a JWT, unverified: only to pick which token to present and to show who signed
    in. The server verifies every token it is sent; nothing here is trusted."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    return claims if isinstance(claims, dict) else None


def entry_from_response(doc: dict[str, Any], *, issuer: str, client_id: str, audience: str, now: float,
                        previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """A cache entry from a token response (RFC 6749 §5.1).

    The bearer token sent to the server is the one whose ``aud`` is the stack's audience: the
    access token when the provider issued one for the platform's API, else the ID token (whose
    ``aud`` is the client id, the default audience), else the access token as it is (opaque).
    """
    access, id_token = doc.get("access_token"), doc.get("id_token")
    if not isinstance(access, str) or not access:
        raise ExternalError(f"the identity provider {issuer} answered without an access_token",
                            where="mlplat:access.oidc.issuer")
    chosen: str = access
    claims = _unverified_claims(access)
    for candidate in (access, id_token):
        found = _unverified_claims(candidate)
        auds = (found or {}).get("aud")
        if found is not None and audience in ([auds] if isinstance(auds, str) else list(auds or [])):
            chosen, claims = str(candidate), found
            break
    exp = (claims or {}).get("exp")  # of the token that is sent
    if isinstance(exp, int | float):
        expires_at: float | None = float(exp)
    elif isinstance(doc.get("expires_in"), int | float):
        expires_at = now + float(doc["expires_in"])  # §5.1: the access token's lifetime
    else:
        expires_at = None
    if claims is None:  # an opaque access token: the ID token still says who signed in
        claims = _unverified_claims(id_token)
    refresh = doc.get("refresh_token") or (previous or {}).get("refresh_token")  # §6: may be kept
    who = (claims or {}).get("email") or (claims or {}).get("preferred_username") or (claims or {}).get("sub")
    return {"issuer": issuer, "client_id": client_id, "token": chosen, "access_token": access,
            "id_token": id_token, "refresh_token": refresh, "expires_at": expires_at, "obtained_at": now,
            "principal": who}


class OidcCredentials(Credentials):
    """The token ``mlplat login`` cached for the stack's issuer, renewed with its refresh token."""

    method, source = "oidc", "the token cache (mlplat login)"

    def __init__(self, settings: Any, *, stack: str, cache: TokenCache | None = None,
                 clock: Callable[[], float] = time.time, timeout: float = 30.0):
        self.issuer = settings.issuer.rstrip("/")
        self.audience = settings.audience
        self.client_id = settings.client_id or settings.audience
        self.stack = stack
        self.cache = cache or TokenCache()
        self.clock = clock
        self.timeout = timeout
        self.source = f"the token cache {self.cache.path} (mlplat login)"
        self._entry: dict[str, Any] | None = None
        self._discovery: dict[str, Any] | None = None

    def headers(self) -> dict[str, str]:
        entry = self._entry or self._cached()
        expires_at = entry.get("expires_at")
        if isinstance(expires_at, int | float) and expires_at - EXPIRY_MARGIN_S <= self.clock():
            entry = self._renew(entry)
        self._entry = entry
        return {"Authorization": f"Bearer {entry['token']}"}

    def refresh(self) -> bool:
        sent = (self._entry or {}).get("token")
        entry = self._cached()
        if entry.get("token") != sent:  # another process renewed or signed in meanwhile
            self._entry = entry
            return True
        self._entry = self._renew(entry)
        return True

    def _cached(self) -> dict[str, Any]:
        entry = self.cache.get(self.issuer, self.client_id)
        if entry is None or not entry.get("token"):
            raise Unauthenticated(f"not signed in to {self.issuer} (no token in {self.cache.path})",
                                  where="mlplat:access.oidc", hint=login_hint(self.stack))
        return entry

    def token_endpoint(self) -> str:
        if self._discovery is None:
            self._discovery = discover(self.issuer, timeout=self.timeout)
        return _endpoint(self._discovery, "token_endpoint", self.issuer)

    def _renew(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A new access token for the refresh token (RFC 6749 §6), written back to the cache."""
        refresh = entry.get("refresh_token")
        if not refresh:
            raise Unauthenticated(f"the token for {self.issuer} has expired and cannot be renewed (no refresh "
                                  "token)", where="mlplat:access.oidc", hint=login_hint(self.stack))
        status, doc = _token_request(self.token_endpoint(), {"grant_type": "refresh_token", "refresh_token": refresh,
                                                             "client_id": self.client_id}, timeout=self.timeout)
        if status != 200 or "error" in doc:
            # Providers that rotate refresh tokens accept each once: another process may have just used it.
            latest = self.cache.get(self.issuer, self.client_id)
            if latest and latest.get("refresh_token") != refresh and latest.get("token"):
                return latest
            reason = doc.get("error_description") or doc.get("error") or f"HTTP {status}"
            raise Unauthenticated(f"the sign-in to {self.issuer} can no longer be renewed: {reason}",
                                  where="mlplat:access.oidc", hint=login_hint(self.stack))
        new = entry_from_response(doc, issuer=self.issuer, client_id=self.client_id, audience=self.audience,
                                  now=self.clock(), previous=entry)
        self.cache.put(self.issuer, self.client_id, new)
        return new


def device_login(settings: Any, *, stack: str, cache: TokenCache | None = None,
                 show: Callable[[dict[str, Any]], None] = lambda _: None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 timeout: float = 30.0) -> dict[str, Any]:
    """Sign in with the OAuth 2.0 device authorization grant (RFC 8628) and cache the tokens.

    ``show`` gets the device authorization response (``verification_uri``, ``user_code``) to
    tell the user where to go; then the token endpoint is polled every ``interval`` seconds
    (§3.4, default 5) until the user approves, refuses, or the code expires. Returns the cache
    entry. Nothing is written unless tokens were issued.
    """
    issuer = settings.issuer.rstrip("/")
    client_id = settings.client_id or settings.audience
    doc = discover(issuer, timeout=timeout)
    device_endpoint = _endpoint(doc, "device_authorization_endpoint", issuer)
    token_endpoint = _endpoint(doc, "token_endpoint", issuer)
    form = {"client_id": client_id, "scope": SCOPE}
    if settings.audience != client_id:
        form["audience"] = settings.audience  # the API the access token is for (ignored where unknown, §3.1)
    status, device = _token_request(device_endpoint, form, timeout=timeout)
    if status != 200 or not device.get("device_code") or not device.get("user_code"):
        reason = device.get("error_description") or device.get("error") or f"HTTP {status}"
        raise ExternalError(f"{issuer} refused the device authorization request for client {client_id!r}: {reason}",
                            where="mlplat:access.oidc.clientId",
                            hint="the client id must be a public client allowed the device-code grant")
    # Google's endpoint spells it verification_url
    device.setdefault("verification_uri", device.get("verification_url"))
    show(device)
    interval = float(device.get("interval") or 5)  # §3.2: 5 seconds when the server says nothing
    deadline = clock() + float(device.get("expires_in") or 600)
    while True:
        sleep(interval)
        if clock() >= deadline:
            raise Unauthenticated("the sign-in code expired before it was approved", where=issuer,
                                  hint=f"run `mlplat login --stack {stack}` again and approve the new code in time")
        status, answer = _token_request(token_endpoint, {"grant_type": DEVICE_GRANT, "device_code": device["device_code"],
                                                         "client_id": client_id}, timeout=timeout)
        if status == 200 and "error" not in answer:
            break
        error = answer.get("error")
        if error == "authorization_pending":  # §3.5: the user has not finished yet
            continue
        if error == "slow_down":  # §3.5: keep polling, 5 seconds further apart from now on
            interval += 5
            continue
        if error == "access_denied":
            raise Unauthenticated(f"the sign-in was refused at {issuer}", where=issuer,
                                  hint=f"run `mlplat login --stack {stack}` again and approve the request")
        if error == "expired_token":
            raise Unauthenticated("the sign-in code expired before it was approved", where=issuer,
                                  hint=f"run `mlplat login --stack {stack}` again and approve the new code in time")
        reason = answer.get("error_description") or error or f"HTTP {status}"
        raise ExternalError(f"{issuer} refused to issue tokens: {reason}", where="mlplat:access.oidc")
    entry = entry_from_response(answer, issuer=issuer, client_id=client_id, audience=settings.audience, now=clock())
    (cache or TokenCache()).put(issuer, client_id, entry)
    return entry


def logout(settings: Any, *, cache: TokenCache | None = None) -> bool:
    """Forget the cached tokens for the stack's issuer and client; False when there were none."""
    return (cache or TokenCache()).remove(settings.issuer.rstrip("/"), settings.client_id or settings.audience)


# --- the clouds' own credential chains ------------------------------------------------------------


class AwsIamCredentials(Credentials):
    """A presigned ``sts:GetCallerIdentity`` request from the boto3 credential chain, the pattern of
    Vault's AWS auth method (developer.hashicorp.com/vault/docs/auth/aws, "iam auth method"): the
    server executes it and learns the caller's ARN; the secret key never leaves this process."""

    method = "aws-iam"

    def __init__(self, settings: Any, *, stack: str, clock: Callable[[], float] = time.time, session: Any = None):
        self.region = settings.region
        self.endpoint = settings.sts_endpoint or f"https://sts.{settings.region}.amazonaws.com"
        self.server_id = settings.server_id or stack
        self.stack = stack
        self.clock = clock
        self.session = session
        self.source = "the AWS credential chain (boto3)"

    def credentials(self) -> Any:
        try:
            import boto3
            import botocore.exceptions
        except ImportError:
            raise ToolMissing("boto3 is not installed: it supplies the AWS credentials this stack signs in with",
                              where="mlplat:access.mode", hint="pip install 'mlplat[aws]'") from None
        try:
            session = self.session or boto3.Session()
            found = session.get_credentials()
            frozen = found.get_frozen_credentials() if found is not None else None
        except botocore.exceptions.BotoCoreError as exc:  # an SSO session that expired, a broken profile
            raise Unauthenticated(f"the AWS credentials could not be loaded: {exc}", where="mlplat:access.aws",
                                  hint="sign in with `aws sso login` (or fix AWS_PROFILE), then rerun") from None
        if frozen is None or not frozen.access_key:
            raise Unauthenticated("no AWS credentials found (environment, shared config or SSO profile, "
                                  "instance or task role)", where="mlplat:access.aws",
                                  hint="sign in with `aws sso login` (or set AWS_PROFILE), then rerun")
        self.source = f"the AWS credential chain (boto3: {getattr(found, 'method', 'unknown')})"
        return found

    def headers(self) -> dict[str, str]:
        credentials = self.credentials()
        from mlplat.identity.aws_sign import identity_header

        value = identity_header(credentials, region=self.region, endpoint=self.endpoint,
                                server_id=self.server_id, clock=self.clock)
        return {"Authorization": value}

    def refresh(self) -> bool:
        # a new signature over freshly resolved credentials (rotated keys, a renewed role session)
        self.session = None
        return True


class _ChainToken(Credentials):
    """A bearer token fetched from a cloud's credential chain, kept until shortly before it expires."""

    def __init__(self, settings: Any, *, stack: str, clock: Callable[[], float] = time.time):
        self.audience, self.stack, self.clock = settings.audience, stack, clock
        self._token: str | None = None
        self._expires_at: float | None = None

    def _fetch(self) -> tuple[str, float | None]:
        """The token and when it expires (epoch seconds; None: unknown)."""
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        if self._token is None or (self._expires_at is not None
                                   and self._expires_at - EXPIRY_MARGIN_S <= self.clock()):
            self.refresh()
        return {"Authorization": f"Bearer {self._token}"}

    def refresh(self) -> bool:
        self._token, self._expires_at = self._fetch()
        return True


class GoogleCredentials(_ChainToken):
    """A Google-signed ID token for the stack's audience from google-auth's credential chain
    ("Authenticate for using client libraries": a service-account key in
    GOOGLE_APPLICATION_CREDENTIALS, or the metadata server on GCP)."""

    method, source = "google", "the Google credential chain (google-auth)"

    def _fetch(self) -> tuple[str, float | None]:
        try:
            import google.auth.exceptions
            from google.auth.transport.requests import Request
            from google.oauth2 import id_token
        except ImportError:
            raise ToolMissing("google-auth is not installed: it supplies the Google ID tokens this stack signs in "
                              "with", where="mlplat:access.mode", hint="pip install google-auth requests") from None
        try:
            token = str(id_token.fetch_id_token(Request(), self.audience))  # type: ignore[no-untyped-call]
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise Unauthenticated(
                f"no Google credentials that can mint an ID token were found: {exc}", where="mlplat:access.google",
                hint="use a service account (GOOGLE_APPLICATION_CREDENTIALS, or the metadata server on GCP), or pass "
                     f"a token: {TOKEN_ENV}=$(gcloud auth print-identity-token --audiences={self.audience})") from None
        except google.auth.exceptions.GoogleAuthError as exc:
            raise ExternalError(f"Google refused to issue an ID token for {self.audience}: {exc}",
                                where="mlplat:access.google") from None
        exp = (_unverified_claims(token) or {}).get("exp")
        return token, float(exp) if isinstance(exp, int | float) else None


class EntraCredentials(_ChainToken):
    """An Entra ID access token for ``<audience>/.default`` from azure-identity's
    ``DefaultAzureCredential`` (environment, workload identity, managed identity, ``az login``).
    The ``.default`` scope: learn.microsoft.com/entra/identity-platform/scopes-oidc."""

    method, source = "entra", "the Azure credential chain (azure-identity DefaultAzureCredential)"

    def _fetch(self) -> tuple[str, float | None]:
        try:
            from azure.core.exceptions import ClientAuthenticationError
            from azure.identity import DefaultAzureCredential
        except ImportError:
            raise ToolMissing(
                "azure-identity is not installed: it supplies the Entra ID tokens this stack signs in with",
                where="mlplat:access.mode",
                hint="pip install azure-identity (or pass a token: "
                     f"{TOKEN_ENV}=$(az account get-access-token --scope {self.audience}/.default "
                     "--query accessToken -o tsv))") from None
        try:
            token = DefaultAzureCredential().get_token(f"{self.audience.rstrip('/')}/.default")
        except ClientAuthenticationError as exc:
            raise Unauthenticated(f"no Azure credentials could get a token for {self.audience}: {exc}",
                                  where="mlplat:access.entra", hint="sign in with `az login`, then rerun") from None
        return str(token.token), float(token.expires_on)


def credentials_for(spec: Any, *, env: Mapping[str, str] | None = None, cache: TokenCache | None = None,
                    clock: Callable[[], float] = time.time) -> Credentials:
    """The credentials a client of ``spec``'s server sends, by ``mlplat:access.mode``.

    Nothing is looked up here: a missing credential is reported by :meth:`Credentials.headers`
    when a request is about to be sent.
    """
    env = os.environ if env is None else env
    access = getattr(spec, "access", None)
    if access is None or access.mode is None:
        return NoCredentials()
    mode = access.mode.value
    token = (env.get(TOKEN_ENV) or "").strip()
    if mode == "oidc":
        if token:
            return BearerToken(token, method="oidc")
        return OidcCredentials(access.oidc, stack=spec.name, cache=cache or TokenCache(default_cache_path(env)),
                               clock=clock)
    if mode == "google":
        return BearerToken(token, method="google") if token else GoogleCredentials(access.google, stack=spec.name,
                                                                                  clock=clock)
    if mode == "entra":
        return BearerToken(token, method="entra") if token else EntraCredentials(access.entra, stack=spec.name,
                                                                                clock=clock)
    if mode == "aws-iam":
        return AwsIamCredentials(access.aws, stack=spec.name, clock=clock)
    return NoCredentials()


__all__ = ["CACHE_ENV", "TOKEN_ENV", "AwsIamCredentials", "BearerToken", "Credentials", "EntraCredentials",
           "GoogleCredentials", "NoCredentials", "OidcCredentials", "TokenCache", "credentials_for",
           "default_cache_path", "device_login", "discover", "logout"]
