"""A real OpenID Connect issuer on 127.0.0.1 for tests: discovery, JWKS, device-code flow, tokens.

    with running_issuer() as issuer:
        token = issuer.token(sub="alice", email="alice@example.com", groups=["fraud-ds"], aud="mlplat")
        issuer.rotate()                         # a new signing key; the old one leaves the JWKS
        issuer.token(..., exp_in=-60)           # expired
        issuer.forge_none(...), issuer.forge_hs256_with_public_key(...)   # attacks

It serves, like a real identity provider:

* ``/.well-known/openid-configuration`` (issuer, jwks_uri, token and device endpoints);
* ``/jwks`` (the current public keys; ``jwks_requests`` counts fetches, to test caching), also at
  ``/<tenant>/discovery/v2.0/keys`` where it stands in for Microsoft Entra's authority;
* ``/device/code`` and ``/token`` (RFC 8628 device authorization grant, and the refresh-token
  grant). A device code is approved by ``issuer.approve(user_code, claims)`` (what the user
  would do in a browser); until then ``/token`` answers ``authorization_pending``.

Tokens are RS256 JWTs signed with a test RSA key generated per issuer (no fixed key material).
"""
from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    private: Any
    public_pem: bytes

    @classmethod
    def generate(cls) -> SigningKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(kid=secrets.token_hex(8), private=private, public_pem=pem)

    def jwk(self) -> dict[str, Any]:
        numbers = self.private.public_key().public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": _b64(n), "e": _b64(e)}


@dataclass
class Issuer:
    url: str = ""
    audience: str = "mlplat"
    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.generate()])
    jwks_requests: int = 0
    token_requests: int = 0
    clock: Any = time.time
    token_lifetime: int = 3600
    # device code -> {"user_code", "claims" (None until approved), "interval"}
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> SigningKey:
        return self.keys[-1]

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.url, "jwks_uri": f"{self.url}/jwks", "token_endpoint": f"{self.url}/token",
                "device_authorization_endpoint": f"{self.url}/device/code",
                "authorization_endpoint": f"{self.url}/authorize",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "grant_types_supported": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]}

    def claims(self, *, sub: str = "alice", email: str | None = None, groups: list[str] | None = None,
               aud: str | None = None, iss: str | None = None, exp_in: int | None = None, nbf_in: int = 0,
               **extra: Any) -> dict[str, Any]:
        now = int(self.clock())
        body: dict[str, Any] = {"iss": iss if iss is not None else self.url, "sub": sub,
                                "aud": aud if aud is not None else self.audience, "iat": now,
                                "nbf": now + nbf_in, "exp": now + (exp_in if exp_in is not None else self.token_lifetime)}
        if email is not None:
            body["email"] = email
        if groups is not None:
            body["groups"] = groups
        return body | extra

    def token(self, key: SigningKey | None = None, **claims: Any) -> str:
        """A validly signed RS256 token with ``claims`` (see :meth:`claims` for the defaults)."""
        import jwt

        key = key or self.key
        return jwt.encode(self.claims(**claims), key.private, algorithm="RS256", headers={"kid": key.kid})

    def rotate(self, *, keep_old: bool = False) -> SigningKey:
        """Sign with a new key from now on; the old one stays published only with ``keep_old``."""
        new = SigningKey.generate()
        with self.lock:
            self.keys = ([*self.keys, new] if keep_old else [new])
        return new

    def forge_none(self, **claims: Any) -> str:
        """An unsigned token (``alg: none``) with otherwise valid claims."""
        header = {"alg": "none", "typ": "JWT", "kid": self.key.kid}
        return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(self.claims(**claims)).encode())}."

    def forge_hs256_with_public_key(self, **claims: Any) -> str:
        """Key confusion: HMAC-signed with the issuer's *public* key as the secret."""
        import hashlib
        import hmac

        header = {"alg": "HS256", "typ": "JWT", "kid": self.key.kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(self.claims(**claims)).encode())}"
        mac = hmac.new(self.key.public_pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"

    def approve(self, user_code: str, **claims: Any) -> None:
        """The user signs in at the verification page and approves the device with ``user_code``."""
        self._device(user_code)["claims"] = claims

    def deny(self, user_code: str) -> None:
        """The user refuses the request: the next poll answers ``access_denied`` (RFC 8628 §3.5)."""
        self._device(user_code)["outcome"] = "access_denied"

    def expire(self, user_code: str) -> None:
        """The code's lifetime ends unapproved: polls answer ``expired_token`` (RFC 8628 §3.5)."""
        self._device(user_code)["outcome"] = "expired_token"

    def slow_down(self, user_code: str, times: int = 1) -> None:
        """The next ``times`` polls answer ``slow_down`` (the client polls too often, RFC 8628 §3.5)."""
        self._device(user_code)["slow_down"] = times

    def _device(self, user_code: str) -> dict[str, Any]:
        with self.lock:
            for device in self.devices.values():
                if device["user_code"] == user_code:
                    return device
        raise KeyError(user_code)

    def _issue(self, claims: dict[str, Any]) -> dict[str, Any]:
        refresh = secrets.token_urlsafe(24)
        self.refresh_tokens[refresh] = claims
        token = self.token(**claims)
        return {"access_token": token, "id_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime,
                "refresh_token": refresh}

    def handle_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.token_requests += 1
        grant = form.get("grant_type")
        with self.lock:
            if grant == "urn:ietf:params:oauth:grant-type:device_code":
                device = self.devices.get(form.get("device_code", ""))
                if device is None:
                    return 400, {"error": "invalid_grant"}
                if device.get("outcome"):
                    return 400, {"error": device["outcome"]}
                if device.get("slow_down"):
                    device["slow_down"] -= 1
                    return 400, {"error": "slow_down"}
                if device["claims"] is None:
                    return 400, {"error": "authorization_pending"}
                del self.devices[form["device_code"]]
                return 200, self._issue(device["claims"])
            if grant == "refresh_token":
                claims = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
                if claims is None:
                    return 400, {"error": "invalid_grant"}
                return 200, self._issue(claims)
        return 400, {"error": "unsupported_grant_type"}

    def handle_device(self, form: dict[str, str]) -> dict[str, Any]:
        device_code, user_code = secrets.token_urlsafe(16), f"{secrets.randbelow(10**4):04d}-{secrets.randbelow(10**4):04d}"
        with self.lock:
            self.devices[device_code] = {"user_code": user_code, "claims": None, "client_id": form.get("client_id")}
        return {"device_code": device_code, "user_code": user_code, "verification_uri": f"{self.url}/device",
                "verification_uri_complete": f"{self.url}/device?user_code={user_code}",
                "expires_in": 600, "interval": 1}


def _handler(issuer: Issuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/.well-known/openid-configuration":
                self._send(200, issuer.discovery())
            elif self.path == "/jwks" or self.path.endswith("/discovery/v2.0/keys"):  # also Entra's keys path
                with issuer.lock:
                    issuer.jwks_requests += 1
                    keys = [k.jwk() for k in issuer.keys]
                self._send(200, {"keys": keys})
            else:
                self._send(404, {"error": "not_found"})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if self.path == "/token":
                self._send(*issuer.handle_token(form))
            elif self.path == "/device/code":
                self._send(200, issuer.handle_device(form))
            else:
                self._send(404, {"error": "not_found"})

    return Handler


@contextmanager
def running_issuer(audience: str = "mlplat") -> Iterator[Issuer]:
    """An :class:`Issuer` serving on a free loopback port until the block ends."""
    issuer = Issuer(audience=audience)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(issuer))
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
