import numpy as np
import pytest

from kd_imdb.metrics import classification_metrics, expected_calibration_error, reliability_curve


def test_metrics_against_hand_counts():
    # predictions: 1, 1, 0, 0 ; labels: 1, 0, 0, 1 -> TP 1, FP 1, TN 1, FN 1
    logits = np.array([[0.0, 2.0], [0.0, 1.0], [1.0, 0.0], [3.0, 0.0]])
    labels = np.array([1, 0, 0, 1])
    m = classification_metrics(logits, labels, teacher_logits=np.array([[0, 1], [1, 0], [1, 0], [1, 0]]))
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == 0.5
    assert m["teacher_agreement"] == 0.75
    p1 = 1 / (1 + np.exp(-np.array([2.0, 1.0, -1.0, -3.0])))
    assert m["brier"] == pytest.approx(np.mean((p1 - labels) ** 2))
    assert m["log_loss"] == pytest.approx(-np.mean(np.log(np.where(labels == 1, p1, 1 - p1))))


def test_ece_hand_computed():
    # two bins: conf .95 (both right) and .65 (one of two right) -> (2/4)|1-.95| + (2/4)|.5-.65| = .1
    conf = np.array([0.95, 0.95, 0.65, 0.65])
    correct = np.array([True, True, True, False])
    assert expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(0.1)


def test_reliability_curve_averages_confidence_and_accuracy_per_bin():
    confidence = np.array([0.52, 0.58, 0.91, 0.99, 1.0])
    correct = np.array([True, False, True, True, False])
    xs, ys = reliability_curve(confidence, correct, n_bins=5)  # bins of width 0.1 over [0.5, 1]; 1.0 joins the last
    assert xs == pytest.approx([0.55, (0.91 + 0.99 + 1.0) / 3]) and ys == pytest.approx([0.5, 2 / 3])
