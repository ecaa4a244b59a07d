"""A study's statistics, tables and plots, from its finished arm runs.

Per configuration: mean and 95% CI of accuracy, F1, precision and recall per arm; the paired difference
KD minus scratch (t CI over seed pairs) with the paired t-test and Holm's correction across
configurations; McNemar's exact test on each pair's test predictions; log-loss, ECE, Brier and teacher
agreement. Outputs: ``results.md`` (laid out like the origin study), ``runs.csv``, ``summary.csv`` and
PNG plots.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from kd_imdb import stats

log = logging.getLogger(__name__)

MAIN = ("accuracy", "f1", "precision", "recall")
EXTRA = ("log_loss", "ece", "brier", "teacher_agreement")


def summarise(runs: pd.DataFrame, predictions: dict | None = None, baseline: str = "scratch") -> pd.DataFrame:
    """One row per (configuration, arm other than ``baseline``): CIs, paired differences and tests.

    ``runs`` has one row per finished arm run (configuration, arch, hidden, seed, arm, test_* metrics);
    ``predictions`` maps run_id -> test predictions frame (id, label, logit_0, logit_1) for McNemar.
    """
    rows = []
    for (arch, hidden), group in runs.groupby(["arch", "hidden"], sort=True):
        wide = group.pivot_table(index="seed", columns="arm", values=[f"test_{m}" for m in MAIN + EXTRA if f"test_{m}" in group])
        ids = group.pivot(index="seed", columns="arm", values="run_id")
        for arm in [a for a in ids.columns if a != baseline]:
            if baseline not in ids.columns:
                continue
            paired = ids[[baseline, arm]].dropna()
            row = {"arch": arch, "hidden": int(hidden), "arm": arm, "baseline": baseline, "n_pairs": len(paired)}
            for m in MAIN + EXTRA:
                col = f"test_{m}"
                if (col, arm) not in wide.columns:
                    continue
                both = wide[[(col, baseline), (col, arm)]].loc[paired.index].dropna()
                base, treat = both[(col, baseline)].to_numpy(), both[(col, arm)].to_numpy()
                for name, values in ((baseline, base), (arm, treat)):
                    mean, low, high = stats.mean_ci(values)
                    row.update({f"{m}_{name}": mean, f"{m}_{name}_low": low, f"{m}_{name}_high": high})
                if m in MAIN:
                    diff = stats.paired_difference(treat, base)
                    row.update({f"{m}_diff": diff["diff_mean"], f"{m}_diff_low": diff["diff_ci_low"],
                                f"{m}_diff_high": diff["diff_ci_high"], f"{m}_t_pvalue": diff["t_pvalue"]})
            if predictions:
                pvals = []
                for seed, (base_id, arm_id) in paired.iterrows():
                    if base_id in predictions and arm_id in predictions:
                        a, b = _aligned(predictions[base_id], predictions[arm_id])
                        pvals.append(stats.mcnemar(a["label"], a[["logit_0", "logit_1"]].to_numpy().argmax(1),
                                                   b[["logit_0", "logit_1"]].to_numpy().argmax(1))["pvalue"])
                row["mcnemar_significant_pairs"] = int(np.sum(np.array(pvals) < 0.05))
                row["mcnemar_pairs"] = len(pvals)
                row["mcnemar_median_pvalue"] = float(np.median(pvals)) if pvals else float("nan")
            rows.append(row)
    summary = pd.DataFrame(rows)
    if len(summary):
        for arm, part in summary.groupby("arm"):  # Holm across configurations, per comparison
            summary.loc[part.index, "accuracy_holm_pvalue"] = stats.holm(part["accuracy_t_pvalue"].to_numpy())
    return summary


def _aligned(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two arms' test predictions review by review. Both come from the same test split in the same order;
    if not, join on the id (duplicated texts share an id, so keep one row per id)."""
    if len(a) == len(b) and (a["id"].to_numpy() == b["id"].to_numpy()).all():
        return a, b
    a = a.drop_duplicates("id").set_index("id")
    b = b.drop_duplicates("id").set_index("id").loc[a.index]
    return a.reset_index(), b.reset_index()


def format_ci(row, key: str, digits: int = 3, signed: bool = False) -> str:
    """``row[key]`` with its CI (``key_low``, ``key_high``) as "mean [low, high]"; the mean alone without one."""
    mean, low, high = row[key], row.get(f"{key}_low", np.nan), row.get(f"{key}_high", np.nan)
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"{mean:{spec}}" if np.isnan(low) else f"{mean:{spec}} [{low:{spec}}, {high:{spec}}]"


def markdown_table(summary: pd.DataFrame) -> str:
    """The origin's layout: one row per student, scratch and KD side by side, with CIs and p-values."""
    if summary.empty:
        return "(no finished seed pairs)"
    out = []
    for arm, part in summary.groupby("arm", sort=False):
        base = part["baseline"].iloc[0]
        out += [f"\n**{arm} vs {base}** (test accuracy, mean [95% CI] over {int(part['n_pairs'].max())} seed pairs; "
                "Δ is the paired difference; p: paired t-test, Holm-corrected across students; "
                "McNemar: pairs with p < 0.05)\n",
                f"| student | {base} | {arm} | Δ {arm} − {base} | p | p (Holm) | McNemar | F1 {base} → {arm} | "
                f"precision {base} → {arm} | recall {base} → {arm} | ECE {base} → {arm} | teacher agreement {arm} |",
                "|---" * 12 + "|"]
        for _, r in part.iterrows():
            mc = f"{int(r['mcnemar_significant_pairs'])}/{int(r['mcnemar_pairs'])}" if "mcnemar_pairs" in r and not np.isnan(r.get("mcnemar_pairs", np.nan)) else ""
            out.append(
                f"| {r['arch'].upper()}-{r['hidden']} | {format_ci(r, f'accuracy_{base}')} | {format_ci(r, f'accuracy_{arm}')} | "
                f"{r['accuracy_diff']:+.3f} [{r['accuracy_diff_low']:+.3f}, {r['accuracy_diff_high']:+.3f}] | "
                f"{r['accuracy_t_pvalue']:.3g} | {r['accuracy_holm_pvalue']:.3g} | {mc} | "
                f"{r[f'f1_{base}']:.3f} → {r[f'f1_{arm}']:.3f} | {r[f'precision_{base}']:.3f} → {r[f'precision_{arm}']:.3f} | "
                f"{r[f'recall_{base}']:.3f} → {r[f'recall_{arm}']:.3f} | "
                f"{r.get(f'ece_{base}', np.nan):.3f} → {r.get(f'ece_{arm}', np.nan):.3f} | "
                f"{r.get(f'teacher_agreement_{arm}', np.nan):.3f} |")
    return "\n".join(out)


