"""Ensemble teachers: several soft-labels runs combined into one, written in the soft-labels schema.

- ``mean``: the mean of the members' logits (for two classes, the mean margin).
- ``stack``: a logistic regression on the members' margins m_k = logit_1 - logit_0, fitted on the
  validation split only (Wolpert 1992's stacked generalisation; the weights are the only thing fitted).
  Its logits are [-d/2, d/2] for the stacked log-odds d = b + sum_k w_k m_k, so it is one more teacher
  whose probabilities are calibrated on validation. Its own validation accuracy is cross-validated
  within validation, so that stacks of different members can be compared on validation honestly.

Every member must be fitted without the validation reviews (train-only teachers, or cross-fitted
ones); a member that trained on them would take too much weight.
"""
from __future__ import annotations

import logging

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from kd_imdb import tracking
from kd_imdb.data import load_data
from kd_imdb.soft_labels import load_for_data, log_soft_labels

log = logging.getLogger(__name__)

METHODS = ("mean", "stack")


def margins(logits: np.ndarray) -> np.ndarray:
    """logit_1 - logit_0: [..., 2] -> [...]."""
    return logits[..., 1] - logits[..., 0]


def stacked_logits(model: LogisticRegression, margins: np.ndarray) -> np.ndarray:
    """The stack's logits [-d/2, d/2] [n, 2] for margins [n, k]; NaN where a member did not score a review."""
    scored = ~np.isnan(margins).any(axis=1)
    d = np.full(len(margins), np.nan)
    d[scored] = model.decision_function(margins[scored])  # the stacked log-odds
    return np.stack([-d / 2, d / 2], axis=1)


def fit_stack(margins: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> tuple[LogisticRegression, float]:
    """The stacker fitted on ``margins`` [n, k] and ``labels`` [n], and its cross-validated accuracy."""
    model = LogisticRegression(C=1.0, max_iter=1000)
    cv = cross_val_predict(model, margins, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return model.fit(margins, labels), float((cv == labels).mean())


def ensemble(runs: list[str] | str, data: str = "sample", unsupervised: bool = False, method: str = "mean") -> str:
    """The ``ensemble_labels`` entry point: combine the logits of several soft-labels runs (same data)."""
    if isinstance(runs, str):
        runs = [r.strip() for r in runs.split(",") if r.strip()]
    if len(runs) < 2:
        raise ValueError("an ensemble needs at least two soft-labels run ids, comma-separated")
    if len(set(runs)) < len(runs):
        raise ValueError("an ensemble's runs must differ; a run named twice would count twice")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    tracking.setup_tracking(tracking.EXPERIMENT)
    for r in runs:
        tracking.require_run(r, "soft-labels")
    data_source, data = data, load_data(data, unsupervised=unsupervised)
    tags = {"kd_imdb.stage": "soft_labels", "kd_imdb.teacher": f"ensemble-{method}"}
    with tracking.start_run(run_name=f"ensemble_labels {method}", tags=tags, system_metrics=True) as run:
        tracking.log_params_once({"runs": ",".join(runs), "data": data_source, "unsupervised": unsupervised,
                                  "method": method, "data_hash": data.content_hash})
        aligned = np.stack([load_for_data(r, data).to_numpy(np.float64) for r in runs])  # [k, n, 2]; each checks its fingerprint
        metrics: dict = {}
        name = "ensemble" if method == "mean" else "stack"
        fingerprint = {"teacher_run_id": f"{name}:" + "+".join(runs), "teacher": name, "members": runs,
                       "data_hash": data.content_hash}
        if method == "mean":
            logits = aligned.mean(axis=0)  # [n, 2]
        else:
            m = margins(aligned).T  # [n, k]
            val = (data.frame["split"] == "validation").to_numpy()
            labels = data.frame["label"].to_numpy()
            for k in range(len(runs)):
                metrics[f"member{k}_val_accuracy"] = float(((m[val, k] > 0) == labels[val]).mean())
            model, metrics["stack_val_accuracy_cv"] = fit_stack(m[val], labels[val].astype(int))
            metrics["stack_intercept"] = float(model.intercept_[0])
            metrics.update({f"stack_weight_member{k}": float(w) for k, w in enumerate(model.coef_[0])})
            fingerprint["weights"] = [round(float(w), 6) for w in model.coef_[0]]
            fingerprint["intercept"] = round(float(model.intercept_[0]), 6)
            log.info("stacked teacher: weights %s, intercept %.3f, cross-validated validation accuracy %.4f",
                     fingerprint["weights"], fingerprint["intercept"], metrics["stack_val_accuracy_cv"])
            logits = stacked_logits(model, m)
        frame = data.frame[["id", "split"]].assign(logit_0=logits[:, 0], logit_1=logits[:, 1])
        frame = frame.dropna().drop_duplicates("id").reset_index(drop=True)  # reviews every teacher scored
        log_soft_labels(frame, fingerprint, data, metrics)
        return run.info.run_id
