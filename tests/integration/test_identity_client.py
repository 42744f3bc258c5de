"""The client side of identity: `mlplat login` (RFC 8628 device-code flow against a real OIDC issuer on
127.0.0.1), the 0600 token cache, renewal with the refresh token, and a real `mlplat server` in oidc
mode reached by the control-plane client and by `mlplat whoami` / `access list`."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mlplat.api.plane import RemotePlane
from mlplat.errors import Unauthenticated
from mlplat.identity.client import BearerToken, OidcCredentials, TokenCache, device_login
from mlplat.stack import OidcSettings
from tests.conftest import BIN, REPO, run_cli, write_project
from tests.oidc_issuer import running_issuer
from tests.server_support import free_port, requests_served, running_server
from tests.timing import ManualClock, wait_until

pytestmark = pytest.mark.integration

ALICE = {"sub": "a-1", "email": "alice@example.com", "groups": ["fraud-ds"]}
BOB = {"sub": "b-2", "email": "bob@example.com", "groups": []}


@pytest.fixture
def issuer():
    with running_issuer() as issuer:
        yield issuer


def oidc(issuer) -> OidcSettings:
    return OidcSettings.model_validate({"issuer": issuer.url, "audience": "mlplat"})


def verified_claims(issuer, token: str) -> dict:
    import jwt

    return jwt.decode(token, issuer.key.private.public_key(), algorithms=["RS256"], audience="mlplat",
                      options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})


def login(issuer, cache: TokenCache, claims: dict, *, clock=time.time) -> dict:
    """A device-code login the test approves on the first poll (no waiting)."""
    shown: list[dict] = []

    def sleep(_seconds: float) -> None:
        issuer.approve(shown[0]["user_code"], **claims)

    return device_login(oidc(issuer), stack="dev", cache=cache, show=shown.append, sleep=sleep, clock=clock)


# --- mlplat login: the device authorization grant ------------------------------------------------------


def test_login_approved_from_another_thread_caches_the_tokens_readable_by_the_owner_only(issuer, tmp_path):
    cache = TokenCache(tmp_path / "config" / "mlplat" / "tokens.json")
    shown: list[dict] = []
    approved = threading.Event()

    def user_at_the_browser() -> None:
        wait_until(lambda: issuer.devices, timeout=30, message="the issuer never saw a device request")
        (code,) = [device["user_code"] for device in issuer.devices.values()]
        issuer.approve(code, **ALICE)
        approved.set()

    user = threading.Thread(target=user_at_the_browser, daemon=True)
    user.start()
    entry = device_login(oidc(issuer), stack="dev", cache=cache, show=shown.append,
                         sleep=lambda seconds: approved.wait(seconds))  # wakes as soon as the user approves
    user.join(timeout=30)
    assert shown[0]["verification_uri"] == f"{issuer.url}/device" and re.fullmatch(r"\d{4}-\d{4}",
                                                                                   shown[0]["user_code"])
    assert stat.S_IMODE(os.stat(cache.path).st_mode) == 0o600
    stored = json.loads(cache.path.read_text())["entries"][f"{issuer.url} mlplat"]
    assert stored == entry
    assert verified_claims(issuer, stored["token"])["email"] == "alice@example.com"
    assert stored["principal"] == "alice@example.com"
    assert stored["refresh_token"] in issuer.refresh_tokens
    assert stored["expires_at"] == verified_claims(issuer, stored["token"])["exp"]


def test_login_polls_at_the_interval_while_authorization_is_pending(issuer, tmp_path):
    cache = TokenCache(tmp_path / "tokens.json")
    shown: list[dict] = []
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 4:  # the user approves after three polls answered authorization_pending
            issuer.approve(shown[0]["user_code"], **BOB)

    entry = device_login(oidc(issuer), stack="dev", cache=cache, show=shown.append, sleep=sleep)
    assert waits == [1.0, 1.0, 1.0, 1.0]  # the issuer's interval, before every poll
    assert issuer.token_requests == 4
    assert cache.get(issuer.url, "mlplat") == entry and entry["principal"] == "bob@example.com"


def test_slow_down_adds_five_seconds_to_the_interval_each_time(issuer, tmp_path):
    shown: list[dict] = []
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:
            issuer.slow_down(shown[0]["user_code"], times=2)
        if len(waits) == 3:
            issuer.approve(shown[0]["user_code"], **BOB)

    device_login(oidc(issuer), stack="dev", cache=TokenCache(tmp_path / "tokens.json"), show=shown.append, sleep=sleep)
    assert waits == [1.0, 6.0, 11.0]  # RFC 8628 §3.5: +5 s per slow_down, kept from then on


@pytest.mark.parametrize("outcome, message", [("deny", "the sign-in was refused"),
                                              ("expire", "the sign-in code expired before it was approved")])
def test_a_refused_or_expired_code_is_a_clear_error_and_writes_no_cache(issuer, tmp_path, outcome, message):
    cache = TokenCache(tmp_path / "tokens.json")
    shown: list[dict] = []

    def sleep(_seconds: float) -> None:
        getattr(issuer, outcome)(shown[0]["user_code"])

    with pytest.raises(Unauthenticated) as refused:
        device_login(oidc(issuer), stack="fraud-prod", cache=cache, show=shown.append, sleep=sleep)
    assert message in refused.value.message
    assert "mlplat login --stack fraud-prod" in refused.value.hint
    assert not cache.path.exists() and list(tmp_path.iterdir()) == []


def test_the_code_lifetime_ends_the_wait_even_if_the_issuer_never_says_so(issuer, tmp_path):
    clock = ManualClock(1_000_000)
    cache = TokenCache(tmp_path / "tokens.json")
    with pytest.raises(Unauthenticated) as refused:
        device_login(oidc(issuer), stack="dev", cache=cache, sleep=lambda _s: clock.advance(601), clock=clock)
    assert "expired" in refused.value.message
    assert issuer.token_requests == 0, "no poll after the code's expires_in (600 s) has passed"
    assert not cache.path.exists()


# --- renewal ------------------------------------------------------------------------------------------


def test_an_expired_token_is_renewed_with_the_refresh_token_on_the_next_call(issuer, tmp_path):
    clock = ManualClock(time.time())
    issuer.clock = clock
    cache = TokenCache(tmp_path / "tokens.json")
    first = login(issuer, cache, ALICE, clock=clock)
    credentials = OidcCredentials(oidc(issuer), stack="dev", cache=cache, clock=clock)
    polls = issuer.token_requests
    assert credentials.headers() == {"Authorization": f"Bearer {first['token']}"}
    clock.advance(3000)  # still valid: sent as it is
    assert credentials.headers() == {"Authorization": f"Bearer {first['token']}"}
    assert issuer.token_requests == polls
    clock.advance(600)  # past its exp (3600 s)
    renewed = credentials.headers()["Authorization"].removeprefix("Bearer ")
    assert renewed != first["token"] and issuer.token_requests == polls + 1
    assert verified_claims(issuer, renewed)["exp"] > clock()
    assert verified_claims(issuer, renewed)["email"] == "alice@example.com"
    stored = cache.get(issuer.url, "mlplat")
    assert stored["token"] == renewed and stored["refresh_token"] != first["refresh_token"]
    assert stat.S_IMODE(os.stat(cache.path).st_mode) == 0o600
    # a second client process reads the renewed token from the cache, and renews nothing
    assert OidcCredentials(oidc(issuer), stack="dev", cache=cache, clock=clock).headers()["Authorization"].endswith(
        renewed)
    assert issuer.token_requests == polls + 1


def test_two_processes_renewing_at_once_share_the_one_renewal(issuer, tmp_path):
    """Issuers that rotate refresh tokens accept each once: the process that loses the race takes the
    tokens the winner wrote to the cache instead of failing."""
    clock = ManualClock(time.time())
    issuer.clock = clock
    cache = TokenCache(tmp_path / "tokens.json")
    login(issuer, cache, ALICE, clock=clock)
    winner = OidcCredentials(oidc(issuer), stack="dev", cache=cache, clock=clock)
    loser = OidcCredentials(oidc(issuer), stack="dev", cache=cache, clock=clock)
    stale = loser.headers()  # loaded before the token expired
    assert winner.headers() == stale
    clock.advance(3600)
    polls = issuer.token_requests
    renewed = winner.headers()
    assert renewed != stale and issuer.token_requests == polls + 1
    assert loser.headers() == renewed  # its refresh token was spent by the winner: invalid_grant, then the cache
    assert issuer.token_requests == polls + 2


def test_a_refresh_token_the_issuer_refuses_names_mlplat_login(issuer, tmp_path):
    cache = TokenCache(tmp_path / "tokens.json")
    entry = login(issuer, cache, ALICE)
    cache.put(issuer.url, "mlplat", entry | {"refresh_token": "revoked", "expires_at": time.time() - 10})
    with pytest.raises(Unauthenticated) as refused:
        OidcCredentials(oidc(issuer), stack="fraud-prod", cache=cache).headers()
    assert "can no longer be renewed: invalid_grant" in refused.value.message
    assert "mlplat login --stack fraud-prod" in refused.value.hint
    assert cache.get(issuer.url, "mlplat")["refresh_token"] == "revoked", "nothing was written"


# --- against a real `mlplat server` in oidc mode ---------------------------------------------------------


def oidc_stack(issuer_url: str, port: int) -> str:
    text = (REPO / "stacks" / "Pulumi.dev.yaml").read_text()
    head, _, _ = text.partition("  mlplat:access:\n")
    return head + (f"  mlplat:access:\n    mode: oidc\n    oidc: {{issuer: '{issuer_url}', audience: mlplat}}\n"
                   "    roles:\n      developer: ['group:fraud-ds']\n      viewer: ['*']\n"
                   f"  mlplat:controlPlane:\n    url: http://127.0.0.1:{port}\n")


@pytest.fixture(scope="module")
def oidc_server(tmp_path_factory):
    """An issuer, a project whose stack authenticates with it, and that stack's `mlplat server`."""
    with running_issuer() as issuer:
        port = free_port()
        project = write_project(tmp_path_factory.mktemp("oidc") / "project", {"dev": oidc_stack(issuer.url, port)})
        up = run_cli("up", "--stack", "dev", "--yes", "--server-side", cwd=project,
                     env={"MLPLAT_PROJECT_DIR": str(project)})
        assert up.returncode == 0, up.stdout + up.stderr
        with running_server(project, "dev", port=port) as server:
            yield issuer, project, server


