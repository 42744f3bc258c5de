"""A provider-neutral ``PipelineDefinition`` as a KFP v2 pipeline IR (``PipelineSpec``, schema 2.1.0), the
document Vertex AI Pipelines runs (``PipelineJob.pipelineSpec``).

The IR is compiled here rather than by ``kfp``: no ``kfp`` release installs beside the Google client
libraries and pulumi-policy the platform pins (``kfp`` 2.14+ needs protobuf 6.31+, ``kfp`` 2.13 and older
protobuf below 5, pulumi-policy 1.21 protobuf 5.29). :func:`spec_problems` checks a compiled document
against the IR's documented shape (``pipeline_spec.proto`` of kubeflow/pipelines, ``api/v2alpha1``), and
:func:`command_problems` that each step runs an mlplat command this mlplat has. Pure functions: no Google
library, no Pulumi.

How steps map: every step is one task of the root DAG, one component and one container executor running
the platform's image through its entry (:mod:`mlplat_providers.gcp.runtime.job_entry`: it unpacks the
project from the ``source_uri`` parameter's archive and runs the command after ``--``). A step's outputs
are output artifacts (``system.Artifact``); an input naming ``<step>.<output>`` is an input artifact
wired with ``taskOutputArtifact`` (and the producer is a dependent task), an input naming a URI is a
constant parameter; ``{version}`` in a command is the ``model_version`` pipeline parameter. Platform steps
(``evaluate``, ``register``, ``promote``) run ``mlplat models evaluate|show|promote``; the entry fails an
``evaluate`` step whose gate did not pass (``--gate``), so nothing downstream of a failed gate runs.
Parameters are declared only when a task reads them.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlplat.contracts.pipelines import PipelineDefinition, StepDefinition
from mlplat.errors import ExitCode, MlplatError
from mlplat.pipelines import commands

SCHEMA_VERSION = "2.1.0"
ENTRY = ("python", "-m", "mlplat_providers.gcp.runtime.job_entry")
SOURCE_PARAMETER, VERSION_PARAMETER = "source_uri", "model_version"
VERSION_TOKEN = commands.VERSION_TOKEN
ARTIFACT_TYPE = {"schemaTitle": "system.Artifact", "schemaVersion": "0.0.1"}
PARAMETER_TYPES = frozenset({"STRING", "NUMBER_INTEGER", "NUMBER_DOUBLE", "BOOLEAN", "LIST", "STRUCT"})
# PipelineJob ids and the pipeline's name: https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.pipelineJobs/create
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
PLACEHOLDER = re.compile(r"\{\{\$\.(inputs|outputs)\.(parameters|artifacts)\['([^']+)'\](?:\.(path|uri))?\}\}")
DEFAULT_MACHINE = "n1-standard-4"
PLATFORM_MACHINE = "e2-standard-2"  # platform steps call the control plane: no compute of their own


class PipelineError(MlplatError):
    """A pipeline the GCP provider cannot express as declared (bad input: nothing is submitted)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class CompileTarget:
    image: str  # the platform's runtime image in the stack's Artifact Registry
    stack: str
    machine_type: str = DEFAULT_MACHINE


def kfp_name(text: str) -> str:
    """A task/component name KFP and Vertex accept: lowercase letters, digits and '-'."""
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return (clean or "step")[:63].rstrip("-")


def platform_command(step: StepDefinition, model: str | None, stack: str) -> tuple[str, ...]:
    """The mlplat command a platform step (evaluate, register, promote) runs; a command step's own command."""
    return commands.platform_command(step, model, stack, error=PipelineError)


def _reference(value: str, steps: Mapping[str, StepDefinition]) -> tuple[str, str] | None:
    head, sep, tail = value.partition(".")
    if sep and head in steps and "://" not in value:
        return head, tail
    return None


def _order(pipeline: PipelineDefinition) -> list[StepDefinition]:
    steps = {s.name: s for s in pipeline.steps}
    seen: dict[str, int] = {}
    out: list[StepDefinition] = []

    def visit(step: StepDefinition, path: tuple[str, ...]) -> None:
        if seen.get(step.name) == 2:
            return
        if seen.get(step.name) == 1:
            raise PipelineError(f"pipeline {pipeline.name!r} has a cycle: {' -> '.join((*path, step.name))}")
        seen[step.name] = 1
        for up in sorted(_upstream(step, steps)):
            visit(steps[up], (*path, step.name))
        seen[step.name] = 2
        out.append(step)

    for step in pipeline.steps:
        visit(step, ())
    return out


