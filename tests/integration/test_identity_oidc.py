"""A real `mlplat server` process authenticating callers against a real OIDC issuer on 127.0.0.1.

Only a valid token passes; every refusal is a 401 with ``WWW-Authenticate`` and a hint naming
``mlplat login``, and writes nothing (the ledger's SQLite file reads the same before and after).
A misconfigured issuer keeps the server from starting, naming the setting.
"""
from __future__ import annotations

import sqlite3

import httpx
import pytest

from tests.conftest import REPO, run_cli, write_project
from tests.oidc_issuer import SigningKey, running_issuer
from tests.server_support import free_port, running_server

pytestmark = pytest.mark.integration

TRUSTED = "  mlplat:access:\n    mode: trusted-local\n"


def stack_text(access: str) -> str:
    text = (REPO / "stacks" / "Pulumi.dev.yaml").read_text()
    assert TRUSTED in text
    return text.replace(TRUSTED, access)


def oidc_access(issuer_url: str) -> str:
    return ("  mlplat:access:\n    mode: oidc\n"
            f"    oidc: {{issuer: '{issuer_url}', audience: mlplat}}\n"
            "    roles: {admin: ['group:platform'], viewer: ['*']}\n")


def ledger_dump(project) -> list[str]:
    """Every row of the server's ledger (SQLite), read-only."""
    db = sqlite3.connect(f"file:{project / '.mlplat' / 'dev' / 'platform.db'}?mode=ro", uri=True)
    try:
        return list(db.iterdump())
    finally:
        db.close()


WRITES = [("POST", "/api/v1/models/credit-risk/versions/1/approvals", {"reason": "looks fine"}),
          ("POST", "/api/v1/deployments/credit-risk/rollback", {"reason": "now"})]


def test_only_a_valid_token_passes_and_every_refusal_is_a_401_that_writes_nothing(tmp_path):
    with running_issuer() as issuer:
        project = write_project(tmp_path / "project", {"dev": stack_text(oidc_access(issuer.url))})
        up = run_cli("up", "--stack", "dev", "--yes", cwd=project, env={"MLPLAT_PROJECT_DIR": str(project)})
        assert up.returncode == 0, up.stderr
        with running_server(project, "dev", args=("--host", "0.0.0.0")) as server:
            assert "callers authenticated by oidc" in server.output()
            assert issuer.jwks_requests == 1  # read when it started
            api = httpx.Client(base_url=server.url, timeout=30)

            def get(token: str | None) -> httpx.Response:
                return api.get("/api/v1/models", headers={"Authorization": f"Bearer {token}"} if token else {})

            valid = issuer.token(sub="u-1", email="alice@example.com", groups=["platform"])
            for _ in range(5):
                answer = get(valid)
                assert answer.status_code == 200, answer.text
            assert issuer.jwks_requests == 1  # the keys are cached

            head, body, sig = valid.split(".")
            bad = {
                "expired": issuer.token(exp_in=-120),
                "not yet valid": issuer.token(nbf_in=600),
                "wrong audience": issuer.token(aud="another-api"),
                "wrong issuer": issuer.token(iss="https://login.evil.example"),
                "alg none": issuer.forge_none(email="alice@example.com", groups=["platform"]),
                "hs256 with the public key": issuer.forge_hs256_with_public_key(groups=["platform"]),
                "tampered payload": f"{head}.{body[:-4]}AAAA.{sig}",
                "garbage": "garbage",
            }
            before = ledger_dump(project)
            for case, token in [*bad.items(), ("missing header", None)]:
                for method, path, params in WRITES:
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    answer = api.request(method, path, json=params, headers=headers)
                    assert answer.status_code == 401, (case, answer.text)
                    doc = answer.json()
                    assert doc["error"] == "Unauthenticated" and "mlplat login --stack dev" in doc["hint"], case
                    expected = 'Bearer realm="mlplat"' + (', error="invalid_token"' if token else "")
                    assert answer.headers["WWW-Authenticate"] == expected, case
            assert "expired" in get(bad["expired"]).json()["message"]
            assert "audience" in get(bad["wrong audience"]).json()["message"]
            assert ledger_dump(project) == before, "a refused request wrote to the ledger"

            issuer.rotate()  # the provider signs with a new key; the old one leaves its JWKS
            rotated = get(issuer.token(sub="u-2", email="bob@example.com"))
            assert rotated.status_code == 200, rotated.text
            assert issuer.jwks_requests == 2  # one refetch, for the new kid
            assert get(valid).status_code == 401  # signed with the withdrawn key
            unknown = get(issuer.token(key=SigningKey.generate()))
            assert unknown.status_code == 401 and "does not publish" in unknown.json()["message"]
            assert ledger_dump(project) == before
            assert "Traceback" not in server.output()


def server_cli(project, *args: str):
    return run_cli("server", "--stack", "dev", "--port", str(free_port()), *args, cwd=project,
                   env={"MLPLAT_PROJECT_DIR": str(project)}, timeout=120)


def test_a_misconfigured_issuer_keeps_the_server_from_starting_naming_the_setting(tmp_path):
    unreachable = write_project(tmp_path / "a", {"dev": stack_text(oidc_access(f"http://127.0.0.1:{free_port()}"))})
    result = server_cli(unreachable)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "mlplat:access.oidc.issuer" in result.stderr and "openid-configuration" in result.stderr
    with running_issuer() as issuer:
        # discovery answers, but for another issuer name (OpenID Connect Discovery §4.3)
        other = write_project(tmp_path / "b", {"dev": stack_text(oidc_access(issuer.url.replace("127.0.0.1",
                                                                                                "localhost")))})
        result = server_cli(other)
        assert result.returncode == 3, result.stdout + result.stderr
        assert "mlplat:access.oidc.issuer" in result.stderr and f"names issuer '{issuer.url}'" in result.stderr
    assert not (tmp_path / "a" / ".mlplat").exists() and not (tmp_path / "b" / ".mlplat").exists()


@pytest.mark.parametrize("access", ["", "  mlplat:access:\n    mode: os-user\n"])
def test_a_server_refuses_to_start_when_it_cannot_identify_callers(tmp_path, access):
    project = write_project(tmp_path / "project", {"dev": stack_text(access)})
    result = server_cli(project)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "mlplat:access.mode" in result.stderr
    assert "set mlplat:access.mode to oidc, aws-iam, google or entra (or trusted-local" in result.stderr


def test_a_trusted_local_server_binds_loopback_only(tmp_path):
    project = write_project(tmp_path / "project")
    result = server_cli(project, "--host", "0.0.0.0")
    assert result.returncode == 6, result.stdout + result.stderr
    assert "no authentication" in result.stderr and "set mlplat:access.mode to oidc" in result.stderr
