"""Evaluate a shipped model on a user's own labelled reviews, as one MLflow run (``kd-imdb evaluate``).

The model is a pyfunc student or teacher (``models:/kd-imdb-student@champion``, ``models:/kd-imdb-teacher/1``,
``runs:/<id>/<model name>`` or a folder),
any arm run's student (``runs:/<arm run>/student``), or a teacher run's model
(``runs:/<teacher run>/model``: a transformers checkpoint, read at the window it was trained on). The
run logs the metrics every other stage logs, the accuracy's Wilson interval, the confusion table
(``mlflow.log_table``, so the UI's table view shows it), a reliability plot and the per-review
predictions: how a user checks the model on their domain before shipping it.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from kd_imdb import teacher, tracking
from kd_imdb.data import load_labelled
from kd_imdb.export import quantize_student
from kd_imdb.metrics import classification_metrics, reliability_curve, softmax
from kd_imdb.serving import load_pyfunc, load_student
from kd_imdb.stats import accuracy_ci
from kd_imdb.tokenizer import encode_texts
from kd_imdb.train import predict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateConfig:
    model: str = "models:/kd-imdb-student@champion"
    data: str = "sample"
    split: str = "test"  # the split of a source with splits; "all" = every labelled row
    int8: bool = False  # a student with int8 GRU and linear weights (export.quantize_student)

    def run_name(self) -> str:
        """``evaluate <model> on <data> (<split>)``: the model's registered name@alias, logged-model name,
        run or folder, and the data's file name."""
        int8 = " int8" if self.int8 else ""
        return f"evaluate {model_label(self.model)}{int8} on {Path(self.data).name or self.data} ({self.split})"


def model_label(model_uri: str) -> str:
    """A short name for a model URI: ``kd-imdb-student@champion``, a logged model's own name
    (``student-gru-64-s2-kd_transfer`` for ``models:/m-<id>``), ``<run>/model``, or a folder's name."""
    if match := re.fullmatch(r"models:/(m-[0-9a-f]{32})", model_uri):
        try:
            return mlflow.get_logged_model(match.group(1)).name
        except Exception:  # not in this store: the URI will fail to load, with its own error
            return match.group(1)
    if Path(model_uri).is_dir():
        return Path(model_uri).resolve().name
    return re.sub(r"^(models|runs):/", "", model_uri.rstrip("/"))


def model_kind(local: Path) -> str:
    """``pyfunc`` (an MLmodel file), ``student`` (an arm run's ``student/`` folder), ``teacher`` (a
    transformers checkpoint), or a ValueError."""
    if (local / "MLmodel").exists():
        return "pyfunc"
    if (local / "config.json").exists() and any(local.glob("*.safetensors")):
        return "student" if (local / "tokenizer.json").exists() and "arch" in json.loads((local / "config.json").read_text()) \
            else "teacher"
    raise ValueError(f"{local} is neither an MLflow model (no MLmodel file) nor a student or teacher checkpoint "
                     "(no config.json and safetensors); pass a student's or a teacher run's model URI")


def teacher_window(model_uri: str) -> tuple[int, str]:
    """The teacher's max_len and truncation: its run's params for ``runs:/<id>/...``, else 128 head+tail."""
    if match := re.match(r"runs:/([0-9a-f]{32})/", model_uri):
        params = mlflow.get_run(match.group(1)).data.params
        return int(params.get("max_len", 128)), params.get("truncation", "head+tail")
    return 128, "head+tail"


