"""Registering model versions and the provider-neutral registry rules.

``Run.log_model`` lands in :func:`log_model`, which runs where the model is (the user's
process): the model is saved with its MLflow flavor *without* pip-requirement inference
(the run already recorded its environment), a reference sample and a profile for
monitoring are written beside it, and the version's files are stored in the provider's
registry. It then asks the stack's control plane (``models.register``, embedded or
``mlplat server``) to record it: :func:`register_version` runs where the ledger is, fetches
the version's files from the registry, hashes every one into a manifest sealed with the
key kept there, and records lineage, author (the caller), manifest, stage ``dev`` and an
audit entry in one transaction.

The platform database is the source of truth for stages. This module is the version
ledger: registration, lookups, stages, verification of sealed files and sealed loading.
Whether a version may serve traffic is :func:`mlplat.services.deployability.assert_deployable`;
serving loads only from :func:`verified_model_dir`.
"""
from __future__ import annotations

import difflib
import json
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlplat import lineage, providers
from mlplat.api.plane import plane_for
from mlplat.contracts import Capability, ModelRegistry
from mlplat.errors import Conflict, IntegrityError, MlplatError, NotFound, TrackingRequired
from mlplat.services import audit
from mlplat.services import holdout as holdouts
from mlplat.services import manifest as manifests
from mlplat.services.model_loading import SKOPS_TRUSTED, describe
from mlplat.stack import MODEL_NAME, MODEL_NAME_RULE

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import NDArray

    from mlplat.context import Context
    from mlplat.stack import StackSpec

NAME = re.compile(MODEL_NAME)  # checked with fullmatch: "credit-risk\n" is not "credit-risk"
STAGES = ("dev", "staging", "production", "archived")
REFERENCE_ROWS = 10_000
PREDICTION_COLUMN = "__prediction__"

class TrackedRun(Protocol):
    """What registration reads from a run (:class:`mlplat.sdk.Run` is one)."""

    run_id: str
    experiment: str
    lineage: dict[str, Any]
    datasets: dict[str, Any]
    spec: StackSpec
    ctx: Context

    def set_tag(self, key: str, value: Any) -> None: ...


# Packages each flavor needs at load time, pinned from the run's environment.
FLAVOR_REQUIREMENTS = {
    "sklearn": ("scikit-learn", "skops", "numpy", "scipy", "pandas", "cloudpickle", "joblib", "threadpoolctl"),
    "xgboost": ("xgboost", "scikit-learn", "numpy", "scipy", "pandas"),
    "pytorch": ("torch", "numpy", "pandas", "cloudpickle"),
    "pyfunc": ("numpy", "pandas", "cloudpickle"),
    "container": (),  # an OCI image brings its own
}


def registry_for(spec: StackSpec, ctx: Context) -> ModelRegistry:
    return providers.capability(spec, ctx, Capability.REGISTRY)


# --- registration --------------------------------------------------------------------------


def detect_framework(model: Any) -> str:
    """``sklearn`` | ``xgboost`` | ``pytorch`` | ``pyfunc``; a clear error for anything else."""
    from mlplat.services.container_models import ContainerImage

    if isinstance(model, ContainerImage):
        return "container"
    module = type(model).__module__ or ""
    mro = {f"{c.__module__}.{c.__name__}" for c in type(model).__mro__}
    if module.startswith("xgboost") or any(m.startswith("xgboost.") for m in mro):
        return "xgboost"
    if any(m.startswith("torch.nn.") for m in mro):
        return "pytorch"
    if "mlflow.pyfunc.model.PythonModel" in mro or any(".PythonModel" in m and m.startswith("mlflow") for m in mro):
        return "pyfunc"
    if module.startswith("sklearn") or any(m.startswith("sklearn.base.") for m in mro):
        return "sklearn"
    raise MlplatError(
        f"cannot register a {type(model).__module__}.{type(model).__name__}",
        hint="pass a scikit-learn estimator, an XGBoost model, a torch.nn.Module or an mlflow.pyfunc.PythonModel",
    )


def pinned_requirements(framework: str, environment: Mapping[str, Any]) -> list[str]:
    """``name==version`` for the flavor's packages and MLflow, from the run's recorded environment."""
    packages = {k.lower(): v for k, v in (environment.get("packages") or {}).items()}
    if not packages:  # a run recorded before environments were: use this interpreter's
        packages = lineage.environment()["packages"]
    wanted = ("mlflow", *FLAVOR_REQUIREMENTS[framework])
    return [f"{name}=={packages[name]}" for name in dict.fromkeys(wanted) if name in packages]


