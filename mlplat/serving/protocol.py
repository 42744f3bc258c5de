"""Request protocols: MLflow scoring payloads and Open Inference Protocol v2, parsed into numpy.

The hot path never builds a pandas DataFrame: a payload whose columns are all
numeric becomes one ``(rows, columns)`` float/int array in signature order, checked
by numpy's own type inference; only when that fails do we walk the values to name
the offending one. Columns of strings or mixed types fall back to per-column lists,
and the predictor builds a DataFrame for them.

Every problem with a request raises :class:`RequestError` carrying an HTTP status
(400 malformed, 413 too large, 422 does not match the signature) and a message
that names the column/row/field. Nothing here raises anything else on bad input.

What is refused, beyond the signature: JSON nested deeper than
:data:`~mlplat.serving.jsonlimit.MAX_DEPTH` levels or with a repeated object key
(400); a repeated column or tensor name (400); ``NaN``, ``Infinity`` and numbers
outside the column's range (``1e400``, ``1e39`` for a float32 column, 100000 for
INT8, -1 for UINT64) (422); ``true``/``false`` where a number is expected (422);
tensor ``data`` nested in a shape other than ``shape`` (422). ``null`` is how a
client sends a missing value, and only optional columns accept it.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mlplat.serving import jsonlimit

SCORING_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
NUMERIC_TYPES = {"double": np.float64, "float": np.float32, "long": np.int64, "integer": np.int32}
INTEGRAL_TYPES = ("long", "integer")
COLUMN_TYPES = ("double", "float", "long", "integer", "boolean", "string", "binary", "datetime")

V2_DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}
NUMPY_TO_V2 = {np.dtype(v).name: k for k, v in V2_DTYPES.items() if k != "BYTES"}
# numpy's own limit on dimensions; larger ranks cannot even be reshaped
MAX_RANK = 64
# integer column types and their ranges (a JSON integer has no bound of its own)
INT_RANGES = {"integer": (-(2 ** 31), 2 ** 31 - 1), "long": (-(2 ** 63), 2 ** 63 - 1)}


class RequestError(Exception):
    """A request the server refuses: ``status`` is the HTTP status (always 4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status

    def body(self, request_id: str | None = None, *, v2: bool = False) -> dict[str, Any]:
        """The JSON error body: MLflow's ``{error_code, message}``; on Open Inference Protocol
        routes (``v2``) also ``error``, the one key that protocol's clients read."""
        code = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 408: "REQUEST_TIMEOUT",
                413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 422: "INVALID_INPUT"}.get(self.status,
                                                                                                  "BAD_REQUEST")
        out: dict[str, Any] = {"error": self.message} if v2 else {}
        out.update({"error_code": code, "message": self.message})
        if request_id:
            out["request_id"] = request_id
        return out


# --- signatures -------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = True


@dataclass(frozen=True)
class TensorSpec:
    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    """The input part of an MLflow model signature: named columns, or one tensor, or nothing."""

    columns: tuple[Column, ...] = ()
    tensor: TensorSpec | None = None

    # derived once per signature (cached_property writes the instance dict, which frozen allows):
    # every request asks them

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @cached_property
    def numeric(self) -> bool:
        """Every column is numeric: inputs become one 2-D array."""
        return bool(self.columns) and all(c.type in NUMERIC_TYPES for c in self.columns)

    @cached_property
    def loose(self) -> bool:
        """Column names without types (``any``): training columns of a model logged without a signature."""
        return bool(self.columns) and all(c.type == "any" for c in self.columns)

    @cached_property
    def integral(self) -> bool:
        return any(c.type in INTEGRAL_TYPES for c in self.columns)

    @cached_property
    def float32(self) -> bool:
        return any(c.type == "float" for c in self.columns)

    @cached_property
    def dtype(self) -> np.dtype:
        """The array dtype of a numeric signature (float64 unless every column is integral)."""
        if self.columns and all(c.type in INTEGRAL_TYPES for c in self.columns):
            return np.dtype(np.int64)
        if self.columns and all(c.type == "float" for c in self.columns):
            return np.dtype(np.float32)
        return np.dtype(np.float64)

    def describe(self) -> list[dict[str, Any]]:
        if self.tensor is not None:
            return [{"name": "input", "datatype": NUMPY_TO_V2.get(self.tensor.dtype.name, "BYTES"),
                     "shape": list(self.tensor.shape)}]
        return [{"name": c.name, "datatype": _column_v2(c.type), "shape": [-1]} for c in self.columns]

    @classmethod
    def from_mlmodel(cls, mlmodel: dict[str, Any]) -> Signature:
        raw = (mlmodel.get("signature") or {}).get("inputs")
        if not raw:
            return cls()
        spec = json.loads(raw) if isinstance(raw, str) else raw
        if spec and all(item.get("type") == "tensor" for item in spec):
            if len(spec) != 1:  # several named tensors: validate shapes per tensor later, keep it simple
                return cls()
            t = spec[0]["tensor-spec"]
            return cls(tensor=TensorSpec(np.dtype(t["dtype"]), tuple(int(d) for d in t["shape"])))
        columns = []
        for item in spec:
            if "name" not in item:
                return cls()  # unnamed column signature: accept positional rows without checks
            kind = item.get("type")
            columns.append(Column(item["name"], kind if kind in COLUMN_TYPES else "any", item.get("required", True)))
        return cls(columns=tuple(columns))

    @classmethod
    def from_model_dir(cls, model_dir: Path | str) -> Signature:
        import yaml

        path = Path(model_dir) / "MLmodel"
        return cls.from_mlmodel(yaml.safe_load(path.read_text()) or {})


