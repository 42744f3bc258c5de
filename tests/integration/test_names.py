"""A model name with a trailing newline is not the governed model: registration refuses it."""
from __future__ import annotations

import pytest

from mlplat.errors import MlplatError

pytestmark = pytest.mark.integration


def test_a_model_name_with_a_trailing_newline_is_refused_and_nothing_is_registered(up_project):
    import numpy as np
    from mlflow.tracking import MlflowClient
    from sklearn.linear_model import LogisticRegression

    import mlplat

    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] > 0).astype(int)
    with mlplat.start_run(experiment="names", datasets={"train": X}) as run:
        model = LogisticRegression().fit(X, y)
        # the dev stack governs 'credit-risk' as critical; 'credit-risk\n' would inherit none of it
        with pytest.raises(MlplatError, match=r"invalid model name 'credit-risk\\n'"):
            run.log_model(model, name="credit-risk\n")
    client = MlflowClient(tracking_uri=f"sqlite:///{up_project / '.mlplat' / 'dev' / 'mlflow.db'}")
    assert client.search_registered_models() == []
