"""Student accuracy against teacher accuracy (issue 14 item 7): a table and a plot from committed files.

    python scripts/teacher_strength.py --data ../shared/data/imdb --out results/teacher_strength_gru32 \
        "MiniLM-128=results/teacher_logits.parquet=results/study_arms_gru32/runs.csv" \
        "stack=results/stacked_teacher_logits.parquet=results/teacher_strength_gru32/stack/runs.csv" ...

Each entry is NAME=TEACHER_LOGITS=RUNS_CSV[:ARM] (ARM defaults to kd_transfer): the teacher's test accuracy
is computed from its logits file on the distinct test reviews, the student's from the study's runs (mean
and t CI over seeds), and the gain over that study's own scratch arm is the paired difference.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from kd_imdb import stats  # noqa: E402
from kd_imdb.data import load_data  # noqa: E402
from kd_imdb.soft_labels import read_logits  # noqa: E402


def teacher_accuracy(path: str, test: pd.DataFrame) -> float:
    frame, _ = read_logits(path)
    logits = frame.drop_duplicates("id").set_index("id").loc[test["id"], ["logit_0", "logit_1"]].to_numpy()
    return float((logits.argmax(1) == test["label"].to_numpy()).mean())


def row(name: str, logits: str, runs_spec: str, test: pd.DataFrame) -> dict:
    path, _, arm = runs_spec.partition(":")
    runs = pd.read_csv(path).pivot_table(index=["arch", "hidden", "seed"], columns="arm", values="test_accuracy")
    arm = arm or "kd_transfer"
    mean, low, high = stats.mean_ci(runs[arm])
    d = stats.paired_difference(runs[arm].to_numpy(), runs["scratch"].to_numpy())
    return {"teacher": name, "teacher_test_accuracy": teacher_accuracy(logits, test), "arm": arm,
            "seed_pairs": len(runs), "student": mean, "student_low": low, "student_high": high,
            "scratch": runs["scratch"].mean(), "gain": d["diff_mean"], "gain_low": d["diff_ci_low"],
            "gain_high": d["diff_ci_high"], "p": d["t_pvalue"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entries", nargs="+", help="NAME=TEACHER_LOGITS=RUNS_CSV[:ARM]")
    parser.add_argument("--data", default="sample")
    parser.add_argument("--out", required=True, help="folder for teacher_strength.csv and .png")
    args = parser.parse_args()
    test = load_data(args.data).split("test").drop_duplicates("id")
    table = pd.DataFrame([row(*entry.split("=", 2), test) for entry in args.entries])
    table["p_holm"] = stats.holm(table["p"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "teacher_strength.csv", index=False)
    print("| teacher | teacher test accuracy | student arm | seed pairs | student test accuracy | scratch | Δ vs scratch "
          "| p | p (Holm) | student − teacher |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in table.itertuples():
        print(f"| {r.teacher} | {r.teacher_test_accuracy:.4f} | {r.arm} | {r.seed_pairs} | {r.student:.4f} [{r.student_low:.4f}, "
              f"{r.student_high:.4f}] | {r.scratch:.4f} | {r.gain:+.4f} [{r.gain_low:+.4f}, {r.gain_high:+.4f}] | {r.p:.3g} | "
              f"{r.p_holm:.3g} | {r.student - r.teacher_test_accuracy:+.4f} |")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.errorbar(table["teacher_test_accuracy"], table["student"],
                yerr=[table["student"] - table["student_low"], table["student_high"] - table["student"]],
                fmt="o", capsize=3, label="student (transfer-set KD), 95% CI over seeds")
    for i, r in enumerate(table.itertuples()):  # labels alternately below and above: neighbours do not overlap
        ax.annotate(r.teacher, (r.teacher_test_accuracy, r.student), textcoords="offset points",
                    xytext=(5, -12 if i % 2 == 0 else 8), fontsize=8)
    lo = min(table["teacher_test_accuracy"].min(), table["student_low"].min()) - 0.005
    hi = max(table["teacher_test_accuracy"].max(), table["student_high"].max()) + 0.005
    ax.plot([lo, hi], [lo, hi], "k:", lw=1, label="student = teacher")
    ax.axhline(table["scratch"].mean(), color="grey", lw=1, ls="--", label="scratch (mean)")
    ax.set_xlabel("teacher test accuracy")
    ax.set_ylabel("student test accuracy")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "teacher_strength.png", dpi=120)


if __name__ == "__main__":
    main()
