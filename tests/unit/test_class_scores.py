"""Per-class scores (a PyTorch output layer, a container's answer) read as class probabilities by the gate."""
from __future__ import annotations

import math

import numpy as np

from mlplat.services.model_loading import class_scores, predictions


def test_probabilities_are_kept_and_logits_softmaxed():
    probabilities = np.array([[0.2, 0.8], [0.9, 0.1]])
    np.testing.assert_allclose(class_scores(probabilities), probabilities)
    np.testing.assert_allclose(class_scores(np.array([[0.0, math.log(3.0)]])), [[0.25, 0.75]])


def test_labels_and_text_are_not_scores():
    assert class_scores(np.array([1, 0, 1])) is None
    assert class_scores(np.array([[1.0]])) is None
    assert class_scores(np.array([["a", "b"]])) is None


def test_a_model_answering_scores_is_gated_as_a_classifier():
    class Net:
        def predict(self, X):
            return np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])

    pred, proba, classes = predictions(Net(), None)
    assert pred.tolist() == [0, 2] and classes.tolist() == [0, 1, 2] and proba.shape == (2, 3)
