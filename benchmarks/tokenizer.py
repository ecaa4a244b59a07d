"""The students' tokenizer: ``encode_texts``'s fast path against the ``tokenizers`` library, on every review.

    python benchmarks/tokenizer.py --data ../shared/data/imdb

The vocabulary is trained on the train split (20,000 words, as the students'); every review of train,
test and the unlabelled split is then encoded both ways, untruncated. It prints the share of reviews
that take the fast path, how many reviews get other ids (must be 0), and reviews/s of each way on
one core, measured in the same run, at batch 64.
"""
from __future__ import annotations

import os
import time

import click
import numpy as np

from kd_imdb.data import load_data
from kd_imdb.tokenizer import encode_texts, train_tokenizer, words


@click.command()
@click.option("--data", default="sample", show_default=True, help="A data source, as for every kd-imdb stage.")
def main(data: str) -> None:
    os.environ["RAYON_NUM_THREADS"] = "1"  # one core: the library would encode a batch on every core
    imdb = load_data(data, unsupervised=True)
    tok = train_tokenizer(imdb.frame.loc[imdb.frame["split"] == "train", "text"].tolist(), vocab_size=20000)
    texts = imdb.frame["text"].drop_duplicates().tolist()
    fast = sum(words(t) is not None for t in texts)
    t0 = time.perf_counter()
    mine = [ids for i in range(0, len(texts), 64) for ids in encode_texts(tok, texts[i:i + 64], 10**9)]
    t1 = time.perf_counter()
    library = [enc.ids or [1] for i in range(0, len(texts), 64) for enc in tok.encode_batch(texts[i:i + 64])]
    t2 = time.perf_counter()
    differ = sum(not np.array_equal(a, b) for a, b in zip(mine, library))
    print(f"{len(texts):,} reviews; {fast:,} ({fast / len(texts):.1%}) take the fast path; reviews whose ids differ "
          f"from the library's: {differ}")
    print(f"reviews/s on one core, batch 64: encode_texts {len(texts) / (t1 - t0):,.0f}, "
          f"the library's encode_batch {len(texts) / (t2 - t1):,.0f} ({(t2 - t1) / (t1 - t0):.2f}x)")


if __name__ == "__main__":
    main()
