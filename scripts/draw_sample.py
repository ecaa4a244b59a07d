"""Draw the small real IMDB sample shipped in the package (kd_imdb/sample/imdb_sample.parquet).

Exact command used:  python scripts/draw_sample.py ../shared/data/imdb
A seeded, label-balanced draw: 1,000 train and 1,000 test reviews (500 per label) and 5,500 unlabelled
(the demo's transfer set; the first 500 are the draw of 500 that earlier versions shipped).
"""
import sys
from pathlib import Path

import pandas as pd

SIZES = {"train": 1000, "test": 1000, "unsupervised": 5500}


def main(folder: str, seed: int = 0) -> None:
    parts = []
    for split, n in SIZES.items():
        frame = pd.read_parquet(Path(folder) / f"{split}.parquet", columns=["text", "label"])
        if split == "unsupervised":
            part = frame.sample(n=n, random_state=seed)
        else:
            part = frame.groupby("label", group_keys=False).sample(n=n // 2, random_state=seed)
        parts.append(part.assign(split=split))
    sample = pd.concat(parts, ignore_index=True)
    sample["label"] = sample["label"].astype("int8")
    out = Path(__file__).resolve().parents[1] / "kd_imdb" / "sample" / "imdb_sample.parquet"
    sample.to_parquet(out, compression="zstd", compression_level=19, index=False)
    print(f"wrote {out}: {sample.groupby('split').size().to_dict()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/imdb")
