"""Pipelines declared in Python: steps, the data passed between them, and the platform's own steps.

A pipeline file builds one :class:`Pipeline`::

    from mlplat.pipelines import Pipeline

    pipeline = Pipeline("credit-risk", model="credit-risk", schedule="0 3 * * 1")
    prepare = pipeline.step("prepare", "python steps/prepare.py", inputs={"raw": "data/raw.csv"},
                            outputs=["dataset"])
    train = pipeline.step("train", "python steps/train.py", inputs={"dataset": prepare.output("dataset")},
                          retries=1)
    evaluate = pipeline.evaluate(train)              # the platform's gate on the version `train` registered
    register = pipeline.register(train, after=[evaluate])
    pipeline.promote(register, to="staging")

A *command* step runs its command as a process: each input is a path in ``$MLPLAT_INPUT_<NAME>``
(another step's output, or a data file of the project), each output a folder in
``$MLPLAT_OUTPUT_<NAME>`` that the step fills. A step's result is cached under its code, its
inputs' contents and its parameters; ``retries`` reruns a failing step.

The *platform* steps run mlplat's own operations, on the version the training step registered
(it trains inside ``mlplat.start_run`` and calls ``run.log_model(model, name=...)``, which is
how a version enters the registry):

* ``evaluate`` runs the evaluation gate of ``mlplat models promote --to staging`` (the stack's
  held-out set and thresholds, and "not worse than the champion"); a failing gate fails the step;
* ``register`` takes that version as the pipeline's: checked against its sealed manifest and
  against the run of the training step (outputs ``version``);
* ``promote`` is ``mlplat models promote MODEL VERSION --to staging`` (production keeps its
  approvals and is never requested by a pipeline).

Their parameters (``StepDefinition.params``): ``model``; ``training_step`` (evaluate, register);
``version_step`` and ``target`` (promote).

:meth:`Pipeline.definition` returns the validated, provider-neutral
:class:`mlplat.contracts.pipelines.PipelineDefinition`; :func:`load` reads a pipeline file.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from mlplat.contracts.pipelines import PipelineDefinition, SourceBundle, StepDefinition
from mlplat.errors import ExitCode, MlplatError, NotFound
from mlplat.pipelines import cron as cron_mod

STEP_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
IO_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
REFERENCE = re.compile(r"^(?P<step>[a-z][a-z0-9_-]{0,62})\.(?P<output>[A-Za-z][A-Za-z0-9_]{0,62})$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PLATFORM_KINDS = ("evaluate", "register", "promote")
PLATFORM_OUTPUTS = {"evaluate": ("report",), "register": ("version",), "promote": ("promotion",)}
MAX_RETRIES = 10


class PipelineError(MlplatError):
    """A pipeline that cannot run as declared: one message per mistake, naming the step."""

    exit_code = ExitCode.CONFIG  # the pipeline file is declarative configuration, like a stack file


def env_name(name: str) -> str:
    """The environment-variable suffix of an input or output name (``dataset`` → ``DATASET``)."""
    return name.upper()


def parse_reference(value: str) -> tuple[str, str] | None:
    """``(step, output)`` when ``value`` is a step reference (``"prepare.dataset"``), else ``None``
    (a data URI or path: those hold a ``/`` or a scheme, e.g. ``data/raw.csv``, ``./raw.csv``)."""
    match = REFERENCE.match(value)
    return (match["step"], match["output"]) if match else None


class Step:
    """A declared step; :meth:`output` names one of its outputs as another step's input."""

    def __init__(self, pipeline: Pipeline, definition: StepDefinition):
        self.pipeline = pipeline
        self.definition = definition

    @property
    def name(self) -> str:
        return self.definition.name

    def output(self, name: str) -> str:
        if name not in self.definition.outputs:
            raise PipelineError(f"step '{self.name}' has no output '{name}' (it declares: "
                                f"{', '.join(self.definition.outputs) or 'none'})", where=f"pipeline {self.pipeline.name}",
                                hint=f"add '{name}' to the outputs of step '{self.name}'")
        return f"{self.name}.{name}"

    def __repr__(self) -> str:
        return f"Step({self.name!r}, kind={self.definition.kind!r})"


def _names(steps: Iterable[Step | str] | Step | str | None) -> tuple[str, ...]:
    if steps is None:
        return ()
    if isinstance(steps, (Step, str)):
        steps = [steps]
    return tuple(s.name if isinstance(s, Step) else str(s) for s in steps)


