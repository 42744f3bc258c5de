"""Bring-your-own container: an OCI image that answers the MLflow scoring protocol or the Open Inference
Protocol, registered as a model version (`mlplat models register-image`), gated on the held-out set
through its HTTP API, promoted (its staging endpoint is the image itself), and served by the gateway's
container backend with every strategy and a rollback.

The images are built once per session with buildah from the platform's debootstrap base (which has
python3), each tagged by the hash of what goes in, so a later session reuses them: a small stdlib HTTP
server (with only the interpreter and the modules it needs) whose behaviour is set by the image's ``MODE``: ``both`` protocols, ``mlflow`` only, or
``crash`` (exits at start with a line in its log, so it never becomes ready).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import BIN, require_tools, run_cli, write_project
from tests.integration.support_serving import stop, wait_for_port_file
from tests.timing import wait_until

pytestmark = [pytest.mark.container, pytest.mark.xdist_group("container-image")]

USER = "ds@example.com"
SERVER = r'''
import json, math, os, socketserver, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = os.environ.get("MODE", "both")


def predict(rows):
    return [[1.0 - p, p] for p in (1.0 / (1.0 + math.exp(-3.0 * (float(a) + float(b)))) for a, b in rows)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def send(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path in ("/ping", "/v2/health/ready", "/v2/health/live"):
            return self.send(200, {"ready": True})
        self.send(404, {"error": "no route " + self.path})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            doc = json.loads(raw)
        except ValueError:
            return self.send(400, {"error": "malformed JSON"})
        if self.path == "/invocations":
            split = doc.get("dataframe_split") if isinstance(doc, dict) else None
            if not isinstance(split, dict) or split.get("columns") != ["x0", "x1"]:
                return self.send(400, {"error": "send dataframe_split with columns x0, x1"})
            return self.send(200, {"predictions": predict(split["data"])})
        if MODE == "both" and self.path.startswith("/v2/models/") and self.path.endswith("/infer"):
            columns = {i.get("name"): i.get("data") for i in doc.get("inputs", [])} if isinstance(doc, dict) else {}
            if set(columns) != {"x0", "x1"}:
                return self.send(400, {"error": "send inputs x0 and x1"})
            out = predict(zip(columns["x0"], columns["x1"]))
            return self.send(200, {"model_name": self.path.split("/")[3], "outputs": [
                {"name": "proba", "shape": [len(out), 2], "datatype": "FP64", "data": [v for r in out for v in r]}]})
        self.send(404, {"error": "no route POST " + self.path})

    def log_message(self, *args):
        pass


if MODE == "crash":
    print("loading weights from /srv/weights.bin: file not found", file=sys.stderr, flush=True)
    sys.exit(3)


class Server(ThreadingHTTPServer):
    def server_bind(self):  # no reverse DNS lookup of the address (HTTPServer's getfqdn)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


print("serving on port", os.environ["PORT"], flush=True)
Server(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''
# Runs inside the base image: the interpreter, the shared libraries it maps (with their soname links)
# and the standard library modules the server imports, copied to /out, the test image's whole file
# system (18 MB instead of the base's 128: podman's vfs storage copies an image for every container).
COLLECT = r'''
# Runs inside the base image: copies the interpreter, the shared libraries it has mapped and the standard
# library modules the server imports into /out, the whole file system of the test image.
import glob
import email.utils  # noqa: F401  (what server.py imports)
import http.server  # noqa: F401
import encodings.idna  # noqa: F401
import json  # noqa: F401
import math  # noqa: F401
import os
import shutil
import socketserver  # noqa: F401
import sys

os.makedirs("/out", exist_ok=True)
for top in ("/bin", "/sbin", "/lib", "/lib64"):  # merged /usr: keep the top-level links (the ELF loader's path)
    if os.path.islink(top):
        os.symlink(os.readlink(top), "/out" + top)
        os.makedirs(os.path.realpath("/out" + top), exist_ok=True)
files = {sys.executable, os.path.realpath(sys.executable), "/lib64/ld-linux-x86-64.so.2"}
files.update(m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None))
with open("/proc/self/maps") as maps:
    files.update(line.split()[-1] for line in maps if line.rstrip().endswith(".so") or ".so." in line)
for lib in [f for f in files if ".so" in os.path.basename(f)]:  # with the soname links the loader looks for
    files.update(glob.glob(lib.split(".so")[0] + ".so*"))
for path in sorted(f for f in files if f.startswith("/")):
    for name in {path, os.path.realpath(path)}:
        dest = "/out" + name
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.islink(name):
            os.symlink(os.readlink(name), dest)
        elif not os.path.exists(dest):
            shutil.copy2(name, dest)
'''
CONTAINERFILE = """\
ARG BASE
FROM ${BASE} AS full
COPY server.py collect.py /srv/
RUN python3 /srv/collect.py && mkdir -p /out/srv /out/tmp && cp /srv/server.py /out/srv/
FROM scratch
COPY --from=full /out /
ENV MODE=both
ENTRYPOINT ["/usr/bin/python3", "/srv/server.py"]
"""
VARIANT = """\
FROM %s
ENV MODE=%s
"""


def expected(rows) -> np.ndarray:
    """What the image's model answers: P(class 0), P(class 1) of a logistic function of x0 + x1."""
    out = []
    for a, b in rows:
        p = 1.0 / (1.0 + math.exp(-3.0 * (a + b)))
        out.append([1.0 - p, p])
    return np.asarray(out)


