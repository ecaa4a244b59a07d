"""Student inference at two revisions of ``kd_imdb/students.py``, in one run, one thread, on real test
reviews in requests of 64 (the product table's batch), model only (tokenisation is the same for both).

    python benchmarks/student_revisions.py --data ../shared/data/imdb --rev 6a78859~3 --max-len 512 --max-len 1024

The old module is read from git (``git show REV:kd_imdb/students.py``) and given the new one's weights,
so both compute the same student; the script prints their largest logit gap, then reviews/s of each,
fp32 and int8 (``export.quantize_student``), timed in turns (old, new, old, new...) so that the
machine's drift hits both alike. Session 21 used it for the change that made every inference step of
the GRU student cost each review's own length (before: only its GRU was packed).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from kd_imdb import export
from kd_imdb.config import StudentSpec
from kd_imdb.data import load_data
from kd_imdb.students import build_student
from kd_imdb.tokenizer import encode_texts, train_tokenizer
from kd_imdb.train import pad


def students_at(rev: str):
    """The ``kd_imdb.students`` module as it was at git revision ``rev``."""
    source = subprocess.run(["git", "show", f"{rev}:kd_imdb/students.py"], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parent.parent).stdout
    path = Path(tempfile.mkdtemp()) / "students_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("students_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@torch.inference_mode()
def reviews_per_s(model: torch.nn.Module, requests: list[torch.Tensor]) -> float:
    for ids in requests:  # warm-up: one untimed pass, so first-call allocations are not timed
        model(ids)
    t0 = time.perf_counter()
    for ids in requests:
        model(ids)
    return sum(len(ids) for ids in requests) / (time.perf_counter() - t0)


@click.command()
@click.option("--data", default="sample", show_default=True)
@click.option("--rev", required=True, help="The git revision to compare the working tree's students.py against.")
@click.option("--reviews", default=512, show_default=True, type=int, help="Test reviews timed, in requests of 64.")
@click.option("--max-len", "max_lens", default=[512, 1024], multiple=True, show_default=True, type=int)
@click.option("--hidden", default=64, show_default=True, type=int)
@click.option("--bigram-buckets", default=131072, show_default=True, type=int, help="0: no bag.")
@click.option("--repeats", default=3, show_default=True, type=int, help="Timed turns per model.")
def main(data: str, rev: str, reviews: int, max_lens: tuple[int, ...], hidden: int, bigram_buckets: int,
         repeats: int) -> None:
    torch.set_num_threads(1)
    os.environ["RAYON_NUM_THREADS"] = "1"
    old_students = students_at(rev)
    imdb = load_data(data)
    tok = train_tokenizer(imdb.split("train")["text"].tolist(), vocab_size=20000)
    texts = imdb.split("test")["text"].sample(min(reviews, len(imdb.split("test"))), random_state=0).tolist()
    spec = StudentSpec(hidden=hidden, bigram_buckets=bigram_buckets)
    print(f"{spec.name}, {len(texts)} test reviews in requests of 64, one thread, model only; "
          f"median of {repeats} timed turns; old = {rev}, new = the working tree")
    print("| max_len | mean tokens | longest in a request (mean) | old fp32 | new fp32 | speed-up | old int8 | "
          "new int8 | speed-up | max logit gap |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for max_len in max_lens:
        seqs = encode_texts(tok, texts, max_len)
        requests = [pad(seqs[i:i + 64]) for i in range(0, len(seqs), 64)]  # [64, longest in the request]
        new = build_student(spec, 0).eval()
        old = old_students.build_student(spec, 0).eval()
        old.load_state_dict(new.state_dict())
        with torch.inference_mode():
            gap = max(float((new(ids) - old(ids)).abs().max()) for ids in requests)
        models = {"old fp32": old, "new fp32": new, "old int8": export.quantize_student(old),
                  "new int8": export.quantize_student(new)}
        rates = {name: [] for name in models}
        for _ in range(repeats):
            for name, model in models.items():
                rates[name].append(reviews_per_s(model, requests))
        r = {name: float(np.median(v)) for name, v in rates.items()}
        print(f"| {max_len} | {np.mean([len(s) for s in seqs]):.0f} | {np.mean([ids.shape[1] for ids in requests]):.0f} "
              f"| {r['old fp32']:,.0f} | {r['new fp32']:,.0f} | {r['new fp32'] / r['old fp32']:.2f}x "
              f"| {r['old int8']:,.0f} | {r['new int8']:,.0f} | {r['new int8'] / r['old int8']:.2f}x | {gap:.1e} |",
              flush=True)


if __name__ == "__main__":
    main()
