"""Linear teachers, writing logits in the soft-labels schema: minutes on a CPU, about 0.90-0.92 on IMDB.

Two kinds:

- ``tfidf``: TF-IDF n-gram features (sublinear tf) and logistic regression.
- ``nbsvm``: Wang & Manning's NB-SVM (2012, "Baselines and bigrams"): binarised n-gram counts scaled
  by the naive-Bayes log-count ratio r = log((p / |p|_1) / (q / |q|_1)), with p (q) the smoothed
  (alpha = 1) feature counts of the positive (negative) reviews, then a linear classifier. We fit that
  classifier with the logistic loss, as Mesnil et al. (2014) did for IMDB, so that its decision value
  is a log-odds like every other teacher's.

A teacher's logits are [-d/2, d/2] for its decision value d, so softmax gives its probabilities. Train
logits are out-of-fold (k-fold cross-fitting; r is refitted inside each fold): a linear model on
n-grams nearly memorises its own training reviews, and in-sample logits would be almost hard labels.
The regularisation C is chosen on the validation split.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline

from kd_imdb import tracking
from kd_imdb.data import load_data
from kd_imdb.soft_labels import log_soft_labels

log = logging.getLogger(__name__)

KINDS = {"tfidf": "tfidf-logreg", "nbsvm": "nbsvm"}  # kind -> the teacher's name in fingerprints


@dataclass
class LinearTeacherConfig:
    data: str = "sample"
    unsupervised: bool = False
    kind: str = "tfidf"
    max_ngram: int = 2  # uni- to max_ngram-grams (Wang & Manning's NBSVM-bi: 2; Mesnil et al.: 3)
    c_grid: str = "1,4,16"
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 1 <= self.max_ngram <= 5:
            raise ValueError(f"max_ngram must lie in [1, 5], got {self.max_ngram}")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2 (cross-fitted train logits), got {self.folds}")
        self.cs()

    def cs(self) -> list[float]:
        try:
            values = [float(c) for c in self.c_grid.split(",") if c.strip()]
        except ValueError as exc:
            raise ValueError(f"c_grid {self.c_grid!r} must be comma-separated numbers") from exc
        if not values or min(values) <= 0:
            raise ValueError("c_grid needs positive values")
        return values


def _clean(text: str) -> str:
    return text.replace("<br />", " ").lower()


class NBScaler(BaseEstimator, TransformerMixin):
    """Binarised counts times the naive-Bayes log-count ratio r, fitted on the labels it is given."""

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def fit(self, x: sp.spmatrix, y) -> NBScaler:
        x = (x > 0).astype(np.float64)
        y = np.asarray(y)
        p = self.alpha + np.asarray(x[y == 1].sum(axis=0)).ravel()  # [features]
        q = self.alpha + np.asarray(x[y == 0].sum(axis=0)).ravel()
        self.r_ = np.log(p / p.sum()) - np.log(q / q.sum())
        return self

    def transform(self, x: sp.spmatrix) -> sp.spmatrix:
        return (x > 0).astype(np.float64) @ sp.diags(self.r_)


def make_model(kind: str, max_ngram: int, c: float) -> Pipeline:
    """The unfitted pipeline text -> decision value of one linear teacher."""
    if kind == "tfidf":
        features = [TfidfVectorizer(ngram_range=(1, max_ngram), min_df=2, max_df=0.9, sublinear_tf=True,
                                    strip_accents="unicode", preprocessor=_clean)]
    else:
        features = [CountVectorizer(ngram_range=(1, max_ngram), min_df=2, strip_accents="unicode",  # NBScaler binarises
                                    preprocessor=_clean, token_pattern=r"(?u)\b\w+\b|[!?]"), NBScaler()]
    return make_pipeline(*features, LogisticRegression(C=c, max_iter=2000, solver="liblinear"))


def fit_logits(data, cfg: LinearTeacherConfig) -> tuple[pd.DataFrame, dict]:
    """Logits for every review of ``data`` (train out-of-fold) and the chosen C."""
    train, val = data.split("train"), data.split("validation")
    scores = {}
    for c in cfg.cs():
        model = make_model(cfg.kind, cfg.max_ngram, c).fit(train["text"], train["label"])
        scores[c] = float((model.predict(val["text"]) == val["label"]).mean())
        log.info("linear teacher %s: C=%g, validation accuracy %.4f", cfg.kind, c, scores[c])
    best_c = max(scores, key=scores.get)
    log.info("linear teacher %s: chose C=%s on validation", cfg.kind, best_c)
    folds = StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.seed)
    oof = cross_val_predict(make_model(cfg.kind, cfg.max_ngram, best_c), train["text"], train["label"], cv=folds,
                            method="decision_function")
    model = make_model(cfg.kind, cfg.max_ngram, best_c).fit(train["text"], train["label"])
    rest = data.frame[data.frame["split"] != "train"]
    decision = pd.Series(np.concatenate([oof, model.decision_function(rest["text"])]),
                         index=np.concatenate([train["id"].to_numpy(), rest["id"].to_numpy()]))
    decision = decision[~decision.index.duplicated()]
    frame = data.frame[["id", "split"]].drop_duplicates("id").reset_index(drop=True)
    d = decision.loc[frame["id"]].to_numpy()
    frame["logit_0"], frame["logit_1"] = -d / 2, d / 2
    metrics = {"best_c": best_c, "features": float(len(model[0].vocabulary_)),
               **{f"val_accuracy_c_{c:g}": v for c, v in scores.items()}}
    return frame, metrics


def run(cfg: LinearTeacherConfig) -> str:
    """The ``linear_teacher`` entry point: a soft-labels run whose teacher is a linear model on n-grams."""
    tracking.setup_tracking(tracking.EXPERIMENT)
    data = load_data(cfg.data, unsupervised=cfg.unsupervised)
    name = KINDS[cfg.kind]
    with tracking.start_run(run_name=f"linear_teacher {name}", tags={"kd_imdb.stage": "soft_labels",
                                                                      "kd_imdb.teacher": name}, system_metrics=True) as run:
        tracking.log_params_once({**asdict(cfg), "data_hash": data.content_hash})
        t0 = time.time()
        frame, metrics = fit_logits(data, cfg)
        metrics["fit_seconds"] = time.time() - t0
        fingerprint = {"teacher_run_id": run.info.run_id, "teacher": name, "data_hash": data.content_hash,
                       "max_ngram": cfg.max_ngram}
        log_soft_labels(frame, fingerprint, data, metrics)
        return run.info.run_id
