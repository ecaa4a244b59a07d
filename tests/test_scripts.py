"""The helpers in scripts/: the RESULTS.md tables (report_runs, teacher_strength, search_table, budget_curve,
runs_csv) and the augmented transfer set (augment_data, label_copies)."""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pandas as pd
from conftest import BIN, ROOT, run_cli
from mlflow.tracking import MlflowClient


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
    # a second student in another runs.csv (GRU-256, two seed pairs): one row each, a student column
    pd.DataFrame({"arch": "gru", "hidden": 256, "seed": [0, 1, 0, 1], "arm": ["scratch"] * 2 + ["kd_transfer"] * 2,
                  "test_accuracy": [0.88, 0.87, 0.90, 0.91]}).to_csv(tmp_path / "runs256.csv", index=False)
    out = subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "teacher_strength.py"), "--out", str(tmp_path / "out"),
                          f"T={tmp_path}/t.parquet={tmp_path}/runs.csv", f"T={tmp_path}/t.parquet={tmp_path}/runs256.csv"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| T |")]
    assert [r.split(" | ")[2:5] for r in rows] == [["GRU-32", "kd_transfer", "3"], ["GRU-256", "kd_transfer", "2"]]
    assert "| 0.9050 [" in rows[1] and "| 0.8750 | +0.0300 [" in rows[1]
    table = pd.read_csv(tmp_path / "out" / "teacher_strength.csv")
    assert table["student_model"].tolist() == ["GRU-32", "GRU-256"] and table["p_holm"].notna().all()


def test_search_table_has_a_row_per_arm_run():
    out = subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "search_table.py"),
                          "len 512=" + str(ROOT / "results" / "student_search" / "round1_len512" / "runs.csv")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| gru-")]
    assert rows == ["| gru-64 | len 512 | kd_transfer | 0 | 0.9112 | 0.9127 | 4 | 21 |",
                    "| gru-64 | len 512 | scratch | 0 | 0.8900 | 0.8910 | 2 | 7 |"]


