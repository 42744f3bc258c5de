"""docs/getting-started.md, run verbatim: every ```bash block, in order, in one shell.

The blocks run in one `bash` process (``set -euo pipefail``) in an empty folder, so a `cd` or an
`export` of one block holds in the next and a gateway started in the background keeps serving; each
block is sourced from its own file between markers, so a failure names its block and shows that
block's output. A block whose info string carries ``title="not run in tests: ..."`` is left out;
the one that provisions AWS is stood in for by moto's equivalent (the bucket, alarms and local
state that `mlplat up` creates), as in tests/e2e/test_aws_cli_moto.py. The AWS blocks reach moto's
server on 127.0.0.1 through ``AWS_ENDPOINT_URL`` with fake credentials.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.contract import moto_support as ms

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "getting-started.md"
NOT_RUN = "not run in tests"
MOTO_STANDIN = "the test provisions moto in its place"
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
MARK = "@@getting-started"

# What `mlplat up` of an AWS stack creates, on moto: the stack's bucket and rollback alarms, and the
# platform's state on this machine (tests.contract.moto_support.provision_cloud).
STANDIN = textwrap.dedent(f"""
    import os, sys
    from pathlib import Path
    sys.path.insert(0, {str(REPO)!r})
    from mlplat.stack import find_project_dir, load_stack
    from tests.contract import moto_support as ms

    ms.provision_cloud(load_stack(os.environ["MLPLAT_STACK"], find_project_dir(Path.cwd())))
    print("provisioned on moto (stand-in for `mlplat up`)")
""")


@dataclass
class Block:
    number: int  # 1-based, counting every bash block of the page
    info: str
    code: str

    @property
    def runs(self) -> bool:
        return NOT_RUN not in self.info


def bash_blocks(markdown: str) -> list[Block]:
    blocks = []
    for match in FENCE.finditer(markdown):
        info = match.group("info").strip()
        if info.split(" ", 1)[0] != "bash":
            continue
        blocks.append(Block(len(blocks) + 1, info, match.group("body")))
    return blocks


def test_bash_blocks_are_parsed_with_their_exceptions():
    blocks = bash_blocks(DOC.read_text())
    assert len(blocks) >= 15
    skipped = [b for b in blocks if not b.runs]
    # exceptions stay few and say why
    assert len(skipped) <= 2 and all(re.search(r'title="not run in tests: .+"', b.info) for b in skipped)
    assert any("mlplat init" in b.code for b in blocks if b.runs)
    # a fence of another language is never run, and an unterminated page is not silently cut short
    assert bash_blocks("```python\nprint(1)\n```\n```bash\necho hi\n```\n") == [Block(1, "bash", "echo hi\n")]


def driver(blocks: list[Block], folder: Path, standin: Path) -> str:
    """The script that sources each block in turn between markers, and names the one that failed."""
    lines = ["set -euo pipefail", "__block=0", "__started=$SECONDS",
             f"trap 'status=$?; [ $status -eq 0 ] || echo \"{MARK} failed block $__block exit $status\"' EXIT"]
    for block in blocks:
        path = folder / f"block-{block.number:02d}.sh"
        if block.runs:
            path.write_text(block.code)
        elif MOTO_STANDIN in block.info:
            path.write_text(f'"{sys.executable}" "{standin}"\n')
        else:
            continue
        lines += [f"__block={block.number}", f"echo '{MARK} block {block.number}'", f"source '{path}'",
                  f"echo \"{MARK} block {block.number} took $((SECONDS - __started)) s\"", "__started=$SECONDS"]
    lines.append(f"echo '{MARK} done'")
    return "\n".join(lines) + "\n"


def output_of(output: str, number: int) -> str:
    start = output.find(f"{MARK} block {number}\n")
    after = re.compile(rf"^{MARK} block \d+$", re.M).search(output, start + 1)
    return output[start:after.start() if after else None][-6000:]


@pytest.fixture
def moto_url(monkeypatch):
    from moto.server import ThreadedMotoServer

    from tests.e2e.test_aws_cli_moto import free_port

    ms.install_sagemaker_gaps()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    ms.use_fake_aws(monkeypatch, url)  # for the stand-in's boto3 calls, run in the shell's environment
    try:
        yield url
    finally:
        server.stop()


def test_getting_started_runs_verbatim(tmp_path, moto_url):
    blocks = bash_blocks(DOC.read_text())
    work = tmp_path / "work"
    scripts = tmp_path / "blocks"
    work.mkdir()
    scripts.mkdir()
    standin = scripts / "standin_up.py"
    standin.write_text(STANDIN)
    script = scripts / "run.sh"
    script.write_text(driver(blocks, scripts, standin))

    # a newcomer's environment: mlplat on PATH, none of the suite's MLPLAT_* settings (the test
    # process's container-engine choice stays: images are test_container_image.py's subject)
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("MLPLAT_") or k == "MLPLAT_CONTAINER_ENGINE") and k not in ms.CLEARED}
    env.update(ms.aws_env(moto_url))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["HOME"] = str(tmp_path / "home")
    process = subprocess.Popen(["bash", str(script)], cwd=work, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=900)
    finally:
        try:  # a gateway left behind by a failed block
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    failed = re.search(rf"^{MARK} failed block (\d+) exit (\d+)$", output, re.M)
    if failed or process.returncode != 0:
        number = int(failed.group(1)) if failed else 0
        code = next((b.code for b in blocks if b.number == number), "")
        pytest.fail(f"docs/getting-started.md: bash block {number} failed (exit "
                    f"{failed.group(2) if failed else process.returncode}):\n{code}\n--- its output ---\n"
                    f"{output_of(output, number) if failed else output[-6000:]}", pytrace=False)
    timings = "\n".join(re.findall(rf"^{MARK} block \d+ took \d+ s$", output, re.M))
    print(timings)  # shown with -s / -rP: where the time goes
    assert f"{MARK} done" in output
    assert "after the rollback, 50 requests were served by: v1" in output
    assert (work / "churn" / "stacks" / "Pulumi.churn-dev.yaml").is_file()
    # the AWS part registered the version in moto's SageMaker, awaiting approval (the team is critical)
    import boto3

    packages = boto3.client("sagemaker", region_name=ms.REGION).list_model_packages(
        ModelPackageGroupName="churn-classifier")["ModelPackageSummaryList"]
    assert [p["ModelApprovalStatus"] for p in packages] == ["PendingManualApproval"]
