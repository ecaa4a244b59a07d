"""One row per arm run of several studies' runs.csv: the student search table of RESULTS.md.

    python scripts/search_table.py "max_len 256=results/student_search/round1_len256/runs.csv" "max_len 512=..."

Validation accuracy is what the search selects on; test accuracy is reported, never used to choose.
"""
import sys

import pandas as pd


def main(items: list[str]) -> None:
    print("| student | setting | arm | seed | val accuracy | test accuracy | best epoch | training min |")
    print("|---|---|---|---|---|---|---|---|")
    for item in items:
        label, path = item.split("=", 1)
        runs = pd.read_csv(path).sort_values(["hidden", "seed", "arm"])
        for _, r in runs.iterrows():
            print(f"| {r.configuration} | {label} | {r.arm} | {int(r.seed)} | {r.val_accuracy:.4f} | {r.test_accuracy:.4f} | "
                  f"{int(r.best_epoch)} | {r.train_seconds / 60:.0f} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: search_table.py LABEL=runs.csv ...")
    main(sys.argv[1:])
