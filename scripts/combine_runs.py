"""Paired comparisons across studies, from their runs.csv files (figures for RESULTS.md).

    python scripts/combine_runs.py results/study_arms_gru32/runs.csv \
        results/teachers_gru32/linear/runs.csv:kd=kd_linear results/teachers_gru32/ensemble/runs.csv:kd=kd_ensemble \
        [--baseline scratch] [--arms kd,kd_linear] [--compact]

Each file may rename its arms (``path:old=new,old=new``): the KD arm of a study distilled from the linear
teacher becomes ``kd_linear``. Training on one CPU is repeatable, so a seed's scratch student is the same
run in every study that trains it there, and arms trained by different studies are paired exactly. Not
across every machine, though (other SIMD kernels give other floats), so the script checks it: a (student,
seed, arm) found in two files must have the same test metrics, or it stops, because those studies are not
paired (another machine, device, data or version). Such a file names its pairing group (``path#GROUP``,
after any renames): its runs then pair only among themselves, with their own scratch arm, so one student
can enter ``--pool`` from two machines (its seeds counting as distinct pairs).

``--baseline`` picks the arm every other arm is compared with (``label_smoothing`` asks "is KD more than
label smoothing?" directly); ``--compact`` prints one table, a row per student and arm; ``--pool`` one
row per arm, its paired differences pooled over every student and seed. McNemar needs
each run's test predictions, which runs.csv does not hold, so that column stays empty; the study's own
results.md has it.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from kd_imdb.analysis import format_ci, markdown_table, summarise
from kd_imdb.stats import holm, paired_difference

KEY = ["group", "arch", "hidden", "seed", "arm"]
CHECKED = ["test_accuracy", "test_log_loss"]


def read(spec: str) -> pd.DataFrame:
    """A runs.csv, its arms renamed and its pairing group set as ``path:old=new,...#GROUP`` says."""
    spec, _, group = spec.partition("#")
    path, _, renames = spec.partition(":")
    runs = pd.read_csv(path)
    mapping = dict(pair.split("=", 1) for pair in renames.split(",") if pair)
    return runs.assign(arm=runs["arm"].replace(mapping), source=path, group=group)


def combine(specs: list[str]) -> pd.DataFrame:
    """One row per (student, seed, arm); raises ValueError if two files disagree on one."""
    runs = pd.concat([read(s) for s in specs], ignore_index=True)
    for key, group in runs.groupby(KEY):
        values = group[CHECKED].to_numpy(dtype=float)
        if not np.allclose(values, values[0], rtol=0, atol=1e-9):
            raise ValueError(f"{key} differs between {list(group['source'])} ({group['test_accuracy'].tolist()}): "
                             "those studies are not paired; combine only runs of one machine, device and version")
    return runs.drop_duplicates(KEY).reset_index(drop=True)


def compact_table(summary: pd.DataFrame) -> str:
    """One row per (student, arm): test accuracy with its CI, and the paired difference from the baseline.
    Holm's correction runs over every comparison in the table (all students and arms: one family)."""
    base = summary["baseline"].iloc[0]
    summary = summary.assign(accuracy_holm_pvalue=holm(summary["accuracy_t_pvalue"].to_numpy()))
    out = [f"| student | arm | seed pairs | test accuracy | Δ vs {base} | p | p (Holm, all rows) | ECE |", "|---" * 8 + "|"]
    for (arch, hidden), part in summary.groupby(["arch", "hidden"], sort=False):
        first = part.iloc[0]
        out.append(f"| {arch.upper()}-{hidden} | {base} | {int(first['n_pairs'])} | "
                   f"{format_ci(first, f'accuracy_{base}', 4)} | | | | {first.get(f'ece_{base}', np.nan):.3f} |")
        for _, r in part.iterrows():
            arm = r["arm"]
            out.append(f"| {arch.upper()}-{hidden} | {arm} | {int(r['n_pairs'])} | "
                       f"{format_ci(r, f'accuracy_{arm}', 4)} | {format_ci(r, 'accuracy_diff', 4, signed=True)} | "
                       f"{r['accuracy_t_pvalue']:.3g} | {r['accuracy_holm_pvalue']:.3g} | {r.get(f'ece_{arm}', np.nan):.3f} |")
    return "\n".join(out)


def pooled_table(runs: pd.DataFrame, baseline: str) -> str:
    """One row per arm: its test-accuracy differences from the baseline pooled over every (student, seed)
    pair, with the t CI, the paired t-test, Holm's correction over the arms and how many pairs the arm
    wins. Pooling treats the students as exchangeable: it asks whether the arm helps these tiny students
    in general, not any one of them (the per-student rows of --compact say that)."""
    wide = runs.pivot_table(index=["group", "arch", "hidden", "seed"], columns="arm", values="test_accuracy", sort=False)
    rows = []
    for arm in [a for a in wide.columns if a != baseline]:
        both = wide[[baseline, arm]].dropna()
        diff = paired_difference(both[arm], both[baseline])
        students = list(dict.fromkeys(f"{a.upper()}-{h}" for _, a, h, _ in both.index))
        rows.append({"arm": arm, "students": ", ".join(students), "n": diff["n_pairs"], "diff": diff["diff_mean"],
                     "diff_low": diff["diff_ci_low"], "diff_high": diff["diff_ci_high"], "p": diff["t_pvalue"],
                     "wins": int((both[arm] > both[baseline]).sum())})
    table = pd.DataFrame(rows).assign(holm=lambda t: holm(t["p"].to_numpy()))
    out = [f"| arm | students | pairs | Δ test accuracy vs {baseline} (pooled) | p | p (Holm, all rows) | pairs won |",
           "|---" * 7 + "|"]
    out += [f"| {r['arm']} | {r['students']} | {r['n']} | {format_ci(r, 'diff', 4, signed=True)} | {r['p']:.3g} | "
            f"{r['holm']:.3g} | {r['wins']}/{r['n']} |" for _, r in table.iterrows()]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="runs.csv files, each optionally path:old=new,...#GROUP")
    parser.add_argument("--baseline", default="scratch", help="the arm every other arm is compared with")
    parser.add_argument("--arms", default="", help="comma-separated arms to compare (default: all)")
    parser.add_argument("--compact", action="store_true", help="one table, a row per student and arm")
    parser.add_argument("--pool", action="store_true", help="one row per arm, pooled over every student and seed")
    args = parser.parse_args(argv)
    try:
        runs = combine(args.files)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.arms:
        runs = runs[runs["arm"].isin([args.baseline, *args.arms.split(",")])]
    if args.baseline not in set(runs["arm"]):
        print(f"error: no run of the baseline arm {args.baseline!r}; arms: {sorted(set(runs['arm']))}", file=sys.stderr)
        return 2
    if args.pool:
        print(pooled_table(runs, args.baseline))
        return 0
    mixed = runs.groupby(["arch", "hidden"])["group"].nunique()
    if (mixed > 1).any():
        print(f"error: {', '.join(f'{a.upper()}-{h}' for a, h in mixed[mixed > 1].index)} comes from several pairing "
              "groups; compare one group at a time, or pool them with --pool", file=sys.stderr)
        return 2
    summary = summarise(runs, baseline=args.baseline)
    print(compact_table(summary) if args.compact else markdown_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