def _delivery():
    from mlplat_providers.local import delivery

    return delivery


def _podman(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    d = _delivery()
    return subprocess.run(d.podman_command(*args), capture_output=True, text=True, env=d.engine_env(), timeout=timeout)


# the model names of this run carry a token of its project folder: other runs' containers are not counted
TOKEN = hashlib.sha256(str(Path(tempfile.gettempdir()).resolve()).encode() + str(os.getpid()).encode()).hexdigest()[:8]
BYO = f"byo-{TOKEN}"


def _ours() -> list[str]:
    """Containers started for this run's container model versions (the label every one of them carries
    names the version they serve)."""
    out = _podman("ps", "-a", "--filter", "label=org.mlplat.container-model", "--format",
                  '{{.Names}} {{index .Labels "org.mlplat.container-model"}}')
    assert out.returncode == 0, out.stderr
    return [line.split()[0] for line in out.stdout.splitlines() if TOKEN in line]


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, str]:
    """``MODE -> image reference``, built from the debootstrap base once and cached by content hash."""
    require_tools("buildah", "podman", "debootstrap", purpose="the container model tests",
                  install="apt-get install podman buildah runc debootstrap catatonit")
    d = _delivery()
    env = d.engine_env()
    base = d.LocalDeliveryPipeline.ensure_base_image(d.LocalDeliveryPipeline.__new__(d.LocalDeliveryPipeline), env)
    context = tmp_path_factory.mktemp("byo-image")
    (context / "server.py").write_text(SERVER)
    (context / "collect.py").write_text(COLLECT)

    def build(containerfile: str, ref: str) -> str:
        if _podman("image", "exists", ref).returncode != 0:
            (context / "Containerfile").write_text(containerfile)
            built = subprocess.run(d.buildah_command("bud", "--isolation", "chroot", "--layers=false",
                                                     "--build-arg", f"BASE={base}", "-t", ref,
                                                     "-f", str(context / "Containerfile"), str(context)),
                                   capture_output=True, text=True, env=env, timeout=900)
            assert built.returncode == 0, built.stderr[-3000:]
        return ref

    key = hashlib.sha256("\0".join((base, SERVER, COLLECT, CONTAINERFILE)).encode()).hexdigest()[:12]
    out = {"both": build(CONTAINERFILE, f"localhost/mlplat-test/byo-both:{key}")}
    for mode in ("mlflow", "crash"):
        out[mode] = build(VARIANT % (out["both"], mode), f"localhost/mlplat-test/byo-{mode}:{key}")
    return out


def _env(project: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLAT_")}
    return env | {"MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": USER, "MLPLAT_CONTAINER_ENGINE": "podman",
                  **extra}


@pytest.fixture(scope="module")
def project(tmp_path_factory, images):
    project = write_project(tmp_path_factory.mktemp("byo") / "project")
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 2))
    frame = pd.DataFrame(X, columns=["x0", "x1"])
    frame["label"] = (X.sum(axis=1) + rng.normal(scale=0.3, size=400) > 0).astype(int)
    frame.to_parquet(project / "holdout.parquet", index=False)
    up = run_cli("up", "--stack", "dev", "--yes", cwd=project, env=_env(project))
    assert up.returncode == 0, up.stderr
    yield project
    for name in _ours():  # a failed test must not leave its containers behind
        _podman("rm", "-f", "-t", "0", name)


def cli(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=project, env=_env(project), timeout=timeout)


