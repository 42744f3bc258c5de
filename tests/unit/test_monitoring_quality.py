"""Labels: parsing, validation, the join by request id; quality and calibration metrics."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mlplat.contracts import Capture, split_predictions
from mlplat.db import Database
from mlplat.services.monitoring import quality as q


def test_labels_normalise_to_classes():
    batch = q.parse_records([("a", 1), ("b", "0"), ("c", True), ("d", 1.0), ("e", "false")], source="t")
    assert batch.labels == {"a": 1, "b": 0, "c": 1, "d": 1, "e": 0}


@pytest.mark.parametrize("bad", [0.7, float("inf"), [1], {"x": 1}, ""])
def test_wrong_label_types_are_one_clear_error(bad):
    with pytest.raises(q.LabelError) as info:
        q.parse_records([("a", 1), ("b", bad)], source="labels.csv")
    assert "labels.csv: row 2" in str(info.value)
    assert info.value.hint


def test_mixed_numbers_and_names_are_refused():
    with pytest.raises(q.LabelError, match="mix numbers and class names"):
        q.parse_records([("a", 1), ("b", "cat")], source="s")


def test_missing_ids_and_duplicates_are_counted():
    batch = q.parse_records([("a", 1), (None, 0), ("", 1), ("a", 1), ("b", 0), ("b", 1)], source="s")
    assert batch.rows == 6 and batch.missing_ids == 2 and batch.duplicates == 2
    assert batch.conflicting == ["b"]
    assert batch.labels == {"a": 1, "b": 1}  # the last value wins


def test_read_csv_and_parquet(tmp_path):
    frame = pd.DataFrame({"request_id": ["r1", "r2", None], "label": [1, 0, 1]})
    frame.to_csv(tmp_path / "l.csv", index=False)
    frame.to_parquet(tmp_path / "l.parquet", index=False)
    for name in ("l.csv", "l.parquet"):
        batch = q.read_label_file(tmp_path / name)
        assert batch.labels == {"r1": 1, "r2": 0} and batch.missing_ids == 1
    with pytest.raises(q.LabelError, match="column 'truth' not found"):
        q.read_label_file(tmp_path / "l.csv", label_column="truth")
    (tmp_path / "l.txt").write_text("x")
    with pytest.raises(q.LabelError, match="unsupported labels file type"):
        q.read_label_file(tmp_path / "l.txt")


def test_store_labels_counts_unknown_and_updates(tmp_path):
    db = Database(tmp_path / "platform.db")
    db.migrate()
    batch = q.parse_records([("r1", 1), ("r2", 0), ("ghost", 1)], source="f")
    with db.transaction() as conn:
        result = q.store_labels(conn, batch, known_ids={"r1", "r2"}, source="f", now=1.0)
    assert (result.stored, result.updated, result.unknown, result.unknown_ids) == (2, 0, 1, ["ghost"])
    with db.transaction() as conn:
        again = q.store_labels(conn, q.parse_records([("r1", 1), ("r2", 1)], source="g"), known_ids={"r1", "r2"},
                               source="g", now=2.0)
    assert (again.stored, again.updated) == (0, 1)
    conn = db.connect()
    assert dict(conn.execute("SELECT request_id, label FROM monitor_labels").fetchall()) == {"r1": "1", "r2": "1"}


def test_quality_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 400).tolist()
    score = np.clip(np.array(truth) * 0.6 + rng.normal(0.2, 0.2, 400), 0, 1).tolist()
    pred = [int(s >= 0.5) for s in score]
    m = q.quality_metrics(truth, pred, score)
    assert m["quality.accuracy"] == pytest.approx(skm.accuracy_score(truth, pred))
    assert m["quality.recall"] == pytest.approx(skm.recall_score(truth, pred))
    assert m["quality.precision"] == pytest.approx(skm.precision_score(truth, pred))
    assert m["quality.f1"] == pytest.approx(skm.f1_score(truth, pred))
    assert m["quality.roc_auc"] == pytest.approx(skm.roc_auc_score(truth, score))
    assert m["quality.brier"] == pytest.approx(skm.brier_score_loss(truth, score))
    assert 0 <= m["quality.ece"] <= 1


def test_ece_by_hand():
    # bin [0.1,0.2): scores 0.1, 0.1 with outcomes 0, 1 -> |0.5 - 0.1| ; bin [0.9,1]: 0.9 x2, outcomes 1, 1 -> |1 - 0.9|
    assert q.expected_calibration_error([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9]) == pytest.approx((0.4 * 2 + 0.1 * 2) / 4)
    assert q.expected_calibration_error([0, 1], [0.0, 1.0]) == pytest.approx(0.0)


def test_multiclass_uses_macro_averages_and_no_score_metrics():
    m = q.quality_metrics(["a", "b", "c", "a"], ["a", "b", "b", "a"])
    assert m["quality.accuracy"] == 0.75
    assert "quality.roc_auc" not in m and "quality.ece" not in m


@pytest.mark.parametrize("outputs,expected", [
    ({"predictions": [1, 0], "probabilities": [[0.2, 0.8], [0.9, 0.1]]}, [(1, 0.8), (0, 0.1)]),
    ([0.7, 0.2], [(1, 0.7), (0, 0.2)]),
    ({"prediction": "cat"}, [("cat", None)]),
    (1, [(1, None)]),
    ([[0.3, 0.7]], [(1, 0.7)]),
])
def test_predictions_are_read_from_common_shapes(outputs, expected):
    assert split_predictions(outputs) == expected


def test_batch_capture_rows_get_row_ids():
    cap = Capture("r9", 1.0, "m", 1, "", "dev", [{"x": 1}, {"x": 2}], {"predictions": [1, 0]}, 3.0, 200, False)
    assert [(i, f, label) for i, f, label, _ in cap.rows()] == [("r9#0", {"x": 1}, 1), ("r9#1", {"x": 2}, 0)]
