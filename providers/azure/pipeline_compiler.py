"""``mlplat train`` and ``mlplat pipeline`` as Azure Machine Learning REST bodies: command jobs, command
components, pipeline jobs and job schedules. Pure functions: no Azure SDK, no Pulumi.

How a pipeline maps: every step is one command component (``componentSpec`` of the v2 command component
schema, registered content-addressed as ``{ws}/components/<name>/versions/<digest>``) and one node of the
pipeline job's ``jobs``. Each component runs the platform's image through its entry
(:mod:`mlplat_providers.azure.runtime.job_entry`) in the project's code asset, whose folder holds the
archive at the run's commit. Data moves by name: a step's outputs are ``uri_folder`` outputs; an input
naming ``<step>.<output>`` is bound to ``${{parent.jobs.<step>.outputs.<output>}}`` (Azure ML orders the
nodes by these bindings); an input naming a storage URI is a ``uri_folder``/``uri_file`` input;
``{version}`` in a command is the pipeline input ``model_version``. An ordering with no data
(``depends_on``, the platform steps' training step) is a binding too: the upstream step writes an empty
``mlplat_done`` output that the downstream one takes as ``after_<step>``. The ``evaluate`` step runs the
gate (``--gate``): when it does not pass the step fails, and with ``continue_on_step_failure`` off nothing
after it runs. Retries run in the entry (``--attempts``): Azure ML command nodes have no retry policy.

:func:`pipeline_problems` checks a compiled job against the pipeline job schema's rules (every binding names
a node and an output it declares, placeholders name declared inputs and outputs, inputs are bound, no
cycle) and :func:`command_problems` that each node runs an mlplat command this mlplat has.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlplat import pipelines as dsl
from mlplat.contracts.pipelines import PipelineDefinition, StepDefinition, TrainingJobSpec
from mlplat.errors import ExitCode, MlplatError
from mlplat.pipelines import commands

ENTRY = ("python", "-m", "mlplat_providers.azure.runtime.job_entry")
ARCHIVE = "source.tar.gz"
VERSION_INPUT = "model_version"
DONE_OUTPUT = "mlplat_done"
AFTER = "after_"
STORAGE_SCHEMES = ("azureml://", "abfss://", "wasbs://", "https://")
# ${{inputs.x}} / ${{outputs.x}} in a component's command; ${{parent.inputs.x}} and
# ${{parent.jobs.<node>.outputs.<output>}} in a node's bindings.
# https://learn.microsoft.com/azure/machine-learning/reference-yaml-job-pipeline#expressions-for-binding-inputs-and-outputs-between-steps-in-a-pipeline-job
PLACEHOLDER = re.compile(r"\$\{\{(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\}\}")
PARENT_INPUT = re.compile(r"^\$\{\{parent\.inputs\.([A-Za-z_][A-Za-z0-9_]*)\}\}$")
PARENT_OUTPUT = re.compile(r"^\$\{\{parent\.jobs\.([A-Za-z_][A-Za-z0-9_]*)\.outputs\.([A-Za-z_][A-Za-z0-9_]*)\}\}$")
# Component names: lowercase letters, digits and '_', starting with a letter, at most 255 characters.
# https://learn.microsoft.com/azure/machine-learning/reference-yaml-component-command
COMPONENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,254}$")
# Job names are unique in the workspace: letters, digits, '-' and '_', starting with a letter or digit.
# https://learn.microsoft.com/azure/machine-learning/reference-yaml-job-command (name)
JOB_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}$")


class PipelineError(MlplatError):
    """A job or pipeline the Azure provider cannot express as declared (bad input: nothing is submitted)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class CompileTarget:
    """Where compiled jobs run: the workspace's compute, the code and environment assets, the stack."""

    stack: str
    workspace_id: str  # /subscriptions/.../workspaces/<name>
    compute: str  # the program's cluster (plan.compute)
    code_id: str  # the code asset version holding the project's archive
    environment_id: str  # the environment version of the platform's image
    experiment: str
    environment: dict[str, str] = field(default_factory=dict)  # every job's variables (stack, control plane)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def compute_id(self) -> str:
        return f"{self.workspace_id}/computes/{self.compute}"


