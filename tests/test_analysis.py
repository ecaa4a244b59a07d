"""kd_imdb.analysis and ``kd-imdb compare`` on the committed runs of real studies (no training, no server)."""
from __future__ import annotations

import re
import shlex
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import ROOT
from scipy.stats import ttest_rel

from kd_imdb import analysis
from kd_imdb.cli import main

RUNS = ROOT / "results" / "arms_gru256" / "runs.csv"
ARMS = ROOT / "results" / "study_arms_gru32" / "runs.csv"
LINEAR = ROOT / "results" / "teachers_gru32" / "linear"
LAST = SimpleNamespace(out="", err="")


def compare(args: list[str]) -> int:
    """``kd-imdb compare ARGS`` in this process; its output lands in LAST."""
    result = CliRunner().invoke(main, ["compare", *map(str, args)])
    LAST.out, LAST.err = result.stdout, result.stderr
    return result.exit_code


def test_a_study_without_a_kd_arm_gets_its_tables_and_plots(tmp_path):
    """Studies like ``--arms scratch,kd@linear`` have no ``kd`` arm; the accuracy plot once had no panel."""
    from kd_imdb.analysis import write_outputs

    runs = pd.read_csv(RUNS).query("arm != 'kd'")
    summary, table = write_outputs(runs, {}, tmp_path)
    assert list(summary["arm"]) == ["label_smoothing"]
    mean = runs.query("arm == 'label_smoothing'")["test_accuracy"].mean()
    assert summary["accuracy_label_smoothing"].iloc[0] == pytest.approx(mean)
    assert "label_smoothing vs scratch" in table
    for name in ("accuracy_vs_hidden.png", "kd_gain_vs_hidden.png", "reliability.png"):
        assert (tmp_path / name).stat().st_size > 1000




def test_combined_studies_give_each_study_its_own_figures():
    runs = analysis.combine([str(ARMS), f"{LINEAR / 'runs.csv'}:kd=kd_linear"])
    # scratch of seeds 0-2 is in both files (the same runs: CPU training is deterministic): kept once
    assert sorted(runs.loc[runs["arm"] == "scratch", "seed"]) == [0, 1, 2]
    assert set(runs["arm"]) == {"scratch", "kd", "label_smoothing", "shuffled", "kd_mse", "kd_transfer", "kd_linear"}
    summary = analysis.summarise(runs).set_index("arm")
    own = pd.read_csv(LINEAR / "summary.csv").set_index("arm").loc["kd"]  # the linear study's own analysis
    assert summary.loc["kd_linear", "accuracy_diff"] == pytest.approx(own["accuracy_diff"], abs=1e-12)
    assert summary.loc["kd_linear", "accuracy_t_pvalue"] == pytest.approx(own["accuracy_t_pvalue"], rel=1e-9)


def test_kd_against_label_smoothing_is_the_paired_difference():
    assert compare([str(ARMS), "--baseline", "label_smoothing", "--arms", "kd"]) == 0
    out = LAST.out
    runs = pd.read_csv(ARMS).pivot(index="seed", columns="arm", values="test_accuracy")
    diff = (runs["kd"] - runs["label_smoothing"]).mean()
    assert f"{diff:+.3f}" in out and "kd vs label_smoothing" in out and "kd_mse" not in out


def test_unpaired_studies_are_refused(tmp_path):
    other = pd.read_csv(LINEAR / "runs.csv")
    other.loc[other["arm"] == "scratch", "test_accuracy"] += 0.001  # as if trained on another device
    other.to_csv(tmp_path / "runs.csv", index=False)
    assert compare([str(ARMS), str(tmp_path / "runs.csv")]) == 2
    err = LAST.err
    assert "not paired" in err and err.count("\n") == 1


def test_compact_table_corrects_over_all_its_rows():
    assert compare([str(ARMS), "--compact", "--arms", "kd,label_smoothing"]) == 0
    rows = [line.split(" | ") for line in LAST.out.splitlines()[2:]]
    assert [r[1] for r in rows] == ["scratch", "kd", "label_smoothing"]
    p = {r[1]: float(r[5]) for r in rows[1:]}
    holm = {r[1]: float(r[6]) for r in rows[1:]}
    assert holm["kd"] == pytest.approx(min(1.0, 2 * min(p.values())), rel=1e-2)  # the smaller p, times 2
    assert holm["label_smoothing"] == pytest.approx(max(holm["kd"], max(p.values())), rel=1e-2)


def test_pooled_table_pools_every_student_and_seed():
    gru256 = ROOT / "results" / "arms_gru256" / "runs.csv"
    assert compare([str(ARMS), str(gru256), "--pool", "--arms", "kd,kd_mse"]) == 0
    rows = {r.split(" | ")[0].strip("| "): r.split(" | ") for r in LAST.out.splitlines()[2:]}
    runs = pd.concat([pd.read_csv(ARMS), pd.read_csv(gru256)])
    wide = runs.pivot_table(index=["hidden", "seed"], columns="arm", values="test_accuracy")
    diff = (wide["kd"] - wide["scratch"]).to_numpy()  # 3 GRU-32 and 3 GRU-256 pairs
    assert rows["kd"][1] == "GRU-32, GRU-256" and rows["kd"][2] == "6"
    assert rows["kd"][3].startswith(f"{diff.mean():+.4f} [")
    assert float(rows["kd"][4]) == pytest.approx(ttest_rel(wide["kd"], wide["scratch"]).pvalue, rel=1e-2)
    assert rows["kd"][6].strip(" |") == f"{int((diff > 0).sum())}/6"
    assert rows["kd_mse"][1] == "GRU-32" and rows["kd_mse"][2] == "3"  # GRU-256 has no MSE arm


