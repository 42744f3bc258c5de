"""An identity provider's published signing keys (a JWKS), fetched once and cached.

    keys = KeySet("https://idp.example.com/jwks", http=client, clock=time.time)
    key = keys.key(kid, "RS256")          # a PyJWT ``PyJWK`` bound to that algorithm

Keys are parsed by PyJWT (``PyJWKSet``). PyJWT's own ``PyJWKClient`` is not used: it reads
``time.monotonic`` (no clock to inject) and fetches with urllib; this cache takes the server's
HTTP client and clock, so tests move time instead of waiting for it.

Caching (RFC 7517 §4.5 ``kid``; OpenID Connect Core §10.1.1, "Rotation of Asymmetric Signing Keys":
a relying party refetches the JWKS when it meets a ``kid`` it does not know):

* the set is fetched on first use and again after ``max_age`` seconds (so a key the provider
  withdrew stops being trusted);
* an unknown ``kid`` refetches the set at most once per ``cooldown`` seconds, so a flood of tokens
  naming made-up keys cannot make the server hammer the identity provider;
* a failed refetch keeps the keys already held (an outage of the provider does not lock out
  callers whose keys are known).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from mlplat.errors import IdentityProviderUnavailable

# JWS algorithms a key type may verify (RFC 7518 §3.1; RFC 8037 §3.1 for OKP). Symmetric keys
# ("oct") verify nothing here: the secret would have to be shared with every caller.
ALGORITHMS_BY_KTY = {
    "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "EC": {"ES256", "ES384", "ES512"},
    "OKP": {"EdDSA"},
}
EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
MAX_DOCUMENT_BYTES = 1 << 20


class KeyRefused(Exception):
    """The token names a key this set cannot verify it with (unknown ``kid``, algorithm mismatch).
    The message is safe to show the caller: it names the key id and algorithms, never key material."""


class UnusableDocument(Exception):
    """The identity provider answered, but not with what was asked for."""


def fetch_json(http: Any, url: str, what: str) -> dict[str, Any]:
    """GET ``url`` and return its JSON object. ``IdentityProviderUnavailable`` when it cannot be
    reached or answers 5xx; ``UnusableDocument`` for any other wrong answer."""
    import httpx

    try:
        response = http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise IdentityProviderUnavailable(f"cannot fetch {what} from {url}: {type(exc).__name__}: {exc}",
                                          hint="the identity provider is unreachable; retry shortly") from None
    if response.status_code >= 500:
        raise IdentityProviderUnavailable(f"{url} answered HTTP {response.status_code} for {what}",
                                          hint="the identity provider is failing; retry shortly")
    if response.status_code != 200:
        raise UnusableDocument(f"{url} answered HTTP {response.status_code} for {what}")
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise UnusableDocument(f"{what} at {url} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        doc = response.json()
    except ValueError:
        raise UnusableDocument(f"{what} at {url} is not JSON") from None
    if not isinstance(doc, dict):
        raise UnusableDocument(f"{what} at {url} is not a JSON object")
    return doc


class KeySet:
    """The signing keys published at ``uri`` (see the module docstring for when it refetches)."""

    def __init__(self, uri: str, *, http: Any, clock: Callable[[], float], cooldown: float = 60.0,
                 max_age: float = 3600.0):
        self.uri = uri
        self.http = http
        self.clock = clock
        self.cooldown = cooldown
        self.max_age = max_age
        self.fetches = 0
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._forced_at: float | None = None
        self._parsed: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def load(self) -> int:
        """Fetch the set now; the number of usable signing keys (``UnusableDocument`` if none)."""
        with self._lock:
            self._fetch()
            return len(self._keys)

    def key(self, kid: str | None, alg: str) -> Any:
        """The key ``kid`` as a PyJWT ``PyJWK`` bound to ``alg``; ``KeyRefused`` when there is none or
        it may not verify ``alg``; ``IdentityProviderUnavailable`` when no keys could ever be fetched."""
        if not kid or not isinstance(kid, str):
            raise KeyRefused("the token names no signing key (no 'kid' in its header)")
        with self._lock:
            now = self.clock()
            fresh = False
            if self._fetched_at is None or now - self._fetched_at >= self.max_age:
                self._refresh_keeping_old()
                fresh = True
            if kid not in self._keys and not fresh and (self._forced_at is None
                                                        or now - self._forced_at >= self.cooldown):
                self._forced_at = now
                self._refresh_keeping_old()
            jwk = self._keys.get(kid)
            if jwk is None:
                raise KeyRefused(f"the token is signed with a key the identity provider does not publish "
                                 f"(kid {kid[:64]!r})")
            return self._bind(kid, jwk, alg)

    def _refresh_keeping_old(self) -> None:
        try:
            self._fetch()
        except (IdentityProviderUnavailable, UnusableDocument) as exc:
            if not self._keys:
                raise IdentityProviderUnavailable(f"no signing keys: {exc}",
                                                  hint="the identity provider's keys cannot be read; retry "
                                                       "shortly") from None
            # keep the keys held; try again after a cool-down, not on every request of an outage
            self._fetched_at = self.clock() - self.max_age + self.cooldown

    def _fetch(self) -> None:
        self.fetches += 1
        doc = fetch_json(self.http, self.uri, "the signing keys (JWKS)")
        keys = doc.get("keys")
        if not isinstance(keys, list):
            raise UnusableDocument(f"the JWKS at {self.uri} has no 'keys' list")
        usable: dict[str, dict[str, Any]] = {}
        for jwk in keys:
            if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
                continue
            if jwk.get("use", "sig") != "sig" or jwk.get("kty") not in ALGORITHMS_BY_KTY:
                continue
            usable[jwk["kid"]] = jwk
        if not usable:
            raise UnusableDocument(f"the JWKS at {self.uri} publishes no asymmetric signing key with a 'kid'")
        self._keys = usable
        self._fetched_at = self.clock()
        self._parsed = {}

    def _bind(self, kid: str, jwk: dict[str, Any], alg: str) -> Any:
        import jwt
        from jwt.exceptions import PyJWKError

        cached = self._parsed.get((kid, alg))
        if cached is not None:
            return cached
        declared = jwk.get("alg")
        # RFC 7517 §4.4: a key that names its algorithm verifies only that one; one that does not
        # (Microsoft's, for one) verifies the algorithms of its key type, and an EC key only on its curve.
        if declared is not None and declared != alg:
            raise KeyRefused(f"the token's algorithm {alg} is not the algorithm of its key ({declared})")
        if alg not in ALGORITHMS_BY_KTY[jwk["kty"]]:
            raise KeyRefused(f"the token's algorithm {alg} does not fit its key (a {jwk['kty']} key)")
        if jwk["kty"] == "EC" and jwk.get("crv") != EC_CURVES[alg]:
            raise KeyRefused(f"the token's algorithm {alg} does not fit its key (curve {jwk.get('crv')})")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
        except (PyJWKError, ValueError, TypeError) as exc:
            raise KeyRefused(f"the identity provider's key {kid[:64]!r} cannot be used: {type(exc).__name__}") from None
        self._parsed[(kid, alg)] = key
        return key