class Pipeline:
    """A pipeline being declared. Steps run in dependency order (declaration order among equals)."""

    def __init__(self, name: str, *, model: str | None = None, schedule: str | None = None):
        self.name = name
        self.model = model
        self.schedule = schedule
        self.steps: list[Step] = []

    def _add(self, definition: StepDefinition) -> Step:
        step = Step(self, definition)
        self.steps.append(step)
        return step

    def step(self, name: str, command: str | Sequence[str], *, inputs: Mapping[str, str] | None = None,
             outputs: Sequence[str] = (), after: Iterable[Step | str] | Step | str | None = None, retries: int = 0,
             cache: bool = True, instance_type: str | None = None, params: Mapping[str, Any] | None = None) -> Step:
        """A command step: ``command`` (a string is split like a shell would) runs as a process."""
        argv = tuple(shlex.split(command)) if isinstance(command, str) else tuple(str(a) for a in command)
        return self._add(StepDefinition(
            name=name, kind="command", command=argv, inputs=dict(inputs or {}), outputs=tuple(outputs),
            depends_on=_names(after), retries=retries, cache=cache, instance_type=instance_type,
            params={k: str(v) for k, v in (params or {}).items()}))

    def _platform(self, kind: str, name: str, params: dict[str, str], after: Iterable[Step | str] | Step | str | None,
                  retries: int, model: str | None) -> Step:
        model = model or self.model
        return self._add(StepDefinition(
            name=name, kind=kind, depends_on=tuple(dict.fromkeys((*_names(after), *params.values()))),  # type: ignore[arg-type]
            outputs=PLATFORM_OUTPUTS[kind], retries=retries, cache=False,
            params={**({"model": model} if model else {}), **params}))

    def evaluate(self, trained_by: Step | str, *, name: str = "evaluate", model: str | None = None,
                 after: Iterable[Step | str] | Step | str | None = None, retries: int = 0) -> Step:
        """The platform's evaluation gate on the version ``trained_by`` registered."""
        return self._platform("evaluate", name, {"training_step": _names(trained_by)[0]}, after, retries, model)

    def register(self, trained_by: Step | str, *, name: str = "register", model: str | None = None,
                 after: Iterable[Step | str] | Step | str | None = None, retries: int = 0) -> Step:
        """The version ``trained_by`` registered, checked against its seal, as the pipeline's version."""
        return self._platform("register", name, {"training_step": _names(trained_by)[0]}, after, retries, model)

    def promote(self, version_from: Step | str, *, to: str = "staging", name: str = "promote",
                model: str | None = None, after: Iterable[Step | str] | Step | str | None = None,
                retries: int = 0) -> Step:
        """``mlplat models promote`` of the version ``version_from`` (a register step) produced."""
        step = self._platform("promote", name, {"version_step": _names(version_from)[0]}, after, retries, model)
        step.definition = replace(step.definition, params={**step.definition.params, "target": to})
        return step

    def definition(self, *, source: SourceBundle | None = None) -> PipelineDefinition:
        """The validated definition (:class:`PipelineError` names the first mistake)."""
        return validate(PipelineDefinition(name=self.name, steps=tuple(s.definition for s in self.steps),
                                           model=self.model, schedule=self.schedule, source=source))


# --- validation ---------------------------------------------------------------------------------


def validate(pipeline: PipelineDefinition) -> PipelineDefinition:
    """``pipeline`` if it can run: names valid and unique, references resolve, no cycle, a valid
    schedule. Otherwise :class:`PipelineError` (or ``CronError``) naming what and where."""
    where = f"pipeline {pipeline.name}"
    if not isinstance(pipeline.name, str) or not PIPELINE_NAME.match(pipeline.name):
        raise PipelineError(f"invalid pipeline name {pipeline.name!r}",
                            hint="use lowercase letters, digits and '-', e.g. Pipeline(\"credit-risk\")")
    if pipeline.model is not None and not MODEL_NAME.match(pipeline.model):
        raise PipelineError(f"invalid model name {pipeline.model!r}", where=where)
    if not pipeline.steps:
        raise PipelineError("the pipeline has no steps", where=where, hint="add one with pipeline.step(...)")
    seen: dict[str, StepDefinition] = {}
    for step in pipeline.steps:
        if not isinstance(step.name, str) or not STEP_NAME.match(step.name):
            raise PipelineError(f"invalid step name {step.name!r}", where=where,
                                hint="use lowercase letters, digits, '_' and '-', starting with a letter")
        if step.name in seen:
            raise PipelineError(f"two steps are named '{step.name}'", where=where,
                                hint="give every step its own name")
        seen[step.name] = step
    for step in pipeline.steps:
        _check_step(step, seen, where=f"{where}, step {step.name}")
    order(pipeline)  # raises on a cycle
    if pipeline.schedule is not None:
        try:
            cron_mod.validate(pipeline.schedule)
        except cron_mod.CronError as exc:
            raise cron_mod.CronError(exc.message, where=where, hint=exc.hint) from None
    return pipeline