def io_name(step: str) -> str:
    """A step name as part of an input/output/node name (letters, digits and '_')."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", step)


def component_name(pipeline: str, step: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", f"mlplat_{pipeline}_{step}".lower())[:255]


def entry_command(argv: list[str], *, inputs: list[str], outputs: list[str], gate: bool = False,
                  attempts: int = 1) -> str:
    """The shell command of a job or component: the entry, its inputs and outputs by placeholder, then
    ``argv`` (``{version}`` as the ``model_version`` input)."""
    head = [*ENTRY, "--source", ARCHIVE]
    if gate:
        head.append("--gate")
    if attempts > 1:
        head += ["--attempts", str(attempts)]
    for name in inputs:
        head += ["--input", f"{name}=${{{{inputs.{name}}}}}"]
    for name in outputs:
        head += ["--output", f"{name}=${{{{outputs.{name}}}}}"]
    tail = [f"${{{{inputs.{VERSION_INPUT}}}}}" if a == commands.VERSION_TOKEN else a for a in argv]
    return shlex.join([*head, "--", *tail])


def data_input(name: str, uri: str, where: str) -> dict[str, Any]:
    """A storage URI as a job input (a file when its last segment has an extension, else a folder)."""
    if not uri.startswith(STORAGE_SCHEMES):
        raise PipelineError(f"{where}: input {name!r} is {uri!r}; an Azure ML job reads its data from storage "
                            "(azureml://, abfss://, wasbs:// or https:// of a blob)",
                            hint="upload it to the workspace's datastore and pass its azureml:// URI")
    last = uri.rstrip("/").rsplit("/", 1)[-1]
    kind = "uri_file" if "." in last and not uri.endswith("/") else "uri_folder"
    return {"jobInputType": kind, "uri": uri, "mode": "ReadOnlyMount"}


# --- training: one command job ------------------------------------------------------------------------


def command_job(job: TrainingJobSpec, target: CompileTarget, *, environment: Mapping[str, str],
                resources: Mapping[str, Any] | None = None, compute: bool = True) -> dict[str, Any]:
    """The ``PUT {ws}/jobs/{name}`` body of ``job``: a ``CommandJob`` on the stack's cluster (or, without
    ``compute``, serverless ``resources``) running the entry on the code asset; data channels are inputs
    whose URIs arrive as ``MLPLAT_DATA_<NAME>`` and their mounted paths as ``MLPLAT_INPUT_<NAME>``."""
    inputs = {name: data_input(name, uri, f"training job {job.name}") for name, uri in sorted(job.data.items())}
    env = {**environment, **{f"MLPLAT_DATA_{io_name(n).upper()}": uri for n, uri in job.data.items()}}
    properties: dict[str, Any] = {
        "jobType": "Command", "displayName": job.name, "experimentName": target.experiment,
        "description": f"mlplat training job of stack {target.stack}",
        "command": entry_command(list(job.command), inputs=list(inputs), outputs=[]),
        "codeId": target.code_id, "environmentId": target.environment_id,
        "environmentVariables": dict(sorted(env.items())),
        "inputs": inputs, "tags": {**job.tags, **target.tags},
        "properties": {"mlplat.stack": target.stack, "mlplat.commit": job.source.commit},
        "limits": {"jobLimitsType": "Command", "timeout": f"PT{int(job.max_runtime_seconds)}S"},
    }
    if compute:
        properties["computeId"] = target.compute_id
    if resources:
        properties["resources"] = dict(resources)
    if job.spot:
        properties["queueSettings"] = {"jobTier": "Spot"}
    return {"properties": properties}


# --- pipelines: components and the pipeline job ----------------------------------------------------------


@dataclass(frozen=True)
class CompiledPipeline:
    components: dict[str, dict[str, Any]]  # component name -> its ComponentVersion body (componentSpec)
    job: dict[str, Any]  # the PipelineJob's JobBase body, its nodes naming the components' versions by ARM id


def component_version(body: Mapping[str, Any]) -> str:
    """Components are immutable once registered: the version is the digest of the spec (before its version
    is set in it)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _step_argv(step: StepDefinition, pipeline: PipelineDefinition, stack: str) -> list[str]:
    argv = list(commands.platform_command(step, pipeline.model, stack, error=PipelineError))
    if not argv:
        raise PipelineError(f"step {step.name!r} runs no command", hint="give the step a command")
    return argv


