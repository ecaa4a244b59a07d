"""The label-budget curve (issue 18 item 3): a table and a plot of what KD and the transfer set give a
student that has N labelled reviews, from committed files.

    python scripts/budget_curve.py --out results/label_budget/gru32 \
        "1000=results/label_budget/gru32/b1000/runs.csv" "2500=results/label_budget/gru32/b2500/runs.csv" ...

Each entry is BUDGET=RUNS_CSV, one study per budget (``kd-imdb study --label-budget N``; 22500 is the
whole train split). Per budget: each arm's mean test accuracy with its t CI over seeds, and each arm
minus scratch as the paired difference over seed pairs (t CI, paired t-test), Holm-corrected over all
rows of the table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from kd_imdb import stats
from kd_imdb.analysis import gain

ARMS = ("kd", "kd_transfer")


def curve(entries: list[str]) -> pd.DataFrame:
    rows = []
    for entry in entries:
        budget, path = entry.split("=", 1)
        runs = pd.read_csv(path)
        (arch, hidden), = runs[["arch", "hidden"]].drop_duplicates().itertuples(index=False)
        row = {"student": f"{arch.upper()}-{hidden}", "budget": int(budget)}
        for arm in ("scratch", *ARMS):
            row[arm], row[f"{arm}_low"], row[f"{arm}_high"] = stats.mean_ci(runs.loc[runs["arm"] == arm, "test_accuracy"])
        for arm in ARMS:
            d = gain(runs, arm)
            row.update({f"{arm}_diff": d["diff_mean"], f"{arm}_diff_low": d["diff_ci_low"],
                        f"{arm}_diff_high": d["diff_ci_high"], f"{arm}_p": d["t_pvalue"], "pairs": d["n_pairs"]})
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("budget").reset_index(drop=True)
    holm = stats.holm(np.concatenate([table[f"{arm}_p"].to_numpy() for arm in ARMS]))
    for i, arm in enumerate(ARMS):
        table[f"{arm}_holm"] = holm[i * len(table):(i + 1) * len(table)]
    return table


def markdown(table: pd.DataFrame) -> str:
    def ci(r, key: str, signed: bool = False) -> str:
        f = "{:+.3f}" if signed else "{:.3f}"
        return f"{f.format(r[key])} [{f.format(r[f'{key}_low'])}, {f.format(r[f'{key}_high'])}]"

    out = ["| student | labelled reviews | pairs | scratch | kd | kd_transfer | Δ kd − scratch | p (Holm) | "
           "Δ kd_transfer − scratch | p (Holm) |", "|---" * 10 + "|"]
    out += [f"| {r['student']} | {r['budget']:,} | {r['pairs']} | {ci(r, 'scratch')} | {ci(r, 'kd')} | "
            f"{ci(r, 'kd_transfer')} | {ci(r, 'kd_diff', True)} | {r['kd_holm']:.3g} | "
            f"{ci(r, 'kd_transfer_diff', True)} | {r['kd_transfer_holm']:.3g} |" for _, r in table.iterrows()]
    return "\n".join(out)


def plot(table: pd.DataFrame, path: Path) -> None:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for arm in ARMS:
        err = np.vstack([table[f"{arm}_diff"] - table[f"{arm}_diff_low"], table[f"{arm}_diff_high"] - table[f"{arm}_diff"]])
        ax.errorbar(table["budget"], table[f"{arm}_diff"], yerr=np.nan_to_num(err), fmt="o-", capsize=4,
                    label=f"{arm} − scratch")
    ax.axhline(0, color="grey", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training reviews")
    ax.set_ylabel("test accuracy gain over scratch")
    ax.set_title(table["student"].iloc[0])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entries", nargs="+", help="BUDGET=RUNS_CSV")
    parser.add_argument("--out", default="", help="Folder for budget_curve.md and kd_gain_vs_budget.png.")
    args = parser.parse_args()
    table = curve(args.entries)
    text = markdown(table)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "budget_curve.md").write_text(text + "\n")
        plot(table, Path(args.out) / "kd_gain_vs_budget.png")


if __name__ == "__main__":
    main()
