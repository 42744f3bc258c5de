"""AWS IAM authentication: a caller proves its IAM identity with a signed ``sts:GetCallerIdentity``.

The pattern of HashiCorp Vault's AWS auth method ("iam" type,
https://developer.hashicorp.com/vault/docs/auth/aws#iam-auth-method) and of aws-iam-authenticator:

* **client** (:func:`identity_header`): signs, with its AWS credentials (the boto3 chain) and
  botocore's SigV4 signer, ``POST <STS endpoint>/`` with the body
  ``Action=GetCallerIdentity&Version=2011-06-15`` and a signed ``X-Mlplat-Server-Id`` header naming
  the server it is meant for; it sends nothing secret: the request, not the credentials, travels in
  ``Authorization: MLPLAT-AWS-IAM <base64url(JSON {method, url, headers, body (base64)})>``.
* **server** (:class:`AwsIamAuthenticator`): checks the request is exactly that one — the URL is
  the server's own STS endpoint (never a host the caller picks: the server would otherwise fetch any
  URL it is handed), the body that one action, the server-id header present, covered by the
  signature and equal to its own id (so a captured request cannot be replayed to another server,
  Vault's ``iam_server_id_header_value``), ``X-Amz-Date`` within 15 minutes of the server's clock
  (STS's own window for a signed request) — then sends it to STS, which checks the signature and
  answers with the caller's ARN. The ARN is the principal's name; an assumed-role session also
  carries its role's ARN in ``ids``, so a stack's role patterns can name the role.

STS refusing the request (a bad signature, expired credentials) is a 401; STS unreachable or
failing is ``IdentityProviderUnavailable`` (503), nothing decided. A verified request is cached for a
minute (keyed by its digest, bounded), so a client's requests within that minute cost one STS call.
"""
from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from mlplat.errors import IdentityProviderUnavailable, StackError, Unauthenticated
from mlplat.identity import AWS_IAM, Principal, iam_role_arn

SCHEME = "MLPLAT-AWS-IAM"
SERVER_ID_HEADER = "X-Mlplat-Server-Id"
BODY = "Action=GetCallerIdentity&Version=2011-06-15"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
MAX_SKEW_S = 15 * 60  # STS refuses a signed request more than 15 minutes from its own clock
CACHE_TTL_S = 60.0
CACHE_SIZE = 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_FORWARDED_HEADERS = 24
AMZ_DATE = "%Y%m%dT%H%M%SZ"
STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
# Never forwarded: the connection's own, and the length httpx computes from the body it sends.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
              "content-length", "host"}
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_SIGV4 = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request,\s*"
                    r"SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$")


def sts_endpoint(region: str, endpoint: str | None = None) -> str:
    """The STS endpoint requests are signed for and sent to (default: the region's)."""
    return (endpoint or f"https://sts.{region}.amazonaws.com").rstrip("/")


# --- the client half ------------------------------------------------------------------------------


def identity_header(session_or_credentials: Any, *, region: str, endpoint: str | None = None, server_id: str,
                    clock: Callable[[], float] = time.time) -> str:
    """The ``Authorization`` header value proving the caller's IAM identity to the server ``server_id``.

    ``session_or_credentials``: a ``boto3.Session`` (its credential chain), botocore credentials, or
    anything with ``access_key``/``secret_key``/``token``. Nothing secret is in the result: it is a
    signed request only STS can check, valid for 15 minutes, for this server only.
    """
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = session_or_credentials
    if hasattr(credentials, "get_credentials"):
        credentials = credentials.get_credentials()
        if credentials is None:
            raise Unauthenticated("no AWS credentials found (the boto3 chain: environment, AWS_PROFILE, SSO, "
                                  "instance role)", hint="sign in to AWS (e.g. `aws sso login`) and retry")
    if hasattr(credentials, "get_frozen_credentials"):
        credentials = credentials.get_frozen_credentials()
    url = sts_endpoint(region, endpoint) + "/"
    request = AWSRequest(method="POST", url=url, data=BODY,
                         headers={"Content-Type": CONTENT_TYPE, SERVER_ID_HEADER: server_id})

    class ClockedSigV4(SigV4Auth):  # type: ignore[misc]  # botocore ships no type hints
        """botocore's SigV4 signer, dated by ``clock`` (botocore reads the wall clock itself)."""

        def add_auth(self, request: Any) -> None:
            request.context["timestamp"] = time.strftime(AMZ_DATE, time.gmtime(clock()))
            self._modify_request_before_signing(request)
            canonical = self.canonical_request(request)
            self._inject_signature_to_request(request, self.signature(self.string_to_sign(request, canonical),
                                                                      request))

    ClockedSigV4(credentials, "sts", region).add_auth(request)
    doc = {"method": "POST", "url": url, "headers": dict(request.headers.items()),
           "body": base64.b64encode(BODY.encode()).decode()}
    encoded = base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode().rstrip("=")
    return f"{SCHEME} {encoded}"


