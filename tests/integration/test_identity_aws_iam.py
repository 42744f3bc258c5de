"""AWS IAM authentication against moto's STS running as a real server on 127.0.0.1.

The client signs ``sts:GetCallerIdentity`` with botocore (:func:`identity_header`); the server checks
the request and executes it against STS (:class:`AwsIamAuthenticator`). moto's STS does not check
SigV4 signatures (it answers for the access key named in the request): the signature itself is the
real STS's to check, and these tests cover everything the server decides before and after it asks.
"""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import pytest

from mlplat.errors import IdentityProviderUnavailable, StackError, Unauthenticated
from mlplat.identity import AWS_IAM, matches
from mlplat.identity.aws_sign import SCHEME, AwsIamAuthenticator, identity_header
from mlplat.identity.verifiers import authenticator_for
from mlplat.stack import Access
from tests.conftest import REPO, run_cli, write_project
from tests.server_support import free_port, running_server
from tests.timing import ManualClock

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ACCOUNT = "123456789012"
NOW = 1_900_000_000.0


@pytest.fixture(scope="module")
def sts():
    """moto as a server; yields its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def people(sts):
    """An IAM user's credentials and an assumed-role session of the role ``deployer``, from moto."""
    import boto3

    admin = boto3.Session(aws_access_key_id="AKIAADMIN0000000000", aws_secret_access_key="x", region_name=REGION)
    iam = admin.client("iam", endpoint_url=sts)
    iam.create_user(UserName="alice")
    key = iam.create_access_key(UserName="alice")["AccessKey"]
    alice = boto3.Session(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                          region_name=REGION)
    role = iam.create_role(RoleName="deployer", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}}]}))["Role"]
    creds = alice.client("sts", endpoint_url=sts).assume_role(RoleArn=role["Arn"], RoleSessionName="ci-42")["Credentials"]
    deployer = boto3.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                             aws_session_token=creds["SessionToken"], region_name=REGION)
    return SimpleNamespace(alice=alice, deployer=deployer, role_arn=role["Arn"])


class Recorder:
    """The server's HTTP client, counting the requests it sends to STS."""

    def __init__(self):
        self.sent: list[str] = []
        self.client = httpx.Client(event_hooks={"request": [lambda r: self.sent.append(str(r.url))]})


def server(sts, recorder: Recorder, clock=None, server_id: str = "fraud-prod") -> AwsIamAuthenticator:
    access = Access.model_validate({"mode": "aws-iam", "aws": {"region": REGION, "stsEndpoint": sts,
                                                               "serverId": server_id}})
    auth = authenticator_for(SimpleNamespace(name="dev", access=access), http=recorder.client,
                             clock=clock or ManualClock(NOW))
    assert isinstance(auth, AwsIamAuthenticator)
    auth.check()
    return auth


def signed(session, sts, *, server_id: str = "fraud-prod", at: float = NOW, endpoint: str | None = None) -> dict:
    return {"authorization": identity_header(session, region=REGION, endpoint=endpoint or sts, server_id=server_id,
                                             clock=lambda: at)}


def test_a_signed_request_names_the_iam_user(sts, people):
    recorder = Recorder()
    who = server(sts, recorder).authenticate(signed(people.alice, sts))
    assert (who.name, who.method, who.ids) == (f"arn:aws:iam::{ACCOUNT}:user/alice", AWS_IAM, ())
    assert who.claims["account"] == ACCOUNT
    assert recorder.sent == [sts + "/"]


def test_an_assumed_role_session_carries_its_role_arn(sts, people):
    who = server(sts, Recorder()).authenticate(signed(people.deployer, sts))
    assert who.name == f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/ci-42"
    assert who.ids == (people.role_arn,)
    assert matches(people.role_arn, who)  # a stack's role pattern naming the role admits its sessions


def test_verified_requests_are_cached_briefly(sts, people):
    recorder, clock = Recorder(), ManualClock(NOW)
    auth = server(sts, recorder, clock)
    headers = signed(people.alice, sts)
    for _ in range(5):
        assert auth.authenticate(headers).name.endswith(":user/alice")
    assert len(recorder.sent) == 1
    clock.advance(61)
    auth.authenticate(headers)
    assert len(recorder.sent) == 2


def tamper(headers: dict, change) -> dict:
    scheme, encoded = headers["authorization"].split(" ", 1)
    doc = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    change(doc)
    return {"authorization": f"{scheme} " + base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()}


def refused(auth, headers) -> str:
    with pytest.raises(Unauthenticated) as caught:
        auth.authenticate(headers)
    assert caught.value.http_status == 401 and "mlplat login" in caught.value.hint
    return caught.value.message