def _upstream(step: StepDefinition, steps: Mapping[str, StepDefinition]) -> set[str]:
    ups = set(step.depends_on)
    for value in step.inputs.values():
        ref = _reference(value, steps)
        if ref:
            ups.add(ref[0])
    unknown = sorted(u for u in ups if u not in steps)
    if unknown:
        raise PipelineError(f"step {step.name!r} depends on {unknown[0]!r}, which is not a step of the pipeline")
    return ups


def compile_spec(pipeline: PipelineDefinition, target: CompileTarget) -> dict[str, Any]:
    """The ``PipelineSpec`` of ``pipeline`` (a JSON-ready dict)."""
    steps = {s.name: s for s in pipeline.steps}
    names = {s.name: kfp_name(s.name) for s in pipeline.steps}
    if len(set(names.values())) != len(names):
        raise PipelineError(f"pipeline {pipeline.name!r} has steps whose names differ only in characters KFP "
                            "does not allow (lowercase letters, digits and '-')", hint="rename the steps")
    tasks: dict[str, Any] = {}
    components: dict[str, Any] = {}
    executors: dict[str, Any] = {}
    root_params: set[str] = {SOURCE_PARAMETER}
    for step in _order(pipeline):
        name = names[step.name]
        argv = list(platform_command(step, pipeline.model, target.stack))
        if not argv:
            raise PipelineError(f"step {step.name!r} runs no command", hint="give the step a command")
        inputs_params: dict[str, Any] = {SOURCE_PARAMETER: {"parameterType": "STRING"}}
        task_params: dict[str, Any] = {SOURCE_PARAMETER: {"componentInputParameter": SOURCE_PARAMETER}}
        in_artifacts: dict[str, Any] = {}
        task_artifacts: dict[str, Any] = {}
        args = ["--source", f"{{{{$.inputs.parameters['{SOURCE_PARAMETER}']}}}}"]
        if step.kind == "evaluate":
            args.append("--gate")
        if VERSION_TOKEN in argv:
            root_params.add(VERSION_PARAMETER)
            inputs_params[VERSION_PARAMETER] = {"parameterType": "STRING"}
            task_params[VERSION_PARAMETER] = {"componentInputParameter": VERSION_PARAMETER}
        for key, value in sorted(step.inputs.items()):
            ref = _reference(value, steps)
            if ref:
                producer, output = ref
                if output not in steps[producer].outputs:
                    raise PipelineError(f"step {step.name!r} reads {value!r}, but {producer!r} declares no output "
                                        f"{output!r}", hint=f"outputs of {producer}: {', '.join(steps[producer].outputs)}")
                in_artifacts[key] = {"artifactType": ARTIFACT_TYPE}
                task_artifacts[key] = {"taskOutputArtifact": {"producerTask": names[producer],
                                                              "outputArtifactKey": output}}
                args += ["--input", f"{key}={{{{$.inputs.artifacts['{key}'].path}}}}"]
            else:
                param = f"input_{key}"
                inputs_params[param] = {"parameterType": "STRING"}
                task_params[param] = {"runtimeValue": {"constant": value}}
                args += ["--input", f"{key}={{{{$.inputs.parameters['{param}']}}}}"]
        outputs = {o: {"artifactType": ARTIFACT_TYPE} for o in step.outputs}
        for output in step.outputs:
            args += ["--output", f"{output}={{{{$.outputs.artifacts['{output}'].path}}}}"]
        args += ["--", *[f"{{{{$.inputs.parameters['{VERSION_PARAMETER}']}}}}" if a == VERSION_TOKEN else a
                         for a in argv]]
        component: dict[str, Any] = {"executorLabel": f"exec-{name}",
                                     "inputDefinitions": {"parameters": inputs_params}}
        if in_artifacts:
            component["inputDefinitions"]["artifacts"] = in_artifacts
        if outputs:
            component["outputDefinitions"] = {"artifacts": outputs}
        components[f"comp-{name}"] = component
        executors[f"exec-{name}"] = {"container": {
            "image": target.image, "command": list(ENTRY), "args": args,
            "env": [{"name": k, "value": v} for k, v in sorted(pipeline.environment.items())]}}
        task: dict[str, Any] = {"taskInfo": {"name": name}, "componentRef": {"name": f"comp-{name}"},
                                "inputs": {"parameters": task_params},
                                "cachingOptions": {"enableCache": bool(step.cache)}}
        if task_artifacts:
            task["inputs"]["artifacts"] = task_artifacts
        ups = sorted(names[u] for u in _upstream(step, steps))
        if ups:
            task["dependentTasks"] = ups
        if step.retries > 0:
            task["retryPolicy"] = {"maxRetryCount": step.retries, "backoffDuration": "30s", "backoffFactor": 2.0,
                                   "backoffMaxDuration": "3600s"}
        tasks[name] = task
    root_inputs: dict[str, dict[str, Any]] = {p: {"parameterType": "STRING"} for p in sorted(root_params)}
    if VERSION_PARAMETER in root_inputs:
        root_inputs[VERSION_PARAMETER].update({"defaultValue": "latest", "isOptional": True})
    return {"pipelineInfo": {"name": kfp_name(pipeline.name)}, "schemaVersion": SCHEMA_VERSION,
            "sdkVersion": "mlplat", "components": components, "deploymentSpec": {"executors": executors},
            "root": {"inputDefinitions": {"parameters": root_inputs}, "dag": {"tasks": tasks}}}


