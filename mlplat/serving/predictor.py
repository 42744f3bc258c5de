"""A loaded model: MLflow pyfunc, with a direct path to the estimator for known flavors.

``mlflow.pyfunc`` wraps every call in pandas schema enforcement; for a scikit-learn
model whose inputs were already checked by :mod:`mlplat.serving.protocol`, we call
the estimator's ``predict``/``predict_proba`` on the numpy array directly. Any other
flavor goes through ``pyfunc.predict`` (with a DataFrame built from the columns).
"""
from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlplat.serving.protocol import Column, Inputs, Signature

_warnings_quiet = False


def _quiet_feature_name_warnings() -> None:
    # Estimators fitted on a DataFrame warn on every numpy call; the columns were checked already.
    global _warnings_quiet
    if not _warnings_quiet:
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        _warnings_quiet = True


@dataclass
class LoadedModel:
    name: str
    version: int | str
    path: Path
    signature: Signature
    flavor: str
    _predict: Callable[[Inputs], Any]
    # positive-class probabilities of a binary classifier on a 2-d array, for monitoring
    # (calibration, ROC AUC); called by the capture writer on whole batches, off the request path
    _scores: Callable[[np.ndarray], Any] | None = None
    loaded_at: float = field(default_factory=time.time)
    # exponentially weighted predict time: slow models run off the event loop
    ewma_ms: float = 0.0
    # predict takes independent rows (a tabular flavor on columns): concurrent requests may share a call
    batchable: bool = False

    def predict(self, inputs: Inputs) -> Any:
        start = time.perf_counter()
        out = self._predict(inputs)
        took = (time.perf_counter() - start) * 1000
        self.ewma_ms = took if not self.ewma_ms else 0.9 * self.ewma_ms + 0.1 * took
        return out

    @property
    def score_array(self) -> Callable[[np.ndarray], Any] | None:
        """``array -> positive-class probabilities``, or ``None`` when the model has none."""
        return self._scores


_load_lock = threading.Lock()
# stored flavors whose predict scores rows independently, when their inputs are columns
BATCHABLE_FLAVORS = ("sklearn", "xgboost", "pyfunc")


def load(model_dir: Path | str, *, name: str = "model", version: int | str = 0) -> LoadedModel:
    """Load an MLflow model directory (already verified by the caller). Raises whatever MLflow raises.

    A scikit-learn model saved with skops is loaded with the platform's allow-list
    (:func:`mlplat.services.model_loading.load_native`), never the trusted types its own MLmodel lists;
    an XGBoost model's class is checked before MLflow instantiates it. Pickle formats go through
    MLflow: this is a serving process, one of the places allowed to run them."""
    from mlplat.services import model_loading

    path = Path(model_dir)
    signature = Signature.from_model_dir(path)
    stored = model_loading.describe(path)
    what = f"{name} version {version}"
    pyfunc_model, estimator = None, None
    with _load_lock:  # MLflow's loaders are not documented as thread-safe
        if stored.safe and stored.flavor == "sklearn":
            estimator = model_loading.load_native(path, what=what)
        else:
            import mlflow.pyfunc

            if stored.flavor == "xgboost":
                model_loading.xgboost_class(path, what=what)
            pyfunc_model = mlflow.pyfunc.load_model(str(path))
    if estimator is None:
        impl = getattr(pyfunc_model, "_model_impl", None)
        estimator = getattr(impl, "sklearn_model", None)
    if not signature.columns and signature.tensor is None:
        fitted = estimator if estimator is not None else getattr(getattr(pyfunc_model, "_model_impl", None),
                                                                 "xgb_model", None)
        signature = training_signature(fitted) or signature
    flavor = "pyfunc"
    scores = None
    if estimator is not None:
        flavor = "sklearn"
        _quiet_feature_name_warnings()
        predict_fn = _pyfunc_conf(path).get("predict_fn", "predict")
        method = getattr(estimator, predict_fn)
        columns = signature.names

        def predict(inputs: Inputs) -> Any:
            if inputs.array is not None:
                return method(inputs.array)
            return method(_frame(inputs, columns))

        proba = getattr(estimator, "predict_proba", None)
        if predict_fn == "predict" and proba is not None and len(getattr(estimator, "classes_", ())) == 2:
            def scores(array: np.ndarray) -> Any:
                return proba(array)[:, 1]
    else:
        # a PyTorch model answers its output layer as an array (one row per input row), not as
        # MLflow's one-record-per-row frame of numbered columns
        tensor_out = stored.flavor == "pytorch"

        def predict(inputs: Inputs) -> Any:
            if inputs.array is not None and not inputs.columns:
                out = pyfunc_model.predict(inputs.array)
            else:
                out = pyfunc_model.predict(_frame(inputs, inputs.columns or ()))
            return np.asarray(out.to_numpy()) if tensor_out and hasattr(out, "to_numpy") else out

    return LoadedModel(name=name, version=version, path=path, signature=signature, flavor=flavor, _predict=predict,
                       _scores=scores, batchable=_batchable(stored, signature))


def _batchable(stored: Any, signature: Signature) -> bool:
    """A tabular flavor (a custom pyfunc model counts, other flavors saved through pyfunc do not)
    whose inputs are columns."""
    if signature.tensor is not None or stored.flavor not in BATCHABLE_FLAVORS:
        return False
    return stored.flavor != "pyfunc" or stored.loader in (None, "mlflow.pyfunc.model")


def training_signature(fitted: Any) -> Signature | None:
    """For a model saved without a signature: the columns its estimator was fitted on
    (``feature_names_in_``), with types unknown. Requests are then checked against them, so a
    missing or unknown column is a 422 instead of an error inside the model."""
    names = getattr(fitted, "feature_names_in_", None)
    if names is None or not len(names):
        return None
    return Signature(columns=tuple(Column(str(n), "any") for n in names))


def _pyfunc_conf(path: Path) -> dict[str, Any]:
    import yaml

    mlmodel = yaml.safe_load((path / "MLmodel").read_text()) or {}
    return (mlmodel.get("flavors") or {}).get("python_function") or {}


def _frame(inputs: Inputs, columns: tuple[str, ...]):
    import pandas as pd

    if inputs.frame is not None:
        return pd.DataFrame(inputs.frame)
    array = inputs.array
    if array is not None and array.ndim == 2 and columns and array.shape[1] == len(columns):
        return pd.DataFrame(array, columns=list(columns))
    return pd.DataFrame(np.asarray(array))
