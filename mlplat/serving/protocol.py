"""Request protocols: MLflow scoring payloads and Open Inference Protocol v2, parsed into numpy.

The hot path never builds a pandas DataFrame: a payload whose columns are all
numeric becomes one ``(rows, columns)`` float/int array in signature order, checked
by numpy's own type inference; only when that fails do we walk the values to name
the offending one. Columns of strings or mixed types fall back to per-column lists,
and the predictor builds a DataFrame for them.

Every problem with a request raises :class:`RequestError` carrying an HTTP status
(400 malformed, 413 too large, 422 does not match the signature) and a message
that names the column/row/field. Nothing here raises anything else on bad input.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

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


class RequestError(Exception):
    """A request the server refuses: ``status`` is the HTTP status (always 4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        code = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE",
                415: "UNSUPPORTED_MEDIA_TYPE", 422: "INVALID_INPUT"}.get(self.status, "BAD_REQUEST")
        out: dict[str, Any] = {"error_code": code, "message": self.message}
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

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def numeric(self) -> bool:
        """Every column is numeric: inputs become one 2-D array."""
        return bool(self.columns) and all(c.type in NUMERIC_TYPES for c in self.columns)

    @property
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
    def from_mlmodel(cls, mlmodel: dict[str, Any]) -> "Signature":
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
    def from_model_dir(cls, model_dir: Path | str) -> "Signature":
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
    if not body:
        raise RequestError("request body is empty; send a JSON object such as "
                           '{"dataframe_split": {"columns": [...], "data": [[...]]}}')
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None


# --- MLflow scoring format ----------------------------------------------------------------


def parse_scoring(body: bytes | Any, signature: Signature) -> Inputs:
    """Parse an MLflow ``/invocations`` JSON payload (bytes or already-decoded JSON)."""
    payload = loads(body) if isinstance(body, (bytes, bytearray)) else body
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
            return _from_rows(rows, signature, where="dataframe_split.data")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise RequestError("dataframe_split.columns must be a list of column names")
        return _from_split(columns, rows, signature)
    if key == "dataframe_records":
        return _from_records(data, signature, where="dataframe_records")
    if key == "instances":
        if not isinstance(data, list):
            raise RequestError("instances must be a list of rows or of {column: value} objects")
        if data and all(isinstance(r, dict) for r in data):
            return _from_records(data, signature, where="instances")
        return _from_rows(data, signature, where="instances")
    # inputs: {column: values} or a list of rows / a tensor
    if isinstance(data, dict):
        return _from_columnar(data, signature, where="inputs")
    if isinstance(data, list):
        if data and all(isinstance(r, dict) for r in data):
            return _from_records(data, signature, where="inputs")
        return _from_rows(data, signature, where="inputs")
    raise RequestError("inputs must be a {column: values} object or a list")


def _from_split(columns: list[str], rows: list[Any], sig: Signature) -> Inputs:
    if not rows:
        raise RequestError("dataframe_split.data has no rows")
    width = len(columns)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise RequestError(f"dataframe_split.data row {i} has {got}; expected {width} (one per column)")
    if not sig.columns:
        return _unsigned(columns, rows)
    if tuple(columns) != sig.names:
        position = {c: i for i, c in enumerate(columns)}
        _check_columns(sig, position, "dataframe_split.columns")
        idx = [position.get(c.name) for c in sig.columns]
        rows = [[row[i] if i is not None else None for i in idx] for row in rows]
    return _typed(rows, sig, "dataframe_split.data")


def _from_records(records: Any, sig: Signature, *, where: str) -> Inputs:
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
        return _unsigned(names, rows)
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
    return _typed(rows, sig, where)


def _from_columnar(data: dict[str, Any], sig: Signature, *, where: str) -> Inputs:
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
        return _unsigned(names, [list(r) for r in zip(*(values[c] for c in names))])
    _check_columns(sig, values, where)
    rows = [list(r) for r in zip(*(values.get(c.name, [None] * n) for c in sig.columns))]
    return _typed(rows, sig, where)


def _from_rows(rows: Any, sig: Signature, *, where: str) -> Inputs:
    if not isinstance(rows, list) or not rows:
        raise RequestError(f"{where} must be a non-empty list")
    if sig.tensor is not None:
        return _tensor(rows, sig.tensor, where)
    if sig.columns:
        width = len(sig.columns)
        if width == 1 and not isinstance(rows[0], list):
            rows = [[v] for v in rows]
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                got = f"{len(row)} values" if isinstance(row, list) else f"a {type(row).__name__}"
                raise RequestError(f"{where}[{i}] has {got}; the model expects {width} values per row "
                                   f"({', '.join(sig.names)})", 422)
        return _typed(rows, sig, where)
    array = _asarray(rows, where)
    return Inputs(rows=int(array.shape[0]) if array.ndim else 1, array=array)


