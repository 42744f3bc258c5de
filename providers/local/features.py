"""The local feature store: definitions in the platform database, DuckDB over Parquet/CSV
offline (:mod:`mlplat.features.store`: the registry and the point-in-time join), SQLite online
(``<state dir>/online.db``).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

from mlplat.contracts import ViewSelection
from mlplat.db import Database, ledger_for
from mlplat.errors import MlplatError, NotProvisioned
from mlplat.features.definitions import DTYPES
from mlplat.features.errors import FeatureDataError
from mlplat.features.store import FILE, MIGRATION, ROW, LedgerFeatureStore, lit, q
from mlplat_providers.local.layout import StateLayout

__all__ = ["FILE", "MIGRATION", "ROW", "LocalFeatureStore", "lit", "online_table", "q"]


def online_table(name: str, version: int) -> str:
    return q(f"fv_{name}_v{version}")


class LocalFeatureStore(LedgerFeatureStore):
    def __init__(self, spec, ctx):
        self.layout = StateLayout(spec.state_dir)
        db = ledger_for(self.layout.platform_db, ctx)
        if not self.layout.platform_db.is_file():
            raise NotProvisioned(spec.name, f"platform database under {self.layout.root}")
        if MIGRATION not in db.applied():
            raise MlplatError(f"the platform database of stack '{spec.name}' has no feature store tables yet",
                              hint=f"run `mlplat up --stack {spec.name}`: it applies the pending migration {MIGRATION}")
        super().__init__(spec, ctx, db, self.layout.root)
        self.online_db = Database(self.layout.root / "online.db")
        self._local = threading.local()

    # --- online -------------------------------------------------------------------------------

    def _online(self):
        # one connection per thread: the serving gateway may look features up from several threads
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.online_db.connect()
        return conn

    def _ensure_table(self, conn, doc: Mapping[str, Any]) -> None:
        table = online_table(doc["name"], doc["version"])
        keys = [(e["join_key"], DTYPES[e["dtype"]][1]) for e in doc["entities"]]
        feats = [(f["name"], DTYPES[f["dtype"]][1]) for f in doc["features"]]
        cols = ", ".join([f"{q(k)} {t} NOT NULL" for k, t in keys]
                         + ["__event_us INTEGER NOT NULL", "__created_us INTEGER", "__written_at REAL NOT NULL"]
                         + [f"{q(n)} {t}" for n, t in feats])
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols}, PRIMARY KEY ({', '.join(q(k) for k, _ in keys)})) "
                     "WITHOUT ROWID")
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        for name, kind in feats:  # a non-breaking update added features
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {q(name)} {kind}")

    def _materialize_view(self, doc: Mapping[str, Any], start_us: int, end_us: int) -> int:
        rows = self._latest_rows(doc, start_us, end_us)
        self._write_online(doc, rows)
        return len(rows)

    def _write_online(self, doc: Mapping[str, Any], rows: list[tuple]) -> None:
        table = online_table(doc["name"], doc["version"])
        keys = [e["join_key"] for e in doc["entities"]]
        feats = [f["name"] for f in doc["features"]]
        cols = [*keys, "__event_us", "__created_us", *feats]
        now = time.time()
        assignments = ", ".join(f"{q(c)}=excluded.{q(c)}" for c in ["__event_us", "__created_us", "__written_at", *feats])
        # never replace a newer value: an older window re-materialized, or two materializations racing
        oldest = -9223372036854775808
        newer = (f"excluded.__event_us > {table}.__event_us OR (excluded.__event_us = {table}.__event_us AND "
                 f"coalesce(excluded.__created_us, {oldest}) >= coalesce({table}.__created_us, {oldest}))")
        sql = (f"INSERT INTO {table} ({', '.join(q(c) for c in cols)}, __written_at) "
               f"VALUES ({', '.join('?' for _ in cols)}, {now!r}) "
               f"ON CONFLICT({', '.join(q(k) for k in keys)}) DO UPDATE SET {assignments} WHERE {newer}")
        bools = [i for i, f in enumerate(doc["features"], start=len(keys) + 2) if f["dtype"] == "bool"]
        if bools:
            rows = [tuple(int(v) if i in bools and v is not None else v for i, v in enumerate(r)) for r in rows]
        with self.online_db.transaction() as conn:
            self._ensure_table(conn, doc)
            conn.executemany(sql, rows)

    def online(self, selections: Sequence[ViewSelection], keys: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        import sqlite3

        conn = self._online()
        out: list[dict[str, Any]] = [{} for _ in keys]
        for sel in selections:
            doc = sel.document
            join_keys = sel.join_keys
            table = online_table(sel.name, sel.version)
            by_name = {f["name"]: f for f in doc["features"]}
            wanted = tuple(dict.fromkeys(k for k in [tuple(row[j] for j in join_keys) for row in keys]))
            select = ", ".join(q(c) for c in [*join_keys, *sel.features])
            found: dict[tuple, tuple] = {}
            for start in range(0, len(wanted), 400):  # SQLite's bound-parameter limit
                chunk = wanted[start:start + 400]
                if len(join_keys) == 1:
                    where = f"{q(join_keys[0])} IN ({', '.join('?' for _ in chunk)})"
                    args = [k[0] for k in chunk]
                else:
                    where = (f"({', '.join(q(k) for k in join_keys)}) IN (VALUES "
                             + ", ".join("(" + ", ".join("?" for _ in join_keys) + ")" for _ in chunk) + ")")
                    args = [v for k in chunk for v in k]
                try:
                    for row in conn.execute(f"SELECT {select} FROM {table} WHERE {where}", args):
                        found[tuple(row[:len(join_keys)])] = tuple(row[len(join_keys):])
                except sqlite3.OperationalError as exc:
                    if "no such table" in str(exc):
                        break  # never materialized: every value is absent
                    if "no such column" in str(exc):
                        raise FeatureDataError(f"{sel.name}@{sel.version} gained features since it was last materialized",
                                               hint="run `mlplat features materialize` again") from None
                    raise
            convert = [_from_sqlite(by_name[f]["dtype"]) for f in sel.features]
            for i, row in enumerate(keys):
                values = found.get(tuple(row[j] for j in join_keys))
                target = out[i]
                for j, col in enumerate(sel.columns):
                    target[col] = None if values is None or values[j] is None else convert[j](values[j])
        return out

    def online_keys(self, name: str, version: int, limit: int, seed: int) -> list[dict[str, Any]]:
        import sqlite3

        docs = self.registered_views()
        doc = docs[(name, version)]
        keys = [e["join_key"] for e in doc["entities"]]
        conn = self._online()
        try:
            rows = conn.execute(f"SELECT {', '.join(q(k) for k in keys)} FROM {online_table(name, version)}").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        import random

        rows = sorted(tuple(r) for r in rows)
        random.Random(seed).shuffle(rows)
        return [dict(zip(keys, r)) for r in rows[:limit]]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _from_sqlite(dtype: str):
    if dtype == "bool":
        return bool
    if dtype == "timestamp":
        from datetime import datetime, timedelta

        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return lambda us: epoch + timedelta(microseconds=us)
    return lambda v: v