def machine_types(pipeline: PipelineDefinition, target: CompileTarget) -> dict[str, str]:
    """Task name → the machine type its step asks for (the IR's container spec has only CPU/memory limits)."""
    return {kfp_name(s.name): s.instance_type or (PLATFORM_MACHINE if s.kind != "command" else target.machine_type)
            for s in pipeline.steps}


# --- the IR's documented shape --------------------------------------------------------------------------


def _params_read(spec: Mapping[str, Any]) -> set[str]:
    tasks = ((spec.get("root") or {}).get("dag") or {}).get("tasks") or {}
    read = set()
    for task in tasks.values():
        for binding in ((task.get("inputs") or {}).get("parameters") or {}).values():
            if "componentInputParameter" in binding:
                read.add(binding["componentInputParameter"])
    return read


def spec_problems(spec: Mapping[str, Any]) -> list[str]:
    """Why Vertex AI Pipelines would refuse (or misrun) this ``PipelineSpec``: the IR's shape, names that
    resolve, inputs bound, an acyclic DAG, placeholders naming declared inputs and outputs, every pipeline
    parameter read by some task."""
    problems: list[str] = []
    if spec.get("schemaVersion") != SCHEMA_VERSION:
        problems.append(f"schemaVersion is {spec.get('schemaVersion')!r}, not {SCHEMA_VERSION}")
    name = str((spec.get("pipelineInfo") or {}).get("name") or "")
    if not NAME.match(name):
        problems.append(f"pipelineInfo.name {name!r} must match {NAME.pattern}")
    components = spec.get("components") or {}
    executors = (spec.get("deploymentSpec") or {}).get("executors") or {}
    root = spec.get("root") or {}
    tasks = (root.get("dag") or {}).get("tasks") or {}
    if not tasks:
        problems.append("root.dag.tasks is empty")
    root_params = (root.get("inputDefinitions") or {}).get("parameters") or {}
    for pname, pdef in root_params.items():
        if pdef.get("parameterType") not in PARAMETER_TYPES:
            problems.append(f"root parameter {pname}: parameterType {pdef.get('parameterType')!r} is not one of "
                            f"{sorted(PARAMETER_TYPES)}")
    unread = sorted(set(root_params) - _params_read(spec))
    if unread:
        problems.append(f"pipeline parameters no task reads: {', '.join(unread)}")
    for cname, component in components.items():
        label = component.get("executorLabel")
        if label not in executors:
            problems.append(f"component {cname}: executorLabel {label!r} is not in deploymentSpec.executors")
            continue
        container = executors[label].get("container") or {}
        if not container.get("image"):
            problems.append(f"executor {label}: container.image is empty")
        declared = {("inputs", "parameters", n) for n in (component.get("inputDefinitions") or {}).get("parameters") or {}}
        declared |= {("inputs", "artifacts", n) for n in (component.get("inputDefinitions") or {}).get("artifacts") or {}}
        declared |= {("outputs", "artifacts", n) for n in (component.get("outputDefinitions") or {}).get("artifacts") or {}}
        declared |= {("outputs", "parameters", n)
                     for n in (component.get("outputDefinitions") or {}).get("parameters") or {}}
        for arg in [*(container.get("command") or []), *(container.get("args") or [])]:
            for m in PLACEHOLDER.finditer(str(arg)):
                if (m.group(1), m.group(2), m.group(3)) not in declared:
                    problems.append(f"executor {label}: placeholder {m.group(0)} names no declared "
                                    f"{m.group(1)[:-1]} {m.group(2)[:-1]}")
        for kind in ("parameters", "artifacts"):
            for pname, pdef in ((component.get("inputDefinitions") or {}).get(kind) or {}).items():
                if kind == "parameters" and pdef.get("parameterType") not in PARAMETER_TYPES:
                    problems.append(f"component {cname}: input {pname} has no valid parameterType")
                if kind == "artifacts" and not (pdef.get("artifactType") or {}).get("schemaTitle"):
                    problems.append(f"component {cname}: input artifact {pname} has no artifactType.schemaTitle")
    graph: dict[str, set[str]] = {}
    for tname, task in tasks.items():
        ref = (task.get("componentRef") or {}).get("name")
        if ref not in components:
            problems.append(f"task {tname}: componentRef {ref!r} is not a component")
            continue
        if not (task.get("taskInfo") or {}).get("name"):
            problems.append(f"task {tname}: taskInfo.name is empty")
        component = components[ref]
        deps = set(task.get("dependentTasks") or [])
        for d in sorted(deps - set(tasks)):
            problems.append(f"task {tname}: dependent task {d!r} does not exist")
        graph[tname] = deps & set(tasks)
        bound = task.get("inputs") or {}
        for kind in ("parameters", "artifacts"):
            wanted = {n for n, d in ((component.get("inputDefinitions") or {}).get(kind) or {}).items()
                      if not d.get("isOptional")}
            given = set(bound.get(kind) or {})
            for n in sorted(wanted - given):
                problems.append(f"task {tname}: input {kind[:-1]} {n!r} of {ref} is not bound")
            declared = set((component.get("inputDefinitions") or {}).get(kind) or {})
            for n in sorted(given - declared):
                problems.append(f"task {tname}: binds {kind[:-1]} {n!r}, which {ref} does not declare")
        for pname, binding in (bound.get("parameters") or {}).items():
            source = binding.get("componentInputParameter")
            if source is not None and source not in root_params:
                problems.append(f"task {tname}: parameter {pname} reads pipeline parameter {source!r}, "
                                "which is not declared")
            if not ({"componentInputParameter", "runtimeValue", "taskOutputParameter"} & set(binding)):
                problems.append(f"task {tname}: parameter {pname} has no source")
        for aname, binding in (bound.get("artifacts") or {}).items():
            out = binding.get("taskOutputArtifact") or {}
            producer = out.get("producerTask")
            if producer not in tasks:
                problems.append(f"task {tname}: artifact {aname} comes from unknown task {producer!r}")
                continue
            pcomp = components.get((tasks[producer].get("componentRef") or {}).get("name")) or {}
            if out.get("outputArtifactKey") not in ((pcomp.get("outputDefinitions") or {}).get("artifacts") or {}):
                problems.append(f"task {tname}: artifact {aname} reads output {out.get('outputArtifactKey')!r}, "
                                f"which task {producer} does not declare")
            if producer not in deps:
                problems.append(f"task {tname}: reads {producer}'s output but does not list it in dependentTasks")
    if commands.has_cycle(graph):
        problems.append("root.dag has a cycle")
    return problems


