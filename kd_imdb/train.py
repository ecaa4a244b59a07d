"""The student training loop: one plain loop, length-bucketed batches, best epoch by validation accuracy.
The loss is the caller's (``experiment`` builds one per arm), so the loop knows nothing of teachers.

The randomness of a run comes from two streams, both seeded by the run's seed: ``torch``'s global
generator (initial weights, dropout) and a NumPy generator for the batch order. Evaluation draws from
neither, so scratch and KD runs of one seed see the same batches in the same order and differ only in
their loss.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from kd_imdb.metrics import classification_metrics


@dataclass
class TrainResult:
    state_dict: dict
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 50) -> list[np.ndarray]:
    """Shuffle, cut into pools of ``pool`` batches, sort each pool by length, batch it, shuffle the batches.

    Reviews in a batch have similar lengths (little padding) while the order stays random.
    """
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def resolve_device(device: str | None = None) -> torch.device:
    """``device``, else $KD_IMDB_DEVICE, else CUDA when there is a GPU and the CPU otherwise.

    The students are made for CPUs; a GPU, where there is one, only makes a study finish sooner.
    """
    name = device or os.environ.get("KD_IMDB_DEVICE", "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def pad(seqs: list[np.ndarray]) -> torch.Tensor:
    """Token-id arrays -> [B, max length] int64, zero-padded at the end."""
    out = np.zeros((len(seqs), max(len(s) for s in seqs)), dtype=np.int64)
    for row, s in enumerate(seqs):
        out[row, : len(s)] = s
    return torch.from_numpy(out)


@torch.inference_mode()  # no autograd graph: faster, and memory stays flat on 25,000 reviews
def predict(model: torch.nn.Module, seqs: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Logits [n, 2] in input order; length-sorted batches, no randomness drawn."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = np.argsort([len(s) for s in seqs], kind="stable")
    out = np.zeros((len(seqs), 2), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        out[idx] = model(pad([seqs[i] for i in idx]).to(device)).float().cpu().numpy()
    model.train(was_training)
    return out


LossFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]  # (logits [B, 2], batch rows [B], epoch) -> loss


@dataclass(frozen=True)
class FitConfig:
    """How a student trains: seed, schedule, optimiser, and from which epoch on the best one is chosen."""

    seed: int
    epochs: int  # all of them, a hard phase after KD included
    lr: float
    batch_size: int
    lr_schedule: str = "constant"  # or "cosine": lr * (1 + cos(pi * progress)) / 2, updated every step
    first_selectable_epoch: int = 1  # KD then hard labels: the model must come from the hard phase
    desc: str = "student"
    device: str | None = None
    # Where a worker's progress goes instead of its own bar: status(text) every few seconds (executor).
    status: Callable[[str], None] | None = None


def fit(model: torch.nn.Module, train_seqs: list[np.ndarray], val_seqs: list[np.ndarray], val_labels: np.ndarray,
        loss_fn: LossFn, cfg: FitConfig, log_fn: Callable[[dict, int], None] | None = None) -> TrainResult:
    """Train ``model`` with Adam (at ``cfg.lr``, or decayed along ``cfg.lr_schedule``) on ``loss_fn`` and
    return the weights of its best epoch by validation accuracy (among epochs ``cfg.first_selectable_epoch``
    and later).

    ``loss_fn(logits, rows, epoch)`` gets a batch's logits [B, 2] and its rows of the training set [B]
    (on the model's device), so it can look up labels and teacher logits itself. ``log_fn(metrics,
    epoch)`` gets the per-epoch training loss and validation metrics. The model trains on
    ``resolve_device(cfg.device)`` and stays there; the returned weights are on the CPU.
    """
    torch.manual_seed(cfg.seed)  # dropout stream (on a GPU too)
    rng = np.random.default_rng(cfg.seed)  # batch-order stream
    device = resolve_device(cfg.device)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    lengths = np.array([len(s) for s in train_seqs])
    best_acc, best_epoch, best_state, history = -1.0, 0, None, []
    t0 = time.time()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        batches = length_bucketed_batches(lengths, cfg.batch_size, rng)
        if cfg.status is None:
            batches = tqdm(batches, desc=f"{cfg.desc} epoch {epoch}", unit="batch", mininterval=10, leave=False)
        shown = 0.0
        for step, idx in enumerate(batches):
            if cfg.lr_schedule == "cosine":  # progress runs over all epochs, so the last step's lr is near 0
                progress = (epoch - 1 + step / len(batches)) / cfg.epochs
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
            if cfg.status is not None and time.time() - shown > 5:
                cfg.status(f"{cfg.desc} epoch {epoch}/{cfg.epochs} {100 * step // len(batches)}%")
                shown = time.time()
            logits = model(pad([train_seqs[i] for i in idx]).to(device))  # [B, 2]
            loss = loss_fn(logits, torch.from_numpy(idx).to(device), epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # GRUs can spike early on
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        val = classification_metrics(predict(model, val_seqs), val_labels)
        row = {"epoch": epoch, "train_loss": total / seen, **{f"val_{k}": v for k, v in val.items()}}
        history.append(row)
        if log_fn:
            log_fn({k: v for k, v in row.items() if k != "epoch"}, epoch)
        if epoch >= cfg.first_selectable_epoch and val["accuracy"] > best_acc:
            best_acc, best_epoch = val["accuracy"], epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return TrainResult(best_state, best_epoch, history, time.time() - t0)
