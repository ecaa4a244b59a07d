"""scripts/combine_runs.py on the committed runs of the GRU-32 studies (no training)."""
from __future__ import annotations

import importlib.util
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel

from conftest import BIN, ROOT, run_cli

spec = importlib.util.spec_from_file_location("combine_runs", ROOT / "scripts" / "combine_runs.py")
combine_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(combine_runs)

ARMS = ROOT / "results" / "study_arms_gru32" / "runs.csv"
LINEAR = ROOT / "results" / "teachers_gru32" / "linear"


def test_combined_studies_give_each_study_its_own_figures():
    runs = combine_runs.combine([str(ARMS), f"{LINEAR / 'runs.csv'}:kd=kd_linear"])
    # scratch of seeds 0-2 is in both files (the same runs: CPU training is deterministic): kept once
    assert sorted(runs.loc[runs["arm"] == "scratch", "seed"]) == [0, 1, 2]
    assert set(runs["arm"]) == {"scratch", "kd", "label_smoothing", "shuffled", "kd_mse", "kd_transfer", "kd_linear"}
    summary = combine_runs.summarise(runs).set_index("arm")
    own = pd.read_csv(LINEAR / "summary.csv").set_index("arm").loc["kd"]  # the linear study's own analysis
    assert summary.loc["kd_linear", "accuracy_diff"] == pytest.approx(own["accuracy_diff"], abs=1e-12)
    assert summary.loc["kd_linear", "accuracy_t_pvalue"] == pytest.approx(own["accuracy_t_pvalue"], rel=1e-9)


def test_kd_against_label_smoothing_is_the_paired_difference(capsys):
    assert combine_runs.main([str(ARMS), "--baseline", "label_smoothing", "--arms", "kd"]) == 0
    out = capsys.readouterr().out
    runs = pd.read_csv(ARMS).pivot(index="seed", columns="arm", values="test_accuracy")
    diff = (runs["kd"] - runs["label_smoothing"]).mean()
    assert f"{diff:+.3f}" in out and "kd vs label_smoothing" in out and "kd_mse" not in out


def test_unpaired_studies_are_refused(tmp_path, capsys):
    other = pd.read_csv(LINEAR / "runs.csv")
    other.loc[other["arm"] == "scratch", "test_accuracy"] += 0.001  # as if trained on another device
    other.to_csv(tmp_path / "runs.csv", index=False)
    assert combine_runs.main([str(ARMS), str(tmp_path / "runs.csv")]) == 2
    err = capsys.readouterr().err
    assert "not paired" in err and err.count("\n") == 1


