"""The token cache `mlplat login` writes, and which credential a client of each access mode sends."""
from __future__ import annotations

import json
import os
import socket
import stat
import sys
from types import SimpleNamespace

import pytest

from mlplat.errors import ToolMissing, Unauthenticated
from mlplat.identity import client
from mlplat.identity.client import TokenCache, credentials_for, default_cache_path, entry_from_response
from mlplat.stack import Access

ISSUER = "http://127.0.0.1:9"  # nothing is fetched from it in these tests


def spec(access: dict | None, name: str = "dev") -> SimpleNamespace:
    return SimpleNamespace(name=name, access=Access.model_validate(access or {}))


OIDC = {"mode": "oidc", "oidc": {"issuer": ISSUER, "audience": "mlplat"}}


def entry(token: str = "tok", **extra) -> dict:
    return {"issuer": ISSUER, "client_id": "mlplat", "token": token, "access_token": token, "id_token": None,
            "refresh_token": "r1", "expires_at": None, "obtained_at": 0.0, "principal": "alice"} | extra


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_cache_is_created_0600_whatever_the_umask_and_replaced_whole(tmp_path):
    path = tmp_path / "config" / "mlplat" / "tokens.json"
    cache = TokenCache(path)
    old = os.umask(0)  # a umask that would leave a plainly opened file world-readable
    try:
        cache.put(ISSUER, "mlplat", entry("first"))
        cache.put("https://other.example.com", "cli", entry("second"))
    finally:
        os.umask(old)
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    assert cache.get(ISSUER, "mlplat")["token"] == "first"
    assert cache.get("https://other.example.com", "cli")["token"] == "second"
    assert cache.get(ISSUER, "another-client") is None  # keyed by issuer and client id
    leftovers = sorted(p.name for p in path.parent.iterdir())
    assert leftovers == ["tokens.json", "tokens.json.lock"], "no temporary file is left behind"
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and set(doc["entries"]) == {f"{ISSUER} mlplat", "https://other.example.com cli"}


def test_remove_forgets_one_issuer_only(tmp_path):
    cache = TokenCache(tmp_path / "tokens.json")
    cache.put(ISSUER, "mlplat", entry("first"))
    cache.put("https://other.example.com", "cli", entry("second"))
    assert cache.remove(ISSUER, "mlplat") is True
    assert cache.remove(ISSUER, "mlplat") is False
    assert cache.get(ISSUER, "mlplat") is None
    assert cache.get("https://other.example.com", "cli")["token"] == "second"
    assert mode_of(tmp_path / "tokens.json") == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_cache_others_can_read_is_refused_and_left_as_it_is(tmp_path, mode):
    path = tmp_path / "tokens.json"
    TokenCache(path).put(ISSUER, "mlplat", entry())
    os.chmod(path, mode)
    before = path.read_bytes()
    with pytest.raises(Unauthenticated) as refused:
        TokenCache(path).get(ISSUER, "mlplat")
    assert f"mode {mode:04o}" in refused.value.message
    assert refused.value.hint.startswith(f"`chmod 600 {path}`")
    with pytest.raises(Unauthenticated):  # nor is it written to
        TokenCache(path).put(ISSUER, "mlplat", entry("new"))
    assert path.read_bytes() == before and mode_of(path) == mode


