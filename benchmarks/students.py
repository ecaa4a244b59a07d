"""Student throughput: training and evaluation reviews/s for every student size, on real reviews.

    python benchmarks/students.py [--data sample] [--reviews 1024] [--threads 2]

Uses real review lengths (the word tokenizer on the chosen data, max_len 256, batch 64, length-bucketed
batches as in training) and prints one row per student. Nothing is trained to convergence.
"""
from __future__ import annotations

import time

import click
import numpy as np
import torch

from kd_imdb.config import StudentSpec
from kd_imdb.data import load_data
from kd_imdb.losses import kd_loss
from kd_imdb.students import build_student
from kd_imdb.tokenizer import encode_texts, train_tokenizer
from kd_imdb.train import length_bucketed_batches, pad, predict

GRID = [("gru", h) for h in (16, 32, 64, 128, 256)] + [("cnn", h) for h in (64, 128, 256)]


@click.command()
@click.option("--data", default="sample", show_default=True)
@click.option("--reviews", default=1024, show_default=True, type=int)
@click.option("--threads", default=2, show_default=True, type=int)
@click.option("--max-len", "max_len", default=256, show_default=True, type=int)
def main(data: str, reviews: int, threads: int, max_len: int) -> None:
    torch.set_num_threads(threads)
    frame = load_data(data).split("train").head(reviews)
    tok = train_tokenizer(frame["text"].tolist(), vocab_size=20000)
    seqs = encode_texts(tok, frame["text"].tolist(), max_len)
    labels = torch.tensor(frame["label"].to_numpy())
    teacher = torch.randn(len(seqs), 2)
    lengths = np.array([len(s) for s in seqs])
    print(f"torch {torch.__version__}, {threads} thread(s), {len(seqs)} reviews, mean length {lengths.mean():.0f} words")
    print("| student | parameters | train reviews/s (KD step) | eval reviews/s |")
    print("|---|---|---|---|")
    for arch, hidden in GRID:
        model = build_student(StudentSpec(arch=arch, hidden=hidden), 0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches = length_bucketed_batches(lengths, 64, np.random.default_rng(0))
        t0 = time.perf_counter()
        for idx in batches:
            loss = kd_loss(model(pad([seqs[i] for i in idx])), teacher[idx], labels[idx], 2.0, 1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_rate = len(seqs) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        predict(model, seqs)
        eval_rate = len(seqs) / (time.perf_counter() - t0)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"| {arch}-{hidden} | {n_params:,} | {train_rate:,.0f} | {eval_rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
