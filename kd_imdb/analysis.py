"""Every table and plot of the project, from finished arm runs (a study's, or several studies'
committed ``runs.csv`` files). It returns tables and figures; only the command line prints.

Per configuration: mean and 95% CI of accuracy, F1, precision and recall per arm; the paired difference
KD minus scratch (``gain``: t CI over seed pairs) with the paired t-test and Holm's correction across
configurations; McNemar's exact test on each pair's test predictions; log-loss, ECE, Brier and teacher
agreement. A study's outputs: ``results.md`` (laid out like the origin study), ``runs.csv``,
``summary.csv`` and PNG plots. ``compare`` pairs the arms of several studies. A sweep's plots and its
confirmation's comparisons live here too.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt  # only for optuna's sweep plots, which draw on pyplot
import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure  # our plots: no pyplot, no global figure state
from optuna.visualization import matplotlib as ovm

from kd_imdb import stats
from kd_imdb.config import describe_arm
from kd_imdb.metrics import reliability_curve, softmax

log = logging.getLogger(__name__)

MAIN = ("accuracy", "f1", "precision", "recall")
EXTRA = ("log_loss", "ece", "brier", "teacher_agreement")
PAIR_KEY = ["arch", "hidden", "seed"]  # a seed pair of one student: its arms share initial weights


def gain(runs: pd.DataFrame, arm: str, baseline: str = "scratch", metric: str = "test_accuracy",
         key: list[str] = PAIR_KEY, sort: bool = True) -> dict:
    """KD minus scratch, or any ``arm`` minus ``baseline``: the paired difference of ``metric`` over the
    seed pairs (rows sharing ``key``) that have both arms: mean, t CI, paired t and Wilcoxon p-values,
    ``n_pairs`` and ``wins`` (pairs where the arm is higher). One pair gives its difference alone."""
    wide = runs.pivot_table(index=key, columns="arm", values=metric, sort=sort)
    both = wide[[baseline, arm]].dropna() if {baseline, arm} <= set(wide.columns) else wide.iloc[:0, :0]
    if both.empty:
        return {"diff_mean": float("nan"), "diff_ci_low": float("nan"), "diff_ci_high": float("nan"), "n_pairs": 0,
                "t_pvalue": float("nan"), "wilcoxon_pvalue": float("nan"), "wins": 0, "pairs": both.index}
    out = stats.paired_difference(both[arm].to_numpy(), both[baseline].to_numpy())
    return {**out, "wins": int((both[arm] > both[baseline]).sum()), "pairs": both.index}


def gain_trend(runs: pd.DataFrame, arm: str, baseline: str = "scratch", metric: str = "test_accuracy") -> pd.DataFrame:
    """Does ``arm`` gain more over ``baseline`` for smaller students? Per architecture, each seed pair's
    difference regressed on log2 of its hidden size (``stats.slope``): a negative slope means the gain
    shrinks as the student grows; each doubling of hidden size changes the gain by ``slope``."""
    key = ["group", *PAIR_KEY] if "group" in runs.columns else PAIR_KEY  # another machine's pairs stay apart
    wide = runs.pivot_table(index=key, columns="arm", values=metric)
    if not {arm, baseline} <= set(wide.columns):
        return pd.DataFrame()
    diff = (wide[arm] - wide[baseline]).dropna().reset_index(name="diff")
    rows = [{"arch": arch, "students": ", ".join(str(h) for h in sorted(part["hidden"].unique())),
             **stats.slope(np.log2(part["hidden"].to_numpy(dtype=float)), part["diff"])}
            for arch, part in diff.groupby("arch")]
    return pd.DataFrame(rows)


def arm_metrics_frame(metrics: dict[str, dict], arch: str = "", hidden: int = 0, seed: int = 0) -> pd.DataFrame:
    """One seed pair's arms (``{arm: metrics}``) as rows that ``gain`` reads."""
    return pd.DataFrame([{"arch": arch, "hidden": hidden, "seed": seed, "arm": arm, **m} for arm, m in metrics.items()])


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
                    diff = gain(group[group["seed"].isin(both.index)], arm, baseline, col)
                    row.update({f"{m}_diff": diff["diff_mean"], f"{m}_diff_low": diff["diff_ci_low"],
                                f"{m}_diff_high": diff["diff_ci_high"], f"{m}_t_pvalue": diff["t_pvalue"]})
            if predictions:
                pvals = []
                for _seed, (base_id, arm_id) in paired.iterrows():
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
        for _, part in summary.groupby("arm"):  # Holm across configurations, per comparison
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


