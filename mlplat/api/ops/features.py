"""Operations on the feature store: plan and apply definitions, list views, materialize, check skew.

Definitions travel as JSON documents (:class:`DefinitionsDoc`): the client loads and validates
its Python definitions module where it runs and sends what it declares; the operation rebuilds
the entities and views and validates them again. A view's offline source named by a relative
path is read relative to the project *where the operation runs* — the server's own checkout in
server mode, so the file must exist there; a server refuses paths that leave its project (absolute,
``..``, or a symbolic link out), so a client cannot make it read other files of its machine.
A pandas DataFrame source travels as base64 Parquet and is snapshotted into the stack's state
where the operation runs, as in embedded mode.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlplat.api.operations import operation

Name = Annotated[str, Field(min_length=1, max_length=200)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntityDoc(_Doc):
    name: Name
    join_key: Name
    dtype: str = "int64"
    description: str = ""


class FeatureDoc(_Doc):
    name: Name
    dtype: str = "float64"
    description: str = ""


class SourceDoc(_Doc):
    kind: Literal["parquet", "csv", "dataframe"]
    path: str = ""  # relative paths resolve against the project where the operation runs
    parquet_base64: str | None = None  # a DataFrame source's rows (kind dataframe only)


class ViewDoc(_Doc):
    name: Name
    version: Annotated[int, Field(ge=1)] = 1
    entities: list[EntityDoc]
    features: list[FeatureDoc]
    source: SourceDoc
    timestamp_field: Name = "event_timestamp"
    created_timestamp_field: Name | None = None
    ttl_seconds: Annotated[int, Field(gt=0)] | None = None
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = Field(default_factory=dict)


class DefinitionsDoc(_Doc):
    """Entities and feature views as ``Entity.to_dict()`` / ``FeatureView.to_dict()`` write them."""

    entities: list[EntityDoc] = Field(default_factory=list)
    views: list[ViewDoc]
    path: str = ""  # where the client read them (named in error messages)


def definitions_doc(definitions: Any) -> dict[str, Any]:
    """The JSON document of loaded :class:`~mlplat.features.definitions.Definitions` (client side)."""
    import base64
    import io

    views = []
    for view in definitions.views:
        doc = view.to_dict()
        if view.source.kind == "dataframe":
            buffer = io.BytesIO()
            view._dataframe.to_parquet(buffer, index=False)
            doc["source"] = {"kind": "dataframe", "path": "",
                             "parquet_base64": base64.b64encode(buffer.getvalue()).decode("ascii")}
        views.append(doc)
    return {"entities": [e.to_dict() for e in definitions.entities], "views": views, "path": definitions.path}


def _confined(path: str, root: Any, where: str) -> None:
    """Refuse a source path that leaves ``root`` (the server's project): a client of ``mlplat server``
    names files of the server's checkout, never any file the server's user can read."""
    from pathlib import Path, PurePosixPath

    from mlplat.features.errors import FeatureDefinitionError

    if "://" in path:  # object-store URIs are read with the server's own cloud credentials and rules
        return
    candidate = PurePosixPath(path)
    inside = not candidate.is_absolute() and not Path(path).is_absolute()
    if inside:
        base = Path(root).resolve()
        inside = (base / path).resolve().is_relative_to(base)
    if not inside:
        raise FeatureDefinitionError(
            f"source path {path!r} is outside the server's project", where=f"{where}: source",
            hint="name the source file relative to the project root (e.g. examples/features/data/x.parquet); a server "
                 "reads only files of its own checkout")


def _definitions(doc: DefinitionsDoc, *, confine_to: Any = None) -> Any:
    """The entities and views of ``doc``, validated as the definitions module's own constructors do.
    ``confine_to``: file sources must lie inside this directory (the server's project)."""
    from mlplat.features.definitions import Entity, Feature, FeatureView, Source, collect
    from mlplat.features.errors import FeatureDefinitionError

    objects: list[Any] = [Entity(e.name, e.join_key, e.dtype, e.description) for e in doc.entities]
    for v in doc.views:
        where = f"feature view {v.name}"
        if v.source.kind == "dataframe":
            if not v.source.parquet_base64:
                raise FeatureDefinitionError("a dataframe source carries no rows", where=f"{where}: source",
                                             hint="send the frame as base64 Parquet in source.parquet_base64")
            source: Any = _frame(v.source.parquet_base64, where)
        else:
            if v.source.parquet_base64 is not None or not v.source.path:
                raise FeatureDefinitionError(f"a {v.source.kind} source is named by its path only",
                                             where=f"{where}: source", hint="send source.path, without rows")
            if confine_to is not None:
                _confined(v.source.path, confine_to, where)
            source = Source(v.source.kind, v.source.path)
        objects.append(FeatureView(
            v.name, version=v.version, entities=[Entity(e.name, e.join_key, e.dtype, e.description) for e in v.entities],
            features=[Feature(f.name, f.dtype, f.description) for f in v.features], source=source,
            timestamp_field=v.timestamp_field, created_timestamp_field=v.created_timestamp_field, ttl=v.ttl_seconds,
            description=v.description, owner=v.owner, tags=dict(v.tags)))
    definitions = collect(objects, path=doc.path)
    if not definitions.views:
        raise FeatureDefinitionError("the definitions define no FeatureView", where=doc.path or "definitions",
                                     hint="define at least one FeatureView")
    return definitions


def _frame(encoded: str, where: str) -> Any:
    import base64
    import binascii
    import io

    import pandas as pd

    from mlplat.features.errors import FeatureDefinitionError

    try:
        return pd.read_parquet(io.BytesIO(base64.b64decode(encoded, validate=True)))
    except (binascii.Error, ValueError, OSError) as exc:
        raise FeatureDefinitionError(f"the dataframe source is not base64 Parquet: {exc}", where=f"{where}: source",
                                     ) from None


def _server_root(ctx: Any) -> Any:
    """The directory file sources must stay in: the project, where the operation runs for remote clients."""
    return ctx.project() if ctx.ledger_owner else None


def _store(spec: Any, ctx: Any) -> Any:
    from mlplat.features.client import FeatureStore

    return FeatureStore(spec=spec, ctx=ctx)


@operation("features.plan", "POST", "/features/plan", writes=False)
def plan(spec: Any, ctx: Any, *, definitions: DefinitionsDoc) -> dict[str, Any]:
    """What applying ``definitions`` would change: sources validated, diffed with the registry. Writes nothing.

    Offline sources named by a relative path are read relative to the project where the
    operation runs (the server's own checkout in server mode)."""
    return _store(spec, ctx).plan(_definitions(definitions, confine_to=_server_root(ctx))).to_dict()


@operation("features.apply", "POST", "/features/apply")
def apply(spec: Any, ctx: Any, *, definitions: DefinitionsDoc) -> dict[str, Any]:
    """Register entities and feature views (validated and diffed again under the registry's write lock).

    A breaking change to a view version that a production model uses is refused (403) and
    nothing is written. Offline sources named by a relative path are resolved relative to the
    project where the operation runs (the server's own checkout in server mode); a DataFrame
    source is snapshotted into that stack's state."""
    return _store(spec, ctx).apply(_definitions(definitions, confine_to=_server_root(ctx))).to_dict()


@operation("features.list", "GET", "/features/views")
def list_views(spec: Any, ctx: Any) -> list[dict[str, Any]]:
    """Registered feature views and versions, their last materialization and the runs that read them."""
    from datetime import UTC, datetime

    store = _store(spec, ctx)
    views = store.registered(refresh=True)
    granted = _granted_only(spec, ctx)
    if granted is not None:  # another team's reader: only the views granted to it
        views = {key: doc for key, doc in views.items() if key[0] in granted}
    done = store.backend.materializations()
    usage = store.backend.usage()
    rows = []
    for (name, version), doc in sorted(views.items()):
        last = next((m for m in done if m["name"] == name and m["version"] == version and m["state"] == "succeeded"), None)
        rows.append({
            "view": name, "version": version,
            "entities": [e["join_key"] for e in doc["entities"]],
            "features": [f"{f['name']}:{f['dtype']}" for f in doc["features"]],
            "ttl_seconds": doc.get("ttl_seconds"),
            "source": doc["source"].get("path") or doc["source"]["kind"],
            "materialized_until": (datetime.fromtimestamp(last["end_us"] / 1e6, tz=UTC).isoformat()
                                   if last else None),
            "online_rows": last["rows"] if last else None,
            "runs": sorted({u["run_id"] for u in usage if u["view"] == name and u["version"] == version}),
            "production_models": store.backend.production_users(name, version),
        })
    return rows


def _granted_only(spec: Any, ctx: Any) -> set[str] | None:
    """The views a server caller without the read action may see (its feature grants), or None: all of them."""
    if ctx.principal is None:
        return None
    from mlplat.identity import rbac
    from mlplat.services import governance

    access = governance.access_in_force_for(spec, ctx)
    return None if rbac.reads_all_features(ctx.principal, access) else rbac.granted_views(ctx.principal, access)


@operation("features.materialize", "POST", "/features/materialize")
def materialize(spec: Any, ctx: Any, *, start: Annotated[str, Field(min_length=1)], end: Annotated[str, Field(min_length=1)],
                views: list[Name] | None = None) -> list[dict[str, Any]]:
    """Write the latest value per entity in [start, end] into the online store (all views, or ``views``).

    Reads the offline sources where the operation runs (the server in server mode). Times are
    ISO 8601; naive times are UTC."""
    return _store(spec, ctx).materialize(start, end, list(views or []) or None)


@operation("features.skew", "GET", "/features/views/{view}/skew")
def skew(spec: Any, ctx: Any, *, view: Name, sample: Annotated[int, Field(ge=1, le=100_000)] | None = None,
         at: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Online values against offline point-in-time values for a sample of entities of ``view``.

    ``sample`` defaults to the stack's features.skewSample, ``at`` to the end of the last
    materialization. ``ok`` says whether the mismatch rate is within features.maxSkewRate;
    the caller decides what a failed check means."""
    store = _store(spec, ctx)
    report = store.skew(view, sample=sample or store.settings.skew_sample, seed=seed, at=at)
    limit = store.settings.max_skew_rate
    return report.to_dict() | {"max_skew_rate": limit, "ok": report.mismatch_rate <= limit}
