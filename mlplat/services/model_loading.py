"""Loading a registered model without running its code in the calling process.

A model file in a pickle format (pickle, cloudpickle, ``torch.save``) is a program: loading it
runs whatever the file says. The sealed manifest proves the files are the ones registered, but
whoever can read the stack's key can reseal altered files, so the seal alone is not enough to run
them in a process that also holds the platform database. The rule here:

* **safe formats load in-process**: scikit-learn saved with skops, loaded with skops' default
  trusted types plus :data:`SKOPS_TRUSTED` — the platform's allow-list, never the ``skops_trusted_types``
  the model's own ``MLmodel`` lists (whoever can write the model folder can write that list too);
  XGBoost saved in its own UBJ or JSON format, rebuilt as one of :data:`XGBOOST_CLASSES` only;
* **pickle-family formats never load in the calling process**: :func:`score` runs them in a child
  process (``python -m mlplat.services.model_loading``) that ends with its parent and returns plain
  arrays (read back with ``allow_pickle=False``). Model servers (``mlplat.serving``) are the other
  processes allowed to deserialize them.

Which path a folder takes is read from its ``MLmodel`` with ``yaml.safe_load``; MLflow's loaders, which
import whatever module and class ``MLmodel`` names, are only used in those child processes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from mlplat.errors import ExternalError, IntegrityError

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import NDArray

# Types skops does not trust by default but that scikit-learn's own estimators keep inside them
# (tree structures, neighbour indexes, optimiser state, calibrators, kernels). Each is a data
# holder rebuilt by skops from plain arrays; none runs code on load. Callables (functools.partial,
# functions) are deliberately absent: a model that needs one is saved with cloudpickle instead.
SKOPS_TRUSTED = (
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.gaussian_process._gpc._BinaryGaussianProcessClassifierLaplace",
    "sklearn.gaussian_process._gpc._OneVsRestClassifierGaussianProcess",
    "sklearn.gaussian_process.kernels.ConstantKernel",
    "sklearn.gaussian_process.kernels.DotProduct",
    "sklearn.gaussian_process.kernels.Matern",
    "sklearn.gaussian_process.kernels.Product",
    "sklearn.gaussian_process.kernels.RBF",
    "sklearn.gaussian_process.kernels.RationalQuadratic",
    "sklearn.gaussian_process.kernels.Sum",
    "sklearn.gaussian_process.kernels.WhiteKernel",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",
)
# The XGBoost model classes a native (UBJ/JSON) model file may be rebuilt as.
XGBOOST_CLASSES = ("xgboost.core.Booster", "xgboost.sklearn.XGBClassifier", "xgboost.sklearn.XGBRegressor",
                   "xgboost.sklearn.XGBRanker", "xgboost.sklearn.XGBRFClassifier", "xgboost.sklearn.XGBRFRegressor")
XGBOOST_FORMATS = ("ubj", "json")
SCORING_TIMEOUT_S = 900.0
WORKER_MODULE = "mlplat.services.model_loading"


@dataclass(frozen=True)
class ModelFormat:
    """How a model folder's model is stored: ``flavor`` (sklearn | xgboost | pytorch | pyfunc),
    ``serialization`` (skops | ubj | json | pickle | cloudpickle | torch) and ``data`` (the file
    or folder holding it, relative to the model folder; ``None`` when MLmodel names none)."""

    flavor: str
    serialization: str
    data: str | None = None
    # what MLflow's pyfunc loader would run: its loader module, and whether MLmodel adds code to sys.path
    loader: str | None = None
    code: bool = False

    @property
    def safe(self) -> bool:
        """True when the model loads without deserializing code (skops, XGBoost's native formats) and
        MLmodel sends MLflow's pyfunc loader nowhere else (the flavor's own module, no code folder)."""
        stored = (self.flavor, self.serialization) == ("sklearn", "skops") or \
            (self.flavor == "xgboost" and self.serialization in XGBOOST_FORMATS)
        return stored and not self.code and self.loader in (None, f"mlflow.{self.flavor}")


def _mlmodel(model_dir: Path) -> dict[str, Any]:
    import yaml

    path = Path(model_dir) / "MLmodel"
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise IntegrityError(f"the model's MLmodel file is unreadable: {exc}", where=str(path)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
        raise IntegrityError("the model's MLmodel file has no flavors", where=str(path))
    return doc


def describe(model_dir: Path | str) -> ModelFormat:
    """The storage format of the MLflow model in ``model_dir``, from its MLmodel file."""
    flavors = _mlmodel(Path(model_dir))["flavors"]
    pyfunc = flavors.get("python_function") if isinstance(flavors.get("python_function"), dict) else {}
    run: dict[str, Any] = dict(loader=pyfunc.get("loader_module"), code=bool(pyfunc.get("code")))
    for name in ("sklearn", "xgboost"):
        if isinstance(flavors.get(name), dict) and flavors[name].get("code"):
            run["code"] = True
    if isinstance(flavors.get("sklearn"), dict):
        conf = flavors["sklearn"]
        return ModelFormat("sklearn", str(conf.get("serialization_format") or "pickle"), conf.get("pickled_model"),
                           **run)
    if isinstance(flavors.get("xgboost"), dict):
        conf = flavors["xgboost"]
        return ModelFormat("xgboost", str(conf.get("model_format") or "xgb"), conf.get("data"), **run)
    if isinstance(flavors.get("pytorch"), dict):
        return ModelFormat("pytorch", "torch", flavors["pytorch"].get("model_data"), **run)
    if isinstance(flavors.get("container"), dict):  # an OCI image: nothing of it loads in any process of ours
        return ModelFormat("container", "oci", None, **run)
    return ModelFormat("pyfunc", "cloudpickle", pyfunc.get("python_model"), **run)


def _data_file(model_dir: Path, fmt: ModelFormat) -> Path:
    """The model file named by MLmodel, refused unless it is a plain file inside the folder."""
    rel = fmt.data
    pure = PurePosixPath(str(rel or ""))
    if not rel or pure.is_absolute() or ".." in pure.parts or "\\" in str(rel):
        raise IntegrityError(f"the MLmodel file names model data outside the model folder: {rel!r}",
                             where=str(model_dir / "MLmodel"), hint="register the model again from a tracked run")
    path = model_dir / pure
    if path.is_symlink() or not path.is_file():
        raise IntegrityError(f"the model data file '{rel}' is missing", where=str(path),
                             hint="register the model again from a tracked run")
    return path


def _skops_io() -> Any:
    """``skops.io``, imported without importing PyTorch on the way.

    skops builds its default trusted types from scikit-learn's ``all_estimators()``, which walks every
    scikit-learn package, among them its array-API adapter for PyTorch, which imports torch when it is
    installed: seconds of a serving process's start-up for a model that has nothing to do with torch.
    A placeholder stands in for that adapter during this one import (it holds no estimator, so the walk
    finds the same ones) and is removed right after, so the real adapter still imports when needed."""
    if "skops.io" not in sys.modules and TORCH_ADAPTER not in sys.modules:
        import types

        placeholder = types.ModuleType(TORCH_ADAPTER)
        sys.modules[TORCH_ADAPTER] = placeholder
        try:
            import skops.io  # noqa: F401
        finally:
            if sys.modules.get(TORCH_ADAPTER) is placeholder:
                del sys.modules[TORCH_ADAPTER]
    import skops.io

    return skops.io


TORCH_ADAPTER = "sklearn.externals.array_api_compat.torch"


def load_native(model_dir: Path | str, *, what: str = "the model") -> Any:
    """The estimator of a safe-format model folder, loaded in this process without running code from it.

    ``IntegrityError`` when the folder is not in a safe format, when its skops file holds a type
    outside skops' defaults and :data:`SKOPS_TRUSTED`, or when its XGBoost class or format is not
    allowed."""
    model_dir = Path(model_dir)
    fmt = describe(model_dir)
    if not fmt.safe:
        raise IntegrityError(f"{what} is stored as {fmt.flavor}/{fmt.serialization}, which runs code when loaded; "
                             f"it is only loaded by a scoring or serving process", where=str(model_dir))
    path = _data_file(model_dir, fmt)
    if fmt.flavor == "sklearn":
        skops_io = _skops_io()
        from skops.io.exceptions import UntrustedTypesFoundException

        try:
            return skops_io.load(path, trusted=list(SKOPS_TRUSTED))
        except UntrustedTypesFoundException as exc:
            found = sorted(getattr(exc, "unsafe", None) or []) or [str(exc)]
            raise IntegrityError(
                f"refusing to load {what}: its skops file holds type(s) outside the platform's allow-list: "
                f"{', '.join(found)[:500]}", where=str(path),
                hint="types listed in the model's own MLmodel are not trusted; register the model again "
                     "from a tracked run") from None
        except Exception as exc:  # a malformed archive, a missing module: not a model we can read
            raise IntegrityError(f"the skops file of {what} is unreadable: {type(exc).__name__}: {exc}"[:500],
                                 where=str(path)) from None
    model_class = xgboost_class(model_dir, what=what)
    import xgboost

    model = getattr(xgboost, model_class.rsplit(".", 1)[1])()
    try:
        model.load_model(str(path))
    except Exception as exc:  # xgboost.core.XGBoostError and friends: a damaged or foreign file
        raise IntegrityError(f"the XGBoost file of {what} is unreadable: {exc}"[:500], where=str(path)) from None
    return model


def xgboost_class(model_dir: Path | str, *, what: str = "the model") -> str:
    """The XGBoost model class MLmodel names, checked against :data:`XGBOOST_CLASSES` (``IntegrityError``);
    MLflow's own loader would import and instantiate whatever class is named there."""
    conf = _mlmodel(Path(model_dir))["flavors"].get("xgboost") or {}
    model_class = str(conf.get("model_class") or "xgboost.core.Booster")
    if model_class not in XGBOOST_CLASSES:
        raise IntegrityError(f"refusing to load {what}: XGBoost model class {model_class!r} is not one of "
                             f"{', '.join(XGBOOST_CLASSES)}", where=str(Path(model_dir) / "MLmodel"))
    return model_class