def test_pairing_groups_keep_another_machines_pairs_apart(tmp_path):
    gru256 = ROOT / "results" / "arms_gru256" / "runs.csv"
    runs = pd.read_csv(gru256)
    # The same study "on another machine": other floats, so other accuracies, and a bigger KD gain.
    other = runs.assign(test_accuracy=runs["test_accuracy"] + np.where(runs["arm"] == "kd", 0.02, 0.01))
    other.to_csv(tmp_path / "runs.csv", index=False)
    assert compare([str(gru256), str(tmp_path / "runs.csv"), "--pool"]) == 2  # unmarked: a clash
    assert "not paired" in LAST.err
    assert compare([str(gru256), f"{tmp_path / 'runs.csv'}#b", "--pool", "--arms", "kd"]) == 0
    row = LAST.out.splitlines()[2].split(" | ")
    wide = runs.pivot_table(index="seed", columns="arm", values="test_accuracy")
    diff = np.concatenate([wide["kd"] - wide["scratch"], wide["kd"] - wide["scratch"] + 0.01])  # 6 pairs
    assert row[1] == "GRU-256" and row[2] == "6"
    assert row[3].startswith(f"{diff.mean():+.4f} [")
    assert compare([str(gru256), f"{tmp_path / 'runs.csv'}#b", "--compact"]) == 2
    assert "several pairing groups" in LAST.err


def compare_commands(text: str) -> list[list[str]]:
    """Every ``kd-imdb compare`` command in RESULTS.md's bash blocks, its shell variables expanded
    (``...same files...`` stands for the previous command's files)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        block = block.replace("\\\n", " ")
        variables = {name: " ".join(value.split()) for name, value in re.findall(r'^(\w+)="(.*?)"', block, flags=re.M | re.S)}
        files: list[str] = []
        for line in block.splitlines():
            if not line.startswith("kd-imdb compare "):
                continue
            for name, value in variables.items():
                line = line.replace(f"${name}", value)
            line = line.split("  #")[0]
            args = shlex.split(line)[2:]
            if "...same" in args:
                args = files + args[args.index("files...") + 1:]
            files = [a for a in args if not a.startswith("--") and (".csv" in a)]
            commands.append(args)
    return commands


def test_every_compare_table_in_results_md_reprints_identically():
    """RESULTS.md's tables from ``kd-imdb compare`` come out of the committed runs.csv files, digit for digit."""
    text = (ROOT / "RESULTS.md").read_text()
    commands = compare_commands(text)
    assert len(commands) >= 15
    printed = 0
    for args in commands:
        assert compare(args) == 0, (args, LAST.err)
        rows = [line for line in LAST.out.splitlines() if line.startswith("| ") and "---" not in line]
        assert rows, args
        missing = [row for row in rows if row not in text]
        # Some commands' tables are summarised in prose, not printed: those must be missing as a whole.
        assert not missing or len(missing) == len(rows), (args, missing[:3])
        printed += not missing
    assert printed >= 12


def test_gain_trend_regresses_each_pairs_gain_on_log_hidden():
    # gains of 0.04, 0.03, 0.02 at hidden 16, 32, 64 (seed 1 adds 0.01 to each): slope -0.01 per doubling
    rows = []
    for hidden, g in ((16, 0.04), (32, 0.03), (64, 0.02)):
        for seed in (0, 1):
            rows += [{"arch": "gru", "hidden": hidden, "seed": seed, "arm": "scratch", "test_accuracy": 0.85},
                     {"arch": "gru", "hidden": hidden, "seed": seed, "arm": "kd", "test_accuracy": 0.85 + g + 0.01 * seed}]
    trend = analysis.gain_trend(pd.DataFrame(rows), "kd")
    assert list(trend["arch"]) == ["gru"] and trend.loc[0, "students"] == "16, 32, 64"
    assert trend.loc[0, "slope"] == pytest.approx(-0.01)
    assert trend.loc[0, "n"] == 6
    assert trend.loc[0, "slope_ci_low"] < -0.01 < trend.loc[0, "slope_ci_high"] < 0
    assert analysis.gain_trend(pd.DataFrame(rows), "kd_hard").empty


def test_compare_trend_on_the_full_study():
    # RESULTS.md §9's study: 15 GRU pairs (hidden 16..256) and 9 CNN pairs (64..256), one row each
    out = CliRunner().invoke(main, ["compare", str(ROOT / "results/study_full/runs.csv"), "--trend"])
    assert out.exit_code == 0, out.output
    rows = {line.split(" | ")[1]: line for line in out.output.splitlines()[2:]}
    assert set(rows) == {"GRU", "CNN"}
    assert "| 16, 32, 64, 128, 256 | 15 | -0.0008 [-0.0024, +0.0008] | 0.289 |" in rows["GRU"]
    assert "| 64, 128, 256 | 9 | -0.0060 [-0.0157, +0.0036] | 0.184 |" in rows["CNN"]
