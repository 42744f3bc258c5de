"""Running Pulumi programs: offline under Pulumi's mocks, or for real through the Automation API.

Offline runs (``mlplat preview --offline``, ``mlplat policy check``) need neither
the Pulumi CLI nor credentials: the program runs in this process against a mock
resource monitor that records every registered resource (type, name, inputs,
parent). Each run gets a fresh event loop and a fresh root stack, so runs do not
leak into each other.

Real runs need the ``pulumi`` CLI; :func:`automation_stack` raises ``ToolMissing``
with the fix when it is absent. The backend is a local file backend under the
project unless ``MLPLAT_PULUMI_BACKEND`` (or ``PULUMI_BACKEND_URL``) says otherwise.
:class:`PulumiProvisioner` is the cloud providers' shared ``mlplat up | preview | destroy |
status`` over that engine.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplat.contracts.provisioning import Plan, PlannedChange, Provisioner, ResourceStatus
from mlplat.errors import CheckFailed, ExternalError, MlplatError, ToolMissing

FAKE_ACCOUNT = "123456789012"
BACKEND_ENV = "MLPLAT_PULUMI_BACKEND"
PASSPHRASE_ENV = "PULUMI_CONFIG_PASSPHRASE"
INSTALL_HINT = ("install the Pulumi CLI (curl -fsSL https://get.pulumi.com | sh, or brew install pulumi) and put it "
                "on PATH; `mlplat preview --stack S --offline` works without it")


@dataclass
class RecordedResource:
    """One resource as the program registered it."""

    type: str
    name: str
    urn: str
    parent: str | None
    inputs: dict[str, Any]
    custom: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    ignore_changes: list[str] = field(default_factory=list)  # properties the program leaves to others

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "urn": self.urn, "parent": self.parent,
                "props": self.inputs, "custom": self.custom}


class ProgramFailed(MlplatError):
    """The stack's program raised while it ran under mocks."""

    exit_code = ExternalError.exit_code


_PHYSICAL_KEYS = ("name", "bucket", "trackingServerName", "modelPackageGroupName", "pipelineName",
                  "featureGroupName", "dashboardName", "tagKey")