def _column_v2(kind: str) -> str:
    return {"double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32", "boolean": "BOOL"}.get(kind, "BYTES")


# --- parsed inputs --------------------------------------------------------------------------


@dataclass
class Inputs:
    """A parsed request: ``array`` (numeric columns or a tensor) or ``frame`` (column → values)."""

    rows: int
    columns: tuple[str, ...] | None = None
    array: np.ndarray | None = None
    frame: dict[str, list[Any]] | None = None
    request_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]] | list[Any]:
        """JSON-ready rows for data capture: ``{feature: value}`` per row (lists for tensors)."""
        if self.frame is not None:
            names = list(self.frame)
            return [{n: _jsonable(self.frame[n][i]) for n in names} for i in range(self.rows)]
        assert self.array is not None
        if self.columns and self.array.ndim == 2:
            names = self.columns
            return [dict(zip(names, row)) for row in self.array.tolist()]
        return self.array.tolist()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def loads(body: bytes) -> Any:
    """Decode a request body within :mod:`~mlplat.serving.jsonlimit`'s limits, or ``RequestError(400)``."""
    if not body:
        raise RequestError("request body is empty; send a JSON object such as "
                           '{"dataframe_split": {"columns": [...], "data": [[...]]}}')
    try:
        return jsonlimit.loads(body)
    except jsonlimit.JSONLimitError as exc:
        raise RequestError(f"request body refused: {exc.message}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits in an integer
        raise RequestError(f"request body is not valid JSON: {exc}") from None


def may_hold_bools(body: Any) -> bool:
    """Whether a payload may hold ``true``/``false`` (decoded payloads: always assume so)."""
    if isinstance(body, (bytes, bytearray)):
        return b"true" in body or b"false" in body
    return True


# --- MLflow scoring format ----------------------------------------------------------------


def parse_scoring(body: bytes | Any, signature: Signature) -> Inputs:
    """Parse an MLflow ``/invocations`` JSON payload (bytes or already-decoded JSON)."""
    payload = loads(body) if isinstance(body, (bytes, bytearray)) else body
    bools = may_hold_bools(body)
    if not isinstance(payload, dict):
        raise RequestError(f"the JSON body must be an object with one of the keys {', '.join(SCORING_KEYS)}; "
                           f"got {type(payload).__name__}")
    present = [k for k in SCORING_KEYS if k in payload]
    if len(present) != 1:
        unknown = sorted(set(payload) - set(SCORING_KEYS) - {"params"})
        extra = f" (unknown keys: {', '.join(unknown)})" if unknown else ""
        what = "none" if not present else "several: " + ", ".join(present)
        raise RequestError(f"the JSON body must have exactly one of {', '.join(SCORING_KEYS)}; found {what}{extra}")
    key = present[0]
    data = payload[key]
    if key == "dataframe_split":
        if not isinstance(data, dict) or "data" not in data:
            raise RequestError('dataframe_split must be an object {"columns": [...], "data": [[...], ...]}')
        columns = data.get("columns")
        rows = data["data"]
        if not isinstance(rows, list):
            raise RequestError("dataframe_split.data must be a list of rows")
        if columns is None:
            return _from_rows(rows, signature, where="dataframe_split.data", bools=bools)
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise RequestError("dataframe_split.columns must be a list of column names")
        return _from_split(columns, rows, signature, bools=bools)
    if key == "dataframe_records":
        return _from_records(data, signature, where="dataframe_records", bools=bools)
    if key == "instances":
        if not isinstance(data, list):
            raise RequestError("instances must be a list of rows or of {column: value} objects")
        if data and all(isinstance(r, dict) for r in data):
            return _from_records(data, signature, where="instances", bools=bools)
        return _from_rows(data, signature, where="instances", bools=bools)
    # inputs: {column: values} or a list of rows / a tensor
    if isinstance(data, dict):
        return _from_columnar(data, signature, where="inputs", bools=bools)
    if isinstance(data, list):
        if data and all(isinstance(r, dict) for r in data):
            return _from_records(data, signature, where="inputs", bools=bools)
        return _from_rows(data, signature, where="inputs", bools=bools)
    raise RequestError("inputs must be a {column: values} object or a list")


def _check_unique(names: Sequence[str], where: str) -> None:
    if len(set(names)) == len(names):
        return
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            raise RequestError(f"{where} names column '{name}' twice (positions {first[name]} and {i}); "
                               "each column may appear once")
        first[name] = i


def _from_split(columns: list[str], rows: list[Any], sig: Signature, *, bools: bool) -> Inputs:
    if not rows:
        raise RequestError("dataframe_split.data has no rows")
    _check_unique(columns, "dataframe_split.columns")
    width = len(columns)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise RequestError(f"dataframe_split.data row {i} has {got}; expected {width} (one per column)")
    if not sig.columns:
        return _unsigned(columns, rows, "dataframe_split.data")
    if tuple(columns) != sig.names:
        position = {c: i for i, c in enumerate(columns)}
        _check_columns(sig, position, "dataframe_split.columns")
        idx = [position.get(c.name) for c in sig.columns]
        rows = [[row[i] if i is not None else None for i in idx] for row in rows]
    return _typed(rows, sig, "dataframe_split.data", bools=bools)


def _from_records(records: Any, sig: Signature, *, where: str, bools: bool) -> Inputs:
    # a key repeated inside one record was refused by loads(): the JSON decoder would keep the last one
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise RequestError(f"{where} must be a list of {{column: value}} objects")
    if not records:
        raise RequestError(f"{where} has no rows")
    if not sig.columns:
        names = list(records[0])
        rows = []
        for i, rec in enumerate(records):
            if set(rec) != set(names):
                raise RequestError(f"{where}[{i}] has columns {sorted(rec)}; expected {sorted(names)} like row 0")
            rows.append([rec[n] for n in names])
        return _unsigned(names, rows, where)
    names = sig.names
    try:
        rows = [[rec[n] for n in names] for rec in records]
    except KeyError:
        rows = []
        for i, rec in enumerate(records):
            missing = [c.name for c in sig.columns if c.name not in rec and c.required]
            if missing:
                raise RequestError(f"{where}[{i}] is missing column(s) {', '.join(missing)}; "
                                   f"the model expects {', '.join(names)}", 422) from None
            rows.append([rec.get(n) for n in names])
    return _typed(rows, sig, where, bools=bools)


def _from_columnar(data: dict[str, Any], sig: Signature, *, where: str, bools: bool) -> Inputs:
    if not data:
        raise RequestError(f"{where} is empty")
    values = {k: (v if isinstance(v, list) else [v]) for k, v in data.items()}
    lengths = {len(v) for v in values.values()}
    if len(lengths) != 1:
        raise RequestError(f"{where}: columns have different lengths {sorted(lengths)}")
    n = lengths.pop()
    if n == 0:
        raise RequestError(f"{where} has no rows")
    if not sig.columns:
        names = list(values)
        return _unsigned(names, [list(r) for r in zip(*(values[c] for c in names))], where)
    _check_columns(sig, values, where)
    rows = [list(r) for r in zip(*(values.get(c.name, [None] * n) for c in sig.columns))]
    return _typed(rows, sig, where, bools=bools)


def _from_rows(rows: Any, sig: Signature, *, where: str, bools: bool) -> Inputs:
    if not isinstance(rows, list) or not rows:
        raise RequestError(f"{where} must be a non-empty list")
    if sig.tensor is not None:
        return _tensor(rows, sig.tensor, where, bools=bools)
    if sig.columns:
        width = len(sig.columns)
        if width == 1 and not isinstance(rows[0], list):
            rows = [[v] for v in rows]
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                got = f"{len(row)} values" if isinstance(row, list) else f"a {type(row).__name__}"
                raise RequestError(f"{where}[{i}] has {got}; the model expects {width} values per row "
                                   f"({', '.join(sig.names)})", 422)
        return _typed(rows, sig, where, bools=bools)
    array = _asarray(rows, where)
    if array.dtype.kind == "O":
        _check_scalars(array.reshape(-1).tolist() if array.ndim else [array.item()], where)
    _check_finite_tensor(array, where)
    return Inputs(rows=int(array.shape[0]) if array.ndim else 1, array=array)


def _check_columns(sig: Signature, present: Any, where: str) -> None:
    missing = [c.name for c in sig.columns if c.required and c.name not in present]
    if missing:
        raise RequestError(f"{where} is missing column(s) {', '.join(missing)}; the model expects "
                           f"{', '.join(sig.names)}", 422)


def _asarray(rows: Any, where: str, dtype: Any = None) -> np.ndarray:
    try:
        return np.asarray(rows, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise RequestError(f"{where} is not a rectangular array: {exc}", 422) from None


def _typed(rows: list[list[Any]], sig: Signature, where: str, *, bools: bool) -> Inputs:
    """Rows in signature order → a typed array (numeric signature) or per-column lists.

    numpy infers the array in one C call; it turns ``true`` into 1.0 silently, so a body that
    may hold booleans takes the per-value path, which names the offending value."""
    loose = sig.loose  # training column names known, types not
    if (sig.numeric and not bools) or loose:
        try:
            array = np.asarray(rows)
        except (ValueError, TypeError, OverflowError):
            array = None
        if array is not None and array.ndim == 2 and array.dtype.kind in "fiu" and array.shape[1] == len(sig.columns):
            if loose:
                _check_finite_columns(array, sig, where)
                return Inputs(rows=array.shape[0], columns=sig.names, array=array)
            return _finish_numeric(array, sig, where)
    # per value: names the offending value, and lets optional columns take null
    columns = _validate_values(rows, sig, where)
    if not sig.numeric:
        return Inputs(rows=len(rows), columns=sig.names, frame=columns)
    dtype = sig.dtype
    if dtype.kind in "iu" and any(v is None for c in sig.columns if not c.required for v in columns[c.name]):
        dtype = np.dtype(np.float64)  # a missing whole number is NaN, which only a float holds
    array = np.empty((len(rows), len(sig.columns)), dtype=dtype)
    for j, column in enumerate(sig.columns):
        array[:, j] = [math.nan if v is None else v for v in columns[column.name]]
    return _finish_numeric(array, sig, where, nulls=True)


def _finish_numeric(array: np.ndarray, sig: Signature, where: str, *, nulls: bool = False) -> Inputs:
    """A numeric 2-D array in signature order → checked and cast to the signature's dtype.

    ``nulls``: NaN stands for null in an optional column (already checked per value)."""
    if not nulls and array.dtype.kind == "f":
        _check_finite_columns(array, sig, where)
    if sig.integral:
        _check_integer_columns(array, sig, where)
    if array.dtype.itemsize > 4 and sig.float32:
        _check_float32_columns(array, sig, where)
    target = sig.dtype
    if array.dtype != target and not (nulls and target.kind in "iu"):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below, by value
            cast = array.astype(target)
        if target.kind == "f":  # a finite float64 beyond float32's range becomes inf
            overflow = np.isfinite(array) & ~np.isfinite(cast)
            if overflow.any():
                row, col = (int(i) for i in np.argwhere(overflow)[0])
                column = sig.columns[col]
                raise RequestError(f"{where}: column '{column.name}' expects {column.type}, got "
                                   f"{array[row, col]!r} in row {row}, outside the range of {column.type}", 422)
        array = cast
    return Inputs(rows=array.shape[0], columns=sig.names, array=array)


def _check_finite_columns(array: np.ndarray, sig: Signature, where: str) -> None:
    if array.dtype.kind != "f":
        return
    bad = ~np.isfinite(array)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        column = sig.columns[col]
        kind = "number" if column.type == "any" else column.type
        raise RequestError(f"{where}: column '{column.name}' expects a finite {kind}, got {_show(array[row, col])} "
                           f"in row {row} (NaN, Infinity and numbers beyond the type's range are refused"
                           f"{'; send null for a missing value' if not column.required else ''})", 422)


def _check_float32_columns(array: np.ndarray, sig: Signature, where: str) -> None:
    limit = float(np.finfo(np.float32).max)
    for j, column in enumerate(sig.columns):
        if column.type == "float":
            col = array[:, j]
            bad = np.abs(col) > limit  # NaN compares False: nulls in optional columns pass
            if bad.any():
                row = int(np.argmax(bad))
                raise RequestError(f"{where}: column '{column.name}' expects float, got {_show(col[row])} in row "
                                   f"{row}, outside the range of float", 422)


def _check_integer_columns(array: np.ndarray, sig: Signature, where: str) -> None:
    for j, column in enumerate(sig.columns):
        if column.type not in INTEGRAL_TYPES:
            continue
        col = array[:, j]
        lo, hi = INT_RANGES[column.type]
        if col.dtype.kind == "f":
            known = ~np.isnan(col)  # NaN here is a null in an optional column; finite checks came first
            bad = known & ((col != np.floor(col)) | (col < lo) | (col >= float(hi + 1)))
        elif col.dtype.kind == "u":
            bad = col > hi
        else:
            bad = (col < lo) | (col > hi)
        if bad.any():
            row = int(np.argmax(bad))
            raise RequestError(f"{where}: column '{column.name}' expects {column.type} (a whole number from {lo} "
                               f"to {hi}), got {_show(col[row])} in row {row}", 422)


def _show(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return repr(value)
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def _validate_values(rows: list[list[Any]], sig: Signature, where: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {c.name: [] for c in sig.columns}
    for i, row in enumerate(rows):
        for column, value in zip(sig.columns, row):
            out[column.name].append(_check_value(value, column, i, where))
    return out


def _check_value(value: Any, column: Column, row: int, where: str) -> Any:
    """``value`` if it fits ``column``; ``None`` for a null in an optional column; else ``RequestError(422)``."""
    kind = column.type
    if value is None:
        if column.required:
            raise RequestError(f"{where}: column '{column.name}' is required but row {row} has null", 422)
        return None
    ok: bool
    why = ""
    if kind in ("double", "float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            finite = _finite(value)
            limit = float(np.finfo(np.float32).max) if kind == "float" else math.inf
            ok = finite is not None and abs(finite) <= limit
            why = " (NaN, Infinity and numbers beyond the type's range are refused)"
    elif kind in INTEGRAL_TYPES:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
        lo, hi = INT_RANGES[kind]
        if ok and not lo <= value <= hi:
            ok, why = False, f" (a whole number from {lo} to {hi})"
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind in ("string", "datetime", "binary"):
        ok = isinstance(value, str)
    else:  # "any": a scalar numpy and pandas can hold
        ok = _scalar(value)
        why = " (a finite number, a string or a boolean)"
    if not ok:
        expected = "a value" if kind == "any" else kind
        raise RequestError(f"{where}: column '{column.name}' expects {expected}{why}, got {type(value).__name__} "
                           f"{_show(value)} in row {row}", 422)
    return value


def _finite(value: int | float) -> float | None:
    """``float(value)`` when it is a finite number, else ``None`` (JSON integers have no size limit)."""
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if math.isfinite(out) else None


def _scalar(value: Any) -> bool:
    if isinstance(value, (str, bool)) or value is None:
        return True
    if isinstance(value, int):
        return -(2 ** 63) <= value < 2 ** 64
    if isinstance(value, float):
        return math.isfinite(value)
    return False


def _check_scalars(values: list[Any], where: str, name: str | None = None) -> None:
    for i, value in enumerate(values):
        if not _scalar(value):
            what = f"column '{name}' row {i}" if name is not None else f"value {i}"
            raise RequestError(f"{where}: {what} is {type(value).__name__} {_show(value)}; send a finite number, a "
                               "string, a boolean or null", 422)


def _unsigned(names: Sequence[str], rows: list[list[Any]], where: str) -> Inputs:
    """No signature: numeric payloads become an array, anything else per-column lists."""
    _check_unique(names, where)
    try:
        array = np.asarray(rows)
    except (ValueError, TypeError, OverflowError):
        array = None
    if array is not None and array.ndim == 2 and array.dtype.kind in "fiub":
        loose = Signature(columns=tuple(Column(n, "any") for n in names))
        _check_finite_columns(array, loose, where)
        return Inputs(rows=array.shape[0], columns=tuple(names), array=array)
    frame = {n: [r[j] for r in rows] for j, n in enumerate(names)}
    for name, values in frame.items():
        _check_scalars(values, where, name)
    return Inputs(rows=len(rows), columns=tuple(names), frame=frame)


def _has_bool(array_like: Any) -> bool:
    return any(type(v) is bool for v in np.asarray(array_like, dtype=object).reshape(-1).tolist())


def _tensor(data: Any, spec: TensorSpec, where: str, *, bools: bool) -> Inputs:
    array = _asarray(data, where)
    if spec.dtype.kind in "fiu":
        if array.dtype.kind not in "fiu":
            raise RequestError(f"{where}: the model expects a {spec.dtype.name} tensor, got values of type "
                               f"{_kind_name(array)}", 422)
        if bools and _has_bool(data):
            raise RequestError(f"{where}: the model expects a {spec.dtype.name} tensor, got true/false", 422)
    _check_shape(array.shape, spec.shape, where)
    array = _cast(array, spec.dtype, where, spec.dtype.name)
    return Inputs(rows=int(array.shape[0]) if array.ndim else 1, array=array)


def _kind_name(array: np.ndarray) -> str:
    if array.dtype.kind == "O":
        return "object (strings, nulls, nested lists or integers beyond 64 bits)"
    return "bool" if array.dtype.kind == "b" else array.dtype.name


def _check_finite_tensor(array: np.ndarray, where: str) -> None:
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            index = [int(i) for i in np.argwhere(bad)[0]] if array.ndim else []
            raise RequestError(f"{where}: element {index} is {_show(array[tuple(index)])}; send finite numbers "
                               "(NaN, Infinity and numbers beyond the type's range are refused)", 422)


def _cast(array: np.ndarray, target: np.dtype, where: str, type_name: str) -> np.ndarray:
    """``array`` as ``target``, refusing what the cast would change: fractions or out-of-range values
    for integers, non-finite values and float overflow for floats."""
    if array.dtype.kind == "f":
        _check_finite_tensor(array, where)
    if array.dtype == target:
        return array
    if target.kind in "iu" and array.dtype.kind in "fiu":
        info = np.iinfo(target)
        flat = array.reshape(-1)
        if array.dtype.kind == "f":
            bad = (flat != np.floor(flat)) | (flat < info.min) | (flat >= float(info.max) + 1)
        elif array.dtype.kind == "u":
            bad = flat > info.max
        else:
            bad = (flat < info.min) | (flat > info.max)
        if bad.any():
            i = int(np.argmax(bad))
            index = [int(x) for x in np.unravel_index(i, array.shape)]
            raise RequestError(f"{where}: {type_name} needs whole numbers from {info.min} to {info.max}; "
                               f"element {index} is {_show(flat[i])}", 422)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below, by value
        cast = array.astype(target)
    if target.kind == "f" and array.dtype.kind in "fiu":
        overflow = ~np.isfinite(cast)
        if overflow.any():
            index = [int(i) for i in np.argwhere(overflow)[0]] if cast.ndim else []
            raise RequestError(f"{where}: element {index} is {_show(array[tuple(index)])}, outside the range of "
                               f"{type_name}", 422)
    return cast


def _check_shape(shape: tuple[int, ...], expected: tuple[int, ...], where: str) -> None:
    if len(shape) != len(expected) or any(e != -1 and e != s for s, e in zip(shape, expected)):
        raise RequestError(f"{where}: shape {list(shape)} does not match the model's {list(expected)} "
                           "(-1 means any size)", 422)


# --- Open Inference Protocol v2 ---------------------------------------------------------------


def parse_v2(body: bytes | Any, signature: Signature, *, header_length: int | None = None) -> Inputs:
    """Parse a v2 ``/v2/models/{name}/infer`` request.

    ``header_length`` (the ``Inference-Header-Content-Length`` header) selects the binary tensor
    data extension: the first ``header_length`` bytes are the JSON request and the rest holds the
    tensors whose ``parameters.binary_data_size`` is set, in order, little-endian (BYTES elements
    each prefixed by a 4-byte length). ``inputs.meta["binary_outputs"]`` then says which outputs
    the client asked for in binary (``True``: all)."""
    blob = b""
    if header_length is not None:
        if not isinstance(body, (bytes, bytearray)) or not 0 < header_length <= len(body):
            raise RequestError(f"Inference-Header-Content-Length {header_length} does not fit a body of "
                               f"{len(body) if isinstance(body, (bytes, bytearray)) else 0} bytes")
        body, blob = bytes(body[:header_length]), bytes(body[header_length:])
    payload = loads(body) if isinstance(body, (bytes, bytearray)) else body
    bools = may_hold_bools(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise RequestError('a v2 infer request must be an object with a non-empty "inputs" list of tensors '
                           '{"name", "shape", "datatype", "data"}')
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError('"id" must be a string')
    tensors: dict[str, np.ndarray] = {}
    positions: dict[str, int] = {}
    offset = 0
    for i, t in enumerate(payload["inputs"]):
        where = f"inputs[{i}]"
        if not isinstance(t, dict):
            raise RequestError(f"{where} must be an object")
        size = _binary_size(t, where) if header_length is not None else None
        missing = [k for k in ("name", "shape", "datatype") + (("data",) if size is None else ()) if k not in t]
        if missing:
            raise RequestError(f"{where} is missing {', '.join(missing)}")
        name, shape, datatype = t["name"], t["shape"], t["datatype"]
        if not isinstance(name, str) or not name:
            raise RequestError(f"{where}.name must be a non-empty string")
        if name in positions:
            raise RequestError(f"{where}.name '{name}' repeats inputs[{positions[name]}]; each input tensor needs "
                               "its own name")
        positions[name] = i
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise RequestError(f"{where}.shape must be a list of non-negative integers")
        if len(shape) > MAX_RANK:
            raise RequestError(f"{where}.shape has {len(shape)} dimensions; at most {MAX_RANK} are supported")
        if datatype not in V2_DTYPES:
            raise RequestError(f"{where}.datatype {datatype!r} is not one of {', '.join(V2_DTYPES)}")
        label = f"{where} ({name})"
        if size is not None:
            if offset + size > len(blob):
                raise RequestError(f"{where}.parameters.binary_data_size {size} runs past the end of the binary "
                                   f"data ({len(blob) - offset} bytes left)")
            tensors[name] = _v2_binary(blob[offset:offset + size], shape, datatype, label)
            offset += size
        else:
            tensors[name] = _v2_tensor(t["data"], shape, datatype, label, bools=bools)
    if offset != len(blob):
        raise RequestError(f"{len(blob) - offset} bytes of binary data follow the JSON that no input claims "
                           "(parameters.binary_data_size)")
    inputs = _v2_to_inputs(tensors, signature)
    inputs.request_id = request_id
    inputs.meta["binary_outputs"] = _binary_outputs(payload)
    return inputs


def _binary_size(tensor: dict[str, Any], where: str) -> int | None:
    params = tensor.get("parameters")
    if not isinstance(params, dict) or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RequestError(f"{where}.parameters.binary_data_size must be a non-negative integer")
    if "data" in tensor:
        raise RequestError(f"{where} has both data and parameters.binary_data_size; send one")
    return size


def _binary_outputs(payload: dict[str, Any]) -> bool | frozenset[str]:
    params = payload.get("parameters")
    if isinstance(params, dict) and params.get("binary_data_output") is True:
        return True
    outputs = payload.get("outputs")
    if isinstance(outputs, list):
        return frozenset(o["name"] for o in outputs if isinstance(o, dict) and isinstance(o.get("name"), str)
                         and isinstance(o.get("parameters"), dict) and o["parameters"].get("binary_data") is True)
    return frozenset()


def _v2_binary(raw: bytes, shape: list[int], datatype: str, where: str) -> np.ndarray:
    size = math.prod(shape)
    if datatype == "BYTES":
        values, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise RequestError(f"{where}: BYTES element {len(values)} has a truncated 4-byte length")
            length = int.from_bytes(raw[pos:pos + 4], "little")
            if pos + 4 + length > len(raw):
                raise RequestError(f"{where}: BYTES element {len(values)} claims {length} bytes past the end")
            values.append(raw[pos + 4:pos + 4 + length])
            pos += 4 + length
        array = np.empty(len(values), dtype=object)
        array[:] = values
    else:
        dtype = np.dtype(V2_DTYPES[datatype]).newbyteorder("<")
        if len(raw) != size * dtype.itemsize:
            raise RequestError(f"{where}: {len(raw)} bytes of binary data do not fill shape {shape} of {datatype} "
                               f"({size * dtype.itemsize} bytes)", 422)
        if datatype == "BOOL":
            codes = np.frombuffer(raw, dtype=np.uint8)
            if (codes > 1).any():
                raise RequestError(f"{where}: datatype BOOL needs bytes 0 or 1", 422)
            array = codes.astype(np.bool_)
        else:
            array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    if array.size != size:
        raise RequestError(f"{where}: {array.size} values do not fill shape {shape} ({size} values)", 422)
    array = array.reshape(shape)
    _check_finite_tensor(array, where)
    return array


def _v2_tensor(data: Any, shape: list[int], datatype: str, where: str, *, bools: bool) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        array = _asarray(data, where, dtype=object)
        if not all(isinstance(v, str) for v in array.reshape(-1).tolist()):
            raise RequestError(f"{where}: datatype BYTES needs strings", 422)
    else:
        array = _asarray(data, where)
        if array.dtype.kind not in "fiub":
            raise RequestError(f"{where}: datatype {datatype} needs numbers, got {_kind_name(array)} values", 422)
        if datatype == "BOOL":
            if array.dtype.kind != "b":
                raise RequestError(f"{where}: datatype BOOL needs true/false values", 422)
        elif array.dtype.kind == "b" or (bools and _has_bool(data)):
            raise RequestError(f"{where}: datatype {datatype} needs numbers, got true/false", 422)
        array = _cast(array, np.dtype(V2_DTYPES[datatype]), where, datatype)
    size = math.prod(shape)
    if array.ndim > 1 and list(array.shape) != shape:
        raise RequestError(f"{where}: data is nested as {list(array.shape)} but shape is {shape}; send data flat "
                           "(row-major) or nested exactly as shape", 422)
    if array.size != size:
        raise RequestError(f"{where}: {array.size} values do not fill shape {shape} ({size} values)", 422)
    return array.reshape(shape)


def _v2_to_inputs(tensors: dict[str, np.ndarray], sig: Signature) -> Inputs:
    if sig.tensor is not None or not sig.columns:
        if len(tensors) != 1:
            if not sig.columns and all(t.ndim <= 2 for t in tensors.values()):
                return _v2_columns(tensors, None)
            raise RequestError(f"the model takes one input tensor; got {len(tensors)}", 422)
        array = next(iter(tensors.values()))
        if sig.tensor is not None:
            _check_shape(array.shape, sig.tensor.shape, "inputs[0]")
            if sig.tensor.dtype.kind in "fiu" and array.dtype.kind not in "fiu":
                raise RequestError(f"inputs[0]: the model expects a {sig.tensor.dtype.name} tensor, got "
                                   f"{_kind_name(array)}", 422)
            array = _cast(array, sig.tensor.dtype, "inputs[0]", sig.tensor.dtype.name)
        return Inputs(rows=int(array.shape[0]) if array.ndim else 1, array=array)
    if len(tensors) == 1:
        name, array = next(iter(tensors.items()))
        if name not in sig.names and array.ndim == 2:
            where = f"inputs[0] ({name})"
            if array.shape[1] != len(sig.columns):
                raise RequestError(f"{where}: shape {list(array.shape)} has {array.shape[1]} columns; "
                                   f"the model expects {len(sig.columns)} ({', '.join(sig.names)})", 422)
            if sig.numeric:
                if array.dtype.kind not in "fiu":
                    raise RequestError(f"{where}: the model expects numbers, got {_kind_name(array)}", 422)
                return _finish_numeric(array, sig, where)
            return _typed(array.tolist(), sig, where, bools=True)
    return _v2_columns(tensors, sig)


def _v2_columns(tensors: dict[str, np.ndarray], sig: Signature | None) -> Inputs:
    lengths = set()
    for name, t in tensors.items():
        if t.ndim == 2 and t.shape[1] == 1:
            tensors[name] = t = t[:, 0]
        if t.ndim != 1:
            raise RequestError(f"input '{name}': a column tensor needs shape [rows] or [rows, 1], got {list(t.shape)}", 422)
        lengths.add(t.shape[0])
    if len(lengths) != 1:
        raise RequestError(f"input tensors have different row counts {sorted(lengths)}", 422)
    n = lengths.pop()
    if sig is None:
        names = list(tensors)
        return _unsigned(names, [list(r) for r in zip(*(tensors[c].tolist() for c in names))], "inputs")
    unknown = [name for name in tensors if name not in sig.names]
    if unknown:
        raise RequestError(f"unknown input(s) {', '.join(unknown)}; the model expects {', '.join(sig.names)}", 422)
    _check_columns(sig, tensors, "inputs")
    if sig.numeric:
        for c in sig.columns:
            t = tensors.get(c.name)
            if t is not None and t.dtype.kind not in "fiu":
                raise RequestError(f"input '{c.name}': the model expects {c.type}, got {_kind_name(t)}", 422)
        absent = any(c.name not in tensors for c in sig.columns)
        # gather in float64 (it holds NaN for absent optional columns, and fractions a later check
        # refuses for whole-number columns); in int64 only when every value is already whole
        whole = not absent and all(t.dtype.kind in "iu" for t in tensors.values())
        array = np.empty((n, len(sig.columns)), dtype=np.int64 if whole else np.float64)
        for j, c in enumerate(sig.columns):
            t = tensors.get(c.name)
            if t is not None:
                _check_unsigned_fits(t, array.dtype, c.name)
            array[:, j] = t if t is not None else np.nan
        return _finish_numeric(array, sig, "inputs", nulls=absent)
    rows = [list(r) for r in zip(*(tensors[c.name].tolist() if c.name in tensors else [None] * n
                                   for c in sig.columns))]
    return _typed(rows, sig, "inputs", bools=True)


def _check_unsigned_fits(t: np.ndarray, dtype: np.dtype, name: str) -> None:
    # UINT64 values past int64's range would wrap when copied into an int64 array
    if dtype.kind == "i" and t.dtype.kind == "u" and t.size and int(t.max()) > np.iinfo(dtype).max:
        raise RequestError(f"input '{name}': value {int(t.max())} is beyond the range of a 64-bit integer", 422)


# --- responses ---------------------------------------------------------------------------------


def to_list(predictions: Any) -> list[Any]:
    """Model output → JSON-ready list (MLflow's shape: records for frames, nested lists for arrays)."""
    if isinstance(predictions, np.ndarray):
        return predictions.tolist()
    if hasattr(predictions, "to_dict") and hasattr(predictions, "columns"):  # a DataFrame
        return predictions.to_dict(orient="records")
    if hasattr(predictions, "tolist"):  # a Series
        return predictions.tolist()
    if isinstance(predictions, (list, tuple)):
        return list(predictions)
    return [predictions]


def v2_outputs(predictions: Any) -> list[dict[str, Any]]:
    if hasattr(predictions, "columns") and hasattr(predictions, "to_numpy"):
        return [v2_tensor(str(c), predictions[c].to_numpy()) for c in predictions.columns]
    return [v2_tensor("predictions", np.asarray(predictions))]


def v2_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = NUMPY_TO_V2.get(array.dtype.name, "BYTES")
    data = array.reshape(-1).tolist()
    if datatype == "BYTES":
        data = [_jsonable(v) if not isinstance(v, str) else v for v in data]
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


V2_EXTENSIONS = ["binary_tensor_data"]


def v2_body(response: dict[str, Any], binary: bool | frozenset[str]) -> tuple[bytes, int | None]:
    """An infer response as bytes: JSON, or (binary tensor data extension) the JSON header followed by
    the outputs the client asked for in binary, with the header's length for
    ``Inference-Header-Content-Length``."""
    if not binary:
        return dumps(response), None
    blobs: list[bytes] = []
    outputs = []
    for out in response["outputs"]:
        if binary is True or out["name"] in binary:
            raw = _v2_raw(out["data"], out["datatype"])
            out = {k: v for k, v in out.items() if k != "data"}
            out["parameters"] = {**out.get("parameters", {}), "binary_data_size": len(raw)}
            blobs.append(raw)
        outputs.append(out)
    header = dumps({**response, "outputs": outputs})
    return header + b"".join(blobs), len(header)


def _v2_raw(data: list[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in data:
            raw = value if isinstance(value, bytes) else str(value).encode()
            parts.append(len(raw).to_bytes(4, "little") + raw)
        return b"".join(parts)
    return np.asarray(data, dtype=np.dtype(V2_DTYPES[datatype]).newbyteorder("<")).tobytes()


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()


def iter_prediction_values(predictions: Any) -> Iterable[float]:
    """Numbers of a prediction for distribution checks (first column of 2-D outputs)."""
    array = np.asarray(predictions)
    if array.ndim == 2:
        array = array[:, -1] if array.shape[1] else array.reshape(-1)
    if array.dtype.kind not in "fiub":
        return []
    return array.astype(np.float64).reshape(-1).tolist()