def test_compact_table_corrects_over_all_its_rows(capsys):
    assert combine_runs.main([str(ARMS), "--compact", "--arms", "kd,label_smoothing"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[1] for r in rows] == ["scratch", "kd", "label_smoothing"]
    p = {r[1]: float(r[5]) for r in rows[1:]}
    holm = {r[1]: float(r[6]) for r in rows[1:]}
    assert holm["kd"] == pytest.approx(min(1.0, 2 * min(p.values())), rel=1e-2)  # the smaller p, times 2
    assert holm["label_smoothing"] == pytest.approx(max(holm["kd"], max(p.values())), rel=1e-2)


def test_pooled_table_pools_every_student_and_seed(capsys):
    gru256 = ROOT / "results" / "arms_gru256" / "runs.csv"
    assert combine_runs.main([str(ARMS), str(gru256), "--pool", "--arms", "kd,kd_mse"]) == 0
    rows = {r.split(" | ")[0].strip("| "): r.split(" | ") for r in capsys.readouterr().out.splitlines()[2:]}
    runs = pd.concat([pd.read_csv(ARMS), pd.read_csv(gru256)])
    wide = runs.pivot_table(index=["hidden", "seed"], columns="arm", values="test_accuracy")
    diff = (wide["kd"] - wide["scratch"]).to_numpy()  # 3 GRU-32 and 3 GRU-256 pairs
    assert rows["kd"][1] == "GRU-32, GRU-256" and rows["kd"][2] == "6"
    assert rows["kd"][3].startswith(f"{diff.mean():+.4f} [")
    assert float(rows["kd"][4]) == pytest.approx(ttest_rel(wide["kd"], wide["scratch"]).pvalue, rel=1e-2)
    assert rows["kd"][6].strip(" |") == f"{int((diff > 0).sum())}/6"
    assert rows["kd_mse"][1] == "GRU-32" and rows["kd_mse"][2] == "3"  # GRU-256 has no MSE arm


def test_pairing_groups_keep_another_machines_pairs_apart(tmp_path, capsys):
    gru256 = ROOT / "results" / "arms_gru256" / "runs.csv"
    runs = pd.read_csv(gru256)
    # The same study "on another machine": other floats, so other accuracies, and a bigger KD gain.
    other = runs.assign(test_accuracy=runs["test_accuracy"] + np.where(runs["arm"] == "kd", 0.02, 0.01))
    other.to_csv(tmp_path / "runs.csv", index=False)
    assert combine_runs.main([str(gru256), str(tmp_path / "runs.csv"), "--pool"]) == 2  # unmarked: a clash
    assert "not paired" in capsys.readouterr().err
    assert combine_runs.main([str(gru256), f"{tmp_path / 'runs.csv'}#b", "--pool", "--arms", "kd"]) == 0
    row = capsys.readouterr().out.splitlines()[2].split(" | ")
    wide = runs.pivot_table(index="seed", columns="arm", values="test_accuracy")
    diff = np.concatenate([wide["kd"] - wide["scratch"], wide["kd"] - wide["scratch"] + 0.01])  # 6 pairs
    assert row[1] == "GRU-256" and row[2] == "6"
    assert row[3].startswith(f"{diff.mean():+.4f} [")
    assert combine_runs.main([str(gru256), f"{tmp_path / 'runs.csv'}#b", "--compact"]) == 2
    assert "several pairing groups" in capsys.readouterr().err


def test_report_runs_compares_teachers_on_the_same_test_reviews(local_store, tmp_path):
    """scripts/report_runs.py teachers=A,B: one row per soft-labels run, Wilson CI and McNemar against the last."""
    from kd_imdb import stats
    from kd_imdb.data import load_data
    from kd_imdb.soft_labels import write_logits

    data = load_data("sample")
    frame = data.frame.drop_duplicates("id")
    rng = np.random.default_rng(0)
    runs, preds = [], []
    for k, flip in enumerate((0.2, 0.1)):  # two noisy teachers: wrong on 20% and 10% of reviews
        right = rng.random(len(frame)) >= flip
        margin = np.where(frame["label"].to_numpy() == 1, 1.0, -1.0) * np.where(right, 1.0, -1.0)
        write_logits(pd.DataFrame({"id": frame["id"], "logit_0": -margin / 2, "logit_1": margin / 2}),
                     {"data_hash": data.content_hash}, tmp_path / f"t{k}.parquet")
        proc = run_cli("soft-labels", "--logits-file", str(tmp_path / f"t{k}.parquet"), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(proc.stdout.strip().split()[-1])
        preds.append(pd.Series((margin > 0).astype(int), index=frame["id"]))
    out = subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "report_runs.py"), f"teachers={','.join(runs)}"],
                         capture_output=True, text=True, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": local_store})
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| soft_labels")]
    assert len(rows) == 2
    test = data.split("test").drop_duplicates("id")  # every distinct test review, whatever split its twin is in
    labels = test["label"].to_numpy()
    preds = [p.loc[test["id"]].to_numpy() for p in preds]
    acc, low, high = stats.accuracy_ci(preds[0] == labels)
    assert f"{acc:.4f} [{low:.4f}, {high:.4f}]" in rows[0]
    assert rows[0].rstrip(" |").endswith(f"{stats.mcnemar(labels, preds[0], preds[1])['pvalue']:.2g}")
    assert rows[1].endswith("|  |")  # the last is the reference


def test_teacher_strength_table(tmp_path):
    """scripts/teacher_strength.py: the teacher's accuracy from its logits file, the student's gain over
    its own scratch arm as the paired difference."""
    from kd_imdb.data import load_data
    from kd_imdb.soft_labels import write_logits

    data = load_data("sample")
    reviews = data.frame.drop_duplicates("id")
    margin = np.where(reviews["label"].to_numpy() == 1, 1.0, -1.0)
    margin[::4] *= -1  # wrong on every fourth review
    write_logits(pd.DataFrame({"id": reviews["id"], "logit_0": -margin / 2, "logit_1": margin / 2}),
                 {"data_hash": data.content_hash}, tmp_path / "t.parquet")
    test = data.split("test").drop_duplicates("id")
    expected = float(((pd.Series(margin, index=reviews["id"]).loc[test["id"]] > 0) == (test["label"] == 1).to_numpy()).mean())
    scratch, transfer = [0.80, 0.82, 0.81], [0.83, 0.84, 0.85]
    pd.DataFrame({"arch": "gru", "hidden": 32, "seed": [0, 1, 2] * 2, "arm": ["scratch"] * 3 + ["kd_transfer"] * 3,
                  "test_accuracy": scratch + transfer}).to_csv(tmp_path / "runs.csv", index=False)
    out = subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "teacher_strength.py"), "--out", str(tmp_path / "out"),
                          "T=tmp_path/t.parquet=tmp_path/runs.csv".replace("tmp_path", str(tmp_path))],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    row = [line for line in out.stdout.splitlines() if line.startswith("| T |")][0]
    assert f"| {expected:.4f} | kd_transfer | 3 | 0.8400 [" in row and "| 0.8100 | +0.0300 [" in row
    assert (tmp_path / "out" / "teacher_strength.png").read_bytes()[:4] == b"\x89PNG"


def test_search_table_has_a_row_per_arm_run():
    out = subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "search_table.py"),
                          "len 512=" + str(ROOT / "results" / "student_search" / "round1_len512" / "runs.csv")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| gru-")]
    assert rows == ["| gru-64 | len 512 | kd_transfer | 0 | 0.9112 | 0.9127 | 4 | 21 |",
                    "| gru-64 | len 512 | scratch | 0 | 0.8900 | 0.8910 | 2 | 7 |"]
