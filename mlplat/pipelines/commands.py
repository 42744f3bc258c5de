"""What each step of a pipeline runs on a cloud, the check that it is a command this mlplat has, and the
cycle check of a compiled pipeline's graph.

Every cloud compiler (SageMaker Pipelines, Vertex AI Pipelines, Azure ML pipeline jobs) turns a step into
one command run by the platform's image: a ``command`` step's own, or for the platform's steps
(``evaluate``, ``register``, ``promote``) an mlplat command acting on the version the pipeline trained,
written with :data:`VERSION_TOKEN` where the cloud substitutes a pipeline parameter. Before anything is
sent, :func:`command_problems` parses each ``mlplat ...`` command against mlplat's own click tree (nothing
runs), so a pipeline never fails hours in because a step names a command or option that does not exist.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from mlplat.contracts.pipelines import StepDefinition
from mlplat.errors import MlplatError, StackError

VERSION_TOKEN = "{version}"


def control_plane_url(spec: Any, job: str) -> str:
    """The control plane a cloud's ``job`` (e.g. "a Vertex AI job") reaches the ledger through:
    ``$MLPLAT_CONTROL_PLANE_URL``, else the stack's; a stack without one is refused before anything is sent."""
    url = os.environ.get("MLPLAT_CONTROL_PLANE_URL") or spec.control_plane.url
    if not url:
        raise StackError(f"stack '{spec.name}' has no control plane URL: {job} reaches the "
                         "ledger (runs, versions, the gate) only through the stack's control plane",
                         where=spec.path or None,
                         hint="set mlplat:controlPlane.url to the controlPlaneUrl `mlplat up` printed")
    return str(url)


def platform_command(step: StepDefinition, model: str | None, stack: str, *,
                     error: type[MlplatError] = MlplatError) -> tuple[str, ...]:
    """The command a step runs: a ``command`` step's own; for a platform step the mlplat command on
    :data:`VERSION_TOKEN` of its model (``error`` when it names none)."""
    if step.kind == "command":
        return tuple(step.command)
    model = step.params.get("model") or model
    if not model:
        raise error(f"pipeline step {step.name!r} ({step.kind}) names no model",
                    hint="set the pipeline's model, or params={'model': ...} on the step")
    if step.kind == "evaluate":
        # the gate alone (held-out set, thresholds, champion), its report stored in the ledger
        return ("mlplat", "models", "evaluate", model, VERSION_TOKEN, "--stack", stack, "--json")
    if step.kind == "register":
        return ("mlplat", "models", "show", model, VERSION_TOKEN, "--stack", stack, "--json")
    target = step.params.get("target") or step.params.get("to") or "staging"
    return ("mlplat", "models", "promote", model, VERSION_TOKEN, "--to", target, "--stack", stack)


def mlplat_command_problem(argv: Sequence[str], is_placeholder: Callable[[str], bool] = lambda _a: False
                           ) -> str | None:
    """Why ``mlplat <argv[1:]>`` is not a command of this mlplat (unknown command, option or argument),
    or ``None``. An argument ``is_placeholder`` accepts stands for a version number. Click parses only."""
    import click

    from mlplat.cli import cli

    args = ["1" if is_placeholder(a) else a for a in argv[1:]]
    group: click.Command = cli
    path = ["mlplat"]
    while isinstance(group, click.Group) and args and not args[0].startswith("-"):
        sub = group.get_command(click.Context(group, info_name=path[-1]), args[0])
        if sub is None:
            return f"`{' '.join(path)} {args[0]}` is not a command (see `{' '.join(path)} --help`)"
        path.append(args.pop(0))
        group = sub
    if isinstance(group, click.Group):
        return f"`{' '.join(path)}` needs a subcommand"
    try:
        group.make_context(" ".join(path), list(args), resilient_parsing=False)
    except click.exceptions.Exit:
        return None
    except click.ClickException as exc:
        return f"`{' '.join(argv)}`: {exc.format_message()}"
    return None


def command_problems(commands: Mapping[str, Sequence[str]], *, label: str = "step",
                     is_placeholder: Callable[[str], bool] = lambda _a: False) -> list[str]:
    """Every step (name → the command it runs) that runs no command, or an mlplat command this mlplat
    does not have."""
    problems = []
    for name, argv in commands.items():
        if not argv:
            problems.append(f"{label} {name} runs no command")
        elif argv[0] == "mlplat":
            problem = mlplat_command_problem(argv, is_placeholder)
            if problem:
                problems.append(f"{label} {name}: {problem}")
    return problems


def has_cycle(graph: Mapping[str, Collection[str]]) -> bool:
    """Whether a compiled pipeline's dependency graph (node → the nodes it waits for) has a cycle: the
    compilers' rule checks ask it of the document they are about to send."""
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done

    def cyclic(node: str) -> bool:
        if state.get(node) == 1:
            return True
        if state.get(node) == 2:
            return False
        state[node] = 1
        found = any(cyclic(n) for n in sorted(graph.get(node, ())))
        state[node] = 2
        return found

    return any(cyclic(n) for n in sorted(graph))
