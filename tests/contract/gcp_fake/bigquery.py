"""A fake BigQuery REST API (v2) on 127.0.0.1: datasets, tables, ``insertAll``, ``tabledata.list`` and ``jobs.query``.

It keeps state in an in-memory DuckDB database, one DuckDB table per BigQuery table (named
``project.dataset.table``), and runs the queries the platform sends on DuckDB after two rewrites:
backticked table paths become DuckDB identifiers and ``@name`` parameters become ``$name``. The
platform's queries are written in the common subset of both dialects (``UNNEST`` of repeated
records, ``IFNULL``, ``GROUP BY``), so what runs here is what BigQuery runs.

The fake refuses what BigQuery refuses (documented rules as small functions below): bad dataset, table
and field names, an unknown field or a missing REQUIRED field in ``insertAll``, more rows per request
than ``insertAll`` takes, a query on a table that does not exist. ``faults`` injects the errors a real
project answers (quota exceeded, permission denied) for the next matching calls.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

# https://cloud.google.com/bigquery/docs/datasets#dataset-naming
DATASET_ID = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
# https://cloud.google.com/bigquery/docs/tables#table_naming (letters, marks, numbers, connectors, dashes, spaces)
TABLE_ID = re.compile(r"^[\w\- ]{1,1024}$")
# https://cloud.google.com/bigquery/docs/schemas#column_names
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
# https://cloud.google.com/bigquery/quotas#streaming_inserts: at most 50,000 rows per insertAll request
MAX_INSERT_ROWS = 50_000
TYPES = {"STRING": "VARCHAR", "INTEGER": "BIGINT", "INT64": "BIGINT", "FLOAT": "DOUBLE", "FLOAT64": "DOUBLE",
         "NUMERIC": "DECIMAL(38,9)", "BOOLEAN": "BOOLEAN", "BOOL": "BOOLEAN", "TIMESTAMP": "TIMESTAMPTZ",
         "DATE": "DATE", "JSON": "VARCHAR", "BYTES": "BLOB"}
MODES = ("NULLABLE", "REQUIRED", "REPEATED")


def dataset_problems(body: dict[str, Any], project: str) -> list[str]:
    ref = body.get("datasetReference") or {}
    problems = []
    if ref.get("projectId") not in (None, project):
        problems.append(f"datasetReference.projectId {ref.get('projectId')!r} is not the project in the URL")
    if not DATASET_ID.match(str(ref.get("datasetId") or "")):
        problems.append(f"invalid dataset id {ref.get('datasetId')!r}: letters, digits and underscores, "
                        "at most 1,024 characters")
    return problems


def field_problems(fields: list[dict[str, Any]], where: str = "schema") -> list[str]:
    problems, seen = [], set()
    for f in fields:
        name = str(f.get("name") or "")
        if not FIELD_NAME.match(name):
            problems.append(f"{where}: invalid field name {name!r}")
        if name.lower() in seen:
            problems.append(f"{where}: duplicate field {name!r}")
        seen.add(name.lower())
        kind = str(f.get("type") or "").upper()
        if kind not in TYPES and kind not in ("RECORD", "STRUCT"):
            problems.append(f"{where}.{name}: unknown type {kind!r}")
        if str(f.get("mode") or "NULLABLE").upper() not in MODES:
            problems.append(f"{where}.{name}: unknown mode {f.get('mode')!r}")
        if kind in ("RECORD", "STRUCT"):
            if not f.get("fields"):
                problems.append(f"{where}.{name}: a RECORD needs fields")
            problems += field_problems(f.get("fields") or [], f"{where}.{name}")
    return problems


def table_problems(body: dict[str, Any], project: str, dataset: str) -> list[str]:
    ref = body.get("tableReference") or {}
    problems = []
    if (ref.get("projectId"), ref.get("datasetId")) != (project, dataset):
        problems.append("tableReference must name the project and dataset of the URL")
    if not TABLE_ID.match(str(ref.get("tableId") or "")):
        problems.append(f"invalid table id {ref.get('tableId')!r}")
    return problems + field_problems(((body.get("schema") or {}).get("fields")) or [])


def row_problems(row: Any, fields: list[dict[str, Any]], where: str) -> list[str]:
    """What BigQuery's ``insertAll`` says of one row's JSON (unknown fields, missing REQUIRED ones, shapes)."""
    if not isinstance(row, dict):
        return [f"{where}: a row must be a JSON object"]
    by_name = {f["name"]: f for f in fields}
    problems = [f"{where}: no such field: {k}" for k in row if k not in by_name]
    for f in fields:
        mode, value = str(f.get("mode") or "NULLABLE").upper(), row.get(f["name"])
        if value is None:
            if mode == "REQUIRED":
                problems.append(f"{where}: missing required field: {f['name']}")
            continue
        values = value if mode == "REPEATED" else [value]
        if mode == "REPEATED" and not isinstance(value, list):
            problems.append(f"{where}.{f['name']}: a REPEATED field takes an array")
            continue
        if str(f.get("type")).upper() in ("RECORD", "STRUCT"):
            for i, v in enumerate(values):
                problems += row_problems(v, f["fields"], f"{where}.{f['name']}[{i}]")
    return problems


def _ddl(f: dict[str, Any]) -> str:
    kind = str(f["type"]).upper()
    if kind in ("RECORD", "STRUCT"):
        base = "STRUCT(" + ", ".join(f'"{c["name"]}" {_ddl(c)}' for c in f["fields"]) + ")"
    else:
        base = TYPES[kind]
    return base + ("[]" if str(f.get("mode") or "").upper() == "REPEATED" else "")


def _to_duck(value: Any, f: dict[str, Any]) -> Any:
    if value is None:
        return None
    if str(f.get("mode") or "").upper() == "REPEATED":
        return [_to_duck(v, {**f, "mode": "NULLABLE"}) for v in value]
    kind = str(f["type"]).upper()
    if kind in ("RECORD", "STRUCT"):
        return {c["name"]: _to_duck(value.get(c["name"]), c) for c in f["fields"]}
    if kind == "TIMESTAMP":
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00").replace(" UTC", "+00:00"))
    if kind == "JSON" and not isinstance(value, str):
        return json.dumps(value)
    return value


def _bq_type(t: Any) -> dict[str, Any]:
    """A BigQuery schema field for a DuckDB result type."""
    tid = t.id
    if tid == "list":
        return {**_bq_type(t.child), "mode": "REPEATED"}
    if tid == "struct":
        return {"type": "RECORD", "mode": "NULLABLE",
                "fields": [{"name": n, **_bq_type(c)} for n, c in t.children]}
    name = {"varchar": "STRING", "bigint": "INTEGER", "integer": "INTEGER", "hugeint": "INTEGER",
            "smallint": "INTEGER", "double": "FLOAT", "float": "FLOAT", "decimal": "NUMERIC", "boolean": "BOOLEAN",
            "timestamp with time zone": "TIMESTAMP", "timestamp": "TIMESTAMP", "date": "DATE", "blob": "BYTES"}
    return {"type": name.get(tid, "STRING"), "mode": "NULLABLE"}


def _cell(value: Any, f: dict[str, Any], int64_ts: bool) -> Any:
    if value is None:
        return None
    if f.get("mode") == "REPEATED":
        return [{"v": _cell(v, {**f, "mode": "NULLABLE"}, int64_ts)} for v in value]
    if f["type"] == "RECORD":
        return {"f": [{"v": _cell(value.get(c["name"]), c, int64_ts)} for c in f["fields"]]}
    if f["type"] == "TIMESTAMP":
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        micros = round(value.timestamp() * 1_000_000)
        return str(micros) if int64_ts else f"{micros / 1_000_000:.6f}"
    if f["type"] == "BOOLEAN":
        return "true" if value else "false"
    if isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def _param(p: dict[str, Any]) -> Any:
    kind = str(((p.get("parameterType") or {}).get("type")) or "STRING").upper()
    value = (p.get("parameterValue") or {}).get("value")
    if value is None:
        return None
    if kind in ("INT64", "INTEGER"):
        return int(value)
    if kind in ("FLOAT64", "FLOAT", "NUMERIC"):
        return float(value)
    if kind in ("BOOL", "BOOLEAN"):
        return str(value).lower() == "true"
    if kind == "TIMESTAMP":
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00").replace(" UTC", "+00:00"))
    return value


def translate(sql: str) -> str:
    """BigQuery standard SQL of the platform's subset → DuckDB: `p.d.t` → "p.d.t", @name → $name."""
    out = re.sub(r"`([^`]+)`", lambda m: '"' + m.group(1) + '"', sql)
    return re.sub(r"@([A-Za-z_]\w*)", r"$\1", out)


