"""The student training loop: one plain loop, length-bucketed batches, best epoch by validation accuracy.

The randomness of a run comes from two streams, both seeded by the run's seed: ``torch``'s global
generator (initial weights, dropout) and a NumPy generator for the batch order. Evaluation draws from
neither, so scratch and KD runs of one seed see the same batches in the same order and differ only in
their loss.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from kd_imdb.losses import hard_loss, kd_loss, margin_mse_loss
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


@torch.inference_mode()
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


def train_student(
    model: torch.nn.Module,
    seed: int,
    train_seqs: list[np.ndarray],
    train_labels: np.ndarray,
    val_seqs: list[np.ndarray],
    val_labels: np.ndarray,
    epochs: int,
    lr: float,
    batch_size: int,
    teacher_logits: np.ndarray | None = None,
    temperature: float = 2.0,
    alpha: float = 1.0,
    hard_epochs: int = 0,
    soft_loss: str = "kl",
    label_smoothing: float = 0.0,
    log_fn=None,
    desc: str = "student",
    device: str | None = None,
) -> TrainResult:
    """Train ``model`` and return the weights of its best epoch by validation accuracy.

    With ``teacher_logits`` [n_train, 2] the loss is ``kd_loss`` (temperature, alpha) or, with
    ``soft_loss="mse"``, ``margin_mse_loss``; without, it is cross-entropy on the labels (with
    ``label_smoothing``). Reviews labelled -1 (a transfer set) only feed the soft term. ``hard_epochs``
    more epochs on hard labels follow the KD epochs (the origin study's "extra training on hard
    targets"); the best epoch is then chosen among them. ``log_fn(metrics, epoch)`` gets the per-epoch
    training loss and validation metrics. The model trains on ``resolve_device(device)`` and stays there;
    the returned weights are on the CPU.
    """
    torch.manual_seed(seed)  # dropout stream (on a GPU too)
    rng = np.random.default_rng(seed)  # batch-order stream
    device = resolve_device(device)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    lengths = np.array([len(s) for s in train_seqs])
    labels_t = torch.tensor(np.asarray(train_labels), dtype=torch.long, device=device)
    teacher_t = None if teacher_logits is None else torch.as_tensor(teacher_logits, dtype=torch.float32, device=device)
    best_acc, best_epoch, best_state, history = -1.0, 0, None, []
    t0 = time.time()
    for epoch in range(1, epochs + hard_epochs + 1):
        soft = teacher_t is not None and epoch <= epochs
        model.train()
        total, seen = 0.0, 0
        for idx in tqdm(length_bucketed_batches(lengths, batch_size, rng), desc=f"{desc} epoch {epoch}",
                        unit="batch", mininterval=10, leave=False):
            logits = model(pad([train_seqs[i] for i in idx]).to(device))  # [B, 2]
            idx_t = torch.from_numpy(idx).to(device)
            if soft and soft_loss == "mse":
                loss = margin_mse_loss(logits, teacher_t[idx_t], labels_t[idx_t], alpha)
            elif soft:
                loss = kd_loss(logits, teacher_t[idx_t], labels_t[idx_t], temperature, alpha)
            else:
                loss = hard_loss(logits, labels_t[idx_t], label_smoothing)
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
        # With hard epochs after KD, the selected model must come from the hard phase, or the arm
        # would silently fall back to its KD weights.
        selectable = epoch > epochs if (hard_epochs and teacher_t is not None) else True
        if selectable and val["accuracy"] > best_acc:
            best_acc, best_epoch = val["accuracy"], epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return TrainResult(best_state, best_epoch, history, time.time() - t0)
