"""Docs never name a command that does not exist: every `mlplat ...` in README.md and docs/*.md,
in code spans and code blocks, is walked down the click command tree (as the CLI resolves it)."""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from mlplat.cli import cli

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
WORD = re.compile(r"[a-z][a-z0-9-]*")
# `mlplat` followed by blanks, not `mlplat:team`, `mlplat/cli`, `mlplat.start_run` or `mlplat_providers`
MENTION = re.compile(r"(?<![\w./:-])mlplat[ \t]+(?P<rest>[^\n`&|;#]*)")
FENCE = re.compile(r"^```[^\n]*\n(?P<body>.*?)^```", re.S | re.M)
SPAN = re.compile(r"`(?P<body>[^`\n]+)`")
GLOBAL_OPTIONS = ("--verbose", "-v")
# Wrong on purpose: the README shows what a mistyped command gets.
MISTYPED = {("model", "list")}


def code_of(markdown: str) -> list[tuple[int, str]]:
    """(line, text) of every code block line and code span."""
    out: list[tuple[int, str]] = []
    for match in FENCE.finditer(markdown):
        first = markdown.count("\n", 0, match.start("body")) + 1
        out += [(first + i, line) for i, line in enumerate(match.group("body").splitlines())]
    prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), markdown)
    for match in SPAN.finditer(prose):
        out.append((prose.count("\n", 0, match.start()) + 1, match.group("body")))
    return out


def mentions(markdown: str) -> list[tuple[int, list[str]]]:
    """Each `mlplat` command line's words: a command path, then its arguments."""
    found = []
    for line, text in code_of(markdown):
        for match in MENTION.finditer(text):
            tokens = re.split(r"\s+", match.group("rest").split(">")[0].strip())
            while tokens and tokens[0] in GLOBAL_OPTIONS:
                tokens = tokens[1:]
            if tokens and tokens[0] and WORD.fullmatch(tokens[0]):
                found.append((line, tokens))
    return found


def missing_command(tokens: list[str]) -> str | None:
    """The first command of ``tokens`` (a path like ``models promote NAME``, or alternatives
    ``runs list / show``) that the command tree lacks, else None."""
    ctx = click.Context(cli, info_name="mlplat")
    group: click.Command = cli
    parent: click.Group | None = None
    path: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "/" and parent is not None and i + 1 < len(tokens):
            alternative = tokens[i + 1].strip(",")
            if WORD.fullmatch(alternative) and parent.get_command(ctx, alternative) is None:
                return " ".join([*path[:-1], alternative])
            i += 2
            continue
        if not isinstance(group, click.Group) or not WORD.fullmatch(token):
            break
        sub = group.get_command(ctx, token)
        if sub is None:
            return " ".join([*path, token])
        parent, group = group, sub
        path.append(token)
        i += 1
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_named_in_the_docs_exists(doc):
    problems = []
    for line, tokens in mentions(doc.read_text(encoding="utf-8")):
        if tuple(tokens[:2]) in MISTYPED:
            continue
        missing = missing_command(tokens)
        if missing:
            problems.append(f"{doc.relative_to(REPO)}:{line}: `mlplat {missing}` is not a command "
                            f"(from `mlplat {' '.join(tokens)}`)")
    assert not problems, "\n".join(problems)


def test_the_check_finds_missing_commands_and_subcommands():
    doc = """Run `mlplat models promte credit-risk 1` or:

```bash
MLPLAT_USER=a mlplat --verbose runs list / show / explode && mlplat frobnicate --x
mlplat deploy credit-risk 1 --strategy canary   # arguments of a command are not commands
```
and `mlplat:team`, `mlplat.start_run`, `import mlplat` are not commands.
"""
    found = {" ".join(tokens): missing_command(tokens) for _, tokens in mentions(doc)}
    assert found == {"models promte credit-risk 1": "models promte", "runs list / show / explode": "runs explode",
                     "frobnicate --x": "frobnicate", "deploy credit-risk 1 --strategy canary": None}
    assert [line for line, _ in mentions(doc)] == [4, 4, 5, 1]
