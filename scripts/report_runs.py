"""Print markdown tables of real runs, read back from the tracking server (figures for RESULTS.md).

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python scripts/report_runs.py teacher=<id> labels=<id> pair=<id> ...
    python scripts/report_runs.py teachers=<soft-labels id>,<soft-labels id>,...   # one table, the last vs each

Every figure comes from the runs; nothing is typed by hand.
"""
import sys
import tempfile

import numpy as np
from mlflow.tracking import MlflowClient

from kd_imdb import stats
from kd_imdb.soft_labels import ARTIFACT, read_logits

client = MlflowClient()


def wall(run) -> str:
    seconds = (run.info.end_time - run.info.start_time) / 1000
    return f"{seconds / 60:.1f} min"


def teacher(run_id):
    run = client.get_run(run_id)
    m, p = run.data.metrics, run.data.params
    print(f"\n**Teacher** (run `{run_id}`, model `{p['model']}`, max_len {p['max_len']}, {p['truncation']}, "
          f"{p['epochs']} epoch(s), lr {p['lr']}, batch {p['batch_size']}; {int(m['train_reviews'])} training reviews; "
          f"training {m['train_seconds'] / 60:.1f} min, whole run {wall(run)})\n")
    print("| split | accuracy | F1 | precision | recall | log-loss | ECE | Brier |")
    print("|---|---|---|---|---|---|---|---|")
    for split in ("val", "test"):
        print(f"| {split} | " + " | ".join(f"{m[f'{split}_{k}']:.4f}" for k in
                                           ("accuracy", "f1", "precision", "recall", "log_loss", "ece", "brier")) + " |")
    print(f"\nteacher inference on test: {m['test_reviews_per_s']:.1f} reviews/s (PyTorch fp32, length-sorted)")


def labels(run_id):
    run = client.get_run(run_id)
    m, p = run.data.metrics, run.data.params
    rate = f"{m['label_reviews_per_s']:.1f} reviews/s" if "label_reviews_per_s" in m else "nothing new to label"
    print(f"\n**Soft labels** (run `{run_id}`, unsupervised={p['unsupervised']}, onnx_int8={p['onnx_int8']}): "
          f"{int(m['reviews'])} reviews, {int(m['reused_reviews'])} reused from the teacher run, {rate}, whole run {wall(run)}")
    print("\n| split | teacher accuracy | F1 | log-loss | ECE |")
    print("|---|---|---|---|---|")
    for split in ("train", "val", "test"):
        cells = (f"{m[f'teacher_{split}_{k}']:.4f}" for k in ("accuracy", "f1", "log_loss", "ece"))
        print(f"| {split} | " + " | ".join(cells) + " |")


def teachers(run_ids):
    """Soft-labels runs side by side on the reviews every one of them scored: validation and test accuracy
    (Wilson 95% CI over the test reviews), and an exact McNemar test of the last run against each other."""
    rows, logits = [], []
    for run_id in run_ids.split(","):
        run = client.get_run(run_id)
        frame, _ = read_logits(client.download_artifacts(run_id, ARTIFACT, tempfile.mkdtemp()))
        logits.append(frame.drop_duplicates("id").set_index("id")[["logit_0", "logit_1"]])  # a duplicate text keeps one split
        rows.append(run)
    from kd_imdb.data import load_data

    data = load_data(client.get_run(run_ids.split(",")[0]).data.params["data"])
    test = data.split("test").drop_duplicates("id").set_index("id")
    labels = test["label"].to_numpy()
    preds = [t.loc[test.index].to_numpy().argmax(1) for t in logits]
    print(f"\n{len(test)} distinct test reviews; McNemar: the last teacher against each\n")
    print("| teacher | run | val accuracy | test accuracy [95% CI] | F1 | log-loss | ECE | McNemar p vs last |")
    print("|---|---|---|---|---|---|---|---|")
    for run, pred in zip(rows, preds):
        m = run.data.metrics
        acc, low, high = stats.accuracy_ci(pred == labels)
        p = stats.mcnemar(labels, pred, preds[-1])["pvalue"] if pred is not preds[-1] else float("nan")
        print(f"| {run.info.run_name} | `{run.info.run_id[:8]}` | {m['teacher_val_accuracy']:.4f} | {acc:.4f} [{low:.4f}, "
              f"{high:.4f}] | {m['teacher_test_f1']:.4f} | {m['teacher_test_log_loss']:.4f} | {m['teacher_test_ece']:.4f} | "
              f"{'' if np.isnan(p) else f'{p:.2g}'} |")


def pair(run_id):
    run = client.get_run(run_id)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    arms = {c.data.tags["kd_imdb.arm"]: c for c in children}
    p = run.data.params
    print(f"\n**{p['arch'].upper()}-{p['hidden']} seed pair** (run `{run_id}`, seed {p['seed']}, T={p['temperature']}, "
          f"alpha={p['alpha']}, epochs {arms['scratch'].data.params['epochs']}, max_len {p['max_len']}; whole run {wall(run)}; "
          f"identical initial weights: {arms['scratch'].data.tags['init_sha256'] == arms['kd'].data.tags['init_sha256']})\n")
    keys = ("accuracy", "f1", "precision", "recall", "log_loss", "ece", "brier", "teacher_agreement")
    print("| arm | best epoch (val) | val accuracy | " + " | ".join(f"test {k}" for k in keys) + " | train reviews/s |")
    print("|---" * (4 + len(keys)) + "|")
    for arm in ("scratch", "kd", "kd_hard"):
        if arm in arms:
            m = arms[arm].data.metrics
            print(f"| {arm} | {int(m['best_epoch'])} | {m['val_accuracy']:.4f} | " +
                  " | ".join(f"{m[f'test_{k}']:.4f}" for k in keys) + f" | {m['train_reviews_per_s']:.0f} |")


for arg in sys.argv[1:]:
    kind, run_id = arg.split("=")
    {"teacher": teacher, "labels": labels, "pair": pair, "teachers": teachers}[kind](run_id)