def _holdout_doc(holdout: Any, project_dir: Path) -> dict[str, str] | None:
    if holdout is None:
        return None
    if hasattr(holdout, "model_dump"):
        holdout = holdout.model_dump()
    if not isinstance(holdout, Mapping) or not holdout.get("path") or not holdout.get("label"):
        raise MlplatError("holdout must be a mapping with 'path' and 'label'",
                          hint='log_model(..., holdout={"path": "data/holdout.parquet", "label": "is_fraud"})')
    doc = {"path": str(holdout["path"]), "label": str(holdout["label"])}
    holdouts.load_holdout(doc, project_dir, columns_only=True)  # fail now, not at promotion time
    return doc


def _as_frame(data: Any) -> pd.DataFrame | None:
    import numpy as np
    import pandas as pd

    if data is None:
        return None
    if isinstance(data, (str, Path)):
        path = Path(data)
        return pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, pd.Series):
        return data.to_frame()
    if isinstance(data, np.ndarray):
        array = data if data.ndim == 2 else data.reshape(len(data), -1)
        return pd.DataFrame(array, columns=[f"f{i}" for i in range(array.shape[1])])
    if isinstance(data, Mapping):
        return pd.DataFrame({k: (v if isinstance(v, (list, tuple, np.ndarray)) else [v]) for k, v in data.items()})
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        return pd.DataFrame(data)
    return None


def _feature_names(model: Any, signature: Any) -> list[str] | None:
    if signature is not None and getattr(signature, "inputs", None) is not None:
        try:
            names = signature.inputs.input_names()
            if names and all(isinstance(n, str) for n in names):
                return list(names)
        except Exception:  # tensor-based signatures have no column names
            pass
    names = getattr(model, "feature_names_in_", None)
    return [str(n) for n in names] if names is not None else None


def _predict_reference(model: Any, framework: str, frame: pd.DataFrame, model_dir: Path) -> NDArray[Any]:
    """Predictions on the reference rows: P(positive class) for binary classifiers, else ``predict``."""
    import numpy as np

    if framework in ("sklearn", "xgboost") and hasattr(model, "predict"):
        classes = getattr(model, "classes_", None)
        if hasattr(model, "predict_proba") and classes is not None and len(classes) == 2:
            return np.asarray(model.predict_proba(frame))[:, 1]
        out = np.asarray(model.predict(frame))
    else:
        import mlflow.pyfunc

        allow_sealed_loading()  # the files were written by this process a moment ago
        out = np.asarray(mlflow.pyfunc.load_model(str(model_dir)).predict(frame))
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim != 1:  # multi-output: keep the arg-max so the column stays one value per row
        out = out.argmax(axis=1)
    return out


