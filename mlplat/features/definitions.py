"""Feature definitions in Python: entities, typed features and versioned feature views.

    from datetime import timedelta
    from mlplat.features import Entity, Feature, FeatureView

    driver = Entity("driver", join_key="driver_id", dtype="int64")
    driver_stats = FeatureView(
        "driver_stats", entities=[driver], source="data/driver_stats.parquet",
        timestamp_field="event_timestamp", created_timestamp_field="created",
        ttl=timedelta(days=30), version=2,
        features=[Feature("trips_today", "int64"), Feature("rating", "float64")],
    )

A view is identified by ``(name, version)``. Registered versions are never
deleted: a model trained on ``driver_stats@1`` keeps being served from version 1
after version 2 is declared next to it. Sources are Parquet files (a path or a
glob), CSV files, or pandas DataFrames (snapshotted to Parquet at ``apply``).
Relative paths resolve against the project root.

Timestamps: a timezone-naive timestamp means UTC, everywhere (sources, entity
rows, ``--start/--end``); a timezone-aware one is converted to UTC.
"""
from __future__ import annotations

import hashlib
import json
import re
import runpy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from mlplat.features.errors import FeatureDefinitionError, nearest

# Checked with fullmatch: `$` alone would accept a trailing newline ("views\n").
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
RESERVED_PREFIX = "__"

# dtype -> (DuckDB type, SQLite affinity)
DTYPES: dict[str, tuple[str, str]] = {
    "int32": ("INTEGER", "INTEGER"),
    "int64": ("BIGINT", "INTEGER"),
    "float32": ("FLOAT", "REAL"),
    "float64": ("DOUBLE", "REAL"),
    "string": ("VARCHAR", "TEXT"),
    "bool": ("BOOLEAN", "INTEGER"),
    "timestamp": ("TIMESTAMPTZ", "INTEGER"),
}
KEY_DTYPES = ("int64", "string")

# Which source column types (DuckDB names, by prefix) a declared dtype accepts.
_INTS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "HUGEINT")
ACCEPTS: dict[str, tuple[str, ...]] = {
    "int32": _INTS,
    "int64": _INTS,
    "float32": ("FLOAT", "DOUBLE", "DECIMAL", *_INTS),
    "float64": ("FLOAT", "DOUBLE", "DECIMAL", *_INTS),
    "string": ("VARCHAR",),
    "bool": ("BOOLEAN",),
    "timestamp": ("TIMESTAMP", "DATE"),
}
TIMESTAMP_TYPES = ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS")


def _check_ident(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not IDENT.fullmatch(name) or name.startswith(RESERVED_PREFIX):
        raise FeatureDefinitionError(
            f"{kind} name {name!r} is not a valid identifier",
            hint="use letters, digits and underscores, starting with a letter (not '__'), at most 63 characters",
        )
    return name


def _check_dtype(where: str, dtype: Any, allowed: Iterable[str] = DTYPES) -> str:
    allowed = list(allowed)
    if dtype not in allowed:
        raise FeatureDefinitionError(
            f"unknown dtype {dtype!r}", where=where,
            hint=nearest(str(dtype), allowed) + f"supported: {', '.join(allowed)}",
        )
    return dtype


def parse_ttl(value: Any, where: str) -> int | None:
    """TTL in whole seconds: a ``timedelta``, seconds, or ``"30d"``/``"12h"``/``"15m"``/``"90s"``; None = no expiry."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        seconds = -1
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(r"\d+(s|m|h|d)", value):
        seconds = int(value[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[value[-1]]
    else:
        raise FeatureDefinitionError(f"ttl {value!r} is not a duration", where=where,
                                     hint="use timedelta(days=30), a number of seconds, or '30d' / '12h' / '15m'")
    if seconds <= 0 or seconds != int(seconds):
        raise FeatureDefinitionError(f"ttl must be a positive whole number of seconds, got {value!r}", where=where,
                                     hint="use ttl=None for no expiry")
    return int(seconds)


@dataclass(frozen=True)
class Entity:
    """The thing features describe (a driver, a customer); ``join_key`` is its column in sources and entity rows."""

    name: str
    join_key: str | None = None
    dtype: str = "int64"
    description: str = ""

    def __post_init__(self) -> None:
        _check_ident("entity", self.name)
        object.__setattr__(self, "join_key", _check_ident("join key", self.join_key or self.name))
        _check_dtype(f"entity {self.name}", self.dtype, KEY_DTYPES)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "join_key": self.join_key, "dtype": self.dtype, "description": self.description}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Entity:
        return cls(data["name"], data["join_key"], data["dtype"], data.get("description", ""))


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str = "float64"
    description: str = ""

    def __post_init__(self) -> None:
        _check_ident("feature", self.name)
        _check_dtype(f"feature {self.name}", self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "description": self.description}


@dataclass(frozen=True)
class Source:
    """Where a view's rows live. ``kind`` is parquet or csv; DataFrames become parquet snapshots at apply."""

    kind: str
    path: str
    digest: str | None = None  # content digest of a snapshotted DataFrame

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "path": self.path}
        if self.digest:
            out["digest"] = self.digest
        return out