# --- predictions ------------------------------------------------------------------------------------


def predictions(model: Any, X: pd.DataFrame) -> tuple[Any, Any, Any]:
    """``(predictions, probabilities or None, classes or None)``: class probabilities when the model
    has ``predict_proba`` and ``classes_``, else ``predict`` (the first column of a one-column frame).
    A model without ``classes_`` whose ``predict`` answers several numeric columns (a PyTorch classifier's
    output layer, a container's per-class scores) is read as one score per class ``0..k-1``:
    probabilities when every row is non-negative and sums to 1, else logits (softmax)."""
    import numpy as np

    if type(model).__module__.startswith("xgboost") and type(model).__name__ == "Booster":
        import xgboost

        return _one_column(model.predict(xgboost.DMatrix(X))), None, None
    classes = getattr(model, "classes_", None)
    if hasattr(model, "predict_proba") and classes is not None:
        proba = np.asarray(model.predict_proba(X))
        return np.asarray(classes)[proba.argmax(axis=1)], proba, np.asarray(classes)
    out = model.predict(X)
    scores = class_scores(_one_column_frame(out))
    if scores is not None:
        return scores.argmax(axis=1), scores, np.arange(scores.shape[1])
    return _one_column(out), None, None


def _arange(n: int) -> NDArray[Any]:
    import numpy as np

    return np.arange(n)


