"""Teacher labelling throughput for each path: PyTorch fp32 unsorted, fp32 length-sorted, and ONNX Runtime
int8 (length-sorted) for each quantisation recipe, with each int8 recipe's agreement with fp32.

    python benchmarks/teacher_labeling.py [--model packaged] [--reviews 512] [--max-len 128] [--stride 126]

With ``--stride``, every review is scored over all of its windows (the windowed teacher): throughput is
given in reviews/s and windows/s, and agreement per window and per review (windows mean-pooled).
"""
from __future__ import annotations

import tempfile
import time

import click
import numpy as np
import torch

from kd_imdb import export, teacher
from kd_imdb.data import load_data


@torch.inference_mode()
def predict_unsorted(model, ids, pad_id, batch_size):
    """The naive path: batches in data order, padded to the longest review of each batch."""
    out = []
    for start in range(0, len(ids), batch_size):
        seqs = ids[start:start + batch_size]
        width = max(len(s) for s in seqs)
        x = torch.full((len(seqs), width), pad_id)
        mask = torch.zeros_like(x)
        for row, s in enumerate(seqs):
            x[row, : len(s)], mask[row, : len(s)] = torch.tensor(s), 1
        out.append(model(input_ids=x, attention_mask=mask).logits.numpy())
    return np.concatenate(out)


@click.command()
@click.option("--model", default="packaged", show_default=True)
@click.option("--data", default="sample", show_default=True)
@click.option("--reviews", default=512, show_default=True, type=int)
@click.option("--max-len", "max_len", default=128, show_default=True, type=int)
@click.option("--stride", default=0, show_default=True, type=int, help="> 0: every window of each review.")
@click.option("--batch-size", "batch_size", default=64, show_default=True, type=int)
def main(model: str, data: str, reviews: int, max_len: int, stride: int, batch_size: int) -> None:
    tok = teacher.load_tokenizer(model)
    net = teacher.load_model(model).eval()
    texts = load_data(data).split("test")["text"].sample(reviews, random_state=0).tolist()
    if stride:
        ids, owner = teacher.encode_windows(tok, texts, max_len, stride)
    else:
        ids, owner = teacher.encode(tok, texts, max_len), np.arange(reviews)
    view = f"windows of {max_len}, stride {stride}, {len(ids) / reviews:.2f} per review" if stride else f"max_len {max_len}"
    print(f"{model}, {view}, {reviews} reviews, {torch.get_num_threads()} thread(s)")
    print("| path | reviews/s | windows/s | top-1 agreement with fp32 (windows) | (reviews) | mean KL |")
    print("|---|---|---|---|---|---|")

    def row(name: str, seconds: float, logits: np.ndarray | None = None) -> None:
        cells = [f"{reviews / seconds:.1f}", f"{len(ids) / seconds:.1f}", "", "", ""]
        if logits is not None:
            per_window = export.agreement(fp32, logits)
            per_review = export.agreement(teacher.pool_windows(fp32, owner, reviews, "mean"),
                                          teacher.pool_windows(logits, owner, reviews, "mean"))
            cells[2:] = [f"{per_window['int8_top1_agreement']:.4f}", f"{per_review['int8_top1_agreement']:.4f}",
                         f"{per_window['int8_mean_kl']:.2e}"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)

    t0 = time.perf_counter()
    predict_unsorted(net, ids, tok.pad_token_id, batch_size)
    row("PyTorch fp32, unsorted batches", time.perf_counter() - t0)
    t0 = time.perf_counter()
    fp32 = teacher.predict_logits(net, ids, tok.pad_token_id, batch_size)
    row("PyTorch fp32, length-sorted", time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in export.INT8_RECIPES:
            onnx = export.OnnxTeacher(export.export_teacher_int8(net, f"{tmp}/{recipe}.onnx", recipe), tok.pad_token_id)
            t0 = time.perf_counter()
            int8 = onnx.predict(ids, batch_size)
            row(f"ONNX Runtime int8 ({recipe}), length-sorted", time.perf_counter() - t0, int8)


if __name__ == "__main__":
    main()