def plot_accuracy(summary: pd.DataFrame, path: Path) -> None:
    """Test accuracy against hidden size, the baseline and every arm with 95% CI bands, one panel per
    architecture (a study need not have a ``kd`` arm: ``--arms scratch,kd@linear`` is one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = sorted(summary["arch"].unique())
    fig, axes = plt.subplots(1, len(archs), figsize=(5 * len(archs), 4), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        part = summary[summary["arch"] == arch].sort_values("hidden")
        base = part["baseline"].iloc[0]
        # Every arm's row carries the baseline's accuracy; one row per hidden size draws it.
        curves = [(base, part.drop_duplicates("hidden"))] + [(arm, rows) for arm, rows in part.groupby("arm", sort=True)]
        for arm, rows in curves:
            line, = ax.plot(rows["hidden"], rows[f"accuracy_{arm}"], "o-", label=arm)
            ax.fill_between(rows["hidden"], rows[f"accuracy_{arm}_low"], rows[f"accuracy_{arm}_high"],
                            color=line.get_color(), alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden size")
        ax.set_ylabel("test accuracy")
        ax.set_title(arch.upper())
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_gain(summary: pd.DataFrame, path: Path) -> None:
    """The paired KD gain (KD minus scratch test accuracy) with its 95% CI against hidden size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (arch, arm), rows in summary.groupby(["arch", "arm"]):
        rows = rows.sort_values("hidden")
        err = np.vstack([rows["accuracy_diff"] - rows["accuracy_diff_low"], rows["accuracy_diff_high"] - rows["accuracy_diff"]])
        ax.errorbar(rows["hidden"], rows["accuracy_diff"], yerr=np.nan_to_num(err), fmt="o-", capsize=4,
                    label=f"{arch.upper()} {arm}")
    ax.axhline(0, color="grey", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("hidden size")
    ax.set_ylabel("test accuracy gain over scratch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(runs: pd.DataFrame, predictions: dict, path: Path, n_bins: int = 10) -> None:
    """Reliability diagrams: accuracy against confidence per arm, pooled over every student and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kd_imdb.metrics import softmax

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0.5, 1], [0.5, 1], ":", color="grey", label="perfect calibration")
    for arm, part in runs.groupby("arm"):
        frames = [predictions[r] for r in part["run_id"] if r in predictions]
        if not frames:
            continue
        allp = pd.concat(frames)
        probs = softmax(allp[["logit_0", "logit_1"]].to_numpy())
        conf, correct = probs.max(1), probs.argmax(1) == allp["label"].to_numpy()
        edges = np.linspace(0.5, 1.0, n_bins + 1)
        idx = np.clip(np.digitize(conf, edges) - 1, 0, n_bins - 1)
        xs = [conf[idx == b].mean() for b in range(n_bins) if (idx == b).any()]
        ys = [correct[idx == b].mean() for b in range(n_bins) if (idx == b).any()]
        ax.plot(xs, ys, "o-", label=arm)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability (test, all students and seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_predictions(client, run_ids) -> dict:
    """run_id -> its test predictions frame (the ``student/test_predictions.parquet`` artifact)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in run_ids:
            try:
                local = client.download_artifacts(run_id, "student/test_predictions.parquet", tmp)
            except Exception:  # an arm without predictions is left out of McNemar, not fatal
                log.warning("run %s has no test predictions", run_id)
                continue
            out[run_id] = pd.read_parquet(local)
    return out


def write_outputs(runs: pd.DataFrame, predictions: dict, directory: Path) -> tuple[pd.DataFrame, str]:
    """results.md, runs.csv, summary.csv and the PNG plots in ``directory``; returns (summary, table)."""
    directory.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs, predictions)
    table = markdown_table(summary)
    (directory / "results.md").write_text(table + "\n")
    runs.to_csv(directory / "runs.csv", index=False)
    summary.to_csv(directory / "summary.csv", index=False)
    if len(summary):
        plot_accuracy(summary, directory / "accuracy_vs_hidden.png")
        plot_gain(summary, directory / "kd_gain_vs_hidden.png")
        plot_reliability(runs, predictions, directory / "reliability.png")
    return summary, table


def analyse_and_log(runs: pd.DataFrame, study_id: str, client) -> str:
    """Compute the study's outputs, log them as artifacts of the study run, print and return the table."""
    import click

    if runs.empty:
        click.echo("no finished runs yet")
        return ""
    predictions = load_predictions(client, runs["run_id"])
    with tempfile.TemporaryDirectory() as tmp:
        summary, table = write_outputs(runs, predictions, Path(tmp))
        for file in Path(tmp).iterdir():
            client.log_artifact(study_id, str(file), "results")
    click.echo(table)
    return table