def class_scores(out: Any) -> NDArray[Any] | None:
    """``out`` as per-class probabilities (rows summing to 1) when it is a numeric ``(n, k)`` array with
    ``k >= 2``, else ``None``: kept as they are when they already are probabilities, else softmaxed."""
    import numpy as np

    arr = np.asarray(out)
    if arr.ndim != 2 or arr.shape[1] < 2 or not np.issubdtype(arr.dtype, np.number):
        return None
    arr = arr.astype(float)
    if (arr >= 0).all() and np.allclose(arr.sum(axis=1), 1.0, atol=1e-4):
        return arr
    shifted = np.exp(arr - arr.max(axis=1, keepdims=True))
    out_scores: NDArray[Any] = shifted / shifted.sum(axis=1, keepdims=True)
    return out_scores


def _one_column(out: Any) -> NDArray[Any]:
    import numpy as np

    arr = np.asarray(out.iloc[:, 0] if hasattr(out, "iloc") and getattr(out, "ndim", 1) == 2 else out)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    return arr


def _one_column_frame(out: Any) -> NDArray[Any]:
    """A pyfunc's answer as an array (a DataFrame or Series becomes its values)."""
    import numpy as np

    return np.asarray(out.to_numpy() if hasattr(out, "to_numpy") else out)