def profile(frame: pd.DataFrame, *, label: str | None = None) -> dict[str, Any]:
    """Per-column dtype, kind (numerical | categorical) and summary statistics."""
    import numpy as np
    import pandas as pd

    columns: dict[str, Any] = {}
    for name in frame.columns:
        series = frame[name]
        entry: dict[str, Any] = {"dtype": str(series.dtype), "count": int(series.notna().sum()),
                                 "missing": int(series.isna().sum())}
        if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            counts = series.astype("string").value_counts(dropna=True)
            entry.update(kind="categorical", unique=int(counts.size),
                         top={str(k): int(v) for k, v in counts.head(20).items()})
        else:
            values = series.dropna().to_numpy(dtype=float)
            entry["kind"] = "numerical"
            if values.size:
                qs = np.quantile(values, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
                entry.update(mean=float(values.mean()), std=float(values.std()), min=float(values.min()),
                             max=float(values.max()),
                             quantiles={f"p{int(p * 100):02d}": float(q) for p, q in
                                        zip((0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99), qs)})
        columns[str(name)] = entry
    return {"rows": int(len(frame)), "columns": columns, "prediction_column": PREDICTION_COLUMN, "label": label}


def _reference_source(reference_data: Any, run_datasets: Mapping[str, Any], run_lineage: Mapping[str, Any],
                      input_example: Any) -> tuple[str | None, pd.DataFrame | None]:
    """``(description, frame)`` of the rows the reference sample is drawn from, in order of preference:
    ``reference_data``, the run's ``train`` dataset (the object given to ``start_run`` — a DataFrame,
    Series or array — or the file it named), the input example. ``(None, None)`` when there is none."""
    if reference_data is not None:
        frame = _as_frame(reference_data)
        if frame is not None:
            return f"reference_data ({type(reference_data).__name__})", frame
    train = run_datasets.get("train")
    if train is not None and not isinstance(train, (str, Path)):
        frame = _as_frame(train)
        if frame is not None:
            return f"train dataset (in-memory {type(train).__name__})", frame
    for ds in run_lineage.get("datasets", []):
        if ds.get("name") == "train" and ds.get("kind") == "file" and ds.get("path") and Path(ds["path"]).is_file():
            return f"train dataset {ds['path']}", _as_frame(ds["path"])
    if input_example is not None:
        frame = _as_frame(input_example)
        if frame is not None:
            return "input example", frame
    return None, None


def _write_reference(model: Any, framework: str, model_dir: Path, *, reference_data: Any,
                     run_lineage: Mapping[str, Any], input_example: Any, signature: Any,
                     holdout: Mapping[str, Any] | None, run_datasets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``reference.parquet`` and ``profile.json`` into the model folder; return what was used:
    ``source`` (where the rows came from), ``source_rows`` (rows available there) and ``rows`` (kept,
    at most ``REFERENCE_ROWS``, sampled with a fixed seed)."""
    if framework == "container":  # scoring reference rows would start the image at registration
        return {"reference": None, "reason": "not sampled for container images"}
    source, frame = _reference_source(reference_data, run_datasets or {}, run_lineage, input_example)
    if frame is None or len(frame) == 0:
        return {"reference": None, "reason": "no training data, reference_data or input_example to sample from"}
    source_rows = int(len(frame))
    names = _feature_names(model, signature)
    label = (holdout or {}).get("label")
    if names and all(n in frame.columns for n in names):
        frame = frame[names]
    elif label and label in frame.columns:
        frame = frame.drop(columns=[label])
    if len(frame) > REFERENCE_ROWS:
        frame = frame.sample(n=REFERENCE_ROWS, random_state=0).sort_index()
    frame = frame.reset_index(drop=True)
    try:
        predictions = _predict_reference(model, framework, frame, model_dir)
    except Exception as exc:  # the model cannot score its own reference rows: say so, keep registering
        return {"reference": None, "source": source, "source_rows": source_rows,
                "reason": f"the model could not predict on the reference rows: {exc}"[:300]}
    out = frame.copy()
    out[PREDICTION_COLUMN] = predictions
    out.to_parquet(model_dir / "reference.parquet", index=False)
    (model_dir / "profile.json").write_text(json.dumps(profile(out, label=label) | {"source": source}, indent=2,
                                                       sort_keys=True))
    return {"reference": "reference.parquet", "profile": "profile.json", "rows": int(len(out)), "source": source,
            "source_rows": source_rows}


SIGNATURE_ROWS = 1000  # rows a signature is inferred from: enough to see every column's type


def _model_columns(model: Any, frame: pd.DataFrame, label: str | None) -> pd.DataFrame | None:
    """The columns of ``frame`` the model was fitted on (``feature_names_in_``, an XGBoost booster's
    ``feature_names``), or every column but ``label`` when the count matches ``n_features_in_``;
    ``None`` when the frame does not hold them."""
    names = getattr(model, "feature_names_in_", None)
    if names is None and isinstance(getattr(model, "feature_names", None), list):
        names = model.feature_names
    if names is not None:
        names = [str(n) for n in names]
        return frame[names] if all(n in frame.columns for n in names) else None
    X = frame.drop(columns=[label]) if label and label in frame.columns else frame
    expected = getattr(model, "n_features_in_", None)
    return X if expected is None or X.shape[1] == int(expected) else None


def _infer_signature(model: Any, framework: str, run: TrackedRun, holdout_doc: Mapping[str, Any] | None,
                     spec: StackSpec) -> tuple[Any, str | None]:
    """``(signature, source)`` for a model logged with neither a signature nor an input example: its
    input columns and types from the run's ``train`` dataset (the rows the reference sample comes from),
    else from the gate's held-out set; ``(None, why not)`` when neither holds the model's columns."""
    if framework == "pytorch":  # tensor inputs: column names from a table would be a guess
        return None, "not inferred for PyTorch models: pass input_example or signature to log_model"
    from mlflow.models import infer_signature

    holdout = holdout_doc or (spec.gate.holdout.model_dump() if spec.gate.holdout else None)
    label = (holdout or {}).get("label")

    def candidates() -> Iterator[tuple[str | None, pd.DataFrame]]:
        source, frame = _reference_source(None, getattr(run, "datasets", None) or {}, run.lineage, None)
        if frame is not None:
            yield source, frame
        if holdout:
            try:
                frame, _, _ = holdouts.load_holdout(holdout, Path(spec.project_dir))
            except holdouts.HoldoutError:
                return
            yield f"held-out set {holdout['path']}", frame

    for source, frame in candidates():
        X = _model_columns(model, frame, label)
        if X is None or X.shape[1] == 0 or len(X) == 0:
            continue
        X = X.head(SIGNATURE_ROWS)
        output = None
        if framework in ("sklearn", "xgboost"):
            try:
                output = model.predict(X.head(20))
            except Exception:  # the output schema is optional; the inputs are what serving checks
                output = None
        logging.getLogger("mlflow.models").setLevel(logging.ERROR)  # its integer-column hint is noise here
        try:
            return infer_signature(X, output), source
        except Exception as exc:  # a column type MLflow has no schema type for: say so, register without
            return None, f"could not infer it from the {source}: {type(exc).__name__}: {exc}"[:300]
    return None, ("no train dataset or held-out set holds the model's input columns: "
                  "pass input_example to log_model")


def _sklearn_serialization(model: Any) -> tuple[str, list[str], str | None]:
    """``("skops", types to trust beyond skops' defaults, None)`` when every type in the estimator is
    on the platform's allow-list, else ``("cloudpickle", [], why)``."""
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    except Exception as exc:  # skops cannot write it at all (lambdas, local classes...)
        return "cloudpickle", [], f"skops cannot serialize it ({type(exc).__name__}: {exc})"[:300]
    outside = sorted(set(untrusted) - set(SKOPS_TRUSTED))
    if outside:
        return "cloudpickle", [], f"it holds types outside the platform's skops allow-list: {', '.join(outside)}"[:300]
    return "skops", sorted(untrusted), None


def _save(model: Any, framework: str, path: Path, *, requirements: list[str], signature: Any,
          input_example: Any) -> dict[str, Any]:
    """Save the MLflow model; return its storage ``{"format", "safe", "reason"?}`` (see
    :mod:`mlplat.services.model_loading`: safe formats load without running code from the file)."""
    # MLflow warns about pickle formats on every save; mlplat keeps them out of lifecycle processes.
    logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
    common = dict(pip_requirements=requirements, signature=signature, input_example=input_example)
    reason = None
    if framework == "sklearn":
        import mlflow.sklearn

        # skops when the estimator holds only allow-listed types; else cloudpickle, which is then
        # scored and served only in separate processes.
        fmt, trusted, reason = _sklearn_serialization(model)
        mlflow.sklearn.save_model(model, str(path), serialization_format=fmt,
                                  skops_trusted_types=trusted or None, **common)
    elif framework == "xgboost":
        import mlflow.xgboost

        mlflow.xgboost.save_model(model, str(path), model_format="ubj", **common)  # XGBoost's own, no pickle
    elif framework == "pytorch":
        import mlflow.pytorch

        # torch.save (a pickle): MLflow's pt2 format needs tensor signatures, and the gate and the
        # gateway check requests by column. Pickle-family files are scored and served only in
        # separate processes (mlplat.services.model_loading).
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        mlflow.pytorch.save_model(model, str(path), serialization_format="pickle", **common)
    elif framework == "container":
        from mlplat.services import container_models

        container_models.write_model_dir(model, path, signature=signature)
    else:
        import mlflow.pyfunc

        mlflow.pyfunc.save_model(str(path), python_model=model, **common)
    stored = describe(path)
    return {"format": stored.serialization, "safe": stored.safe, **({"reason": reason} if reason else {})}


def allow_sealed_loading() -> None:
    """Let MLflow deserialize pickle-family model files in this process.

    MLflow refuses by default because a model file can run code. Only serving processes (the
    model server, the gateway) and the scoring child of :mod:`mlplat.services.model_loading` load
    pickle-family models, and only from :func:`verified_model_dir` (every file matches the manifest
    sealed at registration); lifecycle commands (gate, promotion) never call MLflow's loaders."""
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"


def _task(model: Any) -> str | None:
    try:
        from sklearn.base import is_classifier, is_regressor

        if is_classifier(model):
            return "classification"
        if is_regressor(model):
            return "regression"
    except Exception:  # not a scikit-learn-style estimator
        pass
    return None


def log_model(run: TrackedRun, model: Any, name: str, *, input_example: Any = None, signature: Any = None,
              holdout: Any = None, reference_data: Any = None, task: str | None = None) -> int:
    """Register ``model`` as the next version of ``name`` from the tracked ``run``; return the version number.

    ``holdout`` (``{"path", "label"}``) is the held-out set the gate evaluates this version on
    (default: the stack's ``gate.holdout``). ``reference_data`` is the sample monitoring compares
    traffic with (default: the run's ``train`` dataset, else ``input_example``). Without ``signature``
    or ``input_example``, the input signature is inferred from the run's ``train`` dataset, else the
    held-out set (lineage ``signature_source`` says which); serving checks request columns against it.

    ``run`` must be active: :meth:`mlplat.sdk.Run.log_model`, the way in, refuses an ended run.
    """
    _check_name(name)
    if task not in (None, "classification", "regression"):
        raise MlplatError(f"task must be 'classification' or 'regression', got {task!r}")
    spec, ctx = run.spec, run.ctx
    registry = registry_for(spec, ctx)
    tags = registry.run_tags(run.run_id)
    _require_tracked(run.run_id, tags)
    framework = detect_framework(model)
    holdout_doc = _holdout_doc(holdout, Path(spec.project_dir))
    plane = plane_for(spec, ctx)
    # Before any file is stored: the ledger answers, and finds this run in the tracking store it reads.
    plane.call("models.check_registration", name=name, run_id=run.run_id)
    environment = registry.run_environment(run.run_id)
    requirements = pinned_requirements(framework, environment)

    signature_source = "given" if signature is not None else "input example" if input_example is not None else None
    if signature is None and input_example is None:  # serving checks columns against the signature
        signature, signature_source = _infer_signature(model, framework, run, holdout_doc, spec)
        if signature is None:
            signature_source = f"none ({signature_source})"

    scratch = registry.scratch_dir()
    model_dir = scratch / "model"
    try:
        storage = _save(model, framework, model_dir, requirements=requirements, signature=signature,
                        input_example=input_example)
        from mlflow.models import Model

        mlmodel = Model.load(str(model_dir / "MLmodel"))
        signature_doc = mlmodel.signature.to_dict() if mlmodel.signature is not None else None
        reference = _write_reference(model, framework, model_dir, reference_data=reference_data,
                                     run_lineage=run.lineage, input_example=input_example,
                                     signature=mlmodel.signature, holdout=holdout_doc,
                                     run_datasets=getattr(run, "datasets", None))
        # The ledger seals the manifest of the files it fetches back; this digest proves they are these.
        digest = manifests.digest(manifests.build(model_dir, model=name, run_id=run.run_id, framework=framework,
                                                  serialization=storage["format"]))
        lineage_doc = {
            "run_id": run.run_id, "experiment": run.experiment, "author": ctx.user,
            "framework": framework, "task": task or _task(model),
            "datasets": {d["name"]: {"sha256": d["sha256"], "rows": d.get("rows"), "kind": d.get("kind"),
                                     "path": d.get("path")} for d in run.lineage.get("datasets", [])},
            "code": run.lineage.get("code", {}),
            "environment": {"python": environment.get("python"), "hash": tags.get("mlplat.env.hash"),
                            "requirements": requirements},
            "signature": signature_doc, "signature_source": signature_source, "storage": storage,
            "reference": reference, "holdout": holdout_doc,
            "features": lineage.views_of_run(tags),
            **({"image": model.lineage()} if framework == "container" else {}),
        }
        stored = registry.store_version(name, run.run_id, model_dir, tags={
            "mlplat.artifact_digest": digest, "mlplat.author": ctx.user, "mlplat.framework": framework})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    plane.call("models.register", name=name, version=stored.version, run_id=run.run_id, source=stored.source,
               artifact_digest=digest, framework=framework, lineage=lineage_doc, signature=signature_doc,
               holdout=holdout_doc)
    run.set_tag(f"mlplat.registered.{name}", str(stored.version))
    if signature_doc is None:
        ctx.err.print(f"mlplat: {name} version {stored.version} has no input signature: {signature_source}",
                      highlight=False, markup=False)
    return stored.version


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise MlplatError(f"invalid model name {name!r}", hint=f"use {MODEL_NAME_RULE}")


def _require_tracked(run_id: str, tags: Mapping[str, str]) -> None:
    if tags.get("mlplat.tracked") != "true":
        raise TrackingRequired(f"run {run_id} is not a tracked mlplat run (tag mlplat.tracked is not 'true')",
                               hint="start runs with mlplat.start_run so lineage is recorded")


def _run_tags(registry: ModelRegistry, run_id: str) -> dict[str, str]:
    """The run's tags from the tracking store this process reads (where the ledger is)."""
    try:
        return registry.run_tags(run_id)
    except NotFound as exc:
        raise NotFound(f"{exc} (registration reads the run from the stack's tracking store)", where=exc.where,
                       hint="every machine of the stack must name the same mlplat:controlPlane.tracking, "
                            "and runs must be started with mlplat.start_run on that stack") from None


def check_registration(spec: StackSpec, ctx: Context, name: str, run_id: str) -> dict[str, Any]:
    """Whether run ``run_id`` may register a version of ``name`` here: a valid name, and a tracked run
    in the tracking store this ledger reads. Writes nothing."""
    _check_name(name)
    _require_tracked(run_id, _run_tags(registry_for(spec, ctx), run_id))
    return {"model": name, "run_id": run_id, "environment": spec.environment, "author": ctx.user}


def _check_lineage(run_id: str, doc: Mapping[str, Any], tags: Mapping[str, str]) -> None:
    """The lineage a client sends must agree with what its run recorded when it started."""
    if doc.get("run_id") != run_id:
        raise MlplatError(f"the lineage names run {doc.get('run_id')!r}, not {run_id}", where="lineage.run_id")
    for key in ("datasets", "code", "environment", "storage"):
        if not isinstance(doc.get(key), Mapping):
            raise MlplatError(f"the lineage's {key} is not a mapping", where=f"lineage.{key}")
    for role, entry in doc["datasets"].items():
        if not isinstance(entry, Mapping):
            raise MlplatError(f"dataset '{role}' of the lineage is not a mapping", where=f"lineage.datasets.{role}")
        recorded = tags.get(f"mlplat.data.{role}.sha256")
        if recorded is not None and entry.get("sha256") != recorded:
            raise IntegrityError(f"dataset '{role}' of the lineage does not match run {run_id}'s recorded sha256",
                                 where=f"lineage.datasets.{role}", hint="register from the run that trained the model")
    recorded_env = tags.get("mlplat.env.hash")
    if recorded_env is not None and doc["environment"].get("hash") != recorded_env:
        raise IntegrityError(f"the environment of the lineage does not match run {run_id}'s", where="lineage.environment")


def register_version(spec: StackSpec, ctx: Context, *, name: str, version: int, run_id: str, source: str,
                     artifact_digest: str, framework: str, lineage_doc: Mapping[str, Any],
                     signature: Mapping[str, Any] | None, holdout: Mapping[str, Any] | None) -> dict[str, Any]:
    """Record version ``version`` of ``name``, whose files :func:`log_model` stored at ``source``, in the
    ledger: the files are fetched from the registry, hashed into a manifest sealed with this ledger's key
    (the manifest :func:`verified_model_dir` checks later), and recorded with the lineage, the caller as
    author, stage ``dev`` and an audit entry in one transaction.

    ``IntegrityError`` when the fetched files are not the ones the caller hashed (``artifact_digest``),
    ``Conflict`` when the version is already recorded; nothing is written then."""
    _check_name(name)
    if framework not in FLAVOR_REQUIREMENTS:
        raise MlplatError(f"unknown framework {framework!r}", where="framework",
                          hint=f"one of {', '.join(FLAVOR_REQUIREMENTS)}")
    task = lineage_doc.get("task")
    if task not in (None, "classification", "regression"):
        raise MlplatError(f"task must be 'classification' or 'regression', got {task!r}", where="lineage.task")
    registry = registry_for(spec, ctx)
    tags = _run_tags(registry, run_id)
    _require_tracked(run_id, tags)
    _check_lineage(run_id, lineage_doc, tags)
    what = f"{name} version {version}"
    folder = Path(registry.local_dir(name, version, source))
    stored = describe(folder)
    sealed_manifest = manifests.build(folder, model=name, run_id=run_id, framework=framework,
                                      serialization=stored.serialization)
    digest = manifests.digest(sealed_manifest)
    if digest != artifact_digest:
        raise IntegrityError(f"the files of {what} in the registry are not the files that were logged (their manifest "
                             "digest differs)", where=source,
                             hint="the artifact store changed while the version was registered; log the model again")
    seal = manifests.seal(sealed_manifest, registry.signing_key())
    author = ctx.user
    doc = {**lineage_doc, "author": author,
           "storage": {**(lineage_doc.get("storage") or {}), "format": stored.serialization, "safe": stored.safe}}
    code: Mapping[str, Any] = doc.get("code") or {}
    environment: Mapping[str, Any] = doc.get("environment") or {}
    datasets: Mapping[str, Any] = doc["datasets"]
    db = registry.database()
    now = ctx.clock()
    try:
        with db.transaction() as conn:
            conn.execute(
                "INSERT INTO model_versions (model, version, run_id, author, framework, task, source, manifest, "
                "artifact_digest, seal, lineage, signature, holdout, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (name, version, run_id, author, framework, task, source, audit.canonical(sealed_manifest), digest,
                 seal, json.dumps(doc, sort_keys=True, default=str), json.dumps(signature) if signature else None,
                 json.dumps(holdout) if holdout else None, now))
            conn.execute("INSERT INTO model_stages (model, version, environment, stage, updated_at, updated_by) "
                         "VALUES (?,?,?,?,?,?)", (name, version, spec.environment, "dev", now, author))
            audit.append(conn, actor=author, method=ctx.method, action="model.registered", model=name, version=version,
                         environment=spec.environment, reason=f"registered from run {run_id}", digest=digest,
                         evidence={"run_id": run_id, "framework": framework, "files": len(sealed_manifest["files"]),
                                   "datasets": {k: v.get("sha256") for k, v in datasets.items()},
                                   "commit": code.get("commit"), "environment_hash": environment.get("hash"),
                                   # the author's other names, for the four-eyes check of approvals
                                   **({"author_ids": list(ctx.principal.ids)} if getattr(ctx, "principal", None)
                                      is not None and ctx.principal.ids else {})})
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" not in str(exc) and "PRIMARY KEY" not in str(exc).upper():
            raise
        raise Conflict(f"{what} is already registered", where=f"{name}/{version}",
                       hint="`mlplat models list` shows the registered versions") from None
    return {"model": name, "version": version, "environment": spec.environment, "stage": "dev", "author": author,
            "artifact_digest": digest, "files": len(sealed_manifest["files"]), "reference": doc.get("reference")}


# --- reading ---------------------------------------------------------------------------------


def version_row(conn: sqlite3.Connection, name: str, version: int) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM model_versions WHERE model = ? AND version = ?", (name, int(version))).fetchone()
    if row is None:
        known = ",".join(str(r[0]) for r in conn.execute(
            "SELECT version FROM model_versions WHERE model = ? ORDER BY version", (name,)))
        if known:
            raise NotFound(f"model '{name}' has no version {version}", hint=f"known versions: {known}")
        models = [r[0] for r in conn.execute("SELECT DISTINCT model FROM model_versions ORDER BY model")]
        near = difflib.get_close_matches(name, models, n=1)
        raise NotFound(f"model '{name}' is not registered",
                       hint=(f"did you mean '{near[0]}'? " if near else "")
                       + ("`mlplat models list` shows the registered models" if models else
                          "register one with run.log_model(model, name=...) inside mlplat.start_run"))
    out = dict(row)
    for key in ("manifest", "lineage", "signature", "holdout"):
        out[key] = json.loads(out[key]) if out[key] else None
    return out


def stage_of(conn: sqlite3.Connection, name: str, version: int, environment: str) -> str:
    row = conn.execute("SELECT stage FROM model_stages WHERE model=? AND version=? AND environment=?",
                       (name, int(version), environment)).fetchone()
    return row[0] if row else "dev"


def production_version(conn: sqlite3.Connection, name: str, environment: str) -> int | None:
    row = conn.execute("SELECT version FROM model_stages WHERE model=? AND environment=? AND stage='production'",
                       (name, environment)).fetchone()
    return int(row[0]) if row else None


def check_sealed(registry: ModelRegistry, row: Mapping[str, Any]) -> None:
    """``IntegrityError`` unless the row's manifest is the one its digest names and its seal signs."""
    what = f"{row['model']} version {row['version']}"
    if manifests.digest(row["manifest"]) != row["artifact_digest"]:
        raise IntegrityError(f"the recorded artifact digest of {what} does not match its manifest",
                             hint="the platform database was altered; restore it from a backup")
    manifests.check_seal(row["manifest"], row["seal"], registry.signing_key(), what=what)


def verify_row(registry: ModelRegistry, row: Mapping[str, Any]) -> Path:
    """The version's local folder after checking the seal and every file's sha256."""
    folder = Path(registry.local_dir(row["model"], row["version"], row["source"]))
    check_sealed(registry, row)
    return verify_files(folder, row)


def verify_files(folder: Path, row: Mapping[str, Any]) -> Path:
    """``folder`` after checking every file against the row's manifest and the model format it records;
    the manifest itself must have passed :func:`check_sealed` (here or where the ledger is)."""
    what = f"{row['model']} version {row['version']}"
    manifests.verify_files(folder, row["manifest"], what=what)
    recorded = row["manifest"].get("serialization")
    if recorded:  # versions sealed before the format was recorded have none
        found = describe(folder).serialization
        if found != recorded:
            raise IntegrityError(f"{what} was registered in the {recorded} format but its MLmodel now says {found}",
                                 where=str(folder / "MLmodel"), hint="refusing to load it; register a new version")
    return folder


def sealed_version(spec: StackSpec, ctx: Context, name: str, version: int) -> dict[str, Any]:
    """The ledger's record of ``name`` ``version`` once its manifest was checked against its digest and
    seal here, where the key is (the seal itself stays here). ``NotFound`` / ``IntegrityError`` otherwise."""
    registry = registry_for(spec, ctx)
    conn = registry.database().connect()
    try:
        row = version_row(conn, name, version)
    finally:
        conn.close()
    check_sealed(registry, row)
    return {k: v for k, v in row.items() if k != "seal"} | {"sealed": True}


def verified_model_dir(spec: StackSpec, ctx: Context, name: str, version: int) -> Path:
    """Local folder of the MLflow model of ``name`` ``version``, after verifying every file's sha256
    against the manifest sealed at registration. ``NotFound`` / ``IntegrityError`` otherwise.

    The record and its seal are checked where the ledger is (``models.sealed_version``: this process,
    or ``mlplat server``); the files are fetched from the registry and checked here, against it."""
    record = plane_for(spec, ctx).call("models.sealed_version", name=name, version=version)
    folder = Path(registry_for(spec, ctx).local_dir(record["model"], record["version"], record["source"]))
    verify_files(folder, record)
    allow_sealed_loading()
    return folder


# Aliases someone might set by hand to make a version "the production one".
SUSPECT_ALIASES = ("production", "prod", "champion")


def alias_for(spec: StackSpec, environment: str, stage: str) -> str:
    """The MLflow alias mirroring ``stage`` in ``environment``: the stage name in the stack's own
    environment, ``<environment>-<stage>`` in others (aliases are per model, not per environment)."""
    return stage if environment == spec.environment else f"{environment}-{stage}"


def aliases_pointing(registry: ModelRegistry, spec: StackSpec, name: str, environment: str) -> dict[str, int]:
    """Production-looking aliases of ``name`` in the provider's registry and the versions they name."""
    names = {alias_for(spec, environment, "production")}
    if environment == spec.environment:
        names.update(SUSPECT_ALIASES)
    out = {}
    for alias in sorted(names):
        version = registry.get_alias(name, alias)
        if version is not None:
            out[alias] = version
    return out


def list_models(conn: sqlite3.Connection, environment: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT v.model, v.version, v.author, v.framework, v.task, v.run_id, v.created_at, v.artifact_digest, "
        "COALESCE(s.stage, 'dev') AS stage FROM model_versions v LEFT JOIN model_stages s ON s.model = v.model "
        "AND s.version = v.version AND s.environment = ? ORDER BY v.model, v.version", (environment,)).fetchall()
    return [dict(r) for r in rows]


def alias_drift(registry: ModelRegistry, spec: StackSpec, conn: sqlite3.Connection, name: str, environment: str) -> list[str]:
    """Messages for each production-looking alias that disagrees with the platform database."""
    prod = production_version(conn, name, environment)
    return [f"MLflow alias @{alias} points at version {version} but the platform database has "
            f"{'version ' + str(prod) if prod else 'none'} in production: set outside mlplat, ignored"
            for alias, version in aliases_pointing(registry, spec, name, environment).items() if version != prod]


def audit_key(spec: Any, ctx: Any) -> Any:
    """The audit key of ``spec``'s ledger on this machine (None when it has none yet); never creates one."""
    conn = registry_for(spec, ctx).database().connect()
    try:
        return audit.load_key(conn)
    finally:
        conn.close()