@dataclass(eq=False)
class FeatureView:
    """A versioned, typed group of features of some entities, read from one source."""

    name: str
    entities: list[Entity]
    features: list[Feature]
    source: Any
    timestamp_field: str = "event_timestamp"
    created_timestamp_field: str | None = None
    ttl: Any = None
    version: int = 1
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_ident("feature view", self.name)
        where = f"feature view {self.name}"
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise FeatureDefinitionError(f"version must be a positive integer, got {self.version!r}", where=where)
        if not self.entities or not all(isinstance(e, Entity) for e in self.entities):
            raise FeatureDefinitionError("entities must be a non-empty list of Entity", where=where)
        if not self.features or not all(isinstance(f, Feature) for f in self.features):
            raise FeatureDefinitionError("features must be a non-empty list of Feature", where=where)
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise FeatureDefinitionError(f"feature(s) declared twice: {', '.join(dupes)}", where=where)
        keys = [e.join_key for e in self.entities]
        if len(set(keys)) != len(keys):
            raise FeatureDefinitionError("two entities share a join key", where=where)
        _check_ident("timestamp field", self.timestamp_field)
        if self.created_timestamp_field is not None:
            _check_ident("created timestamp field", self.created_timestamp_field)
        clash = set(names) & ({self.timestamp_field, self.created_timestamp_field} | set(keys))
        if clash:
            raise FeatureDefinitionError(f"{', '.join(sorted(c for c in clash if c))} is both a feature and a key or "
                                         "timestamp column", where=where)
        self.ttl_seconds = parse_ttl(self.ttl, where)
        if not isinstance(self.tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in self.tags.items()):
            raise FeatureDefinitionError("tags must map strings to strings", where=where)
        self._dataframe = None
        src = self.source
        if isinstance(src, Source):
            return
        if isinstance(src, (str, Path)):
            text = str(src)
            lower = text.lower()
            if lower.endswith(".parquet") or lower.endswith(".pq"):
                self.source = Source("parquet", text)
            elif lower.endswith(".csv"):
                self.source = Source("csv", text)
            else:
                raise FeatureDefinitionError(f"source {text!r} is neither a .parquet nor a .csv file", where=where,
                                             hint="pass a Parquet path or glob, a CSV path, or a pandas DataFrame")
            return
        if type(src).__name__ == "DataFrame" and hasattr(src, "to_parquet"):
            self._dataframe = src
            self.source = Source("dataframe", "")
            return
        raise FeatureDefinitionError(f"source of type {type(src).__name__} is not supported", where=where,
                                     hint="pass a Parquet path or glob, a CSV path, or a pandas DataFrame")

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def join_keys(self) -> list[str]:
        return [e.join_key for e in self.entities]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The canonical form stored in the registry; its digest decides 'unchanged'."""
        return {
            "name": self.name,
            "version": self.version,
            "entities": [e.to_dict() for e in self.entities],
            "features": [f.to_dict() for f in self.features],
            "source": self.source.to_dict(),
            "timestamp_field": self.timestamp_field,
            "created_timestamp_field": self.created_timestamp_field,
            "ttl_seconds": self.ttl_seconds,
            "description": self.description,
            "owner": self.owner,
            "tags": dict(sorted(self.tags.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureView:
        return cls(
            data["name"],
            entities=[Entity.from_dict(e) for e in data["entities"]],
            features=[Feature(f["name"], f["dtype"], f.get("description", "")) for f in data["features"]],
            source=Source(data["source"]["kind"], data["source"]["path"], data["source"].get("digest")),
            timestamp_field=data["timestamp_field"],
            created_timestamp_field=data.get("created_timestamp_field"),
            ttl=data.get("ttl_seconds"),
            version=int(data["version"]),
            description=data.get("description", ""),
            owner=data.get("owner", ""),
            tags=dict(data.get("tags") or {}),
        )

    def digest(self) -> str:
        return digest_of(self.to_dict())


def digest_of(document: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Definitions:
    entities: list[Entity]
    views: list[FeatureView]
    path: str = ""

    def view(self, name: str, version: int) -> FeatureView | None:
        for v in self.views:
            if v.name == name and v.version == version:
                return v
        return None


def collect(objects: Iterable[Any], *, path: str = "") -> Definitions:
    """Entities and views from ``objects`` (views bring their entities); checks names are unique."""
    entities: dict[str, Entity] = {}
    views: dict[tuple[str, int], FeatureView] = {}
    where = path or "definitions"

    def add_entity(entity: Entity) -> None:
        known = entities.get(entity.name)
        if known is not None and known.to_dict() != entity.to_dict():
            raise FeatureDefinitionError(f"entity '{entity.name}' is defined twice, differently", where=where,
                                         hint="define each entity once and reuse the object")
        entities[entity.name] = entity

    for obj in objects:
        if isinstance(obj, Entity):
            add_entity(obj)
        elif isinstance(obj, FeatureView):
            for entity in obj.entities:
                add_entity(entity)
            key = (obj.name, obj.version)
            if key in views and views[key] is not obj:
                raise FeatureDefinitionError(f"feature view '{obj.name}' version {obj.version} is defined twice",
                                             where=where, hint="give the new definition version=" f"{obj.version + 1}")
            views[key] = obj
    return Definitions(sorted(entities.values(), key=lambda e: e.name),
                       sorted(views.values(), key=lambda v: (v.name, v.version)), path)


def load_module(path: Path) -> Definitions:
    """Run a definitions module and collect every Entity and FeatureView it defines at top level."""
    if not path.is_file():
        raise FeatureDefinitionError(
            f"feature definitions module not found: {path}",
            hint="create it (see examples/features/definitions.py), pass --definitions PATH, "
                 "or set mlplat:features.definitions in the stack file",
        )
    try:
        namespace = runpy.run_path(str(path), run_name="mlplat_feature_definitions")
    except FeatureDefinitionError as exc:
        exc.where = f"{path}" + (f": {exc.where}" if exc.where else "")
        raise
    except Exception as exc:  # the user's module failed: name it and its error
        raise FeatureDefinitionError(f"importing the definitions failed: {type(exc).__name__}: {exc}", where=str(path),
                                     hint="run the file with python to see the traceback") from exc
    found: list[Any] = []
    for value in namespace.values():
        if isinstance(value, (Entity, FeatureView)):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, (Entity, FeatureView)))
    definitions = collect(found, path=str(path))
    if not definitions.views:
        raise FeatureDefinitionError("the definitions module defines no FeatureView", where=str(path),
                                     hint="define at least one FeatureView at the module's top level")
    return definitions


# --- references ------------------------------------------------------------------------

REF = re.compile(r"(?P<view>[A-Za-z_][A-Za-z0-9_]*)(@v?(?P<version>\d+))?(:(?P<feature>[A-Za-z_][A-Za-z0-9_]*|\*))?")


@dataclass(frozen=True)
class FeatureRef:
    """``view:feature`` (latest registered version), ``view@2:feature`` (pinned), ``view@2`` / ``view:*`` (all)."""

    view: str
    version: int | None
    feature: str | None  # None = every feature of the view

    @classmethod
    def parse(cls, text: Any, *, need_feature: bool = False) -> FeatureRef:
        match = REF.fullmatch(text) if isinstance(text, str) else None
        if match is None or (need_feature and not match.group("feature")):
            raise FeatureDefinitionError(
                f"malformed feature reference {text!r}",
                hint="write 'view:feature', 'view@2:feature' for a pinned version, or 'view@2:*' for all features",
            )
        feature = match.group("feature")
        return cls(match.group("view"), int(match.group("version")) if match.group("version") else None,
                   None if feature in (None, "*") else feature)