def _serving_predict(model: Any, X: pd.DataFrame, model_dir: Path) -> NDArray[Any]:
    """What the model server answers for ``X``: the method named by the pyfunc ``predict_fn``
    (default ``predict``) for scikit-learn, ``predict`` for XGBoost."""
    import numpy as np

    if type(model).__module__.startswith("xgboost") and type(model).__name__ == "Booster":
        import xgboost

        return np.asarray(model.predict(xgboost.DMatrix(X)))
    conf = _mlmodel(model_dir)["flavors"].get("python_function") or {}
    method = str(conf.get("predict_fn") or "predict") if isinstance(conf, dict) else "predict"
    if method not in ("predict", "predict_proba", "predict_log_proba", "predict_joint_log_proba", "score"):
        method = "predict"
    return np.asarray(getattr(model, method)(X))


class ScoringFailed(ExternalError):
    """The model could not be loaded (``stage == "load"``) or could not predict (``"predict"``)."""

    def __init__(self, message: str, *, stage: str, **kw: Any):
        super().__init__(message, **kw)
        self.stage = stage


@dataclass
class Scores:
    """Predictions on a frame: ``predictions``, and for classifiers scored for the gate ``proba``/``classes``."""

    predictions: Any
    proba: Any = None
    classes: Any = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.predictions, self.proba, self.classes))


def score(model_dir: Path | str, X: pd.DataFrame, *, serving: bool = False, what: str = "the model") -> Scores:
    """Score ``X`` (a DataFrame) with the model in ``model_dir`` (already verified by the caller).

    ``serving=False``: what the gate needs (:func:`predictions`); ``serving=True``: what the model server
    answers on ``/invocations``. Safe formats are scored in this process (:func:`load_native`); every
    other format in a child process, so its pickle never runs here. ``ScoringFailed`` when loading or
    predicting fails, ``IntegrityError`` when a safe-format file holds what the allow-list refuses."""
    model_dir = Path(model_dir)
    fmt = describe(model_dir)
    if fmt.flavor == "container":  # scored by the image itself, through its HTTP API
        from mlplat.services import container_models

        out = container_models.score(model_dir, X, what=what, model=what.split(" version ")[0])
        scores = None if serving else class_scores(out)
        return Scores(out) if scores is None else Scores(scores.argmax(axis=1), scores, _arange(scores.shape[1]))
    if not fmt.safe:
        return _score_in_child(model_dir, X, serving=serving, what=what)
    model = load_native(model_dir, what=what)
    try:
        if serving:
            return Scores(_serving_predict(model, X, model_dir))
        return Scores(*predictions(model, X))
    except Exception as exc:  # the model's own error on these rows, reported as the caller's finding
        raise ScoringFailed(f"{type(exc).__name__}: {exc}"[:500], stage="predict") from None


