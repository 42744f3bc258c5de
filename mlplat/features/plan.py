"""What ``features apply`` would change, and which changes break the users of a view version.

A change is *breaking* when data a model was trained on would come back different
or not at all: a feature removed or retyped, the entities / join keys / their
types changed, the event or created timestamp column changed, or the TTL changed.
Adding a feature, or changing the source location, description, owner or tags is
not breaking. A breaking change to a version that a production model uses is
refused; declaring ``version=N+1`` instead leaves version N as it was.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlplat.features.definitions import Definitions, digest_of
from mlplat.features.errors import BreakingChange


@dataclass
class ViewChange:
    name: str
    version: int
    action: str  # create | update | unchanged | kept (registered, absent from the definitions)
    changes: list[str] = field(default_factory=list)
    breaking: list[str] = field(default_factory=list)
    used_by: list[str] = field(default_factory=list)  # production models ("model v3 (production)")

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def refused(self) -> bool:
        return bool(self.breaking and self.used_by)

    def to_dict(self) -> dict[str, Any]:
        return {"view": self.name, "version": self.version, "action": self.action, "changes": self.changes,
                "breaking": self.breaking, "used_by": self.used_by}


@dataclass
class EntityChange:
    name: str
    action: str
    changes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"entity": self.name, "action": self.action, "changes": self.changes}


@dataclass
class FeaturePlan:
    entities: list[EntityChange]
    views: list[ViewChange]

    @property
    def has_changes(self) -> bool:
        return any(c.action in ("create", "update") for c in [*self.entities, *self.views])

    @property
    def refused(self) -> list[ViewChange]:
        return [v for v in self.views if v.refused]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for change in [*self.entities, *self.views]:
            out[change.action] = out.get(change.action, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"entities": [e.to_dict() for e in self.entities], "views": [v.to_dict() for v in self.views],
                "has_changes": self.has_changes}


def view_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(every change, the breaking ones) between two canonical view documents."""
    changes: list[str] = []
    breaking: list[str] = []

    def note(text: str, is_breaking: bool) -> None:
        changes.append(text + (" [breaking]" if is_breaking else ""))
        if is_breaking:
            breaking.append(text)

    old_f = {f["name"]: f for f in old["features"]}
    new_f = {f["name"]: f for f in new["features"]}
    for name in sorted(set(old_f) - set(new_f)):
        note(f"feature '{name}' removed", True)
    for name in sorted(set(new_f) - set(old_f)):
        note(f"feature '{name}' added ({new_f[name]['dtype']})", False)
    for name in sorted(set(old_f) & set(new_f)):
        if old_f[name]["dtype"] != new_f[name]["dtype"]:
            note(f"feature '{name}' type {old_f[name]['dtype']} -> {new_f[name]['dtype']}", True)
        elif old_f[name].get("description") != new_f[name].get("description"):
            note(f"feature '{name}' description changed", False)
    old_keys = [(e["name"], e["join_key"], e["dtype"]) for e in old["entities"]]
    new_keys = [(e["name"], e["join_key"], e["dtype"]) for e in new["entities"]]
    if old_keys != new_keys:
        show = lambda keys: ", ".join(f"{n}({k}:{t})" for n, k, t in keys)  # noqa: E731
        note(f"entities {show(old_keys)} -> {show(new_keys)}", True)
    for key, label in (("timestamp_field", "timestamp field"), ("created_timestamp_field", "created timestamp field"),
                       ("ttl_seconds", "ttl (seconds)")):
        if old.get(key) != new.get(key):
            note(f"{label} {old.get(key)} -> {new.get(key)}", True)
    if old["source"] != new["source"]:
        note(f"source {old['source'].get('path') or old['source']['kind']} -> "
             f"{new['source'].get('path') or new['source']['kind']}", False)
    for key in ("description", "owner", "tags"):
        if old.get(key) != new.get(key):
            note(f"{key} changed", False)
    return changes, breaking


def make_plan(
    definitions: Definitions,
    registered_views: Mapping[tuple[str, int], Mapping[str, Any]],
    registered_entities: Mapping[str, Mapping[str, Any]],
    used_by: Callable[[str, int], list[str]],
    documents: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
) -> FeaturePlan:
    """Compare ``definitions`` with what is registered. ``documents`` overrides a view's canonical
    document (a DataFrame source gets its snapshot path and digest there). Pure: writes nothing."""
    documents = documents or {}
    entities: list[EntityChange] = []
    for entity in definitions.entities:
        old = registered_entities.get(entity.name)
        new = entity.to_dict()
        if old is None:
            entities.append(EntityChange(entity.name, "create", [f"join key {entity.join_key} ({entity.dtype})"]))
        elif dict(old) != new:
            diffs = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
            entities.append(EntityChange(entity.name, "update", diffs))
        else:
            entities.append(EntityChange(entity.name, "unchanged"))
    views: list[ViewChange] = []
    declared = set()
    for view in definitions.views:
        key = (view.name, view.version)
        declared.add(key)
        new = documents.get(key) or view.to_dict()
        old = registered_views.get(key)
        if old is None:
            latest = max((v for (n, v) in registered_views if n == view.name), default=None)
            detail = [f"{len(view.features)} features of {', '.join(view.join_keys)}"]
            if latest is not None:
                detail.append(f"new version next to v{latest} (which stays registered)")
            views.append(ViewChange(view.name, view.version, "create", detail))
            continue
        if digest_of(old) == digest_of(new):
            views.append(ViewChange(view.name, view.version, "unchanged"))
            continue
        changes, breaking = view_differences(old, new)
        views.append(ViewChange(view.name, view.version, "update", changes, breaking,
                                used_by(view.name, view.version) if breaking else []))
    for (name, version) in sorted(registered_views):
        if (name, version) not in declared:
            views.append(ViewChange(name, version, "kept", ["registered; not in the definitions (never deleted)"]))
    return FeaturePlan(entities, views)


def refuse_breaking(plan: FeaturePlan) -> None:
    """Raise :class:`BreakingChange` naming each refused view, its breaking changes and its users."""
    refused = plan.refused
    if not refused:
        return
    lines = [f"{v.ref}: {'; '.join(v.breaking)} (used by {', '.join(v.used_by)})" for v in refused]
    bumps = ", ".join(f"{v.name} version={v.version + 1}" for v in refused)
    raise BreakingChange(
        "breaking change to a feature view version that a production model uses:\n  - " + "\n  - ".join(lines),
        where="features apply",
        hint=f"declare a new version instead ({bumps}) and keep the old definition; the production model keeps "
             "reading the version it was trained on",
        views=[v.ref for v in refused],
    )