# --- the server half ------------------------------------------------------------------------------


class AwsIamAuthenticator:
    """Verifies :func:`identity_header` requests by executing them against the configured STS endpoint."""

    method = AWS_IAM
    scheme = SCHEME
    where = "mlplat:access.aws.stsEndpoint"

    def __init__(self, settings: Any, *, server_id: str, stack: str, http: Any,
                 clock: Callable[[], float] = time.time, cache_ttl: float = CACHE_TTL_S, cache_size: int = CACHE_SIZE):
        self.region = settings.region
        self.endpoint = sts_endpoint(settings.region, settings.sts_endpoint)
        self.server_id = server_id
        self.stack = stack
        self.http = http
        self.clock = clock
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.sts_calls = 0
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()
        self.hint = (f"the mlplat CLI signs with your AWS credentials (the boto3 chain): refresh them (e.g. "
                     f"`aws sso login`) and run `mlplat login --stack {stack}`")

    def check(self) -> None:
        parts = urlsplit(self.endpoint)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if not parts.hostname or (parts.scheme != "https" and not (parts.scheme == "http" and loopback)) \
                or parts.path not in ("", "/") or parts.query:
            raise StackError(f"STS endpoint {self.endpoint!r} must be an https URL with no path (plain http only "
                             "on loopback, for tests)", where=self.where,
                             hint=f"leave it unset for https://sts.{self.region}.amazonaws.com")

    def refuse(self, reason: str) -> Unauthenticated:
        return Unauthenticated(f"the signed AWS request was refused: {reason}", where="Authorization",
                               hint=self.hint)

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        value = headers.get("authorization") or next(
            (v for k, v in headers.items() if k.lower() == "authorization"), None)
        if value is None or not value.strip():
            raise Unauthenticated("the request carries no credentials (no Authorization header)",
                                  where="Authorization", hint=self.hint)
        scheme, _, encoded = value.strip().partition(" ")
        if scheme.upper() != SCHEME or not encoded.strip():
            raise Unauthenticated(f"this server takes a signed AWS request (Authorization: {SCHEME} ...), not "
                                  f"'{scheme[:32]}' credentials", where="Authorization", hint=self.hint)
        if len(encoded) > MAX_HEADER_BYTES:
            raise self.refuse(f"it is longer than {MAX_HEADER_BYTES} bytes")
        request = self._decode(encoded.strip())
        forwarded = self._check(request)
        digest = hashlib.sha256(encoded.strip().encode()).hexdigest()
        now = self.clock()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and hit[0] > now:
                self._cache.move_to_end(digest)
                return hit[1]
        principal = self._call_sts(forwarded)
        signed_at = _amz_date(forwarded) or now
        with self._lock:
            self._cache[digest] = (min(now + self.cache_ttl, signed_at + MAX_SKEW_S), principal)
            self._cache.move_to_end(digest)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return principal

    def _decode(self, encoded: str) -> dict[str, Any]:
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            doc = json.loads(raw)
        except (binascii.Error, ValueError):
            raise self.refuse("it is not base64url-encoded JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("url"), str) or not isinstance(doc.get("method"), str) \
                or not isinstance(doc.get("headers"), dict) or not isinstance(doc.get("body"), str):
            raise self.refuse("it must be a JSON object with method, url, headers and body")
        return doc

    def _check(self, request: dict[str, Any]) -> dict[str, str]:
        """The headers to forward to STS, once the request is exactly the one this server executes."""
        if request["method"].upper() != "POST":
            raise self.refuse(f"the method is {request['method'][:16]!r}, not POST")
        url = request["url"]
        if url.rstrip("/") != self.endpoint:  # compared as text first: a malformed URL is simply another URL
            raise self.refuse(f"it is signed for {url[:200]!r}, not for this server's STS endpoint {self.endpoint}/")
        try:
            body = base64.b64decode(request["body"], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise self.refuse("its body is not base64") from None
        if body != BODY:
            raise self.refuse(f"its body must be exactly {BODY!r} (sts:GetCallerIdentity)")
        headers: dict[str, str] = {}
        if len(request["headers"]) > MAX_FORWARDED_HEADERS:
            raise self.refuse(f"it has more than {MAX_FORWARDED_HEADERS} headers")
        for name, value in request["headers"].items():
            if not isinstance(value, str) or not _TOKEN.match(name) or len(value) > 4096 \
                    or any(c in value for c in "\r\n\0"):
                raise self.refuse(f"its header {str(name)[:64]!r} is malformed")
            if name.lower() in headers:
                raise self.refuse(f"its header {name!r} is given twice")
            headers[name.lower()] = value
        if "host" in headers and headers["host"] != urlsplit(self.endpoint).netloc:
            raise self.refuse(f"its Host header names {headers['host'][:100]!r}, not the STS endpoint")
        match = _SIGV4.match(headers.get("authorization", ""))
        if match is None:
            raise self.refuse("it carries no AWS SigV4 signature (Authorization: AWS4-HMAC-SHA256 ...)")
        _, _, region, service, signed, _ = match.groups()
        if service != "sts" or region != self.region:
            raise self.refuse(f"it is signed for {service} in {region}, not sts in {self.region}")
        server_id = headers.get(SERVER_ID_HEADER.lower())
        if server_id is None:
            raise self.refuse(f"it has no {SERVER_ID_HEADER} header naming the server it is meant for")
        if SERVER_ID_HEADER.lower() not in signed.split(";") or "x-amz-date" not in signed.split(";"):
            raise self.refuse(f"its {SERVER_ID_HEADER} and X-Amz-Date headers must be covered by the signature")
        if server_id != self.server_id:
            raise self.refuse(f"it is meant for server {server_id[:100]!r}, not this one ({self.server_id!r})")
        if "x-amz-date" not in headers:
            raise self.refuse("it has no X-Amz-Date header")
        signed_at = _amz_date(headers)
        if signed_at is None:
            raise self.refuse("its X-Amz-Date is not a date (YYYYMMDDTHHMMSSZ)")
        skew = self.clock() - signed_at
        if abs(skew) > MAX_SKEW_S:
            raise self.refuse(f"it was signed {int(abs(skew) // 60)} minutes {'ago' if skew > 0 else 'ahead'}; "
                              "signed requests are good for 15 minutes (check this machine's clock)")
        return {k: v for k, v in request["headers"].items() if k.lower() not in HOP_BY_HOP}

    def _call_sts(self, headers: dict[str, str]) -> Principal:
        import httpx

        self.sts_calls += 1
        try:
            response = self.http.post(self.endpoint + "/", content=BODY.encode(), headers=headers)
        except httpx.HTTPError as exc:
            raise IdentityProviderUnavailable(f"AWS STS at {self.endpoint} is unreachable: {type(exc).__name__}",
                                              hint="the server cannot check AWS identities now; retry shortly") \
                from None
        if response.status_code >= 500:
            raise IdentityProviderUnavailable(f"AWS STS at {self.endpoint} answered HTTP {response.status_code}",
                                              hint="the server cannot check AWS identities now; retry shortly")
        root = _xml(response.content)
        if response.status_code != 200:
            code = _text(root, "Error/Code") or f"HTTP {response.status_code}"
            message = _text(root, "Error/Message") or ""
            raise self.refuse(f"AWS STS refused it: {code}" + (f" ({message[:200]})" if message else ""))
        arn = _text(root, "GetCallerIdentityResult/Arn")
        account = _text(root, "GetCallerIdentityResult/Account")
        user_id = _text(root, "GetCallerIdentityResult/UserId")
        if not arn or not arn.startswith("arn:"):
            raise self.refuse("AWS STS's answer names no caller ARN")
        role = iam_role_arn(arn)
        return Principal(arn, AWS_IAM, ids=(role,) if role else (), issuer=self.endpoint,
                         claims={"arn": arn, "account": account, "user_id": user_id})


def _amz_date(headers: Mapping[str, str]) -> float | None:
    value = next((v for k, v in headers.items() if k.lower() == "x-amz-date"), None)
    if value is None:
        return None
    try:
        return float(calendar.timegm(time.strptime(value, AMZ_DATE)))
    except ValueError:
        return None


def _xml(content: bytes) -> Any:
    from xml.etree import ElementTree

    if b"<!DOCTYPE" in content or b"<!ENTITY" in content:  # STS sends neither; refuse entity tricks outright
        return None
    try:
        return ElementTree.fromstring(content)
    except ElementTree.ParseError:
        return None


def _text(root: Any, path: str) -> str | None:
    """The text at ``path`` under STS's XML answer (with or without its namespace)."""
    if root is None:
        return None
    for candidate in (path, "/".join(STS_NS + p for p in path.split("/"))):
        found = root.find(candidate)
        if found is None:
            found = root.find(".//" + candidate)
        if found is not None and found.text:
            return str(found.text).strip()
    return None