def _score_in_child(model_dir: Path, X: pd.DataFrame, *, serving: bool, what: str) -> Scores:
    import numpy as np

    from mlplat.serving.staging import die_with_parent

    with tempfile.TemporaryDirectory(prefix="mlplat-score-") as tmp:
        work = Path(tmp)
        frame = X.copy()
        frame.columns = [str(c) for c in frame.columns]
        frame.to_parquet(work / "input.parquet", index=False)
        cmd = [sys.executable, "-m", WORKER_MODULE, "--model-dir", str(model_dir), "--input",
               str(work / "input.parquet"), "--output", str(work / "scores.npz"), "--error", str(work / "error.json")]
        if serving:
            cmd.append("--serving")
        env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true", "PYTHONUNBUFFERED": "1"}
        try:
            done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=SCORING_TIMEOUT_S, preexec_fn=die_with_parent, close_fds=True)
        except subprocess.TimeoutExpired:
            raise ScoringFailed(f"scoring {what} did not finish within {SCORING_TIMEOUT_S:.0f}s", stage="predict",
                                where=str(model_dir)) from None
        if done.returncode != 0:
            try:
                err = json.loads((work / "error.json").read_text())
            except (OSError, ValueError):
                err = {"stage": "load", "message": f"the scoring process exited with code {done.returncode}: "
                                                   f"{done.stderr.strip()[-400:]}"}
            stage = "predict" if err.get("stage") == "predict" else "load"
            raise ScoringFailed(str(err.get("message"))[:500], stage=stage, where=str(model_dir),
                                hint=None if stage == "predict" else "the model's files load in a separate process "
                                                                     "(pickle formats run code); see the message")
        with np.load(work / "scores.npz", allow_pickle=False) as data:
            return Scores(data["predictions"], data["proba"] if "proba" in data.files else None,
                          data["classes"] if "classes" in data.files else None)


# --- the child process --------------------------------------------------------------------------------


def _plain(array: Any) -> NDArray[Any]:
    """A numpy array np.save can write without pickle: object arrays become numbers or strings."""
    import numpy as np

    arr = np.asarray(array)
    if arr.dtype != object:
        return arr
    try:
        return arr.astype(float)
    except (TypeError, ValueError):
        return arr.astype(str)


def _load_any(model_dir: Path) -> Any:
    """In the child only: the native estimator for scikit-learn, else the MLflow pyfunc."""
    import mlflow.pyfunc

    if describe(model_dir).flavor == "sklearn":
        import mlflow.sklearn

        return mlflow.sklearn.load_model(str(model_dir))
    return mlflow.pyfunc.load_model(str(model_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {WORKER_MODULE}",
                                     description="Score a Parquet frame with an MLflow model in this process.")
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--error", required=True, type=Path)
    parser.add_argument("--serving", action="store_true", help="answer as the model server would")
    args = parser.parse_args(argv)
    import logging
    import warnings

    import numpy as np
    import pandas as pd

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    def fail(stage: str, exc: BaseException) -> int:
        args.error.write_text(json.dumps({"stage": stage, "message": f"{type(exc).__name__}: {exc}"[:2000]}))
        return 3

    try:
        model = _load_any(args.model_dir)
    except Exception as exc:  # reported to the parent, which names the model
        return fail("load", exc)
    X = pd.read_parquet(args.input)
    try:
        if args.serving:
            native = describe(args.model_dir).flavor == "sklearn"
            out: dict[str, Any] = {"predictions": _plain(_serving_predict(model, X, args.model_dir) if native else
                                         _one_column_frame(model.predict(X)))}
        else:
            pred, proba, classes = predictions(model, X)
            out = {"predictions": _plain(pred)}
            if proba is not None:
                out.update(proba=_plain(proba), classes=_plain(classes))
    except Exception as exc:
        return fail("predict", exc)
    np.savez(args.output, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