def pair_table(results: dict[str, dict[str, dict]]) -> str:
    """A markdown table laid out like the origin study: one row per student, scratch and KD side by side.

    ``results`` maps a student name to ``{"scratch": metrics, "kd": metrics}`` (either may be absent).
    """
    head = "| student | " + " | ".join(f"{m} scratch | {m} KD" for m in MAIN) + " | teacher agreement KD |"
    rule = "|---" * (2 + 2 * len(MAIN)) + "|"
    rows = [head, rule]
    for name, arms in results.items():
        cells = []
        for m in MAIN:
            for arm in ("scratch", "kd"):
                value = arms.get(arm, {}).get(f"test_{m}")
                cells.append("" if value is None else f"{value:.3f}")
        agree = arms.get("kd", {}).get("test_teacher_agreement")
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {'' if agree is None else f'{agree:.3f}'} |")
    return "\n".join(rows)


def arm_table(student: str, results: dict[str, dict]) -> str:
    """One row per arm of one seed (the demo): what the arm learns from, test accuracy and its gain over
    scratch, F1, ECE and agreement with the teacher."""
    rows = ["| student | arm | learns from | test accuracy | Δ vs scratch | F1 | ECE | teacher agreement |", "|---" * 8 + "|"]
    base = results.get("scratch", {}).get("test_accuracy")
    for arm, m in results.items():
        delta = "" if base is None or arm == "scratch" else f"{m['test_accuracy'] - base:+.3f}"
        rows.append(f"| {student} | {arm} | {describe_arm(arm)} | {m['test_accuracy']:.3f} | {delta} | {m['test_f1']:.3f} "
                    f"| {m['test_ece']:.3f} | {m.get('test_teacher_agreement', float('nan')):.3f} |")
    return "\n".join(rows)


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
            has_mcnemar = "mcnemar_pairs" in r and not np.isnan(r.get("mcnemar_pairs", np.nan))
            mc = f"{int(r['mcnemar_significant_pairs'])}/{int(r['mcnemar_pairs'])}" if has_mcnemar else ""
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
    archs = sorted(summary["arch"].unique())
    fig = Figure(figsize=(5 * len(archs), 4))
    axes = fig.subplots(1, len(archs), squeeze=False)
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


