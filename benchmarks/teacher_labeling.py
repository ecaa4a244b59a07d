"""Teacher labelling throughput (reviews/s) for each path: PyTorch fp32 unsorted, fp32 length-sorted,
ONNX Runtime int8 length-sorted; with the int8 path's agreement with fp32.

    python benchmarks/teacher_labeling.py [--model packaged] [--reviews 512] [--max-len 128]
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
@click.option("--batch-size", "batch_size", default=64, show_default=True, type=int)
def main(model: str, data: str, reviews: int, max_len: int, batch_size: int) -> None:
    tok = teacher.load_tokenizer(model)
    net = teacher.load_model(model).eval()
    texts = load_data(data).split("test")["text"].sample(reviews, random_state=0).tolist()
    ids = teacher.encode(tok, texts, max_len)
    print(f"{model}, max_len {max_len}, {reviews} reviews, {torch.get_num_threads()} thread(s)")
    print("| path | reviews/s |")
    print("|---|---|")
    t0 = time.perf_counter()
    predict_unsorted(net, ids, tok.pad_token_id, batch_size)
    print(f"| PyTorch fp32, unsorted batches | {reviews / (time.perf_counter() - t0):.1f} |", flush=True)
    t0 = time.perf_counter()
    fp32 = teacher.predict_logits(net, ids, tok.pad_token_id, batch_size)
    print(f"| PyTorch fp32, length-sorted | {reviews / (time.perf_counter() - t0):.1f} |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export.OnnxTeacher(export.export_teacher_int8(net, f"{tmp}/t.onnx"), tok.pad_token_id)
        t0 = time.perf_counter()
        int8 = onnx.predict(ids, batch_size)
        print(f"| ONNX Runtime int8, length-sorted | {reviews / (time.perf_counter() - t0):.1f} |")
    agreement = export.agreement(fp32, int8)
    print(f"int8 vs fp32: top-1 agreement {agreement['int8_top1_agreement']:.4f}, mean KL {agreement['int8_mean_kl']:.2e}")


if __name__ == "__main__":
    main()