@dataclass
class Fault:
    path_contains: str
    status: int
    reason: str
    message: str
    remaining: int


@dataclass
class FakeBigQuery:
    """The fake's state; ``app`` serves it."""

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # "p.d.t" -> table resource
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)  # "p.d" -> dataset resource
    faults: list[Fault] = field(default_factory=list)
    insert_ids: dict[str, set[str]] = field(default_factory=dict)  # table -> insertIds seen (best-effort dedup)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)  # (method, path, body)
    problems: list[str] = field(default_factory=list)  # every refusal, for tests to read

    def __post_init__(self) -> None:
        import duckdb

        self.db = duckdb.connect()
        self.lock = threading.Lock()

    # --- direct set-up (what Vertex or Cloud Billing would write) --------------------------------

    def create_table(self, project: str, dataset: str, table: str, fields: list[dict[str, Any]]) -> None:
        self.datasets.setdefault(f"{project}.{dataset}", {"datasetReference": {"projectId": project,
                                                                               "datasetId": dataset}})
        body = {"tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
                "schema": {"fields": fields}}
        problems = table_problems(body, project, dataset)
        if problems:
            raise ValueError("; ".join(problems))
        self._create(f"{project}.{dataset}.{table}", body)

    def _create(self, key: str, body: dict[str, Any]) -> None:
        fields = body["schema"]["fields"]
        with self.lock:
            self.db.execute(f'CREATE TABLE "{key}" (' + ", ".join(f'"{f["name"]}" {_ddl(f)}' for f in fields) + ")")
            self.tables[key] = {**body, "kind": "bigquery#table", "id": key.replace(".", ":", 1),
                                "creationTime": str(int(time.time() * 1000))}

    def insert(self, key: str, rows: list[dict[str, Any]]) -> None:
        fields = self.tables[key]["schema"]["fields"]
        names = [f["name"] for f in fields]
        values = [[_to_duck(r.get(f["name"]), f) for f in fields] for r in rows]
        with self.lock:
            self.db.executemany(f'INSERT INTO "{key}" (' + ", ".join(f'"{n}"' for n in names) + ") VALUES ("
                                + ", ".join("?" * len(names)) + ")", values)

    def reset(self) -> None:
        with self.lock:
            for key in list(self.tables):
                self.db.execute(f'DROP TABLE "{key}"')
        for store in (self.tables, self.datasets, self.insert_ids):
            store.clear()
        self.faults.clear()
        self.requests.clear()
        self.problems.clear()

    def fail(self, path_contains: str, status: int, reason: str, message: str, times: int = 1) -> None:
        """The next ``times`` requests whose path contains ``path_contains`` answer this error."""
        self.faults.append(Fault(path_contains, status, reason, message, times))

    def query(self, sql: str, params: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[tuple]]:
        tables = set(re.findall(r"`([^`.]+\.[^`.]+\.[^`.]+)`", sql))  # project.dataset.table; other backticks: columns
        missing = sorted(t for t in tables if t not in self.tables)
        if missing:
            raise LookupError(f"Not found: Table {missing[0]} was not found")
        with self.lock:
            rel = self.db.sql(translate(sql), params=params or None)
            names, types, rows = rel.columns, rel.types, rel.fetchall()
        schema = [{"name": n, **_bq_type(t)} for n, t in zip(names, types)]
        return schema, rows

    # --- the REST app ---------------------------------------------------------------------------------

    @property
    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        base = "/bigquery/v2/projects/{project}"

        def error(status: int, reason: str, message: str) -> JSONResponse:
            self.problems.append(message)
            grpc = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS",
                    429: "RESOURCE_EXHAUSTED"}.get(status, "UNKNOWN")
            return JSONResponse({"error": {"code": status, "message": message, "status": grpc,
                                           "errors": [{"reason": reason, "message": message, "domain": "global"}]}},
                                status_code=status)

        async def body_of(request: Request) -> Any:
            raw = await request.body()
            body = json.loads(raw) if raw else {}
            self.requests.append((request.method, request.url.path, body))
            for fault in self.faults:
                if fault.remaining > 0 and fault.path_contains in request.url.path:
                    fault.remaining -= 1
                    raise _Refused(fault.status, fault.reason, fault.message)
            return body

        def handler(fn: Any) -> Any:
            async def wrapped(request: Request) -> Any:
                try:
                    body = await body_of(request)
                    return await fn(request, body, **request.path_params)
                except _Refused as r:
                    return error(r.status, r.reason, r.message)
            return wrapped

        async def datasets(request: Request, body: Any, project: str) -> Any:
            problems = dataset_problems(body, project)
            if problems:
                return error(400, "invalid", "; ".join(problems))
            key = f"{project}.{body['datasetReference']['datasetId']}"
            if key in self.datasets:
                return error(409, "duplicate", f"Already Exists: Dataset {project}:{key.split('.', 1)[1]}")
            self.datasets[key] = {**body, "kind": "bigquery#dataset", "id": key.replace(".", ":")}
            return JSONResponse(self.datasets[key])

        async def dataset(request: Request, body: Any, project: str, dataset: str) -> Any:
            found = self.datasets.get(f"{project}.{dataset}")
            return JSONResponse(found) if found else error(404, "notFound", f"Not found: Dataset {project}:{dataset}")

        async def tables(request: Request, body: Any, project: str, dataset: str) -> Any:
            if f"{project}.{dataset}" not in self.datasets:
                return error(404, "notFound", f"Not found: Dataset {project}:{dataset}")
            problems = table_problems(body, project, dataset)
            if problems:
                return error(400, "invalid", "; ".join(problems))
            key = f"{project}.{dataset}.{body['tableReference']['tableId']}"
            if key in self.tables:
                return error(409, "duplicate", f"Already Exists: Table {key}")
            self._create(key, body)
            return JSONResponse(self.tables[key])

        async def table(request: Request, body: Any, project: str, dataset: str, table: str) -> Any:
            found = self.tables.get(f"{project}.{dataset}.{table}")
            return JSONResponse(found) if found else error(404, "notFound", f"Not found: Table {project}:{dataset}.{table}")

        async def patch_table(request: Request, body: Any, project: str, dataset: str, table: str) -> Any:
            key = f"{project}.{dataset}.{table}"
            if key not in self.tables:
                return error(404, "notFound", f"Not found: Table {project}:{dataset}.{table}")
            old = self.tables[key]["schema"]["fields"]
            new = ((body.get("schema") or {}).get("fields")) or old
            problems = field_problems(new)
            kept = [f["name"] for f in new[:len(old)]]
            if kept != [f["name"] for f in old]:
                problems.append("a schema update may only add columns at the end (existing columns are kept)")
            if any(str(f.get("mode") or "NULLABLE").upper() == "REQUIRED" for f in new[len(old):]):
                problems.append("added columns must be NULLABLE or REPEATED")
            if problems:
                return error(400, "invalid", "; ".join(problems))
            with self.lock:
                for f in new[len(old):]:
                    self.db.execute(f'ALTER TABLE "{key}" ADD COLUMN "{f["name"]}" {_ddl(f)}')
            self.tables[key]["schema"]["fields"] = new
            if "labels" in body:
                self.tables[key]["labels"] = body["labels"]
            return JSONResponse(self.tables[key])

        async def insert_all(request: Request, body: Any, project: str, dataset: str, table: str) -> Any:
            key = f"{project}.{dataset}.{table}"
            if key not in self.tables:
                return error(404, "notFound", f"Not found: Table {project}:{dataset}.{table}")
            rows = body.get("rows") or []
            if len(rows) > MAX_INSERT_ROWS:
                return error(400, "invalid", f"too many rows present in the request: {len(rows)} > {MAX_INSERT_ROWS}")
            fields = self.tables[key]["schema"]["fields"]
            errors = []
            for i, r in enumerate(rows):
                problems = row_problems((r or {}).get("json"), fields, f"rows[{i}]")
                if problems and not (body.get("ignoreUnknownValues")
                                     and all("no such field" in p for p in problems)):
                    errors.append({"index": i, "errors": [{"reason": "invalid", "message": p} for p in problems]})
            if errors:  # BigQuery writes none of the rows of a request with an invalid one (skipInvalidRows false)
                self.problems.extend(e["message"] for err in errors for e in err["errors"])
                return JSONResponse({"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": errors})
            names = {f["name"] for f in fields}
            # https://cloud.google.com/bigquery/docs/streaming-data-into-bigquery#dataconsistency: a row whose
            # insertId was seen recently is dropped as a duplicate
            seen = self.insert_ids.setdefault(key, set())
            fresh = [r for r in rows if not r.get("insertId") or r["insertId"] not in seen]
            seen.update(r["insertId"] for r in rows if r.get("insertId"))
            if fresh:
                self.insert(key, [{k: v for k, v in r["json"].items() if k in names} for r in fresh])
            return JSONResponse({"kind": "bigquery#tableDataInsertAllResponse"})

        async def table_data(request: Request, body: Any, project: str, dataset: str, table: str) -> Any:
            key = f"{project}.{dataset}.{table}"
            if key not in self.tables:
                return error(404, "notFound", f"Not found: Table {project}:{dataset}.{table}")
            fields = self.tables[key]["schema"]["fields"]
            with self.lock:
                rows = self.db.execute(f'SELECT * FROM "{key}"').fetchall()
            int64 = request.query_params.get("formatOptions.useInt64Timestamp") == "true"
            return JSONResponse({"kind": "bigquery#tableDataList", "totalRows": str(len(rows)),
                                 "rows": [{"f": [{"v": _cell(v, f, int64)} for v, f in zip(r, fields)]} for r in rows]})

        async def queries(request: Request, body: Any, project: str) -> Any:
            if body.get("useLegacySql"):
                return error(400, "invalid", "the platform's queries are standard SQL (useLegacySql false)")
            sql = str(body.get("query") or "")
            params = {p["name"]: _param(p) for p in body.get("queryParameters") or []}
            try:
                schema, rows = self.query(sql, params)
            except LookupError as e:
                return error(404, "notFound", str(e))
            except Exception as e:  # noqa: BLE001 - DuckDB's own error, reported as BigQuery reports bad SQL
                return error(400, "invalidQuery", f"{type(e).__name__}: {e}")
            int64 = bool((body.get("formatOptions") or {}).get("useInt64Timestamp"))
            job = {"projectId": project, "jobId": f"job_{uuid.uuid4().hex}", "location": body.get("location") or "US"}
            return JSONResponse({"kind": "bigquery#queryResponse", "jobReference": job, "jobComplete": True,
                                 "schema": {"fields": schema}, "totalRows": str(len(rows)), "cacheHit": False,
                                 "rows": [{"f": [{"v": _cell(v, f, int64)} for v, f in zip(r, schema)]} for r in rows]})

        return Starlette(routes=[
            Route(base + "/datasets", handler(datasets), methods=["POST"]),
            Route(base + "/datasets/{dataset}", handler(dataset), methods=["GET"]),
            Route(base + "/datasets/{dataset}/tables", handler(tables), methods=["POST"]),
            Route(base + "/datasets/{dataset}/tables/{table}", handler(table), methods=["GET"]),
            Route(base + "/datasets/{dataset}/tables/{table}", handler(patch_table), methods=["PATCH", "PUT"]),
            Route(base + "/datasets/{dataset}/tables/{table}/insertAll", handler(insert_all), methods=["POST"]),
            Route(base + "/datasets/{dataset}/tables/{table}/data", handler(table_data), methods=["GET"]),
            Route(base + "/queries", handler(queries), methods=["POST"]),
        ])


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class Served:
    """An ASGI app served by uvicorn in a thread on 127.0.0.1 (an ephemeral port); ``stop()`` ends it."""

    def __init__(self, app: Any):
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the fake BigQuery server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


