"""Registration beyond scikit-learn: an XGBoost model and a plain MLflow pyfunc go through the same
registry path (sealed manifest, lineage, gate) and load back verified."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.integration


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(600, 4)), columns=["a", "b", "c", "d"])
    frame["label"] = (frame["a"] + 0.5 * frame["b"] > 0).astype(int)
    return frame


def test_xgboost_and_pyfunc_versions_register_and_load_verified(up_project):
    import mlflow.pyfunc
    import xgboost

    import mlplat
    from mlplat.context import Context
    from mlplat.services.registry import verified_model_dir
    from mlplat.stack import load_stack

    frame = _data()
    holdout = up_project / "holdout.parquet"
    frame.tail(200).to_parquet(holdout, index=False)
    train = frame.head(400)
    features = ["a", "b", "c", "d"]

    class Threshold(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return (model_input["a"] + 0.5 * model_input["b"] > 0).astype(int).to_numpy()

    with mlplat.start_run(experiment="frameworks", datasets={"train": train}) as run:
        booster = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(train[features], train["label"])
        v_xgb = run.log_model(booster, name="xgb-scorer", input_example=train[features].head(5),
                              holdout={"path": str(holdout), "label": "label"}, reference_data=train[features])
        v_py = run.log_model(Threshold(), name="rule-scorer", input_example=train[features].head(5),
                             holdout={"path": str(holdout), "label": "label"}, reference_data=train[features])

    spec, ctx = load_stack("dev", up_project), Context(project_dir=up_project)
    for name, version, expected in (("xgb-scorer", v_xgb, booster.predict(frame.tail(200)[features])),
                                    ("rule-scorer", v_py, Threshold().predict(None, frame.tail(200)[features]))):
        loaded = mlflow.pyfunc.load_model(str(verified_model_dir(spec, ctx, name, version)))
        got = np.asarray(loaded.predict(frame.tail(200)[features])).astype(int)
        assert (got == np.asarray(expected).astype(int)).all(), name


README_STYLE = """
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier
import mlplat

X, y = make_classification(n_samples=900, n_features=5, n_informative=4, n_redundant=0, random_state=5)
frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
frame["label"] = y
frame.iloc[:600].to_parquet("data/train.parquet", index=False)
frame.iloc[600:].to_parquet("data/holdout.parquet", index=False)
train = pd.read_parquet("data/train.parquet")
holdout = {"path": "data/holdout.parquet", "label": "label"}
features = train.drop(columns=["label"])

# As the README shows it: no input_example, no signature.
with mlplat.start_run(experiment="credit-risk", datasets={"train": "data/train.parquet"}) as run:
    model = GradientBoostingClassifier(n_estimators=30, random_state=0).fit(features, train["label"])
    print("VERSION", run.log_model(model, name="credit-risk", holdout=holdout))

# No train dataset at all: the columns come from the gate's held-out set.
with mlplat.start_run(experiment="no-train") as run:
    model = GradientBoostingClassifier(n_estimators=10, random_state=0).fit(features, train["label"])
    print("VERSION", run.log_model(model, name="from-holdout", holdout=holdout))
"""


def test_model_logged_without_input_example_gets_a_signature_and_promotes(up_project, cli):
    """The README's tracked-training snippet: the signature is inferred from the run's train dataset
    (else the held-out set), so the staging endpoint checks columns and the promotion passes."""
    import json
    import sqlite3
    import subprocess
    import sys

    (up_project / "data").mkdir()
    done = subprocess.run([sys.executable, "-c", README_STYLE], cwd=up_project, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no input signature" not in done.stderr
    conn = sqlite3.connect(up_project / ".mlplat" / "dev" / "platform.db")
    rows = {r[0]: (json.loads(r[1]) if r[1] else None, json.loads(r[2]))
            for r in conn.execute("SELECT model, signature, lineage FROM model_versions")}
    conn.close()
    for name, source in (("credit-risk", "train dataset"), ("from-holdout", "held-out set")):
        signature, lineage = rows[name]
        assert signature is not None, name
        inputs = json.loads(signature["inputs"])
        assert [c["name"] for c in inputs] == [f"f{i}" for i in range(5)], name  # the label is not an input
        assert all(c["type"] == "double" for c in inputs)
        assert lineage["signature_source"].startswith(source), lineage["signature_source"]
    promoted = cli("models", "promote", "credit-risk", "1", "--to", "staging")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "malformed payload ok" in promoted.stdout, promoted.stdout  # an unknown column got a 4xx
    assert "now staging" in promoted.stdout