def client_env(project: Path, cache: Path, **extra: str) -> dict[str, str]:
    env = {"MLPLAT_PROJECT_DIR": str(project), "MLPLAT_TOKEN_CACHE": str(cache), "MLPLAT_TOKEN": "", **extra}
    return env


def spec_of(project: Path):
    from mlplat.stack import load_stack

    return load_stack("dev", project)


def test_the_control_plane_client_sends_the_token_and_renews_it_once_on_a_401(oidc_server, tmp_path):
    issuer, project, server = oidc_server
    spec = spec_of(project)
    cache = TokenCache(tmp_path / "tokens.json")
    # Signed in two hours ago by this machine's clock, which still believes the token valid; the
    # server's clock says it expired an hour ago, and refuses it.
    skewed = ManualClock(time.time() - 7200)
    issuer.clock = skewed
    login(issuer, cache, ALICE, clock=skewed)
    issuer.clock = time.time
    refused, served, polls = (requests_served(server, "access.whoami", 401), requests_served(server, "access.whoami"),
                              issuer.token_requests)
    plane = RemotePlane(server.url, stack="dev", user="ignored", credentials=OidcCredentials(
        spec.access.oidc, stack="dev", cache=cache, clock=skewed))
    try:
        doc = plane.call("access.whoami")
    finally:
        plane.close()
    assert doc["principal"] == "alice@example.com" and doc["method"] == "oidc"
    assert doc["groups"] == ["fraud-ds"] and "developer" in doc["roles"]
    assert requests_served(server, "access.whoami", 401) == refused + 1  # the stale token, once
    assert requests_served(server, "access.whoami") == served + 1  # then the renewed one
    assert issuer.token_requests == polls + 1
    assert verified_claims(issuer, cache.get(issuer.url, "mlplat")["token"])["exp"] > time.time()