def score(model_uri: str, texts: list[str], int8: bool = False) -> tuple[np.ndarray, str]:
    """Logits [n, 2] of the model on ``texts`` (a pyfunc's probability p becomes log(1-p), log p) and its
    kind; ``int8``: a student's int8 weights."""
    try:
        local = Path(model_uri) if Path(model_uri).is_dir() else Path(mlflow.artifacts.download_artifacts(model_uri))
    except Exception as exc:
        raise ValueError(f"cannot load model {model_uri} ({str(exc).splitlines()[0][:160]}); "
                         "check the URI and MLFLOW_TRACKING_URI") from exc
    kind = model_kind(local)
    is_teacher = kind == "teacher" or (kind == "pyfunc" and (local / "artifacts" / "teacher").is_dir())
    if int8 and is_teacher:
        raise ValueError(f"--int8 applies to students, and {model_uri} is a teacher; drop --int8")
    if not is_teacher:
        # A tiny GRU/CNN step cannot keep several threads busy, and beside other jobs the threads fight:
        # one thread scored 8x as many reviews/s as two on this 2-core machine with a study running.
        torch.set_num_threads(1)
    if kind == "student":  # runs:/<arm run>/student: every arm run's weights, registered or not
        model, tokenizer, max_len = load_student(local)
        model = quantize_student(model) if int8 else model
        return predict(model, encode_texts(tokenizer, texts, max_len)), kind
    if kind == "pyfunc":
        probability = load_pyfunc(str(local), int8).predict(pd.DataFrame({"text": texts}))["probability"]
        p = np.clip(probability.to_numpy(dtype=np.float64), 1e-7, 1 - 1e-7)
        return np.stack([np.log1p(-p), np.log(p)], axis=1), kind
    max_len, truncation = teacher_window(model_uri)
    tokenizer, model = teacher.load_tokenizer(str(local)), teacher.load_model(str(local))
    ids = teacher.encode(tokenizer, texts, max_len, truncation)
    return teacher.predict_logits(model, ids, tokenizer.pad_token_id, desc="evaluate"), kind


def confusion(labels: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    """The confusion table, one row per (true, predicted) cell: the UI's table view groups and charts it."""
    names = {0: "negative", 1: "positive"}
    rows = [{"true": names[t], "predicted": names[p], "reviews": int(((labels == t) & (predicted == p)).sum())}
            for t in (0, 1) for p in (0, 1)]
    return pd.DataFrame(rows)


def reliability_figure(probability: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> Figure:
    """Accuracy against confidence in equal-width confidence bins (metrics.reliability_curve)."""
    confidence = np.maximum(probability, 1 - probability)
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0.5, 1], [0.5, 1], ":", color="grey", label="perfect calibration")
    ax.plot(*reliability_curve(confidence, correct, n_bins), "o-", label="model")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability ({len(correct):,} reviews)")
    ax.legend()
    fig.tight_layout()
    return fig


def run(cfg: EvaluateConfig) -> tuple[str, dict[str, float]]:
    """Score ``cfg.model`` on the labelled reviews of ``cfg.data`` in one run; returns (run id, metrics)."""
    reviews = load_labelled(cfg.data, cfg.split)  # bad data fails before a run opens
    tracking.setup_tracking(tracking.EXPERIMENT)
    tags = {"kd_imdb.stage": "evaluate", "kd_imdb.model_uri": cfg.model,
            tracking.DESCRIPTION_TAG: f"{cfg.model} scored on {len(reviews):,} labelled reviews of {cfg.data} ({cfg.split})"}
    with tracking.start_run(run_name=cfg.run_name(), tags=tags) as active:
        tracking.log_params_once({**asdict(cfg), "reviews": len(reviews)})
        tracking.log_datasets(cfg.data, {cfg.split: reviews["id"].tolist()})
        labels = reviews["label"].to_numpy()
        t0 = time.time()
        logits, kind = score(cfg.model, reviews["text"].tolist(), cfg.int8)  # [n, 2]
        seconds = time.time() - t0
        mlflow.set_tag("kd_imdb.model_kind", kind)
        metrics = classification_metrics(logits, labels)
        predicted = logits.argmax(axis=1)
        _, low, high = accuracy_ci(predicted == labels)
        metrics.update(accuracy_ci_low=low, accuracy_ci_high=high, reviews_per_s=len(reviews) / seconds)
        mlflow.log_metrics(metrics)
        probability = softmax(logits)[:, 1]
        mlflow.log_table(confusion(labels, predicted), "evaluation/confusion.json")
        mlflow.log_figure(reliability_figure(probability, predicted == labels), "evaluation/reliability.png")
        mlflow.log_table(reviews[["id", "label"]].assign(probability=probability, predicted=predicted),
                         "evaluation/predictions.json")
        log.info("%s on %d reviews: accuracy %.4f [%.4f, %.4f]", cfg.model, len(reviews), metrics["accuracy"], low, high)
        return active.info.run_id, metrics
