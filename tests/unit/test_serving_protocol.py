"""Request parsing: every MLflow scoring format and v2 infer, checked against a signature."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mlplat.serving.protocol import (
    Column,
    RequestError,
    Signature,
    TensorSpec,
    parse_scoring,
    parse_v2,
    to_list,
    v2_outputs,
)

SIG = Signature(columns=(Column("a", "double"), Column("b", "double"), Column("n", "long")))
ROW = {"a": 1.5, "b": -2.0, "n": 3}


def body(obj) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize("payload", [
    {"dataframe_split": {"columns": ["a", "b", "n"], "data": [[1.5, -2.0, 3]]}},
    {"dataframe_split": {"columns": ["n", "b", "a"], "data": [[3, -2.0, 1.5]]}},  # any column order
    {"dataframe_split": {"data": [[1.5, -2.0, 3]]}},  # signature order
    {"dataframe_records": [ROW]},
    {"dataframe_records": [{"n": 3, "a": 1.5, "b": -2.0, "extra": "ignored"}]},
    {"instances": [ROW]},
    {"instances": [[1.5, -2.0, 3]]},
    {"inputs": {"a": [1.5], "b": [-2.0], "n": [3]}},
    {"inputs": {"a": 1.5, "b": -2.0, "n": 3}},
    {"inputs": [[1.5, -2.0, 3]]},
])
def test_every_scoring_format_gives_the_same_array(payload):
    inputs = parse_scoring(body(payload), SIG)
    assert inputs.rows == 1
    assert inputs.columns == ("a", "b", "n")
    assert inputs.array is not None and inputs.array.dtype == np.float64
    assert inputs.array.tolist() == [[1.5, -2.0, 3.0]]
    assert inputs.records() == [{"a": 1.5, "b": -2.0, "n": 3.0}]


def test_batches_keep_row_order():
    rows = [[float(i), float(-i), i] for i in range(50)]
    inputs = parse_scoring(body({"dataframe_split": {"columns": ["a", "b", "n"], "data": rows}}), SIG)
    assert inputs.rows == 50
    assert inputs.array[:, 0].tolist() == [float(i) for i in range(50)]


@pytest.mark.parametrize("raw, status, fragment", [
    (b"", 400, "empty"),
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be an object"),
    (body({"rows": []}), 400, "exactly one of"),
    (body({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}), 400, "several"),
    (body({"dataframe_split": {"columns": ["a", "b", "n"], "data": [[1, 2]]}}), 400, "row 0 has 2 values"),
    (body({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}), 422, "missing column(s) n"),
    (body({"dataframe_records": [{"a": 1, "b": 2}]}), 422, "missing column(s) n"),
    (body({"dataframe_records": [{"a": "high", "b": 2, "n": 1}]}), 422, "column 'a' expects double, got str"),
    (body({"dataframe_records": [{"a": 1, "b": 2, "n": 1.5}]}), 422, "column 'n' expects long"),
    (body({"dataframe_records": [{"a": None, "b": 2, "n": 1}]}), 422, "required but row 0 has null"),
    (body({"dataframe_records": [{"a": [1, 2], "b": 2, "n": 1}]}), 422, "column 'a' expects double, got list"),
    (body({"instances": [[1, 2]]}), 422, "expects 3 values per row"),
    (body({"instances": [[1, 2, 3], [1, 2]]}), 422, "instances[1] has 2 values"),
    (body({"inputs": {"a": [1, 2], "b": [1], "n": [1]}}), 400, "different lengths"),
    (body({"dataframe_records": []}), 400, "no rows"),
    (body({"dataframe_records": "a=1"}), 400, "list of {column: value}"),
    (body({"instances": [[True, 2, "3"]]}), 422, "expects double, got bool"),
])
def test_bad_requests_are_4xx_with_a_message(raw, status, fragment):
    with pytest.raises(RequestError) as info:
        parse_scoring(raw, SIG)
    assert info.value.status == status
    assert fragment in info.value.message
    assert info.value.body()["message"] == info.value.message


def test_optional_columns_accept_null_as_nan():
    sig = Signature(columns=(Column("a", "double"), Column("b", "double", required=False)))
    inputs = parse_scoring(body({"dataframe_records": [{"a": 1.0, "b": None}, {"a": 2.0}]}), sig)
    assert inputs.array[0, 0] == 1.0 and np.isnan(inputs.array[0, 1]) and np.isnan(inputs.array[1, 1])


def test_string_columns_go_to_per_column_lists():
    sig = Signature(columns=(Column("city", "string"), Column("x", "double")))
    inputs = parse_scoring(body({"dataframe_records": [{"city": "Oslo", "x": 1}]}), sig)
    assert inputs.array is None and inputs.frame == {"city": ["Oslo"], "x": [1]}
    with pytest.raises(RequestError, match="column 'city' expects string, got int"):
        parse_scoring(body({"dataframe_records": [{"city": 7, "x": 1}]}), sig)


def test_tensor_signature_checks_shape_and_dtype():
    sig = Signature(tensor=TensorSpec(np.dtype("float32"), (-1, 2)))
    inputs = parse_scoring(body({"inputs": [[1, 2], [3, 4]]}), sig)
    assert inputs.array.dtype == np.float32 and inputs.array.shape == (2, 2)
    with pytest.raises(RequestError, match=r"shape \[1, 3\] does not match"):
        parse_scoring(body({"inputs": [[1, 2, 3]]}), sig)
    with pytest.raises(RequestError, match="float32 tensor"):
        parse_scoring(body({"inputs": [["a", "b"]]}), sig)


def test_no_signature_accepts_numbers_and_frames():
    inputs = parse_scoring(body({"dataframe_split": {"columns": ["x", "y"], "data": [[1, 2]]}}), Signature())
    assert inputs.array.tolist() == [[1, 2]]
    inputs = parse_scoring(body({"dataframe_records": [{"x": "a", "y": 2}]}), Signature())
    assert inputs.frame == {"x": ["a"], "y": [2]}


def test_v2_single_matrix_and_named_columns():
    matrix = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]}], "id": "r1"}
    inputs = parse_v2(body(matrix), SIG)
    assert inputs.array.tolist() == [[1, 2, 3], [4, 5, 6]] and inputs.request_id == "r1"
    named = {"inputs": [{"name": c, "shape": [1], "datatype": "FP64" if c != "n" else "INT64", "data": [v]}
                        for c, v in ROW.items()]}
    assert parse_v2(body(named), SIG).array.tolist() == [[1.5, -2.0, 3.0]]


@pytest.mark.parametrize("payload, fragment", [
    ({"inputs": []}, "non-empty"),
    ({"inputs": [{"name": "x", "shape": [1, 3]}]}, "missing datatype, data"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FLOAT", "data": [1, 2, 3]}]}, "not one of"),
    ({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3]}]}, "do not fill shape"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}, "expects 3"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": ["a", "b", "c"]}]}, "needs numbers"),
    ({"inputs": [{"name": "zz", "shape": [1], "datatype": "FP64", "data": [1]},
                 {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}]}, "unknown input(s) zz"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                 {"name": "b", "shape": [1], "datatype": "FP64", "data": [1]}]}, "missing column(s) n"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}], "id": 5}, '"id"'),
])
def test_v2_bad_requests(payload, fragment):
    with pytest.raises(RequestError) as info:
        parse_v2(body(payload), SIG)
    assert 400 <= info.value.status < 500
    assert fragment in info.value.message


def test_signature_from_mlmodel_text():
    mlmodel = {"signature": {"inputs": '[{"type": "double", "name": "a", "required": true}, '
                                       '{"type": "long", "name": "n", "required": false}]'}}
    sig = Signature.from_mlmodel(mlmodel)
    assert sig.columns == (Column("a", "double"), Column("n", "long", required=False)) and sig.numeric
    tensor = Signature.from_mlmodel({"signature": {"inputs": '[{"type": "tensor", "tensor-spec": '
                                                             '{"dtype": "float64", "shape": [-1, 4]}}]'}})
    assert tensor.tensor == TensorSpec(np.dtype("float64"), (-1, 4))
    assert Signature.from_mlmodel({}).columns == () and Signature.from_mlmodel({}).tensor is None


def test_outputs_serialise():
    assert to_list(np.array([1, 0])) == [1, 0]
    assert to_list(np.array([[0.2, 0.8]])) == [[0.2, 0.8]]
    out = v2_outputs(np.array([0.5, 0.25]))
    assert out == [{"name": "predictions", "shape": [2], "datatype": "FP64", "data": [0.5, 0.25]}]


# --- hostile input: every refusal is a RequestError with a 4xx status, never anything else ----------

LONG = Signature(columns=(Column("n", "long"),))
SMALL = Signature(columns=(Column("i", "integer"), Column("f", "float")))


def v2(name="x", shape=(1, 3), datatype="FP64", data=(1, 2, 3), **extra):
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data, **extra}]}


@pytest.mark.parametrize("raw, sig, status, fragment", [
    (b"[" * 5000 + b"]" * 5000, SIG, 400, "nested deeper than 64 levels"),  # RecursionError in json
    (b'{"instances": ' + b"[" * 70 + b"1" + b"]" * 70 + b"}", SIG, 400, "nested deeper than 64 levels"),
    (b'{"dataframe_records": [{"a": NaN, "b": 1, "n": 1}]}', SIG, 422, "column 'a' expects a finite double, got nan in row 0"),
    (b'{"dataframe_records": [{"a": 1, "b": 2, "n": 1}, {"a": Infinity, "b": 2, "n": 1}]}', SIG, 422,
     "column 'a' expects a finite double, got inf in row 1"),
    (b'{"dataframe_split": {"columns": ["a", "b", "n"], "data": [[1e400, 0, 1]]}}', SIG, 422, "got inf in row 0"),
    (b'{"dataframe_records": [{"a": -Infinity, "b": "x", "n": 1}]}', SIG, 422, "column 'a' expects double"),
    (body({"dataframe_records": [{"a": 10 ** 400, "b": 1, "n": 1}]}), SIG, 422, "column 'a' expects double"),
    (body({"dataframe_records": [{"a": 1, "b": 1, "n": 2 ** 70}]}), SIG, 422, "column 'n' expects long"),
    (body({"dataframe_records": [{"n": 2 ** 63}]}), LONG, 422, "column 'n' expects long (a whole number from"),
    (body({"dataframe_records": [{"n": -(2 ** 63) - 1}]}), LONG, 422, "got int -9223372036854775809 in row 0"),
    (body({"dataframe_records": [{"i": 2 ** 31, "f": 1.0}]}), SMALL, 422, "column 'i' expects integer"),
    (body({"dataframe_records": [{"i": 1, "f": 1e39}]}), SMALL, 422, "column 'f' expects float"),
    (body({"dataframe_records": [{"a": True, "b": 1.0, "n": 1}]}), SIG, 422, "column 'a' expects double, got bool True in row 0"),
    (body({"dataframe_split": {"columns": ["a", "b", "n"], "data": [[1.0, 2.0, 3], [1.0, False, 3]]}}), SIG, 422,
     "column 'b' expects double, got bool False in row 1"),
    (body({"instances": [[1.0, 2.0, True]]}), SIG, 422, "column 'n' expects long, got bool True"),
    (body({"dataframe_split": {"columns": ["a", "b", "a", "n"], "data": [[1, 2, 3, 4]]}}), SIG, 400,
     "names column 'a' twice (positions 0 and 2)"),
    (b'{"dataframe_records": [{"a": 1, "b": 2, "n": 3}, {"a": 1, "b": 2, "b": 5, "n": 3}]}', SIG, 400,
     "key 'b' appears more than once in dataframe_records[1]"),
    (b'{"dataframe_split": {"columns": ["a"], "columns": ["b"], "data": [[1]]}}', SIG, 400,
     "key 'columns' appears more than once in dataframe_split"),
    (body({"dataframe_records": [{"x": [1, 2], "y": 1}]}), Signature(), 422, "column 'x' row 0 is list"),
    (b'{"dataframe_records": [{"x": NaN, "y": 1}]}', Signature(), 422, "column 'x' expects a finite number"),
    (body({"dataframe_records": [{"x": 2 ** 70, "y": "s"}]}), Signature(), 422, "column 'x' row 0 is int"),
    (body({"dataframe_split": {"columns": ["x", "x"], "data": [[1, 2]]}}), Signature(), 400, "names column 'x' twice"),
    (b"\xff\xfe{}", SIG, 400, "not valid JSON"),
    (b'{"instances": [' + b"9" * 5000 + b"]}", SIG, 400, "not valid JSON"),  # past Python's digit limit
])
def test_hostile_scoring_payloads_are_4xx_naming_field_row_and_type(raw, sig, status, fragment):
    with pytest.raises(RequestError) as info:
        parse_scoring(raw, sig)
    assert (info.value.status, fragment in info.value.message) == (status, True), info.value.message


@pytest.mark.parametrize("payload, sig, status, fragment", [
    (v2(data=[True, 1, 2]), SIG, 422, "datatype FP64 needs numbers, got true/false"),
    (v2(datatype="FP32", data=[1.0, False, 2.0]), SIG, 422, "datatype FP32 needs numbers, got true/false"),
    (v2(datatype="INT8", shape=[3], data=[100000, 1, 2]), Signature(), 422, "INT8 needs whole numbers from -128 to 127; element [0] is 100000"),
    (v2(datatype="UINT64", shape=[3], data=[1, -1, 2]), Signature(), 422, "UINT64 needs whole numbers from 0 to 18446744073709551615; element [1] is -1"),
    (v2(datatype="INT64", shape=[1], data=[2 ** 64]), Signature(), 422, "INT64 needs numbers"),
    (v2(datatype="INT32", shape=[2], data=[1.5, 2]), Signature(), 422, "INT32 needs whole numbers"),
    (v2(datatype="FP16", shape=[1], data=[70000.0]), Signature(), 422, "outside the range of FP16"),
    (v2(data=[[1], [2], [3]]), SIG, 422, "data is nested as [3, 1] but shape is [1, 3]"),
    (v2(shape=[2, 3], data=[[1, 2], [3, 4], [5, 6]]), SIG, 422, "data is nested as [3, 2] but shape is [2, 3]"),
    (v2(shape=[1] * 65, data=[1]), SIG, 400, "inputs[0].shape has 65 dimensions; at most 64"),
    (v2(shape=[10 ** 10, 10 ** 10], data=[1]), Signature(), 422, "do not fill shape"),
    (v2(shape=[1], data=[[[1]]]), Signature(), 422, "data is nested as [1, 1, 1] but shape is [1]"),
    (v2(datatype="BYTES", shape=[2], data=["a", 1]), Signature(), 422, "datatype BYTES needs strings"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                 {"name": "a", "shape": [1], "datatype": "FP64", "data": [2]}]}, SIG, 400,
     "inputs[1].name 'a' repeats inputs[0]"),
    ({"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [2.5]} for c in "abn"]}, SIG, 422,
     "column 'n' expects long (a whole number"),
    ({"inputs": [{"name": "n", "shape": [1], "datatype": "UINT64", "data": [2 ** 64 - 1]}]}, LONG, 422,
     "input 'n': value 18446744073709551615 is beyond the range of a 64-bit integer"),
])
def test_hostile_v2_payloads_are_4xx(payload, sig, status, fragment):
    with pytest.raises(RequestError) as info:
        parse_v2(body(payload), sig)
    assert (info.value.status, fragment in info.value.message) == (status, True), info.value.message


@pytest.mark.parametrize("raw", [b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [NaN, 1, 2]}]}',
                                 b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1e39, 1, 2]}]}',
                                 b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1e400, 1, 2]}]}'])
def test_v2_non_finite_numbers_are_422(raw):
    with pytest.raises(RequestError) as info:
        parse_v2(raw, SIG)
    assert info.value.status == 422 and "element [0]" in info.value.message


def test_numbers_in_range_and_booleans_where_they_belong_still_parse():
    assert parse_scoring(body({"dataframe_records": [{"n": 2 ** 63 - 1}]}), LONG).array.tolist() == [[2 ** 63 - 1]]
    mixed = Signature(columns=(Column("flag", "boolean"), Column("x", "double")))
    inputs = parse_scoring(body({"dataframe_records": [{"flag": True, "x": 1.5}]}), mixed)
    assert inputs.frame == {"flag": [True], "x": [1.5]}
    flags = parse_v2(body(v2(datatype="BOOL", shape=[2], data=[True, False])), Signature())
    assert flags.array.tolist() == [True, False]
    nested = parse_v2(body(v2(shape=[2, 3], data=[[1, 2, 3], [4, 5, 6]])), SIG)
    assert nested.array.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert parse_v2(body(v2(datatype="UINT64", shape=[1], data=[2 ** 64 - 1])), Signature()).array.tolist() == [2 ** 64 - 1]
    text = parse_scoring(body({"dataframe_records": [{"a": 1.5, "b": -2.0, "n": 3, "note": "true [[[ {"}]}), SIG)
    assert text.array.tolist() == [[1.5, -2.0, 3.0]]


def test_optional_whole_number_columns_take_null():
    sig = Signature(columns=(Column("n", "long"), Column("m", "long", required=False)))
    inputs = parse_scoring(body({"dataframe_records": [{"n": 1, "m": None}, {"n": 2, "m": 5}]}), sig)
    assert inputs.array[1].tolist() == [2.0, 5.0] and np.isnan(inputs.array[0, 1])


def test_json_depth_counts_brackets_outside_strings_only():
    from mlplat.serving import jsonlimit

    assert not jsonlimit.too_deep(b'{"s": "' + b"[" * 200 + b'"}', 64)
    assert not jsonlimit.too_deep(b'{"s": "\\"' + b"]" * 200 + b'", "t": [[1]]}', 64)
    assert jsonlimit.too_deep(b'{"s": "]]]]]]]]", "t": ' + b"[" * 65 + b"]" * 65 + b"}", 64)
    assert jsonlimit.too_deep(b'{"s": "\\"]]]]", "t": ' + b"[" * 65 + b"]" * 65 + b"}", 64)
    assert not jsonlimit.too_deep(b"[" * 64 + b"]" * 64, 64)


def test_binary_tensor_extension_round_trip():
    header = json.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 24}}],
                         "parameters": {"binary_data_output": True}}).encode()
    raw = np.arange(6, dtype="<f4").tobytes()
    inputs = parse_v2(header + raw, SIG, header_length=len(header))
    assert inputs.array.tolist() == [[0, 1, 2], [3, 4, 5]] and inputs.meta["binary_outputs"] is True
    from mlplat.serving.protocol import v2_body

    payload, size = v2_body({"model_name": "m", "outputs": v2_outputs(np.array([0.5, 0.25]))}, True)
    head = json.loads(payload[:size])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 16} and "data" not in head["outputs"][0]
    assert np.frombuffer(payload[size:], dtype="<f8").tolist() == [0.5, 0.25]
    for bad, fragment in [(header + raw[:-1], "runs past the end"), (header + raw + b"x", "no input claims")]:
        with pytest.raises(RequestError, match=fragment):
            parse_v2(bad, SIG, header_length=len(header))
    with pytest.raises(RequestError, match="does not fit"):
        parse_v2(header, SIG, header_length=len(header) + 5)
    nan = np.array([np.nan, 1, 2], dtype="<f4").tobytes()
    one = json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                                  "parameters": {"binary_data_size": 12}}]}).encode()
    with pytest.raises(RequestError, match="element \\[0, 0\\] is nan"):
        parse_v2(one + nan, SIG, header_length=len(one))


def test_v2_error_body_has_the_protocols_error_key():
    exc = RequestError("bad shape", 422)
    assert exc.body("r1", v2=True)["error"] == "bad shape"
    assert "error" not in exc.body("r1")


# --- a sweep: whatever JSON arrives, the parser answers Inputs or a 4xx RequestError ------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(["a", "b", "n", "x"]), inner,
                                                                       max_size=4)), max_leaves=20)
SHAPES = st.lists(st.integers(min_value=0, max_value=4), max_size=4)
TENSOR = st.fixed_dictionaries({"name": st.sampled_from(["x", "a", "b", "n"]), "shape": SHAPES,
                                "datatype": st.sampled_from(sorted(["BOOL", "UINT8", "INT8", "INT32", "INT64", "UINT64",
                                                                    "FP16", "FP32", "FP64", "BYTES"])),
                                "data": VALUES})
PAYLOADS = st.one_of(
    st.fixed_dictionaries({"dataframe_split": st.fixed_dictionaries(
        {"columns": st.lists(st.sampled_from(["a", "b", "n", "x"]), max_size=4), "data": VALUES})}),
    st.fixed_dictionaries({"dataframe_records": st.lists(st.dictionaries(st.sampled_from(["a", "b", "n", "x"]), VALUES,
                                                                         max_size=4), max_size=3)}),
    st.fixed_dictionaries({"instances": VALUES}), st.fixed_dictionaries({"inputs": VALUES}), VALUES)
SIGNATURES = [SIG, LONG, SMALL, Signature(), Signature(columns=(Column("a", "any"), Column("b", "any"))),
              Signature(tensor=TensorSpec(np.dtype("float32"), (-1, 2))),
              Signature(columns=(Column("x", "string"), Column("a", "double", required=False)))]


def _parse_or_refuse(fn, raw: bytes, sig: Signature) -> None:
    try:
        inputs = fn(raw, sig)
    except RequestError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    assert inputs.rows >= 0
    if inputs.array is not None and inputs.array.dtype.kind == "f" and inputs.columns:
        assert np.isfinite(inputs.array).all() or any(not c.required for c in sig.columns)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(payload=PAYLOADS, index=st.integers(min_value=0, max_value=len(SIGNATURES) - 1))
def test_any_scoring_payload_parses_or_is_refused_with_4xx(payload, index):
    _parse_or_refuse(parse_scoring, json.dumps(payload, allow_nan=True).encode(), SIGNATURES[index])


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(tensors=st.lists(TENSOR, min_size=1, max_size=3), index=st.integers(min_value=0, max_value=len(SIGNATURES) - 1))
def test_any_v2_payload_parses_or_is_refused_with_4xx(tensors, index):
    _parse_or_refuse(parse_v2, json.dumps({"inputs": tensors}, allow_nan=True).encode(), SIGNATURES[index])
