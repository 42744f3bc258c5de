"""What a lifecycle process may load: skops and XGBoost's own format in-process, under the
platform's allow-lists; anything that deserializes code only in a child process."""
from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlplat.errors import IntegrityError
from mlplat.services import model_loading, registry

PAYLOAD = textwrap.dedent('''
    import os

    def _mark():
        folder = os.environ.get("MLPLAT_TEST_MARKER_DIR")
        if folder:
            open(os.path.join(folder, f"marker-{os.getpid()}"), "w").write("ran")

    class Evil:
        """Writes a marker when a loader rebuilds it: the stand-in for any code in a model file."""
        def __init__(self, tag):
            self.tag = tag
        def __setstate__(self, state):
            _mark()
            self.__dict__.update(state)

    def double(x):
        return x * 2

    def rebuild(evil, model):
        return model

    class Carrier:
        """Unpickles as ``model``, rebuilding an ``Evil`` on the way."""
        def __init__(self, model):
            self.model = model
        def __reduce__(self):
            return (rebuild, (Evil("x"), self.model))
''')


@pytest.fixture
def payload(tmp_path, monkeypatch):
    """An importable module whose objects run code when loaded, and an empty marker folder."""
    folder = tmp_path / "payload"
    folder.mkdir()
    (folder / "evil_payload.py").write_text(PAYLOAD)
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MLPLAT_TEST_MARKER_DIR", str(markers))
    sys.modules.pop("evil_payload", None)
    yield markers
    sys.modules.pop("evil_payload", None)


def _frame():
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    return X, (X["a"] - X["b"] > 0).astype(int)


def _save(model, framework, folder: Path) -> dict:
    return registry._save(model, framework, folder, requirements=[], signature=None, input_example=None)


def _edit_mlmodel(folder: Path, change) -> None:
    doc = yaml.safe_load((folder / "MLmodel").read_text())
    change(doc)
    (folder / "MLmodel").write_text(yaml.safe_dump(doc))