def test_a_second_401_surfaces_the_servers_refusal_after_one_renewal(oidc_server, tmp_path):
    issuer, project, server = oidc_server
    cache = TokenCache(tmp_path / "tokens.json")
    skewed = ManualClock(time.time() - 7200)
    issuer.clock = skewed  # every token it issues, renewed ones too, is an hour past expiry for the server
    try:
        login(issuer, cache, BOB, clock=skewed)
        refused, polls = requests_served(server, "access.whoami", 401), issuer.token_requests
        plane = RemotePlane(server.url, stack="dev", user="ignored", credentials=OidcCredentials(
            spec_of(project).access.oidc, stack="dev", cache=cache, clock=skewed))
        with pytest.raises(Unauthenticated) as second:
            plane.call("access.whoami")
        plane.close()
    finally:
        issuer.clock = time.time
    assert "expired" in second.value.message and "mlplat login" in (second.value.hint or "")
    assert requests_served(server, "access.whoami", 401) == refused + 2  # sent, renewed, resent: then it stops
    assert issuer.token_requests == polls + 1


def test_a_token_that_cannot_be_renewed_is_refused_once_with_the_servers_hint(oidc_server):
    issuer, _project, server = oidc_server
    refused = requests_served(server, "models.list", 401)
    forged = issuer.forge_none(**ALICE)
    plane = RemotePlane(server.url, stack="dev", user="alice@example.com",
                        credentials=BearerToken(forged, method="oidc"))
    with pytest.raises(Unauthenticated) as rejected:
        plane.call("models.list", environment="dev")
    plane.close()
    assert "mlplat login" in (rejected.value.hint or "")
    assert requests_served(server, "models.list", 401) == refused + 1


