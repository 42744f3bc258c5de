"""Print a stack's planned resources as a tree (`mlplat preview --offline`)."""
from __future__ import annotations

from typing import Any


def _generic(props: dict[str, Any]) -> str:
    shown = [f"{k}={v}" for k, v in props.items() if k != "tags" and isinstance(v, (str, int, float, bool))][:4]
    return ", ".join(shown)


def print_tree(ctx, spec, resources: list[dict[str, Any]]) -> None:
    """Children under their parents, each with the provider's summary of its key properties."""
    from rich.markup import escape
    from rich.text import Text
    from rich.tree import Tree

    by_urn = {r.get("urn"): r for r in resources if r.get("urn")}
    root = Tree(f"[bold]stack {escape(spec.name)}[/] (provider {spec.provider.kind}, team {spec.team}, "
                f"env {spec.environment}) - offline, under Pulumi mocks" if spec.provider.kind != "local"
                else f"[bold]stack {escape(spec.name)}[/] (provider local, team {spec.team}, env {spec.environment})")
    nodes: dict[str, Tree] = {}

    def node_for(resource: dict[str, Any]) -> Tree:
        urn = resource.get("urn") or f"{resource['type']}::{resource['name']}"
        if urn in nodes:
            return nodes[urn]
        parent = by_urn.get(resource.get("parent"))
        parent_node = node_for(parent) if parent is not None else root
        summary = resource.get("summary") or _generic(resource.get("props") or {})
        label = f"[cyan]{escape(resource['type'])}[/] {escape(str(resource['name']))}"
        if summary:
            label += f"  [dim]{escape(summary)}[/]"
        # Fold long summaries instead of cutting them: CI logs are read in full.
        nodes[urn] = parent_node.add(Text.from_markup(label, overflow="fold"))
        return nodes[urn]

    for resource in sorted(resources, key=lambda r: str(r.get("urn") or r["name"])):
        node_for(resource)
    ctx.console.print(root)
    components = sum(1 for r in resources if r.get("custom") is False)
    split = f" ({len(resources) - components} cloud resources, {components} components)" if components else ""
    ctx.console.print(f"{len(resources)} resources{split}. Nothing was created; `mlplat up --stack {spec.name}` applies it.")
