"""Teacher-labelled augmentation of the transfer set (Tang et al. 2019, "Distilling task-specific knowledge
from BERT into simple neural networks", section 3.2), written as a data folder that every stage reads:

    python scripts/augment_data.py --data ../shared/data/imdb --out /work/imdb_aug --copies 1 --seed 0

The folder holds ``train.parquet`` and ``test.parquet`` unchanged, so the validation carve and every
review id stay the same, and ``unsupervised.parquet``: the unlabelled reviews plus ``copies`` perturbed
copies of each train review outside the validation split and of each unlabelled review. The teachers
label the copies like any unlabelled review (``kd-imdb soft-labels ... --data OUT --unsupervised true``),
so no copy carries a gold label and no validation review leaks into the transfer set.

Each copy: every word becomes ``[MASK]`` with probability ``mask_p`` (Tang et al.'s masking; MiniLM's
tokenizer reads it as its mask token); then, with probability ``span_p``, the copy keeps one random
contiguous span of half to all of its words. Tang et al. sample n-grams of 1 to 5 words from SST-2's
sentences; a review has hundreds of words, so the span is scaled to the review. Copies that equal a
review already in the data are dropped (a review's id is the hash of its text).
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pandas as pd

from kd_imdb.data import load_data

MASK = "[MASK]"


def perturb(text: str, rng: np.random.Generator, mask_p: float, span_p: float) -> str:
    """One perturbed copy of ``text``: words masked, then maybe one span of half to all of them kept."""
    words = text.split()
    words = [MASK if rng.random() < mask_p else w for w in words]
    if len(words) > 1 and rng.random() < span_p:
        n = int(rng.integers(max(1, len(words) // 2), len(words) + 1))  # words kept
        start = int(rng.integers(0, len(words) - n + 1))
        words = words[start:start + n]
    return " ".join(words)


@click.command()
@click.option("--data", default="sample", show_default=True, help="A data source, as for every kd-imdb stage.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The new data folder.")
@click.option("--copies", default=1, show_default=True, type=click.IntRange(min=1), help="Perturbed copies per review.")
@click.option("--sources", default="train,unsupervised", show_default=True,
              type=click.Choice(["train", "unsupervised", "train,unsupervised"]),
              help="Whose copies join the transfer set (train: outside the validation split only).")
@click.option("--mask-p", default=0.1, show_default=True, type=click.FloatRange(0, 1), help="Per word.")
@click.option("--span-p", default=0.25, show_default=True, type=click.FloatRange(0, 1), help="Per copy.")
@click.option("--seed", default=0, show_default=True, type=int)
def main(data: str, out: Path, copies: int, sources: str, mask_p: float, span_p: float, seed: int) -> None:
    imdb = load_data(data, unsupervised=True)  # the validation carve every stage uses (val_fraction 0.1, seed 0)
    frame = imdb.frame
    rng = np.random.default_rng(seed)
    originals = frame[frame["split"].isin(sources.split(","))]
    seen = set(frame["text"])
    augmented = []
    with click.progressbar(originals["text"].tolist(), label=f"{copies} copies of {len(originals):,} reviews") as bar:
        for text in bar:
            for _ in range(copies):
                copy = perturb(text, rng, mask_p, span_p)
                if copy and copy not in seen:
                    seen.add(copy)
                    augmented.append(copy)
    out.mkdir(parents=True, exist_ok=True)
    split = frame["split"].replace({"validation": "train"})  # train holds validation again: every stage carves it alike
    for name in ("train", "test"):
        frame.loc[split == name, ["text", "label"]].to_parquet(out / f"{name}.parquet", index=False)
    unlabelled = frame.loc[split == "unsupervised", "text"].tolist() + augmented
    pd.DataFrame({"text": unlabelled, "label": -1}).to_parquet(out / "unsupervised.parquet", index=False)
    click.echo(f"{out}: {(split != 'unsupervised').sum():,} labelled reviews, {len(unlabelled):,} unlabelled "
               f"({len(augmented):,} perturbed copies)")


if __name__ == "__main__":
    main()
