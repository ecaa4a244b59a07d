"""Print markdown tables of real runs, read back from the tracking server (figures for RESULTS.md).

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python scripts/report_runs.py teacher=<id> labels=<id> pair=<id> ...

Every figure comes from the runs; nothing is typed by hand.
"""
import sys

from mlflow.tracking import MlflowClient

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
        print(f"| {split} | " + " | ".join(f"{m[f'teacher_{split}_{k}']:.4f}" for k in ("accuracy", "f1", "log_loss", "ece")) + " |")


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
    {"teacher": teacher, "labels": labels, "pair": pair}[kind](run_id)