# The documented schema of the table Vertex AI writes for an endpoint's request-response logging.
# https://cloud.google.com/vertex-ai/docs/predictions/online-prediction-logging#request-response_logging
REQUEST_RESPONSE_LOG_SCHEMA: list[dict[str, Any]] = [
    {"name": "endpoint", "type": "STRING", "mode": "NULLABLE"},
    {"name": "deployed_model_id", "type": "STRING", "mode": "NULLABLE"},
    {"name": "logging_time", "type": "TIMESTAMP", "mode": "NULLABLE"},
    {"name": "request_id", "type": "NUMERIC", "mode": "NULLABLE"},
    {"name": "request_payload", "type": "STRING", "mode": "REPEATED"},
    {"name": "response_payload", "type": "STRING", "mode": "REPEATED"},
]

# The columns of Cloud Billing's standard usage cost export the platform reads (the export has more).
# https://cloud.google.com/billing/docs/how-to/export-data-bigquery-tables/standard-usage
BILLING_EXPORT_SCHEMA: list[dict[str, Any]] = [
    {"name": "billing_account_id", "type": "STRING", "mode": "NULLABLE"},
    {"name": "service", "type": "RECORD", "mode": "NULLABLE",
     "fields": [{"name": "id", "type": "STRING"}, {"name": "description", "type": "STRING"}]},
    {"name": "project", "type": "RECORD", "mode": "NULLABLE",
     "fields": [{"name": "id", "type": "STRING"}, {"name": "name", "type": "STRING"}]},
    {"name": "labels", "type": "RECORD", "mode": "REPEATED",
     "fields": [{"name": "key", "type": "STRING"}, {"name": "value", "type": "STRING"}]},
    {"name": "usage_start_time", "type": "TIMESTAMP", "mode": "NULLABLE"},
    {"name": "usage_end_time", "type": "TIMESTAMP", "mode": "NULLABLE"},
    {"name": "cost", "type": "FLOAT", "mode": "NULLABLE"},
    {"name": "currency", "type": "STRING", "mode": "NULLABLE"},
    {"name": "credits", "type": "RECORD", "mode": "REPEATED",
     "fields": [{"name": "name", "type": "STRING"}, {"name": "amount", "type": "FLOAT"}]},
]


@pytest.fixture(scope="session")
def bigquery_server() -> Iterator[tuple[FakeBigQuery, Served]]:
    fake = FakeBigQuery()
    served = Served(fake.app)
    try:
        yield fake, served
    finally:
        served.stop()


@pytest.fixture
def bigquery_fake(bigquery_server: tuple[FakeBigQuery, Served], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBigQuery]:
    """The fake BigQuery, emptied, with ``MLPLAT_GCP_BIGQUERY_ENDPOINT`` pointing the runtime at it."""
    fake, served = bigquery_server
    fake.reset()
    monkeypatch.setenv("MLPLAT_GCP_BIGQUERY_ENDPOINT", served.url)
    yield fake
    fake.reset()
