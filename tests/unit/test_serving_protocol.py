"""Request parsing: every MLflow scoring format and v2 infer, checked against a signature."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mlplat.serving.protocol import (
    Column, RequestError, Signature, TensorSpec, parse_scoring, parse_v2, to_list, v2_outputs,
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