def compile_pipeline(pipeline: PipelineDefinition, target: CompileTarget, *, run_tags: Mapping[str, str] | None = None
                     ) -> CompiledPipeline:
    """``pipeline`` (validated here) as command components and a ``PipelineJob`` body; each node carries
    ``run_tags`` (so its child job can be found) and its step's name as ``mlplat-step``."""
    try:
        pipeline = dsl.validate(pipeline)
    except MlplatError as exc:
        raise PipelineError(exc.message, where=exc.where, hint=exc.hint) from None
    steps = {s.name: s for s in pipeline.steps}
    nodes = {s.name: io_name(s.name) for s in pipeline.steps}
    if len(set(nodes.values())) != len(nodes):
        raise PipelineError(f"pipeline {pipeline.name!r} has steps whose names differ only in characters an Azure "
                            "ML node name does not allow (letters, digits and '_')", hint="rename the steps")
    order = dsl.order(pipeline)
    data_edges = {name: {ref[0] for ref in (dsl.parse_reference(v) for v in s.inputs.values()) if ref}
                  for name, s in steps.items()}
    control = {name: [u for u in dsl.upstream(s) if u in steps and u not in data_edges[name]]
               for name, s in steps.items()}
    needs_done = {u for ups in control.values() for u in ups}
    components: dict[str, dict[str, Any]] = {}
    jobs: dict[str, Any] = {}
    uses_version = False
    for name in order:
        step = steps[name]
        argv = _step_argv(step, pipeline, target.stack)
        comp_inputs: dict[str, Any] = {}
        node_inputs: dict[str, Any] = {}
        for key, value in sorted(step.inputs.items()):
            ref = dsl.parse_reference(value)
            if ref:
                comp_inputs[key] = {"type": "uri_folder"}
                node_inputs[key] = {"job_input_type": "literal",
                                    "value": f"${{{{parent.jobs.{nodes[ref[0]]}.outputs.{ref[1]}}}}}"}
            else:
                found = data_input(key, value, f"pipeline step {name!r}")
                comp_inputs[key] = {"type": found["jobInputType"]}
                node_inputs[key] = {"job_input_type": found["jobInputType"], "uri": value, "mode": "ro_mount"}
        for up in control[name]:
            comp_inputs[AFTER + nodes[up]] = {"type": "uri_folder"}
            node_inputs[AFTER + nodes[up]] = {"job_input_type": "literal",
                                              "value": f"${{{{parent.jobs.{nodes[up]}.outputs.{DONE_OUTPUT}}}}}"}
        if commands.VERSION_TOKEN in argv:
            uses_version = True
            comp_inputs[VERSION_INPUT] = {"type": "string"}
            node_inputs[VERSION_INPUT] = {"job_input_type": "literal", "value": f"${{{{parent.inputs.{VERSION_INPUT}}}}}"}
        outputs = list(step.outputs) + ([DONE_OUTPUT] if name in needs_done else [])
        file_inputs = [k for k in comp_inputs if k != VERSION_INPUT]
        spec = {"$schema": "https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json",
                "name": component_name(pipeline.name, name), "type": "command",
                "display_name": f"{pipeline.name}: {name}",
                "command": entry_command(argv, inputs=file_inputs, outputs=outputs, gate=step.kind == "evaluate",
                                         attempts=1 + int(step.retries)),
                "code": target.code_id, "environment": target.environment_id,
                "inputs": comp_inputs, "outputs": {o: {"type": "uri_folder"} for o in outputs},
                "is_deterministic": bool(step.cache) and step.kind == "command"}
        cname = str(spec["name"])
        spec["version"] = component_version(spec)
        components[cname] = {"properties": {"componentSpec": spec, "description": f"mlplat step {name} of "
                                            f"pipeline {pipeline.name}", "tags": dict(target.tags)}}
        node: dict[str, Any] = {
            "type": "command", "name": nodes[name], "_source": "REMOTE.WORKSPACE.COMPONENT",
            "componentId": f"{target.workspace_id}/components/{cname}/versions/{spec['version']}",
            "inputs": node_inputs, "outputs": {},
            "environment_variables": dict(sorted({**target.environment, **(
                pipeline.environment if step.kind == "command" else {})}.items())),
            "tags": {**dict(run_tags or {}), "mlplat-step": name}}
        if step.instance_type:
            node["resources"] = {"instance_type": step.instance_type}
        jobs[nodes[name]] = node
    inputs: dict[str, Any] = {}
    if uses_version:
        inputs[VERSION_INPUT] = {"jobInputType": "literal", "value": "latest"}
    properties: dict[str, Any] = {
        "jobType": "Pipeline", "displayName": pipeline.name, "experimentName": target.experiment,
        "description": f"mlplat pipeline {pipeline.name} of stack {target.stack}",
        "computeId": target.compute_id, "inputs": inputs, "jobs": jobs,
        "settings": {"continue_on_step_failure": False, "force_rerun": False, "default_compute": target.compute_id,
                     "_source": "REMOTE.WORKSPACE.COMPONENT"},
        "tags": {**target.tags, **dict(run_tags or {})},
        "properties": {"mlplat.stack": target.stack, "mlplat.pipeline": pipeline.name,
                       **({"mlplat.model": pipeline.model} if pipeline.model else {}),
                       **({"mlplat.commit": pipeline.source.commit} if pipeline.source else {})},
    }
    return CompiledPipeline(components, {"properties": properties})


