"""``Capability.MONITORING``: captured traffic, reference samples and monitoring state of a stack.

The local provider reads the gateway's ``captures`` table; a cloud provider maps the same
calls onto its data-capture bucket. :class:`Capture` is the provider-neutral record of one
request, and :func:`split_predictions` reads the answers of the servers the platform runs.
"""
from __future__ import annotations

import abc
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlplat.contracts.base import Contract

if TYPE_CHECKING:
    from mlplat.db import Database


@dataclass(frozen=True)
class Capture:
    """One captured request, as the gateway recorded it."""

    request_id: str
    ts: float
    model: str
    version: int
    variant: str
    environment: str
    inputs: Any  # decoded JSON: {feature: value} or a list of such rows
    outputs: Any  # decoded JSON
    latency_ms: float
    status: int
    shadow: bool

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def rows(self) -> Iterator[tuple[str, dict[str, Any], Any, float | None]]:
        """``(row id, features, predicted label, score)`` per input row.

        A single-row request's row id is its request id; row ``i`` of a batch is
        ``<request id>#<i>`` (labels for batch rows use that id).
        """
        inputs = self.inputs
        if isinstance(inputs, dict) and "dataframe_records" in inputs:
            inputs = inputs["dataframe_records"]
        elif isinstance(inputs, dict) and "dataframe_split" in inputs:
            split = inputs["dataframe_split"]
            inputs = [dict(zip(split.get("columns", []), row)) for row in split.get("data", [])]
        elif isinstance(inputs, dict) and "instances" in inputs and isinstance(inputs["instances"], list):
            inputs = inputs["instances"]
        predictions = split_predictions(self.outputs)
        if isinstance(inputs, dict):
            label, score = predictions[0] if predictions else (None, None)
            yield self.request_id, inputs, label, score
            return
        if isinstance(inputs, list):
            for i, row in enumerate(inputs):
                if not isinstance(row, dict):
                    continue
                label, score = predictions[i] if i < len(predictions) else (None, None)
                yield (self.request_id if len(inputs) == 1 else f"{self.request_id}#{i}"), row, label, score


def split_predictions(outputs: Any) -> list[tuple[Any, float | None]]:
    """``(label, score of the positive class)`` per row from the shapes servers answer with."""
    if isinstance(outputs, str):
        try:
            outputs = json.loads(outputs)
        except ValueError:
            return [(outputs, None)]
    if isinstance(outputs, dict):
        labels = _first(outputs, "predictions", "prediction", "labels", "label", "outputs")
        scores = _first(outputs, "probabilities", "probability", "scores", "score", "proba", "predict_proba")
        if isinstance(labels, list) and labels and isinstance(labels[0], dict) and "data" in labels[0]:
            labels = labels[0]["data"]  # Open Inference Protocol v2 outputs
        labels = labels if isinstance(labels, list) else ([labels] if labels is not None else [])
        scores = scores if isinstance(scores, list) else ([scores] if scores is not None else [])
        n = max(len(labels), len(scores))
        out = []
        for i in range(n):
            label = labels[i] if i < len(labels) else None
            score = _positive_score(scores[i]) if i < len(scores) else None
            if label is None and score is not None:
                label = int(score >= 0.5)
            out.append(_label_and_score(label, score))
        return out
    if isinstance(outputs, list):
        return [_label_and_score(item, None) for item in outputs]
    if outputs is None:
        return []
    return [_label_and_score(outputs, None)]


def _first(mapping: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in mapping:
            return mapping[key]
    return None


def _positive_score(value: Any) -> float | None:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(value[1])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _label_and_score(label: Any, score: float | None) -> tuple[Any, float | None]:
    if isinstance(label, dict):  # one row of a records-style answer
        inner = split_predictions(label)
        return inner[0] if inner else (None, None)
    if isinstance(label, list):  # [p0, p1] probabilities
        s = _positive_score(label)
        return (int(s >= 0.5), s) if s is not None else (None, None)
    if isinstance(label, bool):
        return int(label), score
    if isinstance(label, float):
        if label.is_integer():
            return int(label), score
        if 0.0 <= label <= 1.0 and math.isfinite(label):  # a bare probability
            return int(label >= 0.5), label if score is None else score
        return label, score  # a regression output
    return label, score


class Monitor(Contract):
    """Captured traffic, reference samples and monitoring state of one stack."""

    @abc.abstractmethod
    def database(self) -> Database:
        """The stack's platform database, migrated."""

    @abc.abstractmethod
    def deployed(self) -> list[tuple[str, int, str]]:
        """``(model, version, environment)`` of every version with captured traffic, most recent first."""

    @abc.abstractmethod
    def captures(self, model: str, version: int, *, limit: int | None = None, since: float | None = None,
                 until: float | None = None, labelled_only: bool = False) -> list[Capture]:
        """The newest ``limit`` captures of a version (oldest first in the result), non-shadow and shadow alike."""

    @abc.abstractmethod
    def known_request_ids(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` (request ids or ``<request id>#<row>`` batch row ids) were captured."""

    def publish(self, report: Mapping[str, Any]) -> dict[str, Any] | None:
        """Put a finished pass's results (``PassReport.to_dict()``) where the provider's own alarms and
        dashboards read them, e.g. a cloud's metric store; returns what was published.

        The ledger holds every pass on every provider. A provider whose alarms and dashboards read the
        ledger itself (the local gateway's) has nothing more to publish: the default returns ``None``."""
        return None

    def resolve_request_ids(self, ids: list[str]) -> dict[str, list[str]]:
        """The captured request ids (or batch row ids) each of ``ids`` names; ids naming none are left out.

        Providers that keep the caller's own request id beside the platform's map it too (one caller
        id may name several captures); by default only platform ids are known."""
        return {i: [i] for i in self.known_request_ids(ids)}