def plot_gain(summary: pd.DataFrame, path: Path) -> None:
    """The paired KD gain (KD minus scratch test accuracy) with its 95% CI against hidden size."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
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


def plot_reliability(runs: pd.DataFrame, predictions: dict, path: Path, n_bins: int = 10) -> None:
    """Reliability diagrams: accuracy against confidence per arm, pooled over every student and seed."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0.5, 1], [0.5, 1], ":", color="grey", label="perfect calibration")
    for arm, part in runs.groupby("arm"):
        frames = [predictions[r] for r in part["run_id"] if r in predictions]
        if not frames:
            continue
        allp = pd.concat(frames)
        probs = softmax(allp[["logit_0", "logit_1"]].to_numpy())
        ax.plot(*reliability_curve(probs.max(1), probs.argmax(1) == allp["label"].to_numpy(), n_bins), "o-", label=arm)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability (test, all students and seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


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


def analyse_and_log(runs: pd.DataFrame, study_id: str, client) -> tuple[pd.DataFrame, str]:
    """Compute the study's outputs, log them to the study run (files under ``results/``, and the
    headline table with ``log_table`` so the UI's table view shows it); returns (summary, table)."""
    if runs.empty:
        return pd.DataFrame(), "no finished runs yet"
    predictions = load_predictions(client, runs["run_id"])
    with tempfile.TemporaryDirectory() as tmp:
        summary, table = write_outputs(runs, predictions, Path(tmp))
        for file in Path(tmp).iterdir():
            client.log_artifact(study_id, str(file), "results")
    if len(summary):
        client.log_table(study_id, headline(summary), "results/headline.json")
    return summary, table


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """The study's table as numbers, one row per student and arm, rounded for display."""
    rows = [{"student": f"{r['arch']}-{r['hidden']}", "arm": r["arm"], "pairs": int(r["n_pairs"]),
             f"{r['baseline']} accuracy": r[f"accuracy_{r['baseline']}"], "arm accuracy": r[f"accuracy_{r['arm']}"],
             "difference": r["accuracy_diff"], "difference CI low": r["accuracy_diff_low"],
             "difference CI high": r["accuracy_diff_high"], "p": r["accuracy_t_pvalue"],
             "p (Holm)": r["accuracy_holm_pvalue"]} for _, r in summary.iterrows()]
    return pd.DataFrame(rows).round(4)


def configuration_metrics(summary: pd.DataFrame) -> dict[tuple[str, int], dict[str, float]]:
    """Per student configuration, what its run in the UI shows: each arm's mean test accuracy with its
    95% CI, and each arm minus the baseline with its CI and p (raw and Holm), rounded to 4 digits."""
    out: dict[tuple[str, int], dict[str, float]] = {}
    for _, r in summary.iterrows():
        base, arm = r["baseline"], r["arm"].replace("@", ".")  # metric keys allow no "@"
        m = out.setdefault((r["arch"], int(r["hidden"])), {})
        for name, col in ((base, base), (arm, r["arm"])):
            m.update({f"{name}_test_accuracy": r[f"accuracy_{col}"], f"{name}_test_accuracy_ci_low": r[f"accuracy_{col}_low"],
                      f"{name}_test_accuracy_ci_high": r[f"accuracy_{col}_high"]})
        d = f"{arm}_minus_{base}_test_accuracy"
        m.update({d: r["accuracy_diff"], f"{d}_ci_low": r["accuracy_diff_low"], f"{d}_ci_high": r["accuracy_diff_high"],
                  f"{d}_p": r["accuracy_t_pvalue"], f"{d}_p_holm": r["accuracy_holm_pvalue"]})
    return {k: {name: round(float(v), 4) for name, v in m.items() if np.isfinite(v)} for k, m in out.items()}


# ----------------------------------------------------------------------------- several studies: kd-imdb compare

COMPARED = ["group", "arch", "hidden", "seed", "arm"]
CHECKED = ["test_accuracy", "test_log_loss"]


def read_runs(spec: str) -> pd.DataFrame:
    """A runs.csv, its arms renamed and its pairing group set as ``path:old=new,...#GROUP`` says."""
    spec, _, group = spec.partition("#")
    path, _, renames = spec.partition(":")
    runs = pd.read_csv(path)
    mapping = dict(pair.split("=", 1) for pair in renames.split(",") if pair)
    return runs.assign(arm=runs["arm"].replace(mapping), source=path, group=group)


def combine(specs: list[str]) -> pd.DataFrame:
    """One row per (group, student, seed, arm) of several runs.csv files; raises ValueError if two files
    disagree on one (those studies are not paired: another machine, device, data or version)."""
    runs = pd.concat([read_runs(s) for s in specs], ignore_index=True)
    for key, group in runs.groupby(COMPARED):
        values = group[CHECKED].to_numpy(dtype=float)
        if not np.allclose(values, values[0], rtol=0, atol=1e-9):
            raise ValueError(f"{key} differs between {list(group['source'])} ({group['test_accuracy'].tolist()}): "
                             "those studies are not paired; combine only runs of one machine, device and version")
    return runs.drop_duplicates(COMPARED).reset_index(drop=True)


def compact_table(summary: pd.DataFrame) -> str:
    """One row per (student, arm): test accuracy with its CI, and the paired difference from the baseline.
    Holm's correction runs over every comparison in the table (all students and arms: one family)."""
    base = summary["baseline"].iloc[0]
    summary = summary.assign(accuracy_holm_pvalue=stats.holm(summary["accuracy_t_pvalue"].to_numpy()))
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
    in general, not any one of them (the per-student rows of the compact table say that)."""
    wide = runs.pivot_table(index=["group", *PAIR_KEY], columns="arm", values="test_accuracy", sort=False)
    rows = []
    for arm in [a for a in wide.columns if a != baseline]:
        d = gain(runs, arm, baseline, key=["group", *PAIR_KEY], sort=False)
        students = list(dict.fromkeys(f"{a.upper()}-{h}" for _, a, h, _ in d["pairs"]))
        rows.append({"arm": arm, "students": ", ".join(students), "n": d["n_pairs"], "diff": d["diff_mean"],
                     "diff_low": d["diff_ci_low"], "diff_high": d["diff_ci_high"], "p": d["t_pvalue"], "wins": d["wins"]})
    table = pd.DataFrame(rows).assign(holm=lambda t: stats.holm(t["p"].to_numpy()))
    out = [f"| arm | students | pairs | Δ test accuracy vs {baseline} (pooled) | p | p (Holm, all rows) | pairs won |",
           "|---" * 7 + "|"]
    out += [f"| {r['arm']} | {r['students']} | {r['n']} | {format_ci(r, 'diff', 4, signed=True)} | {r['p']:.3g} | "
            f"{r['holm']:.3g} | {r['wins']}/{r['n']} |" for _, r in table.iterrows()]
    return "\n".join(out)


def trend_table(runs: pd.DataFrame, baseline: str) -> str:
    """A row per arm and architecture: ``gain_trend``, the slope of each seed pair's difference from the
    baseline on log2 hidden size, with its CI and p (Holm over the rows)."""
    parts = [gain_trend(runs, arm, baseline).assign(arm=arm) for arm in sorted(set(runs["arm"]) - {baseline})]
    table = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    table["holm"] = stats.holm(table["slope_pvalue"].to_numpy())
    out = [f"| arm | architecture | students (hidden) | pairs | Δ vs {baseline} per doubling of hidden size | p | p (Holm) |",
           "|---" * 7 + "|"]
    out += [f"| {r['arm']} | {r['arch'].upper()} | {r['students']} | {r['n']} | "
            f"{r['slope']:+.4f} [{r['slope_ci_low']:+.4f}, {r['slope_ci_high']:+.4f}] | {r['slope_pvalue']:.3g} | "
            f"{r['holm']:.3g} |" for _, r in table.iterrows()]
    return "\n".join(out)


def compare(specs: list[str], baseline: str = "scratch", arms: list[str] | None = None,
            layout: str = "study") -> str:
    """``kd-imdb compare``: the arms of several studies' runs.csv files paired seed by seed, as one
    table: ``study`` (the study's own layout), ``compact`` (a row per student and arm), ``pool`` (a row
    per arm, pooled over every student and seed) or ``trend`` (does the difference shrink as the student
    grows?). Raises ValueError on files that cannot be paired."""
    runs = combine(specs)
    if arms:
        runs = runs[runs["arm"].isin([baseline, *arms])]
    if baseline not in set(runs["arm"]):
        raise ValueError(f"no run of the baseline arm {baseline!r}; arms: {sorted(set(runs['arm']))}")
    if layout == "pool":
        return pooled_table(runs, baseline)
    if layout == "trend":
        return trend_table(runs, baseline)
    mixed = runs.groupby(["arch", "hidden"])["group"].nunique()
    if (mixed > 1).any():
        raise ValueError(f"{', '.join(f'{a.upper()}-{h}' for a, h in mixed[mixed > 1].index)} comes from several "
                         "pairing groups; compare one group at a time, or pool them with --pool")
    summary = summarise(runs, baseline=baseline)
    return compact_table(summary) if layout == "compact" else markdown_table(summary)


# ----------------------------------------------------------------------------- the sweep and its confirmation


def plot_temperature_curve(study: optuna.Study) -> Figure:
    """Validation accuracy against T for every finished trial: complete trials at their best epoch,
    pruned ones at the best epoch they reached (hollow), so the curve does not hide what was pruned."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for state, style in ((optuna.trial.TrialState.COMPLETE, dict(color="C0", label="complete")),
                         (optuna.trial.TrialState.PRUNED, dict(facecolors="none", edgecolors="C1", label="pruned"))):
        trials = [t for t in study.get_trials(deepcopy=False, states=(state,)) if t.intermediate_values]
        if trials:
            ax.scatter([t.params["temperature"] for t in trials], [max(t.intermediate_values.values()) for t in trials],
                       **style)
    ax.set_xscale("log")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("validation accuracy (best epoch reached)")
    ax.set_title(study.study_name)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_sweep(study: optuna.Study, directory: Path) -> list[Path]:
    """A sweep's PNGs: optimisation history, validation accuracy against T (all trials, and optuna's slice
    plot of the complete ones, with alpha when swept), parameter importances."""
    matplotlib.use("Agg")  # pyplot's backend picks files, not a display
    directory.mkdir(parents=True, exist_ok=True)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # optuna draws on pyplot's figures; each is closed once saved
    plots = {"optimization_history.png": lambda: ovm.plot_optimization_history(study),
             "val_accuracy_vs_params.png": lambda: ovm.plot_slice(study)}
    if len(complete) >= 2 and len(complete[0].params) >= 1:
        plots["param_importances.png"] = lambda: ovm.plot_param_importances(study)
    out = []
    for name, make in plots.items():
        try:
            axes = make()
        except Exception as exc:  # a plot optuna cannot draw (too few trials) is skipped, not fatal
            log.warning("plot %s skipped: %s", name, exc)
            continue
        fig = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        fig.set_size_inches(7, 4.5)
        fig.tight_layout()
        fig.savefig(directory / name, dpi=110)
        plt.close(fig)
        out.append(directory / name)
    plot_temperature_curve(study).savefig(directory / "val_accuracy_vs_temperature.png", dpi=110)
    return [*out, directory / "val_accuracy_vs_temperature.png"]


