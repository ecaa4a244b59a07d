"""The ``student`` entry point: a seed pair of students, scratch and KD, from identical initial weights.

In ``pair`` mode one parent MLflow run holds two nested runs, ``scratch`` and ``kd``; both arms are
built from the same seed (identical initial weights, tag ``init_sha256``), see the same batches in
the same order, and differ only in their loss. ``scratch`` or ``kd`` mode trains one arm alone.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from kd_imdb import analysis, tracking
from kd_imdb.config import ArmConfig, StudentSpec, describe_arm
from kd_imdb.data import ImdbData, label_budget, load_data
from kd_imdb.losses import hard_loss, kd_loss, margin_mse_loss
from kd_imdb.metrics import classification_metrics, prefixed, softmax
from kd_imdb.soft_labels import SoftLabelsError, load_for_data
from kd_imdb.students import build_student
from kd_imdb.tokenizer import encode_texts, train_tokenizer
from kd_imdb.train import FitConfig, LossFn, fit, predict, resolve_device

log = logging.getLogger(__name__)

def weights_sha256(model: torch.nn.Module) -> str:
    """A digest of a model's weights: equal digests mean identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_student(directory: str | Path, model: torch.nn.Module, spec: StudentSpec, tokenizer, max_len: int) -> Path:
    """Weights as safetensors, plus config.json and tokenizer.json: all a student needs to predict."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({**spec.to_dict(), "max_len": max_len}, indent=2))
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


@dataclass(frozen=True)
class Split:
    """One split, encoded: what every arm reads."""

    seqs: list[np.ndarray]  # token ids per review, 1..max_len each
    labels: np.ndarray  # [n] 0/1 (-1 on unlabelled reviews)
    ids: np.ndarray  # [n] review ids
    teacher: np.ndarray | None  # [n, 2] the main teacher's logits
    teachers: dict[str, np.ndarray]  # [n, 2] per teacher NAME of the kd@NAME arms


def prepare(cfg: ArmConfig, transfer: bool = False) -> tuple[ImdbData, Tokenizer, dict[str, Split]]:
    """Load data and soft labels, train the word tokenizer on train, encode every split (shared by all
    arms). With ``transfer`` the unlabelled reviews and their teacher logits come too (the transfer set)."""
    data = load_data(cfg.data, cfg.training.val_fraction, seed=0, unsupervised=transfer)
    teacher = load_for_data(cfg.soft_labels_run_id, data).to_numpy(np.float32) if cfg.soft_labels_run_id else None
    others = {name: load_for_data(run_id, data).to_numpy(np.float32)
              for name, run_id in cfg.distillation.teachers.items()}
    if transfer and np.isnan(teacher[(data.frame["split"] == "unsupervised").to_numpy()]).any():
        raise SoftLabelsError(f"soft labels of run {cfg.soft_labels_run_id} lack the unlabelled reviews the "
                              "transfer set needs; run soft_labels with unsupervised=true")
    used = np.ones(len(data.frame), dtype=bool)
    if cfg.training.label_budget:  # fewer labels: train shrinks to a nested subset; validation and test stay fixed
        kept = label_budget(data.frame[data.frame["split"] == "train"], cfg.training.label_budget)
        used = (data.frame["split"] != "train").to_numpy() | data.frame.index.isin(kept.index)
        log.info("label budget: %d of the %d labelled train reviews", len(kept), (data.frame["split"] == "train").sum())
    train_texts = data.frame.loc[used & (data.frame["split"] == "train").to_numpy(), "text"].tolist()
    tok = train_tokenizer(train_texts, vocab_size=cfg.student.vocab_size)
    splits = {}
    for split in ("train", "validation", "test") + (("unsupervised",) if transfer else ()):
        mask = (data.frame["split"] == split).to_numpy() & used
        part = data.frame[mask]
        splits[split] = Split(seqs=encode_texts(tok, part["text"].tolist(), cfg.training.max_len),
                              labels=part["label"].to_numpy(),
                              ids=part["id"].to_numpy(), teacher=None if teacher is None else teacher[mask],
                              teachers={name: logits[mask] for name, logits in others.items()})
    return data, tok, splits


def log_epoch(metrics: dict, epoch: int) -> None:
    """Per-epoch metrics as ``epoch_*`` (step = epoch), so that the plain ``val_*``/``test_*`` metrics
    of a run are those of the model it selected."""
    mlflow.log_metrics({f"epoch_{k}": v for k, v in metrics.items()}, step=epoch)


@dataclass(frozen=True)
class ArmInputs:
    """What one arm trains on and how: its training reviews, its loss and its schedule."""

    train_seqs: list[np.ndarray]
    loss_fn: LossFn
    epochs: int
    first_selectable_epoch: int = 1
    params: dict = field(default_factory=dict)  # what the arm adds to its run's params


def supervised(labels: np.ndarray, device: torch.device, smoothing: float = 0.0) -> LossFn:
    """Cross-entropy on the labels (with label smoothing)."""
    labels_t = torch.tensor(np.asarray(labels), dtype=torch.long, device=device)
    return lambda logits, rows, epoch: hard_loss(logits, labels_t[rows], smoothing)


def distilled(labels: np.ndarray, teacher: np.ndarray, device: torch.device, temperature: float, alpha: float,
              soft: str = "kl", kd_epochs: int = 0) -> LossFn:
    """The KD loss on the teacher's logits (``soft="mse"``: MSE on its logit margin); rows labelled -1
    feed the soft term only. With ``kd_epochs``, cross-entropy on the labels after that many epochs."""
    labels_t = torch.tensor(np.asarray(labels), dtype=torch.long, device=device)
    teacher_t = torch.as_tensor(teacher, dtype=torch.float32, device=device)

    def loss(logits: torch.Tensor, rows: torch.Tensor, epoch: int) -> torch.Tensor:
        if kd_epochs and epoch > kd_epochs:
            return hard_loss(logits, labels_t[rows], 0.0)
        if soft == "mse":
            return margin_mse_loss(logits, teacher_t[rows], labels_t[rows], alpha)
        return kd_loss(logits, teacher_t[rows], labels_t[rows], temperature, alpha)

    return loss


def arm_inputs(cfg: ArmConfig, arm: str, splits: dict[str, Split], device: torch.device) -> ArmInputs:
    """The training reviews, loss and schedule of ``arm`` (see ``ARMS``); every arm trains from the same
    initial weights on the same batch order."""
    tr = splits["train"]
    t_alpha = (cfg.distillation.temperature, cfg.distillation.alpha)
    if arm == "scratch":
        return ArmInputs(tr.seqs, supervised(tr.labels, device), cfg.epochs)
    if arm == "label_smoothing":
        # Smoothing eps puts 1 - eps/2 on the true class; matching the teacher's mean confidence c gives
        # eps = 2 (1 - c): the same average target sharpness as KD, without any per-review knowledge.
        eps = float(np.clip(2.0 * (1.0 - softmax(tr.teacher).max(axis=1).mean()), 0.0, 1.0))
        return ArmInputs(tr.seqs, supervised(tr.labels, device, eps), cfg.epochs, params={"label_smoothing": eps})
    if arm == "kd":
        return ArmInputs(tr.seqs, distilled(tr.labels, tr.teacher, device, *t_alpha), cfg.epochs)
    if arm == "kd_hard":  # the selected model must come from the hard phase, not fall back to KD's
        return ArmInputs(tr.seqs, distilled(tr.labels, tr.teacher, device, *t_alpha, kd_epochs=cfg.epochs),
                         cfg.epochs + cfg.training.hard_epochs, first_selectable_epoch=cfg.epochs + 1)
    if arm == "kd_mse":
        return ArmInputs(tr.seqs, distilled(tr.labels, tr.teacher, device, *t_alpha, soft="mse"), cfg.epochs)
    if arm == "shuffled":
        teacher = tr.teacher[np.random.default_rng([cfg.seed, 1]).permutation(len(tr.teacher))]
        return ArmInputs(tr.seqs, distilled(tr.labels, teacher, device, *t_alpha), cfg.epochs)
    if arm == "kd_transfer":
        un = splits["unsupervised"]
        labels = np.concatenate([tr.labels, np.full(len(un.seqs), -1)])  # -1: soft term only
        teacher = np.concatenate([tr.teacher, un.teacher])
        return ArmInputs(list(tr.seqs) + list(un.seqs), distilled(labels, teacher, device, *t_alpha), cfg.epochs)
    if arm.startswith("kd@"):
        return ArmInputs(tr.seqs, distilled(tr.labels, tr.teachers[arm[3:]], device, *t_alpha), cfg.epochs)
    raise ValueError(f"unknown arm {arm!r}")


def train_arm(cfg: ArmConfig, arm: str, tok: Tokenizer, splits: dict[str, Split], log_fn=None, status=None) -> dict:
    """Train one arm, logging into the active MLflow run; return its metrics.

    ``arm`` is one of ``ARMS`` or ``kd@NAME`` (KD from the teacher ``NAME`` of ``cfg.teachers``; teacher
    agreement stays measured against the main teacher). ``log_fn(metrics, epoch)``
    replaces the per-epoch logging (the sweep reports to Optuna there and may stop the run);
    ``status(text)`` replaces the progress bar (a worker's line in its parent's bar).
    """
    va, te = splits["validation"], splits["test"]
    # tags that filter arm runs in the UI's search box, e.g. tags.kd_imdb.arm = 'kd'
    mlflow.set_tags({"kd_imdb.stage": "student", "kd_imdb.arm": arm, "kd_imdb.config": cfg.student.name,
                     "kd_imdb.seed": str(cfg.seed), "kd_imdb.soft_labels_run_id": cfg.soft_labels_run_id,
                     tracking.DESCRIPTION_TAG: f"{cfg.student.name}, seed {cfg.seed}, arm {arm}: {describe_arm(arm)}; "
                                               f"{cfg.epochs} epochs at {cfg.training.max_len} words"})
    if arm.startswith("kd@"):
        mlflow.set_tag("kd_imdb.teacher_run_id", cfg.distillation.teachers[arm[3:]])
    device = resolve_device()
    inputs = arm_inputs(cfg, arm, splits, device)
    params = {**cfg.flat(), "mode": arm, **inputs.params}
    if arm != "kd_hard":
        params.pop("hard_epochs")
    if arm in ("scratch", "label_smoothing"):
        for key in ("temperature", "alpha"):  # meaningless without a teacher
            params.pop(key)
    tracking.log_params_once(params)
    tracking.log_validation_split(va.ids, with_ids=False)  # the ids are on the pair (or the study's first arm)
    trained = {"train": splits["train"].ids, "unsupervised": splits["unsupervised"].ids} if arm == "kd_transfer" \
        else {"train": splits["train"].ids}
    tracking.log_datasets(cfg.data, {**trained, "validation": va.ids, "test": te.ids})
    tracking.log_config({**cfg.flat(), "mode": arm})
    model = build_student(cfg.student, cfg.seed)  # identical initial weights in every arm
    mlflow.set_tags({"init_sha256": weights_sha256(model), "kd_imdb.device": str(device)})
    mlflow.log_metric("n_parameters", sum(p.numel() for p in model.parameters()))
    fit_cfg = FitConfig(seed=cfg.seed, epochs=inputs.epochs, lr=cfg.training.lr, batch_size=cfg.training.batch_size,
                        lr_schedule=cfg.training.lr_schedule,
                        first_selectable_epoch=inputs.first_selectable_epoch,
                        desc=cfg.run_name(arm), device=str(device), status=status)
    result = fit(model, inputs.train_seqs, va.seqs, va.labels, inputs.loss_fn, fit_cfg, log_fn or log_epoch)
    n_train = len(inputs.train_seqs)
    model.load_state_dict(result.state_dict)
    val_logits, test_logits = predict(model, va.seqs), predict(model, te.seqs)
    metrics = {**prefixed(classification_metrics(val_logits, va.labels, va.teacher), "val"),
               **prefixed(classification_metrics(test_logits, te.labels, te.teacher), "test"),
               "best_epoch": result.best_epoch, "train_seconds": result.train_seconds, "train_reviews": n_train,
               "train_reviews_per_s": n_train * len(result.history) / result.train_seconds}
    mlflow.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        save_student(tmp, model, cfg.student, tok, cfg.training.max_len)
        # Test predictions with ids and labels: paired tests (McNemar) and reliability diagrams read them.
        pd.DataFrame({"id": te.ids, "label": te.labels, "logit_0": test_logits[:, 0],
                      "logit_1": test_logits[:, 1]}).to_parquet(f"{tmp}/test_predictions.parquet", index=False)
        mlflow.log_artifacts(tmp, "student")
    return metrics


def run(cfg: ArmConfig) -> dict[str, dict]:
    """The ``student`` entry point. Returns ``{arm: metrics}``."""
    tracking.setup_tracking(tracking.EXPERIMENT)
    mode = cfg.distillation.mode
    data, tok, splits = prepare(cfg, transfer=mode == "kd_transfer")
    if mode != "pair":
        with tracking.start_run(run_name=cfg.run_name(mode)):
            tracking.log_validation_split(splits["validation"].ids)
            return {mode: train_arm(cfg, mode, tok, splits)}
    results = {}
    with tracking.start_run(run_name=f"{cfg.student.name} s{cfg.seed}", tags={"kd_imdb.stage": "student_pair"}):
        tracking.log_params_once({**cfg.flat(), "data_hash": data.content_hash})
        tracking.log_config(cfg.flat())
        tracking.log_validation_split(splits["validation"].ids)
        for arm in ("scratch", "kd", "kd_hard") if cfg.training.hard_epochs else ("scratch", "kd"):
            with tracking.start_run(run_name=cfg.run_name(arm), nested=True):
                results[arm] = train_arm(cfg, arm, tok, splits)
        mlflow.log_metrics({f"{arm}_{k}": v for arm, m in results.items() for k, v in m.items() if k.startswith("test_")})
        pair = analysis.arm_metrics_frame(results)
        mlflow.log_metrics({f"kd_minus_scratch_{k}": analysis.gain(pair, "kd", "scratch", k)["diff_mean"]
                            for k in ("test_accuracy", "test_f1", "val_accuracy")})
    return results