def register(project: Path, name: str, image: str, *extra: str) -> int:
    done = cli(project, "models", "register-image", name, "--image", image, "--holdout", "holdout.parquet",
               "--label", "label", "--json", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    return int(json.loads(done.stdout)["version"])


def test_an_image_is_registered_gated_staged_and_served_with_every_strategy(project, images):
    image = images["both"]
    assert register(project, BYO, image) == 1
    shown = json.loads(cli(project, "models", "show", BYO, "1", "--json").stdout)
    inspected = json.loads(_podman("image", "inspect", "--format", "json", image).stdout)[0]
    assert shown["framework"] == "container"
    assert shown["lineage"]["image"]["reference"] == image
    assert shown["lineage"]["image"]["image_id"] == inspected["Id"]
    assert shown["lineage"]["image"]["digest"] == inspected["Digest"]

    promoted = cli(project, "models", "promote", BYO, "1", "--to", "staging")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "health ok, predictions ok, malformed payload ok, latency ok" in promoted.stdout
    gate = json.loads(cli(project, "models", "show", BYO, "1", "--json").stdout)["gate_reports"][-1]["report"]
    assert gate["passed"] and gate["metrics"]["roc_auc"] > 0.9  # scored through the container's HTTP API
    assert _ours() == []  # the gate's and the staging endpoint's containers are gone

    # the same image speaking the Open Inference Protocol: version 2
    assert register(project, BYO, image, "--protocol", "v2") == 2
    assert cli(project, "models", "promote", BYO, "2", "--to", "staging").returncode == 0
    assert cli(project, "deploy", BYO, "1").returncode == 0

    port_file = project / "gateway.port"
    # one worker: each worker process runs its own container per version
    gateway = subprocess.Popen([str(BIN / "mlplat"), "serve", "--port", "0", "--port-file", str(port_file),
                                "--no-monitor", "--workers", "1"], cwd=project, env=_env(project), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{wait_for_port_file(port_file, gateway, timeout=180)}"
        rows = [[0.5, -0.1], [-1.0, 0.2], [0.0, 0.0]]
        body = {"dataframe_split": {"columns": ["x0", "x1"], "data": rows}}
        with httpx.Client(base_url=url, timeout=60) as client:
            def served_by(versions: set[int], **kw) -> bool:
                seen = set()
                for key in range(40):
                    r = client.post(f"/endpoints/{BYO}/invocations", json=body, headers={"x-routing-key": f"k{key}"})
                    if r.status_code != 200:
                        return False
                    np.testing.assert_allclose(np.asarray(r.json()["predictions"]), expected(rows), rtol=1e-9)
                    seen.add(int(r.headers["x-mlplat-version"]))
                return seen == versions

            wait_until(lambda: served_by({1}), timeout=180, message="version 1 never served")
            v2 = client.post(f"/v2/models/{BYO}/infer", json={"inputs": [
                {"name": "x0", "shape": [3], "datatype": "FP64", "data": [r[0] for r in rows]},
                {"name": "x1", "shape": [3], "datatype": "FP64", "data": [r[1] for r in rows]}]})
            assert v2.status_code == 200, v2.text

            for strategy in (["--strategy", "ab", "--weights", "v1=50,v2=50"], ["--strategy", "canary",
                             "--steps", "50,100", "--bake", "3600"]):
                assert cli(project, "deploy", BYO, "2", *strategy).returncode == 0
                wait_until(lambda: served_by({1, 2}), timeout=180, message=f"{strategy[1]} never split")
                back = cli(project, "rollback", BYO)
                assert back.returncode == 0, back.stderr
                wait_until(lambda: served_by({1}), timeout=60, message="rollback never reached the gateway")

            assert cli(project, "deploy", BYO, "2", "--strategy", "shadow", "--percent", "50").returncode == 0
            wait_until(lambda: served_by({1}) and client.get(f"/endpoints/{BYO}").json().get("shadow"), timeout=180)
            metrics = client.get("/metrics").text
            assert f'model="{BYO}"' in metrics and 'version="2"' in metrics  # per-variant series of both versions
            wait_until(lambda: len(_ours()) == 2, timeout=60, message=lambda: f"one container per version in use: {_ours()}")
    finally:
        stop(gateway)
    assert wait_until(lambda: _ours() == [], timeout=60, message=lambda: f"left behind: {_ours()}")
    captured = cli(project, "rollout", "status", BYO, "--json")
    assert captured.returncode == 0, captured.stderr


def test_an_image_that_is_not_there_is_named_with_how_to_get_it(project):
    done = cli(project, "models", "register-image", "ghost", "--image", "localhost/no-such-image:1")
    assert done.returncode == 4, done.stderr
    assert "localhost/no-such-image:1" in done.stderr and "pull" in done.stderr and "images" in done.stderr
    assert "ghost" not in cli(project, "models", "list").stdout  # nothing registered


def test_a_container_that_never_becomes_ready_is_reported_with_its_log_and_removed(project, images):
    version = register(project, f"crashes-{TOKEN}", images["crash"])
    done = cli(project, "models", "evaluate", f"crashes-{TOKEN}", str(version))
    assert done.returncode == 9, done.stdout + done.stderr
    assert "exited with code 3 before it was ready" in done.stderr
    assert "/srv/weights.bin: file not found" in done.stderr  # the last lines of its log
    assert _ours() == []


def test_an_image_answering_another_protocol_fails_the_gate_with_a_clear_message(project, images):
    version = register(project, f"mlflow-only-{TOKEN}", images["mlflow"], "--protocol", "v2")
    done = cli(project, "models", "evaluate", f"mlflow-only-{TOKEN}", str(version))
    assert done.returncode == 9, done.stdout + done.stderr
    assert f"answered POST /v2/models/mlflow-only-{TOKEN}/infer with HTTP 404" in done.stderr
    assert "--protocol mlflow" in done.stderr
    assert _ours() == []