def _kebab(text: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", text).lower()


def _computed(typ: str, inputs: dict[str, Any], physical: str, region: str) -> dict[str, Any]:
    """Outputs the cloud computes rather than echoes, for the resources whose programs read them back."""
    if typ == "aws:rds/instance:Instance":
        host = f"{inputs.get('identifier') or physical}.c0mlplat0000.{region}.rds.amazonaws.com"
        out: dict[str, Any] = {"address": host, "endpoint": f"{host}:{inputs.get('port') or 5432}"}
        if inputs.get("manageMasterUserPassword"):
            out["masterUserSecrets"] = [{
                "secretArn": f"arn:aws:secretsmanager:{region}:{FAKE_ACCOUNT}:secret:rds!db-{physical}-AbC123",
                "secretStatus": "active", "kmsKeyId": f"arn:aws:kms:{region}:{FAKE_ACCOUNT}:key/aws-secretsmanager"}]
        return out
    if typ in ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer"):
        internal = "internal-" if inputs.get("internal") else ""
        return {"dnsName": f"{internal}{physical}-1234567890.{region}.elb.amazonaws.com"}
    return {}


class OfflineCloud:
    """How a cloud answers a program under mocks: the id and outputs of a new resource, the result of an
    invoke. The default answers like AWS (ARNs, account 123456789012); a provider passes its own to
    :func:`run_offline` so its program sees its cloud's ids."""

    def resource(self, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """``(id, outputs)`` of a new resource, or ``None`` for the default answer."""
        return None

    def call(self, token: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """The result of the invoke ``token``, or ``None`` for the default answer."""
        return None


def _build_mocks(region: str, records: list[RecordedResource], cloud: OfflineCloud | None = None):
    import pulumi
    from pulumi.runtime.mocks import MockMonitor

    class Recorder(pulumi.runtime.Mocks):
        """Answers like a cloud would: ids and ARNs derived from the physical names, inputs echoed back."""

        def new_resource(self, args):
            request = getattr(_current, "request", None)
            answer = cloud.resource(args.typ, args.name, dict(args.inputs)) if cloud is not None else None
            if answer is not None:
                physical, outputs = answer
            else:
                physical = next((args.inputs[k] for k in _PHYSICAL_KEYS if isinstance(args.inputs.get(k), str)),
                                args.name)
                service, _, kind = args.typ.partition(":")[2].partition("/")
                kind = kind.split(":")[-1] if kind else service
                arn = f"arn:aws:{service}:{region}:{FAKE_ACCOUNT}:{_kebab(kind)}/{physical}"
                outputs = {**args.inputs, "arn": arn, "id": physical,
                           **_computed(args.typ, args.inputs, physical, region)}
                if "name" not in outputs:
                    outputs["name"] = physical
            records.append(RecordedResource(
                type=args.typ, name=args.name, urn=getattr(request, "urn_hint", "") or "",
                parent=(request.parent or None) if request is not None else None,
                inputs=dict(args.inputs), custom=bool(args.custom), outputs=outputs,
                ignore_changes=list(request.ignore_changes) if request is not None else []))
            return physical, outputs

        def call(self, args):
            answer = cloud.call(args.token, dict(args.args)) if cloud is not None else None
            if answer is not None:
                return answer
            if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
                return {"accountId": FAKE_ACCOUNT, "arn": f"arn:aws:iam::{FAKE_ACCOUNT}:user/mlplat",
                        "userId": "AIDAMLPLAT", "id": FAKE_ACCOUNT}
            if args.token == "aws:index/getRegion:getRegion":
                return {"name": region, "region": region, "id": region}
            if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
                return {"names": [f"{region}{z}" for z in "abc"], "zoneIds": [f"{region[:2]}1-az{i}" for i in (1, 2, 3)],
                        "id": region, "region": region}
            return {}

    class RecordingMonitor(MockMonitor):
        # Registrations arrive on executor threads; the request being served is kept per thread.
        def RegisterResource(self, request):
            _current.request = _Request(request.parent, self.make_urn(request.parent, request.type, request.name),
                                        list(request.ignoreChanges))
            try:
                return super().RegisterResource(request)
            finally:
                _current.request = None

    mocks = Recorder()
    return mocks, RecordingMonitor(mocks)


_current = threading.local()


@dataclass
class _Request:
    parent: str
    urn_hint: str
    ignore_changes: list[str] = field(default_factory=list)


def run_offline(program: Callable[[], None], *, project: str, stack: str, region: str = "us-east-1",
                cloud: OfflineCloud | None = None) -> list[RecordedResource]:
    """Run ``program`` under Pulumi's mocks and return every resource it registered, in order; ``cloud``
    answers ids and invokes (default: like AWS).

    Raises :class:`ProgramFailed` naming the stack when the program raises (the
    recorded resources so far are attached as ``partial``).
    """
    import pulumi
    from pulumi.runtime import settings
    from pulumi.runtime.stack import wait_for_rpcs

    records: list[RecordedResource] = []
    mocks, monitor = _build_mocks(region, records, cloud)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)

    async def main() -> None:
        error: BaseException | None = None
        try:
            program()
        except Exception as exc:  # the program's own error: report it once outstanding work settled
            error = exc
        try:
            await wait_for_rpcs()
        except Exception as exc:
            error = error or exc
        if error is not None:
            raise error

    try:
        loop.run_until_complete(main())
    except MlplatError:
        raise
    except Exception as exc:
        raise ProgramFailed(f"the program of stack '{stack}' failed under mocks: {type(exc).__name__}: {exc}",
                            where=stack, hint="rerun with --verbose for the traceback", stack=stack) from exc
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            # Registrations run on executor threads: let them finish before the loop goes away.
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            settings.ROOT.set(None)
            settings.SETTINGS.outputs.clear()
            settings.SETTINGS.rpc_manager.clear()
            asyncio.set_event_loop(None)
    return records


# --- the real engine -----------------------------------------------------------------------


def require_pulumi_cli() -> str:
    """Path of the ``pulumi`` CLI, or ``ToolMissing`` with the fix."""
    path = shutil.which("pulumi")
    if path is None:
        raise ToolMissing("the pulumi CLI is not installed (needed by up, preview and destroy of cloud stacks)",
                          hint=INSTALL_HINT, tool="pulumi")
    return path


def backend_url(project_dir: Path) -> str:
    """Where Pulumi keeps state: ``$MLPLAT_PULUMI_BACKEND``, ``$PULUMI_BACKEND_URL``, else a file backend in the project."""
    configured = os.environ.get(BACKEND_ENV) or os.environ.get("PULUMI_BACKEND_URL")
    if configured:
        return configured
    state = project_dir / ".mlplat" / "pulumi-state"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    return f"file://{state}"


def automation_stack(spec, program: Callable[[], None]):
    """An Automation API stack for ``spec`` running ``program`` inline, created if missing.

    The stack's config comes from its stack file (Pulumi.yaml sets ``stackConfigDir``),
    so what `pulumi` itself would read is what runs.
    """
    require_pulumi_cli()
    from pulumi import automation as auto

    project_dir = Path(spec.project_dir or ".").resolve()
    env = {"PULUMI_BACKEND_URL": backend_url(project_dir)}
    if PASSPHRASE_ENV not in os.environ and not os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        env[PASSPHRASE_ENV] = ""  # file backend: secrets need a passphrase; empty unless the user sets one
    try:
        return auto.create_or_select_stack(
            stack_name=spec.name, project_name="mlplat", program=program,
            opts=auto.LocalWorkspaceOptions(work_dir=str(project_dir), env_vars=env),
        )
    except auto.CommandError as exc:
        raise ExternalError(f"pulumi could not open stack '{spec.name}': {str(exc).strip()[-500:]}",
                            hint="check the backend (MLPLAT_PULUMI_BACKEND) and credentials") from exc


# Pulumi's step operations, as a plan's change kinds
_OPS = {"create": "create", "update": "update", "delete": "delete", "same": "unchanged", "replace": "update",
        "create-replacement": "update", "delete-replaced": "update", "read": "unchanged", "refresh": "unchanged"}


class PulumiProvisioner(Provisioner):
    """A cloud stack's ``mlplat up | preview | destroy | status`` through Pulumi's Automation API.

    Each cloud provider's subclass supplies its program (``_run_program``), what ``planned_resources``
    records under Pulumi's mocks, an optional check of the stack before the CLI is needed
    (``_check_stack``) and what ``up`` reports once the program has run (``_after_up``). Mandatory
    policy violations block ``up`` before anything reaches the cloud.
    """

    def __init__(self, spec, ctx):
        self.spec = spec
        self.ctx = ctx

    # --- the program -------------------------------------------------------------------

    def _run_program(self, spec: Any) -> None:
        """Declare the stack's resources (runs inside Pulumi, inline or under mocks)."""
        raise NotImplementedError

    def program(self) -> Callable[[], None]:
        """The stack's Pulumi program (a callable Pulumi runs inline or under mocks)."""
        spec = self.spec

        def run() -> None:
            self._run_program(spec)

        return run

    # --- the real engine ----------------------------------------------------------------

    def _check_stack(self) -> None:
        """Name what the stack lacks for this cloud before the Pulumi CLI is needed (nothing by default)."""

    def _after_up(self, outputs: dict[str, Any]) -> None:
        """What ``up`` does and prints once the program has run, given the stack's outputs."""

    def _stack(self):
        self._check_stack()
        return automation_stack(self.spec, self.program())

    def _guard_policies(self) -> None:
        """Mandatory policy violations block `up`, before anything reaches the cloud."""
        from mlplat.services.policy_check import check_resources

        result = check_resources(self.spec, self.planned_resources())
        blocking = [f for f in result.findings if f.level == "mandatory"]
        if blocking:
            raise CheckFailed(
                f"{len(blocking)} mandatory policy violation(s) block `up` of stack '{self.spec.name}': "
                + "; ".join(f"[{f.policy}] {f.message}" for f in blocking[:5]),
                hint=f"run `mlplat policy check --stack {self.spec.name}` for the details and remediations")

    def _collect(self, events: list) -> Callable[[Any], None]:
        def on_event(event) -> None:
            pre = getattr(event, "resource_pre_event", None)
            if pre is not None and pre.metadata is not None:
                meta = pre.metadata
                events.append(PlannedChange(meta.type, meta.urn.rsplit("::", 1)[-1],
                                            _OPS.get(getattr(meta.op, "value", str(meta.op)), "update")))
        return on_event

    def plan(self) -> Plan:
        stack = self._stack()
        events: list[PlannedChange] = []
        try:
            stack.preview(on_event=self._collect(events))
        except Exception as exc:  # Automation API raises CommandError subclasses with the CLI's output
            raise ExternalError(f"pulumi preview of stack '{self.spec.name}' failed: {str(exc).strip()[-800:]}") from exc
        return Plan(self.spec.name, [e for e in events if e.resource != "pulumi:pulumi:Stack"])

    def apply(self, plan: Plan) -> Plan:
        self._guard_policies()
        stack = self._stack()
        events: list[PlannedChange] = []
        try:
            result = stack.up(on_event=self._collect(events),
                              on_output=lambda line: self.ctx.console.print(line, highlight=False))
        except Exception as exc:
            raise ExternalError(f"pulumi up of stack '{self.spec.name}' failed: {str(exc).strip()[-800:]}",
                                hint="fix the error above and rerun; Pulumi resumes from its state") from exc
        self._after_up({key: getattr(value, "value", value) for key, value in (result.outputs or {}).items()})
        return Plan(self.spec.name, [e for e in events if e.resource != "pulumi:pulumi:Stack"])

    def plan_destroy(self) -> Plan:
        stack = self._stack()
        state = stack.export_stack().deployment or {}
        return Plan(self.spec.name, [PlannedChange(r["type"], r["urn"].rsplit("::", 1)[-1], "delete")
                                     for r in state.get("resources", []) if r.get("type") != "pulumi:pulumi:Stack"])

    def destroy(self) -> Plan:
        plan = self.plan_destroy()
        stack = self._stack()
        try:
            stack.destroy(on_output=lambda line: self.ctx.console.print(line, highlight=False))
        except Exception as exc:
            raise ExternalError(f"pulumi destroy of stack '{self.spec.name}' failed: {str(exc).strip()[-800:]}") from exc
        return plan

    def status(self) -> list[ResourceStatus]:
        stack = self._stack()
        state = stack.export_stack().deployment or {}
        return [ResourceStatus(r["type"], r["urn"].rsplit("::", 1)[-1], True, r.get("id", ""))
                for r in state.get("resources", []) if r.get("type") != "pulumi:pulumi:Stack"]