@pytest.mark.parametrize("make, reason", [
    (lambda p, sts: signed(p.alice, sts, server_id="another-server"), "meant for server 'another-server'"),
    (lambda p, sts: signed(p.alice, sts, endpoint="http://169.254.169.254"), "not for this server's STS endpoint"),
    (lambda p, sts: signed(p.alice, sts, endpoint="https://sts.amazonaws.com"), "not for this server's STS endpoint"),
    (lambda p, sts: tamper(signed(p.alice, sts), lambda d: d.update(body=base64.b64encode(
        b"Action=GetSessionToken&Version=2011-06-15").decode())), "body must be exactly"),
    (lambda p, sts: tamper(signed(p.alice, sts), lambda d: d.update(url=sts + "/?Action=AssumeRole")),
     "not for this server's STS endpoint"),
    (lambda p, sts: tamper(signed(p.alice, sts), lambda d: d.update(method="GET")), "not POST"),
    (lambda p, sts: signed(p.alice, sts, at=NOW - 16 * 60), "signed 16 minutes ago"),
    (lambda p, sts: signed(p.alice, sts, at=NOW + 20 * 60), "signed 20 minutes ahead"),
    (lambda p, sts: tamper(signed(p.alice, sts), lambda d: d["headers"].pop("X-Mlplat-Server-Id")),
     "no X-Mlplat-Server-Id header"),
    (lambda p, sts: tamper(signed(p.alice, sts), lambda d: d["headers"].update(Authorization=d["headers"][
        "Authorization"].replace(";x-mlplat-server-id", ""))), "covered by the signature"),
    (lambda p, sts: tamper(signed(p.alice, sts), lambda d: d["headers"].update(Host="evil.example")),
     "Host header names"),
    (lambda p, sts: tamper(signed(p.alice, sts), lambda d: d["headers"].update({"X-Evil\r\nInjected": "1"})),
     "malformed"),
    (lambda p, sts: {"authorization": f"{SCHEME} not-base64-json!!"}, "not base64url-encoded JSON"),
    (lambda p, sts: {"authorization": "Bearer abc"}, "takes a signed AWS request"),
    (lambda p, sts: {}, "no credentials"),
])
def test_requests_the_server_must_not_execute_are_401_before_sts_is_called(sts, people, make, reason):
    recorder = Recorder()
    assert reason in refused(server(sts, recorder), make(people, sts))
    assert recorder.sent == []


class RefusingSts(BaseHTTPRequestHandler):
    """STS refusing a signature, with STS's own error document (what moto never does)."""

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = (b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
                b"<Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the "
                b"signature you provided.</Message></Error><RequestId>r-1</RequestId></ErrorResponse>")
        self.send_response(403)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_sts_refusing_is_401_and_sts_unreachable_is_503(people):
    refusing = ThreadingHTTPServer(("127.0.0.1", 0), RefusingSts)
    threading.Thread(target=refusing.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{refusing.server_address[1]}"
        assert "AWS STS refused it: SignatureDoesNotMatch" in refused(server(url, Recorder()), signed(people.alice, url))
    finally:
        refusing.shutdown()
        refusing.server_close()
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(IdentityProviderUnavailable) as caught:
        server(dead, Recorder()).authenticate(signed(people.alice, dead))
    assert caught.value.http_status == 503


def test_the_sts_endpoint_must_be_https_beyond_loopback():
    with pytest.raises(StackError) as caught:
        server("http://sts.example.com", Recorder())
    assert caught.value.where == "mlplat:access.aws.stsEndpoint"


def test_mlplat_server_in_aws_iam_mode_admits_signed_callers_only(sts, people, tmp_path):
    text = (REPO / "stacks" / "Pulumi.dev.yaml").read_text().replace(
        "  mlplat:access:\n    mode: trusted-local\n",
        f"  mlplat:access:\n    mode: aws-iam\n    aws: {{region: {REGION}, stsEndpoint: '{sts}'}}\n"
        f"    roles: {{viewer: ['{people.role_arn}']}}\n")
    project = write_project(tmp_path / "project", {"dev": text})
    assert run_cli("up", "--stack", "dev", "--yes", cwd=project, env={"MLPLAT_PROJECT_DIR": str(project)}).returncode == 0
    with running_server(project, "dev", args=("--host", "0.0.0.0")) as served:
        assert "callers authenticated by aws-iam" in served.output()
        url = served.url + "/api/v1/models"
        # the server id defaults to the stack's name
        ok = httpx.get(url, headers=signed(people.deployer, sts, server_id="dev", at=_now()))
        assert ok.status_code == 200, ok.text
        denied = httpx.get(url, headers=signed(people.deployer, sts, server_id="prod", at=_now()))
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"] == f'{SCHEME} realm="mlplat", error="invalid_token"'
        assert "meant for server 'prod'" in denied.json()["message"]
        bare = httpx.get(url)
        assert bare.status_code == 401 and bare.headers["WWW-Authenticate"] == f'{SCHEME} realm="mlplat"'


def _now() -> float:
    import time

    return time.time()  # the server process signs nothing; it checks X-Amz-Date against its own clock