def test_forest_is_saved_with_skops_and_scored_in_process(tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    X, y = _frame()
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    storage = _save(model, "sklearn", tmp_path / "m")
    assert storage == {"format": "skops", "safe": True}
    assert (tmp_path / "m" / "model.skops").is_file() and not (tmp_path / "m" / "model.pkl").exists()
    scores = model_loading.score(tmp_path / "m", X)
    assert np.array_equal(scores.predictions, model.predict(X))
    assert np.allclose(scores.proba, model.predict_proba(X)) and list(scores.classes) == [0, 1]


def test_skops_type_listed_only_in_mlmodel_is_refused(tmp_path, payload):
    """The attacker writes the model file and adds its type to MLmodel's trusted list: refused, nothing runs."""
    import evil_payload
    import skops.io
    from sklearn.linear_model import LogisticRegression

    X, y = _frame()
    folder = tmp_path / "m"
    _save(LogisticRegression().fit(X, y), "sklearn", folder)
    skops.io.dump(evil_payload.Evil("x"), folder / "model.skops")
    _edit_mlmodel(folder, lambda d: d["flavors"]["sklearn"].update(skops_trusted_types=["evil_payload.Evil"]))
    assert model_loading.describe(folder).safe  # still "skops": the allow-list is what stops it
    with pytest.raises(IntegrityError, match=r"allow-list.*evil_payload\.Evil"):
        model_loading.load_native(folder, what="m version 1")
    with pytest.raises(IntegrityError, match="allow-list"):
        model_loading.score(folder, X)
    assert list(payload.iterdir()) == []
    # the same file under a loader that trusts MLmodel's list does run the payload: the test is live
    skops.io.load(folder / "model.skops", trusted=["evil_payload.Evil"])
    assert [p.name for p in payload.iterdir()] == [f"marker-{os.getpid()}"]


@pytest.mark.parametrize("change", [
    lambda d: d["flavors"]["python_function"].update(loader_module="mlflow.pyfunc.model"),
    lambda d: d["flavors"]["python_function"].update(code="code"),
    lambda d: d["flavors"]["sklearn"].update(serialization_format="cloudpickle"),
], ids=["loader_module", "code_path", "pickle_format"])
def test_mlmodel_pointing_elsewhere_is_not_a_safe_format(tmp_path, change):
    from sklearn.linear_model import LogisticRegression

    X, y = _frame()
    folder = tmp_path / "m"
    _save(LogisticRegression().fit(X, y), "sklearn", folder)
    assert model_loading.describe(folder).safe
    _edit_mlmodel(folder, change)
    assert not model_loading.describe(folder).safe
    with pytest.raises(IntegrityError, match="only loaded by a scoring or serving process"):
        model_loading.load_native(folder)


@pytest.mark.parametrize("path", ["../outside.skops", "/etc/passwd", "sub/../../x"])
def test_model_data_outside_the_folder_is_refused(tmp_path, path):
    from sklearn.linear_model import LogisticRegression

    X, y = _frame()
    folder = tmp_path / "m"
    _save(LogisticRegression().fit(X, y), "sklearn", folder)
    _edit_mlmodel(folder, lambda d: d["flavors"]["sklearn"].update(pickled_model=path))
    with pytest.raises(IntegrityError, match="outside the model folder"):
        model_loading.load_native(folder)


def test_xgboost_is_native_and_its_class_is_allow_listed(tmp_path):
    import xgboost

    X, y = _frame()
    model = xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(X, y)
    folder = tmp_path / "m"
    assert _save(model, "xgboost", folder) == {"format": "ubj", "safe": True}
    scores = model_loading.score(folder, X)
    assert np.array_equal(scores.predictions, model.predict(X))
    _edit_mlmodel(folder, lambda d: d["flavors"]["xgboost"].update(model_class="subprocess.Popen"))
    with pytest.raises(IntegrityError, match="'subprocess.Popen' is not one of"):
        model_loading.load_native(folder)


def test_pickle_format_is_scored_in_a_child_process_only(tmp_path, payload):
    """An estimator skops cannot hold safely is cloudpickled, and its pickle runs in a child, never here."""
    import evil_payload
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = _frame()
    model = make_pipeline(FunctionTransformer(evil_payload.double), LogisticRegression()).fit(X, y)
    folder = tmp_path / "m"
    storage = _save(model, "sklearn", folder)
    assert storage["format"] == "cloudpickle" and not storage["safe"] and "evil_payload.double" in storage["reason"]
    # the attacker's version: same estimator, plus an object that runs code when unpickled
    import cloudpickle

    (folder / "model.pkl").write_bytes(cloudpickle.dumps(evil_payload.Carrier(model)))
    scores = model_loading.score(folder, X)
    assert np.array_equal(scores.predictions, model.predict(X))
    markers = [p.name for p in payload.iterdir()]
    assert markers and f"marker-{os.getpid()}" not in markers  # it ran, in another process


def test_child_failures_name_the_stage(tmp_path):
    from sklearn.linear_model import LogisticRegression

    X, y = _frame()
    folder = tmp_path / "m"
    _save(LogisticRegression().fit(X, y), "sklearn", folder)
    _edit_mlmodel(folder, lambda d: d["flavors"]["sklearn"].update(serialization_format="cloudpickle"))
    with pytest.raises(model_loading.ScoringFailed) as failed:  # a skops archive is not a pickle
        model_loading.score(folder, X, what="m version 1")
    assert failed.value.stage == "load"


class _Registry:
    def __init__(self, folder: Path, key: bytes):
        self.folder, self.key = folder, key

    def local_dir(self, name, version, source):
        return self.folder

    def signing_key(self):
        return self.key


def test_format_changed_after_registration_is_refused_by_verify_row(tmp_path):
    from sklearn.linear_model import LogisticRegression

    from mlplat.services import manifest

    X, y = _frame()
    folder = tmp_path / "m"
    _save(LogisticRegression().fit(X, y), "sklearn", folder)
    key = b"k" * 64
    _edit_mlmodel(folder, lambda d: d["flavors"]["sklearn"].update(serialization_format="cloudpickle"))
    resealed = manifest.build(folder, model="m", serialization="skops")  # hashes redone, format kept
    row = {"model": "m", "version": 1, "source": str(folder), "manifest": resealed,
           "artifact_digest": manifest.digest(resealed), "seal": manifest.seal(resealed, key)}
    with pytest.raises(IntegrityError, match="registered in the skops format but its MLmodel now says cloudpickle"):
        registry.verify_row(_Registry(folder, key), row)