def _check_columns(sig: Signature, present: Any, where: str) -> None:
    missing = [c.name for c in sig.columns if c.required and c.name not in present]
    if missing:
        raise RequestError(f"{where} is missing column(s) {', '.join(missing)}; the model expects "
                           f"{', '.join(sig.names)}", 422)


def _asarray(rows: Any, where: str, dtype: Any = None) -> np.ndarray:
    try:
        return np.asarray(rows, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise RequestError(f"{where} is not a rectangular array: {exc}", 422) from None


def _typed(rows: list[list[Any]], sig: Signature, where: str) -> Inputs:
    """Rows in signature order → a typed array (numeric signature) or per-column lists."""
    if sig.numeric:
        try:
            array = np.asarray(rows)
        except (ValueError, TypeError):
            array = None
        if array is not None and array.ndim == 2 and array.dtype.kind in "fiu" and array.shape[1] == len(sig.columns):
            target = sig.dtype
            if array.dtype.kind == "f" and any(c.type in INTEGRAL_TYPES for c in sig.columns):
                _check_integral(array, sig, where)
            if array.dtype != target:
                if target.kind in "iu" and array.dtype.kind == "f":
                    _check_integral(array, sig, where)
                array = array.astype(target)
            return Inputs(rows=array.shape[0], columns=sig.names, array=array)
        # numpy said no: walk the values to name the offending one (and allow optional nulls)
        columns = _validate_values(rows, sig, where)
        array = np.empty((len(rows), len(sig.columns)), dtype=sig.dtype)
        for j, name in enumerate(sig.names):
            array[:, j] = columns[name]
        return Inputs(rows=len(rows), columns=sig.names, array=array)
    columns = _validate_values(rows, sig, where)
    return Inputs(rows=len(rows), columns=sig.names, frame=columns)


def _check_integral(array: np.ndarray, sig: Signature, where: str) -> None:
    for j, column in enumerate(sig.columns):
        if column.type in INTEGRAL_TYPES:
            col = array[:, j]
            bad = np.nonzero(col != np.floor(col))[0]
            if bad.size:
                raise RequestError(f"{where}: column '{column.name}' expects {column.type} (a whole number), "
                                   f"got {col[bad[0]]!r} in row {int(bad[0])}", 422)


def _validate_values(rows: list[list[Any]], sig: Signature, where: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {c.name: [] for c in sig.columns}
    for i, row in enumerate(rows):
        for column, value in zip(sig.columns, row):
            out[column.name].append(_check_value(value, column, i, where))
    return out


def _check_value(value: Any, column: Column, row: int, where: str) -> Any:
    kind = column.type
    if value is None:
        if column.required:
            raise RequestError(f"{where}: column '{column.name}' is required but row {row} has null", 422)
        return math.nan if kind in NUMERIC_TYPES else None
    ok: bool
    if kind in ("double", "float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind in INTEGRAL_TYPES:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
        if ok and kind == "long" and not -(2 ** 63) <= value < 2 ** 63:
            ok = False
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind in ("string", "datetime", "binary"):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
        raise RequestError(f"{where}: column '{column.name}' expects {kind}, got {type(value).__name__} {shown} "
                           f"in row {row}", 422)
    return value


def _unsigned(names: Sequence[str], rows: list[list[Any]]) -> Inputs:
    """No signature: numeric payloads become an array, anything else per-column lists."""
    try:
        array = np.asarray(rows)
    except (ValueError, TypeError):
        array = None
    if array is not None and array.ndim == 2 and array.dtype.kind in "fiub":
        return Inputs(rows=array.shape[0], columns=tuple(names), array=array)
    return Inputs(rows=len(rows), columns=tuple(names), frame={n: [r[j] for r in rows] for j, n in enumerate(names)})


def _tensor(data: Any, spec: TensorSpec, where: str) -> Inputs:
    array = _asarray(data, where)
    if array.dtype.kind not in "fiub" and spec.dtype.kind in "fiub":
        raise RequestError(f"{where}: the model expects a {spec.dtype.name} tensor, got values of type "
                           f"{array.dtype.name}", 422)
    _check_shape(array.shape, spec.shape, where)
    if array.dtype != spec.dtype:
        if spec.dtype.kind in "iu" and array.dtype.kind == "f" and not np.all(array == np.floor(array)):
            raise RequestError(f"{where}: the model expects a {spec.dtype.name} tensor, got fractional values", 422)
        array = array.astype(spec.dtype)
    return Inputs(rows=int(array.shape[0]) if array.ndim else 1, array=array)


def _check_shape(shape: tuple[int, ...], expected: tuple[int, ...], where: str) -> None:
    if len(shape) != len(expected) or any(e != -1 and e != s for s, e in zip(shape, expected)):
        raise RequestError(f"{where}: shape {list(shape)} does not match the model's {list(expected)} "
                           "(-1 means any size)", 422)


# --- Open Inference Protocol v2 ---------------------------------------------------------------


def parse_v2(body: bytes | Any, signature: Signature) -> Inputs:
    """Parse a v2 ``/v2/models/{name}/infer`` request."""
    payload = loads(body) if isinstance(body, (bytes, bytearray)) else body
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise RequestError('a v2 infer request must be an object with a non-empty "inputs" list of tensors '
                           '{"name", "shape", "datatype", "data"}')
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError('"id" must be a string')
    tensors: dict[str, np.ndarray] = {}
    for i, t in enumerate(payload["inputs"]):
        where = f"inputs[{i}]"
        if not isinstance(t, dict):
            raise RequestError(f"{where} must be an object")
        missing = [k for k in ("name", "shape", "datatype", "data") if k not in t]
        if missing:
            raise RequestError(f"{where} is missing {', '.join(missing)}")
        name, shape, datatype, data = t["name"], t["shape"], t["datatype"], t["data"]
        if not isinstance(name, str) or not name:
            raise RequestError(f"{where}.name must be a non-empty string")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise RequestError(f"{where}.shape must be a list of non-negative integers")
        if datatype not in V2_DTYPES:
            raise RequestError(f"{where}.datatype {datatype!r} is not one of {', '.join(V2_DTYPES)}")
        tensors[name] = _v2_tensor(data, shape, datatype, f"{where} ({name})")
    inputs = _v2_to_inputs(tensors, signature)
    inputs.request_id = request_id
    return inputs


def _v2_tensor(data: Any, shape: list[int], datatype: str, where: str) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        array = _asarray(data, where, dtype=object)
    else:
        array = _asarray(data, where)
        if array.dtype.kind not in "fiub":
            raise RequestError(f"{where}: datatype {datatype} needs numbers, got {array.dtype.name} values", 422)
        if datatype == "BOOL" and array.dtype.kind != "b":
            raise RequestError(f"{where}: datatype BOOL needs true/false values", 422)
        target = np.dtype(V2_DTYPES[datatype])
        if target.kind in "iu" and array.dtype.kind == "f" and not np.all(array == np.floor(array)):
            raise RequestError(f"{where}: datatype {datatype} needs whole numbers", 422)
        array = array.astype(target, copy=False)
    size = int(np.prod(shape)) if shape else 1
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
            if array.dtype != sig.tensor.dtype:
                array = array.astype(sig.tensor.dtype)
        return Inputs(rows=int(array.shape[0]) if array.ndim else 1, array=array)
    if len(tensors) == 1:
        name, array = next(iter(tensors.items()))
        if name not in sig.names and array.ndim == 2:
            if array.shape[1] != len(sig.columns):
                raise RequestError(f"inputs[0] ({name}): shape {list(array.shape)} has {array.shape[1]} columns; "
                                   f"the model expects {len(sig.columns)} ({', '.join(sig.names)})", 422)
            rows = array.tolist() if not sig.numeric else array
            if sig.numeric:
                if array.dtype.kind == "b":
                    raise RequestError(f"inputs[0] ({name}): the model expects numbers, got BOOL", 422)
                return _typed_array(array, sig, f"inputs[0] ({name})")
            return _typed(rows, sig, f"inputs[0] ({name})")
    return _v2_columns(tensors, sig)


def _typed_array(array: np.ndarray, sig: Signature, where: str) -> Inputs:
    target = sig.dtype
    if array.dtype.kind == "f" and any(c.type in INTEGRAL_TYPES for c in sig.columns):
        _check_integral(array, sig, where)
    if array.dtype != target:
        array = array.astype(target)
    return Inputs(rows=array.shape[0], columns=sig.names, array=array)


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
        return _unsigned(names, [list(r) for r in zip(*(tensors[c].tolist() for c in names))])
    unknown = [name for name in tensors if name not in sig.names]
    if unknown:
        raise RequestError(f"unknown input(s) {', '.join(unknown)}; the model expects {', '.join(sig.names)}", 422)
    _check_columns(sig, tensors, "inputs")
    if sig.numeric:
        for c in sig.columns:
            t = tensors.get(c.name)
            if t is not None and t.dtype.kind not in "fiu":
                raise RequestError(f"input '{c.name}': the model expects {c.type}, got {t.dtype.name}", 422)
        array = np.empty((n, len(sig.columns)), dtype=sig.dtype)
        for j, c in enumerate(sig.columns):
            t = tensors.get(c.name)
            array[:, j] = t if t is not None else np.nan
        return _typed_array(array, sig, "inputs")
    rows = [list(r) for r in zip(*(tensors[c.name].tolist() if c.name in tensors else [None] * n
                                   for c in sig.columns))]
    return _typed(rows, sig, "inputs")


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