def _check_step(step: StepDefinition, steps: Mapping[str, StepDefinition], *, where: str) -> None:
    if step.kind not in ("command", *PLATFORM_KINDS):
        raise PipelineError(f"unknown step kind '{step.kind}'", where=where,
                            hint="a step is a command, or one of the platform's: evaluate, register, promote")
    if not isinstance(step.retries, int) or not 0 <= step.retries <= MAX_RETRIES:
        raise PipelineError(f"retries must be a whole number from 0 to {MAX_RETRIES}, got {step.retries!r}", where=where)
    seen_env: dict[str, str] = {}
    for label, names in (("input", list(step.inputs)), ("output", list(step.outputs))):
        for name in names:
            if not isinstance(name, str) or not IO_NAME.match(name):
                raise PipelineError(f"invalid {label} name {name!r}", where=where,
                                    hint="use letters, digits and '_', starting with a letter (it becomes "
                                         f"$MLPLAT_{label.upper()}_<NAME>)")
            key = f"{label}:{env_name(name)}"
            if key in seen_env:
                raise PipelineError(f"{label}s '{seen_env[key]}' and '{name}' share $MLPLAT_{label.upper()}_"
                                    f"{env_name(name)}", where=where, hint="rename one of them")
            seen_env[key] = name
    for name, value in step.inputs.items():
        if not isinstance(value, str) or not value:
            raise PipelineError(f"input '{name}' is empty", where=where,
                                hint="give another step's output (\"prepare.dataset\") or a data path (\"data/raw.csv\")")
        ref = parse_reference(value)
        if ref is None:
            continue
        producer, output = ref
        if producer not in steps:
            raise PipelineError(f"input '{name}' refers to unknown step '{producer}' ({value!r})", where=where,
                                hint=f"known steps: {', '.join(steps)}; a data file in the project folder is "
                                     "written with a '/', e.g. './raw.csv'")
        if producer == step.name:
            raise PipelineError(f"input '{name}' refers to the step's own output ({value!r})", where=where)
        if output not in steps[producer].outputs:
            raise PipelineError(f"input '{name}' refers to output '{output}' that step '{producer}' does not "
                                f"declare (it declares: {', '.join(steps[producer].outputs) or 'none'})", where=where)
    for dep in step.depends_on:
        if dep not in steps:
            raise PipelineError(f"depends on unknown step '{dep}'", where=where, hint=f"known steps: {', '.join(steps)}")
        if dep == step.name:
            raise PipelineError("depends on itself", where=where)
    if step.kind == "command":
        if not step.command or not all(isinstance(a, str) and a for a in step.command):
            raise PipelineError("a command step needs a command", where=where,
                                hint='e.g. pipeline.step("prepare", "python steps/prepare.py", ...)')
        return
    if step.command:
        raise PipelineError(f"a platform step ({step.kind}) runs mlplat's own operation, not a command", where=where)
    if not step.params.get("model"):
        raise PipelineError(f"the {step.kind} step needs the model it acts on", where=where,
                            hint="name it once with Pipeline(..., model=\"credit-risk\")")
    key = "version_step" if step.kind == "promote" else "training_step"
    target = step.params.get(key, "")
    if target not in steps:
        raise PipelineError(f"the {step.kind} step's {key} names unknown step {target!r}", where=where,
                            hint=f"known steps: {', '.join(steps)}")
    wanted = "register" if step.kind == "promote" else "command"
    if steps[target].kind != wanted:
        raise PipelineError(f"the {step.kind} step takes its version from a {wanted} step, and '{target}' is a "
                            f"{steps[target].kind} step", where=where)
    if step.kind == "promote" and step.params.get("target") != "staging":
        raise PipelineError(f"a pipeline promotes to staging only, not {step.params.get('target')!r}", where=where,
                            hint="production keeps its approvals: `mlplat models promote NAME VERSION --to production`")


def upstream(step: StepDefinition) -> list[str]:
    """The steps ``step`` waits for: its inputs' producers, its ``depends_on``, and its platform references."""
    names = [ref[0] for ref in (parse_reference(v) for v in step.inputs.values()) if ref]
    names += list(step.depends_on)
    names += [step.params[k] for k in ("training_step", "version_step") if k in step.params and step.kind != "command"]
    return list(dict.fromkeys(names))