def test_runs_csv_writes_a_studys_row_for_each_student_run_and_search_table_reads_it(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(store)
    exp = client.create_experiment("kd_imdb")
    ids = []
    for seed, val in ((1, 0.91), (0, 0.92)):  # the tags, params and metrics a `kd-imdb student` run logs
        run = client.create_run(exp, tags={"kd_imdb.stage": "student", "kd_imdb.config": "gru-64+bigrams",
                                           "kd_imdb.seed": str(seed), "kd_imdb.arm": "kd_transfer"})
        client.log_param(run.info.run_id, "arch", "gru")
        client.log_param(run.info.run_id, "hidden", "64")
        for key, value in (("val_accuracy", val), ("test_accuracy", val - 0.001), ("best_epoch", 6), ("train_seconds", 1380)):
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    unfinished = client.create_run(exp, tags={"kd_imdb.stage": "student"}).info.run_id
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    script = [str(BIN / "python"), str(ROOT / "scripts" / "runs_csv.py"), "--out", str(tmp_path / "runs.csv")]
    out = subprocess.run([*script, *ids], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert runs["seed"].tolist() == [0, 1] and runs["run_id"].tolist() == ids[::-1]  # sorted as a study's
    assert list(runs.columns[:6]) == ["configuration", "arch", "hidden", "seed", "arm", "run_id"]  # ledger.arm_row's
    assert runs["configuration"].tolist() == ["gru-64+bigrams"] * 2 and runs["val_accuracy"].tolist() == [0.92, 0.91]
    table = subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "search_table.py"),
                            f"one by one={tmp_path / 'runs.csv'}"], capture_output=True, text=True)
    assert "| gru-64+bigrams | one by one | kd_transfer | 0 | 0.9200 | 0.9190 | 6 | 23 |" in table.stdout
    bad = subprocess.run([*script, ids[0], unfinished], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and f"run {unfinished} is not a finished student run" in bad.stderr
    # --scratch-from: an earlier study's scratch rows for these students and seeds join the new runs
    earlier = pd.DataFrame({"configuration": "gru-64", "arch": "gru", "hidden": 64, "seed": [0, 1, 2, 0],
                            "arm": ["scratch"] * 3 + ["kd"], "run_id": ["s0", "s1", "s2", "k0"],
                            "test_accuracy": [0.88, 0.87, 0.86, 0.89]})
    earlier.to_csv(tmp_path / "earlier.csv", index=False)
    with_scratch = [*script, *ids, "--scratch-from", str(tmp_path / "earlier.csv")]
    out = subprocess.run(with_scratch, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert runs[["seed", "arm", "run_id"]].values.tolist() == [[0, "kd_transfer", ids[1]], [0, "scratch", "s0"],
                                                              [1, "kd_transfer", ids[0]], [1, "scratch", "s1"]]
    assert runs.loc[runs["arm"] == "scratch", "test_accuracy"].tolist() == [0.88, 0.87]
    # --append: a later session's runs join the file; rows already there are kept, each run id once
    out = subprocess.run([*script, ids[0], "--append"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert pd.read_csv(tmp_path / "runs.csv")["run_id"].tolist() == [ids[1], "s0", ids[0], "s1"]
    earlier[earlier["seed"] == 0].to_csv(tmp_path / "earlier.csv", index=False)  # no scratch run for seed 1
    bad = subprocess.run(with_scratch, capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "lacks a scratch run" in bad.stderr


def test_budget_curve_pairs_each_arm_with_scratch_per_budget(tmp_path):
    # two budgets, three seed pairs each; kd gains 0.02 + 0.01 * seed at 1,000 labels, nothing at 22,500
    entries = []
    for budget, gain in ((1000, 0.02), (22500, 0.0)):
        rows = [{"arch": "gru", "hidden": 32, "seed": s, "arm": arm, "test_accuracy": acc}
                for s in range(3) for arm, acc in (("scratch", 0.80), ("kd", 0.80 + gain + (0.01 * s if gain else 0)),
                                                   ("kd_transfer", 0.85))]
        pd.DataFrame(rows).to_csv(tmp_path / f"{budget}.csv", index=False)
        entries.append(f"{budget}={tmp_path / f'{budget}.csv'}")
    out = subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "budget_curve.py"), *entries[::-1],
                          "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| GRU-32")]
    assert len(rows) == 2 and rows[0].startswith("| GRU-32 | 1,000 | 3 | 0.800 ")  # sorted by budget
    assert "| +0.030 [+0.005, +0.055] |" in rows[0]  # kd − scratch: 0.02, 0.03, 0.04 (t CI, 2 df)
    assert "| +0.050 [" in rows[1] and "| +0.000 [" in rows[1]  # no spread over seeds: no CI
    assert (tmp_path / "out" / "kd_gain_vs_budget.png").stat().st_size > 10_000


def test_augment_data_adds_masked_copies_of_train_and_unlabelled_reviews_never_of_validation(tmp_path):
    """scripts/augment_data.py: train, validation and test come back unchanged; the unlabelled split gains
    one masked copy of each train review outside validation and of each unlabelled review."""
    from kd_imdb.data import load_data

    out = tmp_path / "aug"
    proc = subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "augment_data.py"), "--out", str(out),
                           "--mask-p", "0.5", "--span-p", "0"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = load_data("sample", unsupervised=True).frame, load_data(str(out), unsupervised=True).frame
    for split in ("train", "validation", "test"):
        assert sorted(after.loc[after["split"] == split, "id"]) == sorted(before.loc[before["split"] == split, "id"])
    copies = after.loc[(after["split"] == "unsupervised") & ~after["id"].isin(before["id"]), "text"]
    sources = before[before["split"].isin(["train", "unsupervised"])]
    assert len(copies) > 0.99 * len(sources)  # one copy each, less the few that collide
    # with span_p 0 a copy keeps its review's length: each is a train or unlabelled review (never one
    # only validation or test holds) with about half its words masked
    by_length: dict[tuple, list] = {}
    for split, text in zip(before["split"], before["text"]):
        by_length.setdefault(len(text.split()), []).append((split, text.split()))
    masked = []
    for copy in copies:
        words = copy.split()
        origin = [split for split, source in by_length[len(words)]
                  if all(w == "[MASK]" or w == s for w, s in zip(words, source))]
        assert {"train", "unsupervised"} & set(origin)  # (a short review may also match a twin in another split)
        masked.append(words.count("[MASK]") / len(words))
    assert 0.45 < np.mean(masked) < 0.55


def test_label_copies_keeps_the_base_labels_and_stacks_a_second_teacher_on_the_copies(local_store, tmp_path):
    """scripts/label_copies.py: the original reviews keep the base file's logits to the bit; each copy gets the
    log-odds of a stack of the new teacher and the linear member fitted on validation; the file registers."""
    from kd_imdb import tracking
    from kd_imdb.data import load_data
    from kd_imdb.soft_labels import read_logits, write_logits

    aug = tmp_path / "aug"
    proc = subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "augment_data.py"), "--out", str(aug),
                           "--sources", "train"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    teacher = run_cli("teacher", "--model", "tiny", "--max-len", "32", "--epochs", "1", "--train-size", "200",
                      "--batch-size", "16", "--checkpoint-dir", str(tmp_path / "ck"), cwd=tmp_path)
    nbsvm = run_cli("linear-teacher", "--data", str(aug), "--unsupervised", "true", "--kind", "nbsvm", cwd=tmp_path)
    assert teacher.returncode == 0 and nbsvm.returncode == 0, teacher.stderr[-2000:] + nbsvm.stderr[-2000:]
    teacher_run, nbsvm_run = teacher.stdout.split()[-1], nbsvm.stdout.split()[-1]

    original = load_data("sample", unsupervised=True).frame.drop_duplicates("id")
    base = pd.DataFrame({"id": original["id"], "logit_0": 0.0,
                         "logit_1": np.random.default_rng(0).normal(size=len(original))})
    write_logits(base, {"teacher_run_id": "base", "data_hash": load_data("sample").content_hash}, tmp_path / "base.parquet")
    proc = subprocess.run([str(BIN / "python"), str(ROOT / "scripts" / "label_copies.py"), "--teacher-run-id", teacher_run,
                           "--linear-runs", nbsvm_run, "--data", str(aug), "--base-logits", str(tmp_path / "base.parquet"),
                           "--out", str(tmp_path / "out.parquet"), "--stride", "30", "--fp32",
                           "--cache-dir", str(tmp_path / "ck")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    out, fingerprint = read_logits(tmp_path / "out.parquet")
    everything = load_data(str(aug), unsupervised=True).frame.drop_duplicates("id")
    assert sorted(out["id"]) == sorted(everything["id"])
    kept = out.set_index("id").loc[base["id"]]
    assert np.array_equal(kept["logit_1"].to_numpy(), base["logit_1"].to_numpy())  # the base labels, untouched
    copies = out[~out["id"].isin(base["id"])]
    assert len(copies) > 0.99 * (original["split"] == "train").sum()
    assert np.allclose(copies["logit_0"], -copies["logit_1"])
    assert fingerprint["copies_members"] == [teacher_run, nbsvm_run]
    # The tiny teacher is near chance and NB-SVM is not, so the stack leans on NB-SVM: the copies' labels
    # follow NB-SVM's on the same reviews (misaligned rows would agree about half the time).
    nb, _ = read_logits(tracking.download_artifact(nbsvm_run, "soft_labels/logits.parquet"))
    nb = nb.set_index("id").loc[copies["id"]]
    assert ((nb["logit_1"] - nb["logit_0"] > 0).to_numpy() == (copies["logit_1"] > 0).to_numpy()).mean() > 0.9
    registered = run_cli("soft-labels", "--logits-file", str(tmp_path / "out.parquet"), "--data", str(aug),
                         "--unsupervised", "true", cwd=tmp_path)
    assert registered.returncode == 0, registered.stderr[-2000:]