def test_whoami_and_access_list_through_the_server(oidc_server, tmp_path):
    issuer, project, server = oidc_server
    cache = TokenCache(tmp_path / "tokens.json")
    login(issuer, cache, ALICE)
    env = client_env(project, cache.path)
    shown = run_cli("whoami", "--stack", "dev", cwd=project, env=env)
    assert shown.returncode == 0, shown.stderr
    lines = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in shown.stdout.splitlines() if line.strip())
    assert lines["principal"] == "alice@example.com" and lines["method"] == "oidc"
    assert lines["groups"] == "fraud-ds" and set(lines["roles"].split(", ")) == {"developer", "viewer"}
    as_json = json.loads(run_cli("whoami", "--stack", "dev", "--json", cwd=project, env=env).stdout)
    assert as_json["principal"] == "alice@example.com" and "a-1" in as_json["ids"]
    roles = run_cli("access", "list", "--stack", "dev", "--json", cwd=project, env=env)
    assert roles.returncode == 0, roles.stderr
    doc = json.loads(roles.stdout)
    assert doc["mode"] == "oidc" and doc["roles"]["developer"] == ["group:fraud-ds"]
    table = run_cli("access", "list", "--stack", "dev", cwd=project, env=env)
    assert table.returncode == 0 and "group:fraud-ds" in table.stdout and "nobody" in table.stdout