def test_a_malformed_cache_says_to_sign_in_again(tmp_path):
    path = tmp_path / "tokens.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"{not json")
    os.close(fd)
    with pytest.raises(Unauthenticated) as refused:
        TokenCache(path).get(ISSUER, "mlplat")
    assert "malformed" in refused.value.message and "mlplat login" in refused.value.hint


def test_the_cache_path_follows_the_environment(tmp_path):
    home = os.path.expanduser("~")
    assert default_cache_path({}) == default_cache_path({"XDG_CONFIG_HOME": "relative/dir"})
    assert str(default_cache_path({})) == os.path.join(home, ".config", "mlplat", "tokens.json")
    assert default_cache_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "mlplat" / "tokens.json"
    assert default_cache_path({"XDG_CONFIG_HOME": str(tmp_path),
                               "MLPLAT_TOKEN_CACHE": str(tmp_path / "x.json")}) == tmp_path / "x.json"


def test_mlplat_token_wins_over_the_cache(tmp_path):
    cache = TokenCache(tmp_path / "tokens.json")
    cache.put(ISSUER, "mlplat", entry("from-the-cache"))
    env = {"MLPLAT_TOKEN_CACHE": str(cache.path)}
    assert credentials_for(spec(OIDC), env=env).headers() == {"Authorization": "Bearer from-the-cache"}
    ci = credentials_for(spec(OIDC), env=env | {"MLPLAT_TOKEN": " Bearer from-ci\n"})
    assert ci.headers() == {"Authorization": "Bearer from-ci"}
    assert ci.refresh() is False, "a token handed in cannot be renewed here"


def test_no_token_anywhere_names_mlplat_login_with_the_stack(tmp_path):
    creds = credentials_for(spec(OIDC, name="fraud-prod"), env={"MLPLAT_TOKEN_CACHE": str(tmp_path / "none.json")})
    with pytest.raises(Unauthenticated) as refused:
        creds.headers()
    assert "mlplat login --stack fraud-prod" in refused.value.hint
    assert not (tmp_path / "none.json").exists()


@pytest.mark.parametrize("access", [None, {"mode": "trusted-local"}, {"mode": "os-user"}])
def test_servers_that_do_not_authenticate_get_no_authorization_header(access):
    assert credentials_for(spec(access), env={"MLPLAT_TOKEN": "ignored"}).headers() == {}


def test_entra_without_azure_identity_says_how_to_install_it_or_pass_a_token(monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # as on a machine without the package
    entra = {"mode": "entra", "entra": {"tenantId": "t", "audience": "api://mlplat"}}
    with pytest.raises(ToolMissing) as missing:
        credentials_for(spec(entra), env={}).headers()
    assert "pip install azure-identity" in missing.value.hint
    assert "az account get-access-token --scope api://mlplat/.default" in missing.value.hint
    assert credentials_for(spec(entra), env={"MLPLAT_TOKEN": "t0"}).headers() == {"Authorization": "Bearer t0"}


def test_entra_token_comes_from_the_azure_credential_chain_for_the_default_scope(monkeypatch):
    """azure-identity's DefaultAzureCredential stands in for the chain (environment, managed identity, az login):
    the token it gives for ``<audience>/.default`` is sent as a bearer token; a chain that finds no credential is a
    refusal naming `az login`."""
    import azure.identity
    from azure.core.credentials import AccessToken
    from azure.core.exceptions import ClientAuthenticationError

    scopes: list[str] = []

    class Chain:
        def get_token(self, *asked):
            scopes.extend(asked)
            return AccessToken("entra-token", 4_102_444_800)

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", Chain)
    entra = {"mode": "entra", "entra": {"tenantId": "t", "audience": "api://mlplat/"}}
    assert credentials_for(spec(entra), env={}).headers() == {"Authorization": "Bearer entra-token"}
    assert scopes == ["api://mlplat/.default"]

    class Empty:
        def get_token(self, *asked):
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", Empty)
    with pytest.raises(Unauthenticated) as refused:
        credentials_for(spec(entra), env={}).headers()
    assert "az login" in refused.value.hint


def test_google_without_credentials_says_where_they_come_from(monkeypatch, tmp_path):
    with socket.socket() as s:  # a metadata server address where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{port}")
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{port}")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    google = {"mode": "google", "google": {"audience": "https://mlplat.example.com"}}
    with pytest.raises(Unauthenticated) as refused:
        credentials_for(spec(google), env={}).headers()
    assert "GOOGLE_APPLICATION_CREDENTIALS" in refused.value.hint
    assert "gcloud auth print-identity-token --audiences=https://mlplat.example.com" in refused.value.hint


def test_aws_without_credentials_names_aws_sso_login(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(Unauthenticated) as refused:
        credentials_for(spec({"mode": "aws-iam", "aws": {}}), env={}).headers()
    assert "aws sso login" in refused.value.hint


def _jwt(claims: dict) -> str:
    import jwt

    return jwt.encode(claims, "k" * 32, algorithm="HS256")  # only read unverified here, never trusted


def test_the_token_sent_is_the_one_for_the_platform_audience():
    id_token = _jwt({"aud": "mlplat", "exp": 2000, "email": "alice@example.com", "sub": "a1"})
    api_token = _jwt({"aud": ["https://api.other"], "exp": 1500, "sub": "a1"})
    chosen = entry_from_response({"access_token": api_token, "id_token": id_token, "expires_in": 300,
                                  "refresh_token": "r"}, issuer=ISSUER, client_id="mlplat", audience="mlplat", now=1000)
    assert chosen["token"] == id_token and chosen["expires_at"] == 2000 and chosen["principal"] == "alice@example.com"
    for_api = entry_from_response({"access_token": api_token, "id_token": id_token}, issuer=ISSUER,
                                  client_id="mlplat", audience="https://api.other", now=1000)
    assert for_api["token"] == api_token and for_api["expires_at"] == 1500
    opaque = entry_from_response({"access_token": "opaque", "expires_in": 300}, issuer=ISSUER, client_id="c",
                                 audience="mlplat", now=1000, previous={"refresh_token": "kept"})
    assert opaque["token"] == "opaque" and opaque["expires_at"] == 1300
    assert opaque["refresh_token"] == "kept", "RFC 6749 §6: a refresh response may omit the refresh token"


def test_login_hint_names_the_stack():
    assert client.login_hint("fraud-prod").startswith("sign in with `mlplat login --stack fraud-prod`")


def test_a_directory_or_a_symbolic_link_is_not_read_as_the_cache(tmp_path):
    real = TokenCache(tmp_path / "real.json")
    real.put(ISSUER, "mlplat", entry())
    (tmp_path / "link.json").symlink_to(real.path)
    with pytest.raises(Unauthenticated) as linked:
        TokenCache(tmp_path / "link.json").get(ISSUER, "mlplat")
    assert "symbolic link" in linked.value.message
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(Unauthenticated) as directory:
        TokenCache(tmp_path / "dir.json").get(ISSUER, "mlplat")
    assert "not a regular file" in directory.value.message