def order(pipeline: PipelineDefinition) -> list[str]:
    """Step names in dependency order, declaration order among the ready; a cycle raises, naming it."""
    steps = {s.name: s for s in pipeline.steps}
    waits = {name: set(upstream(s)) & set(steps) for name, s in steps.items()}
    done: list[str] = []
    while len(done) < len(steps):
        ready = [n for n in steps if n not in done and waits[n] <= set(done)]
        if not ready:
            raise PipelineError(f"the steps form a cycle: {' -> '.join(_cycle(waits, [n for n in steps if n not in done]))}",
                                where=f"pipeline {pipeline.name}", hint="remove one of these dependencies")
        done.append(ready[0])
    return done


def _cycle(waits: Mapping[str, set[str]], pending: list[str]) -> list[str]:
    path = [pending[0]]
    while True:
        nxt = sorted(d for d in waits[path[-1]] if d in pending)[0]
        if nxt in path:
            return [*path[path.index(nxt):], nxt][::-1]
        path.append(nxt)


def select(pipeline: PipelineDefinition, *, step: str | None = None, start: str | None = None) -> list[str]:
    """The steps a run carries out: all, only ``step`` (``--step``), or ``start`` and what follows it
    (``--from``). The others are taken from the cache."""
    names = order(pipeline)
    for flag, value in (("--step", step), ("--from", start)):
        if value is not None and value not in names:
            raise NotFound(f"pipeline '{pipeline.name}' has no step '{value}' ({flag})",
                           hint=f"its steps: {', '.join(names)}")
    if step is not None and start is not None:
        raise PipelineError("--step and --from cannot be combined", hint="give one of them")
    if step is not None:
        return [step]
    if start is None:
        return names
    steps = {s.name: s for s in pipeline.steps}
    chosen = {start}
    for name in names:
        if set(upstream(steps[name])) & chosen:
            chosen.add(name)
    return [n for n in names if n in chosen]


# --- files and JSON -----------------------------------------------------------------------------


def to_dict(pipeline: PipelineDefinition) -> dict[str, Any]:
    return asdict(pipeline)


def from_dict(doc: Mapping[str, Any]) -> PipelineDefinition:
    steps = tuple(StepDefinition(**{**s, "command": tuple(s.get("command", ())), "outputs": tuple(s.get("outputs", ())),
                                    "depends_on": tuple(s.get("depends_on", ()))}) for s in doc["steps"])
    source = SourceBundle(**doc["source"]) if doc.get("source") else None
    return PipelineDefinition(name=doc["name"], steps=steps, model=doc.get("model"), schedule=doc.get("schedule"),
                              source=source, environment=dict(doc.get("environment") or {}))


def load(path: str | Path) -> PipelineDefinition:
    """The validated pipeline a Python file declares (one :class:`Pipeline` at module level)."""
    import runpy

    file = Path(path)
    if not file.is_file():
        raise NotFound(f"pipeline file {str(path)!r} does not exist",
                       hint="give the path of a .py file that builds mlplat.pipelines.Pipeline(...)")
    try:
        namespace = runpy.run_path(str(file), run_name="mlplat_pipeline")
    except MlplatError as exc:
        exc.where = f"{path}: {exc.where}" if exc.where else str(path)
        raise
    except SyntaxError as exc:
        raise PipelineError(f"the pipeline file does not parse: {exc.msg} (line {exc.lineno})", where=str(path)) from None
    except Exception as exc:  # the user's module failed while declaring: say where, keep the cause
        raise PipelineError(f"the pipeline file failed while loading: {type(exc).__name__}: {exc}",
                            where=str(path)) from exc
    found = [v for v in namespace.values() if isinstance(v, Pipeline)]
    if not found:
        raise PipelineError("the file declares no pipeline", where=str(path),
                            hint="build one at module level: pipeline = Pipeline(\"name\", model=...)")
    if len(found) > 1:
        raise PipelineError(f"the file declares {len(found)} pipelines ({', '.join(p.name for p in found)})",
                            where=str(path), hint="declare one pipeline per file")
    try:
        return found[0].definition()
    except MlplatError as exc:
        exc.where = f"{path}: {exc.where}" if exc.where else str(path)
        raise


__all__ = ["Pipeline", "PipelineError", "Step", "from_dict", "load", "order", "select", "to_dict", "validate"]
