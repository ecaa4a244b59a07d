"""Classification metrics from logits: accuracy, F1, precision, recall, log-loss, ECE, Brier, agreement.

Everything is computed from the positive-class probability so that teacher and students are scored
by the same code; scikit-learn does the standard ones.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, log_loss, precision_score, recall_score


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``logits`` [n, C] in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): sum over equal-width confidence bins of |acc - conf| weighted by bin size."""
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def reliability_curve(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> tuple[list[float], list[float]]:
    """A reliability diagram's points: mean confidence and accuracy in each of ``n_bins`` equal-width
    confidence bins over [0.5, 1] (two classes), empty bins left out."""
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(confidence, edges) - 1, 0, n_bins - 1)
    used = [b for b in range(n_bins) if (idx == b).any()]
    return [float(confidence[idx == b].mean()) for b in used], [float(correct[idx == b].mean()) for b in used]


def classification_metrics(logits: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray | None = None) -> dict:
    """Metrics of 2-class ``logits`` [n, 2] against 0/1 ``labels`` [n]; agreement with the teacher if given."""
    labels = np.asarray(labels).astype(int)
    probs = softmax(logits)  # [n, 2]
    pred = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    out = {
        "accuracy": accuracy_score(labels, pred),
        "f1": f1_score(labels, pred, zero_division=0),
        "precision": precision_score(labels, pred, zero_division=0),
        "recall": recall_score(labels, pred, zero_division=0),
        "log_loss": log_loss(labels, np.clip(probs, 1e-12, 1.0), labels=[0, 1]),
        "ece": expected_calibration_error(confidence, pred == labels),
        "brier": brier_score_loss(labels, probs[:, 1]),
    }
    if teacher_logits is not None:
        out["teacher_agreement"] = float((np.asarray(teacher_logits).argmax(axis=1) == pred).mean())
    return {k: float(v) for k, v in out.items()}


def prefixed(metrics: dict, prefix: str) -> dict:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}