# --- what each step runs must exist ---------------------------------------------------------------------


def step_commands(spec: Mapping[str, Any]) -> dict[str, list[str]]:
    """Task name → the command its container runs after the entry's ``--`` (placeholders kept)."""
    components = spec.get("components") or {}
    executors = (spec.get("deploymentSpec") or {}).get("executors") or {}
    out = {}
    for tname, task in (((spec.get("root") or {}).get("dag") or {}).get("tasks") or {}).items():
        label = (components.get((task.get("componentRef") or {}).get("name")) or {}).get("executorLabel")
        container = (executors.get(label) or {}).get("container") or {}
        args = list(container.get("args") or [])
        if list(container.get("command") or []) == list(ENTRY):
            out[tname] = args[args.index("--") + 1:] if "--" in args else []
        else:
            out[tname] = [*(container.get("command") or []), *args]
    return out


def mlplat_command_problem(argv: list[str]) -> str | None:
    """Why ``mlplat <argv[1:]>`` is not a command of this mlplat, or ``None``: click parses, nothing runs.
    A ``model_version`` placeholder stands for a version number."""
    return commands.mlplat_command_problem(argv, _is_placeholder)


def _is_placeholder(arg: str) -> bool:
    return PLACEHOLDER.fullmatch(arg) is not None


def command_problems(spec: Mapping[str, Any]) -> list[str]:
    """Every task that runs no command, or an mlplat command this mlplat does not have."""
    return commands.command_problems(step_commands(spec), label="task", is_placeholder=_is_placeholder)


def parameter_values(spec: Mapping[str, Any], source_uri: str, version: str | None) -> dict[str, Any]:
    """``runtimeConfig.parameterValues``: exactly the pipeline parameters the spec declares."""
    declared = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    values: dict[str, Any] = {SOURCE_PARAMETER: source_uri}
    if VERSION_PARAMETER in declared:
        values[VERSION_PARAMETER] = version or "latest"
    return {k: v for k, v in values.items() if k in declared}


def all_tasks(spec: Mapping[str, Any]) -> Iterable[str]:
    return list(((spec.get("root") or {}).get("dag") or {}).get("tasks") or {})
