"""Student accuracy against teacher accuracy (issue 14 item 7): a table and a plot from committed files.

    python scripts/teacher_strength.py --data ../shared/data/imdb --out results/teacher_strength_gru32 \
        "MiniLM-128=results/teacher_logits.parquet=results/study_arms_gru32/runs.csv" \
        "stack=results/stacked_teacher_logits.parquet=results/teacher_strength_gru32/stack/runs.csv" ...

Each entry is NAME=TEACHER_LOGITS=RUNS_CSV[:ARM] (ARM defaults to kd_transfer): the teacher's test accuracy
is computed from its logits file on the distinct test reviews, the student's from the study's runs (mean
and t CI over seeds), and the gain over that study's own scratch arm is the paired difference. A runs.csv
holding several students (GRU-32 and GRU-256) gives one row each, and the plot one series per student.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from kd_imdb import analysis, stats  # noqa: E402
from kd_imdb.data import load_data  # noqa: E402
from kd_imdb.soft_labels import read_logits  # noqa: E402


def teacher_accuracy(path: str, test: pd.DataFrame) -> float:
    frame, _ = read_logits(path)
    logits = frame.drop_duplicates("id").set_index("id").loc[test["id"], ["logit_0", "logit_1"]].to_numpy()
    return float((logits.argmax(1) == test["label"].to_numpy()).mean())


def rows(name: str, logits: str, runs_spec: str, test: pd.DataFrame) -> list[dict]:
    """One row per student (arch, hidden) of the runs.csv: the arm's mean over its seed pairs with scratch,
    and its paired gain over scratch (``analysis.gain``)."""
    path, _, arm = runs_spec.partition(":")
    arm = arm or "kd_transfer"
    teacher = teacher_accuracy(logits, test)
    runs = pd.read_csv(path)
    wide = runs.pivot_table(index=analysis.PAIR_KEY, columns="arm", values="test_accuracy")
    out = []
    for (arch, hidden), part in runs.groupby(["arch", "hidden"]):
        d = analysis.gain(part, arm)
        student = wide.loc[d["pairs"]]  # the seeds with both arms: the pairs
        mean, low, high = stats.mean_ci(student[arm])
        out.append({"teacher": name, "student_model": f"{arch.upper()}-{hidden}", "teacher_test_accuracy": teacher,
                    "arm": arm, "seed_pairs": d["n_pairs"], "student": mean, "student_low": low, "student_high": high,
                    "scratch": student["scratch"].mean(), "gain": d["diff_mean"], "gain_low": d["diff_ci_low"],
                    "gain_high": d["diff_ci_high"], "p": d["t_pvalue"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entries", nargs="+", help="NAME=TEACHER_LOGITS=RUNS_CSV[:ARM]")
    parser.add_argument("--data", default="sample")
    parser.add_argument("--out", required=True, help="folder for teacher_strength.csv and .png")
    args = parser.parse_args()
    test = load_data(args.data).split("test").drop_duplicates("id")
    table = pd.DataFrame([r for entry in args.entries for r in rows(*entry.split("=", 2), test)])
    table["p_holm"] = stats.holm(table["p"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "teacher_strength.csv", index=False)
    several = table["student_model"].nunique() > 1  # a student column only when there is a choice
    print("| teacher | teacher test accuracy |" + (" student |" if several else "") + " student arm | seed pairs | "
          "student test accuracy | scratch | Δ vs scratch | p | p (Holm) | student − teacher |")
    print("|---" * (10 + several) + "|")
    for r in table.itertuples():
        student = f" {r.student_model} |" if several else ""
        print(f"| {r.teacher} | {r.teacher_test_accuracy:.4f} |{student} {r.arm} | {r.seed_pairs} | {r.student:.4f} "
              f"[{r.student_low:.4f}, {r.student_high:.4f}] | {r.scratch:.4f} | {r.gain:+.4f} [{r.gain_low:+.4f}, "
              f"{r.gain_high:+.4f}] | {r.p:.3g} | {r.p_holm:.3g} | {r.student - r.teacher_test_accuracy:+.4f} |")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for k, (student_model, series) in enumerate(table.groupby("student_model", sort=False)):
        colour = f"C{k}"
        ax.errorbar(series["teacher_test_accuracy"], series["student"],
                    yerr=[series["student"] - series["student_low"], series["student_high"] - series["student"]],
                    fmt="os"[k % 2], color=colour, capsize=3, label=f"{student_model} (transfer-set KD), 95% CI over seeds")
        ax.axhline(series["scratch"].mean(), color=colour, lw=1, ls="--", label=f"{student_model} scratch (mean)")
    # one label per teacher (its name before any note in brackets), under the column's lowest error bar;
    # it runs leftwards where the next teacher to the right stands closer than the label is wide
    columns = (table.assign(name=table["teacher"].str.split(" (", regex=False).str[0])
               .groupby("teacher_test_accuracy").agg(name=("name", "first"), low=("student_low", "min")).reset_index())
    xs = columns["teacher_test_accuracy"].tolist()
    for i, c in enumerate(columns.itertuples()):
        leftwards = i + 1 < len(xs) and xs[i + 1] - xs[i] < 0.008
        ax.annotate(c.name, (c.teacher_test_accuracy, c.low), textcoords="offset points", xytext=(-3 if leftwards else 3, -4),
                    ha="right" if leftwards else "left", va="top", fontsize=8)
    lo = min(table["teacher_test_accuracy"].min(), table["student_low"].min()) - 0.005
    hi = max(table["teacher_test_accuracy"].max(), table["student_high"].max()) + 0.005
    ax.plot([lo, hi], [lo, hi], "k:", lw=1, label="student = teacher")
    ax.set_xlabel("teacher test accuracy")
    ax.set_ylabel("student test accuracy")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "teacher_strength.png", dpi=120)


if __name__ == "__main__":
    main()