# --- the pipeline job schema's rules ---------------------------------------------------------------------


def pipeline_problems(job: Mapping[str, Any], components: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Why Azure ML would refuse (or misrun) this pipeline job: node names and component references,
    bindings that name a declared pipeline input or a node's declared output, every component input bound,
    no binding the component does not declare, placeholders naming declared inputs and outputs, no cycle.
    ``components``: component name → ComponentVersion body."""
    problems: list[str] = []
    props = job.get("properties") or {}
    if props.get("jobType") != "Pipeline":
        problems.append(f"jobType is {props.get('jobType')!r}, not 'Pipeline'")
    jobs = props.get("jobs") or {}
    if not jobs:
        problems.append("jobs is empty")
    declared_inputs = set(props.get("inputs") or {})
    specs = {name: (body.get("properties") or {}).get("componentSpec") or {} for name, body in components.items()}
    graph: dict[str, set[str]] = {}
    read_inputs: set[str] = set()
    for node_name, node in jobs.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", node_name):
            problems.append(f"node name {node_name!r} must be letters, digits and '_', not starting with a digit")
        ref = re.search(r"/components/([^/]+)/versions/([^/]+)$", str(node.get("componentId") or ""))
        spec = specs.get(ref.group(1)) if ref else None
        if spec is None or (ref and str(spec.get("version")) != ref.group(2)):
            problems.append(f"node {node_name}: componentId {node.get('componentId')!r} is not a registered component")
            continue
        if not COMPONENT_NAME.match(str(spec.get("name") or "")):
            problems.append(f"component {spec.get('name')!r}: name must match {COMPONENT_NAME.pattern}")
        wanted, given = set(spec.get("inputs") or {}), set(node.get("inputs") or {})
        for name in sorted(wanted - given):
            problems.append(f"node {node_name}: input {name!r} of {spec['name']} is not bound")
        for name in sorted(given - wanted):
            problems.append(f"node {node_name}: binds input {name!r}, which {spec['name']} does not declare")
        declared = {("inputs", n) for n in spec.get("inputs") or {}} | {("outputs", n) for n in spec.get("outputs") or {}}
        for found in PLACEHOLDER.finditer(str(spec.get("command") or "")):
            if (found.group(1), found.group(2)) not in declared:
                problems.append(f"component {spec['name']}: {found.group(0)} names no declared "
                                f"{found.group(1)[:-1]}")
        ups: set[str] = set()
        for name, binding in (node.get("inputs") or {}).items():
            value = str(binding.get("value") or "") if binding.get("job_input_type") == "literal" else ""
            parent = PARENT_INPUT.match(value)
            output = PARENT_OUTPUT.match(value)
            if parent:
                read_inputs.add(parent.group(1))
                if parent.group(1) not in declared_inputs:
                    problems.append(f"node {node_name}: input {name} reads pipeline input {parent.group(1)!r}, "
                                    "which is not declared")
            elif output:
                producer, out = output.groups()
                ups.add(producer)
                pnode = jobs.get(producer)
                pref = re.search(r"/components/([^/]+)/versions/", str((pnode or {}).get("componentId") or ""))
                pspec = specs.get(pref.group(1)) if pref else None
                if pnode is None:
                    problems.append(f"node {node_name}: input {name} reads node {producer!r}, which does not exist")
                elif pspec is not None and out not in (pspec.get("outputs") or {}):
                    problems.append(f"node {node_name}: input {name} reads output {out!r}, which node {producer} "
                                    "does not declare")
            elif binding.get("job_input_type") == "literal":
                problems.append(f"node {node_name}: input {name} binds {value!r}, not a pipeline input or a "
                                "node's output")
            elif not binding.get("uri"):
                problems.append(f"node {node_name}: input {name} has no uri")
        graph[node_name] = ups & set(jobs)
    unread = sorted(declared_inputs - read_inputs)
    if unread:
        problems.append(f"pipeline inputs no node reads: {', '.join(unread)}")
    if commands.has_cycle(graph):
        problems.append("the nodes' bindings form a cycle")
    return problems


def node_commands(job: Mapping[str, Any], components: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Node name → the command its component runs after the entry's ``--`` (placeholders kept)."""
    specs = {name: (body.get("properties") or {}).get("componentSpec") or {} for name, body in components.items()}
    out = {}
    for node_name, node in ((job.get("properties") or {}).get("jobs") or {}).items():
        ref = re.search(r"/components/([^/]+)/versions/", str(node.get("componentId") or ""))
        spec = (specs.get(ref.group(1)) if ref else None) or {}
        argv = shlex.split(str(spec.get("command") or ""))
        if argv[:len(ENTRY)] == list(ENTRY):
            argv = argv[argv.index("--") + 1:] if "--" in argv else []
        out[node_name] = argv
    return out


def command_problems(job: Mapping[str, Any], components: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every node that runs no command, or an mlplat command this mlplat does not have."""
    return commands.command_problems(node_commands(job, components), label="node",
                                     is_placeholder=lambda a: PLACEHOLDER.fullmatch(a) is not None)


# --- schedules -----------------------------------------------------------------------------------------


def schedule_body(job: Mapping[str, Any], cron: str, *, pipeline: str, tags: Mapping[str, str],
                  enabled: bool = True) -> dict[str, Any]:
    """The ``PUT {ws}/schedules/{name}`` body: a ``CreateJob`` action of the pipeline job on a cron trigger,
    UTC."""
    return {"properties": {
        "displayName": f"mlplat {pipeline}", "description": f"mlplat pipeline {pipeline}, on {cron} (UTC)",
        "isEnabled": enabled, "tags": dict(tags), "properties": {"mlplat.pipeline": pipeline},
        "action": {"actionType": "CreateJob", "jobDefinition": dict(job.get("properties") or {})},
        "trigger": {"triggerType": "Cron", "expression": cron, "timeZone": "UTC"}}}


def schedule_name(prefix: str, pipeline: str) -> str:
    """A schedule's name: ``mlplat-<stack prefix>-<pipeline>``, letters, digits, '-' and '_'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"mlplat-{prefix}-{pipeline}")[:255].rstrip("-")