def confirm_table(best: pd.DataFrame, t2: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple]]:
    """The confirmation of a sweep: the arm runs of the study at the best T (``best``) and at T=2 (``t2``),
    each on the same fresh seeds. Returns the paired comparisons (KD@best T against scratch and against
    KD@T=2, KD@T=2 against scratch) and each arm's mean test accuracy with its 95% CI."""
    # One table of both studies' arms; each comparison pairs the arms seed by seed.
    runs = pd.concat([best.replace({"arm": {"kd": "kd_best"}}),
                      t2.replace({"arm": {"kd": "kd_t2", "scratch": "scratch_t2"}})])
    rows = []
    for name, arm, baseline in (("KD@best T - scratch", "kd_best", "scratch"),
                                ("KD@best T - KD@T=2", "kd_best", "kd_t2"),
                                ("KD@T=2 - scratch", "kd_t2", "scratch_t2")):
        d = gain(runs, arm, baseline)
        rows.append({"comparison": name, **{k: v for k, v in d.items() if k != "pairs"}})
    means = {k: stats.mean_ci(runs.loc[runs["arm"] == arm, "test_accuracy"])
             for k, arm in (("scratch", "scratch"), ("kd_best", "kd_best"), ("kd_t2", "kd_t2"))}
    return pd.DataFrame(rows), means
