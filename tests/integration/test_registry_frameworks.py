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