def test_mlplat_token_wins_over_the_cache(oidc_server, tmp_path):
    issuer, project, _server = oidc_server
    cache = TokenCache(tmp_path / "tokens.json")
    login(issuer, cache, ALICE)
    env = client_env(project, cache.path, MLPLAT_TOKEN=issuer.token(**BOB))
    shown = run_cli("whoami", "--stack", "dev", "--json", cwd=project, env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["principal"] == "bob@example.com"


def test_whoami_without_signing_in_is_exit_6_naming_mlplat_login(oidc_server, tmp_path):
    _issuer, project, server = oidc_server
    before = requests_served(server, "access.whoami", 401)
    shown = run_cli("whoami", "--stack", "dev", cwd=project, env=client_env(project, tmp_path / "none.json"))
    assert shown.returncode == 6
    assert "not signed in" in shown.stderr and "mlplat login --stack dev" in shown.stderr
    assert requests_served(server, "access.whoami", 401) == before, "nothing was sent without a credential"


def test_mlplat_login_and_logout_as_a_user_types_them(oidc_server, tmp_path):
    issuer, project, _server = oidc_server
    cache = tmp_path / "home" / "tokens.json"
    env = {**os.environ, **client_env(project, cache)}
    process = subprocess.Popen([str(BIN / "mlplat"), "login", "--stack", "dev"], cwd=project, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stderr.readline()  # the user reads the instructions...
        found = re.search(r"open (\S+) and enter the code (\d{4}-\d{4})", first)
        assert found, first
        assert found.group(1) == f"{issuer.url}/device"
        issuer.approve(found.group(2), **ALICE)  # ...and approves in a browser
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "Signed in to" in out and "as alice@example.com" in out
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    whoami = run_cli("whoami", "--stack", "dev", "--json", cwd=project, env=client_env(project, cache))
    assert json.loads(whoami.stdout)["principal"] == "alice@example.com"
    out = run_cli("logout", "--stack", "dev", cwd=project, env=client_env(project, cache))
    assert out.returncode == 0 and "Signed out of" in out.stdout
    assert json.loads(cache.read_text())["entries"] == {}
    after = run_cli("whoami", "--stack", "dev", cwd=project, env=client_env(project, cache))
    assert after.returncode == 6 and "mlplat login --stack dev" in after.stderr


def test_login_on_a_stack_that_does_not_sign_in_says_so(tmp_path):
    project = write_project(tmp_path / "project")
    result = run_cli("login", "--stack", "dev", cwd=project, env={"MLPLAT_PROJECT_DIR": str(project)})
    assert result.returncode == 0, result.stderr
    assert "does not sign in (access mode trusted-local)" in result.stdout
    refused = run_cli("logout", "--stack", "dev", cwd=project, env={"MLPLAT_PROJECT_DIR": str(project)})
    assert refused.returncode == 3 and "caches no tokens" in refused.stderr


def test_login_on_an_aws_iam_stack_without_credentials_names_aws_sso_login(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    text = (REPO / "stacks" / "Pulumi.dev.yaml").read_text().replace("    mode: trusted-local\n",
                                                                      "    mode: aws-iam\n    aws: {}\n")
    project = write_project(tmp_path / "project", {"dev": text})
    env = {"MLPLAT_PROJECT_DIR": str(project), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    result = run_cli("login", "--stack", "dev", cwd=project, env=env)
    assert result.returncode == 6, result.stdout + result.stderr
    assert "no AWS credentials found" in result.stderr and "aws sso login" in result.stderr
    found = run_cli("login", "--stack", "dev", "--json", cwd=project,
                    env=env | {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"})
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["source"] == "the AWS credential chain (boto3: env)"


def test_whoami_on_an_aws_iam_stack_signs_with_the_boto3_chain(tmp_path, monkeypatch):
    """The client signs with whatever the boto3 chain finds (here: the environment); the server has
    moto's STS, standing in for AWS, name the caller."""
    import boto3
    from moto.server import ThreadedMotoServer

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    sts_port, port = free_port(), free_port()
    sts = f"http://127.0.0.1:{sts_port}"
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=sts_port)
    moto.start()
    try:
        iam = boto3.client("iam", endpoint_url=sts, region_name="us-east-1", aws_access_key_id="AKIAADMIN0000000000",
                           aws_secret_access_key="x")
        arn = iam.create_user(UserName="carol")["User"]["Arn"]
        key = iam.create_access_key(UserName="carol")["AccessKey"]
        text = (REPO / "stacks" / "Pulumi.dev.yaml").read_text().replace(
            "  mlplat:access:\n    mode: trusted-local\n",
            f"  mlplat:access:\n    mode: aws-iam\n    aws: {{region: us-east-1, stsEndpoint: '{sts}'}}\n"
            f"    roles: {{viewer: ['{arn}']}}\n  mlplat:controlPlane:\n    url: http://127.0.0.1:{port}\n")
        project = write_project(tmp_path / "project", {"dev": text})
        env = {"MLPLAT_PROJECT_DIR": str(project), "AWS_CONFIG_FILE": str(tmp_path / "none"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true",
               "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        up = run_cli("up", "--stack", "dev", "--yes", "--server-side", cwd=project, env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        with running_server(project, "dev", port=port):
            shown = run_cli("whoami", "--stack", "dev", "--json", cwd=project, env=env)
            assert shown.returncode == 0, shown.stderr
            doc = json.loads(shown.stdout)
            assert (doc["principal"], doc["method"], doc["roles"]) == (arn, "aws-iam", ["viewer"])
            unsigned = run_cli("whoami", "--stack", "dev", cwd=project,
                               env=env | {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
            assert unsigned.returncode == 6 and "aws sso login" in unsigned.stderr
    finally:
        moto.stop()
