"""Study throughput: the grid trained the plain way (one run after another, one process using every
core) against the study's single-thread worker processes, on the same seed pairs.

    python benchmarks/study_speed.py --soft-labels-run-id <run> --data ../shared/data/imdb --grid "gru:16,64;cnn:64" --seeds 2

Both arms of every pair are trained either way; the wall times and the speed-up are printed. Runs go to a
throw-away local SQLite store, so the tracking server is left alone (the soft labels are read from
MLFLOW_TRACKING_URI first and registered there as a file).
"""
from __future__ import annotations

import os
import tempfile
import time

import click
import mlflow
import torch


@click.command()
@click.option("--soft-labels-run-id", "soft_labels_run_id", required=True)
@click.option("--data", default="sample", show_default=True)
@click.option("--grid", default="gru:16,64;cnn:64", show_default=True)
@click.option("--seeds", default=2, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int)
@click.option("--epochs", default=1, show_default=True, type=int, help="Per arm (1 keeps the benchmark short).")
def main(soft_labels_run_id: str, data: str, grid: str, seeds: int, workers: int, epochs: int) -> None:
    from kd_imdb import experiment, soft_labels, study
    from kd_imdb.config import StudyConfig

    logits = mlflow.artifacts.download_artifacts(run_id=soft_labels_run_id, artifact_path=soft_labels.ARTIFACT)
    tmp = tempfile.mkdtemp()
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/bench.db"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    labels = soft_labels.run(soft_labels.SoftLabelsConfig(data=data, logits_file=logits))
    cfg = StudyConfig.from_flat(soft_labels_run_id=labels, data=data, grid=grid, seeds=seeds, workers=workers,
                                epochs=epochs, register=False)
    pairs = [(c, s) for c in cfg.grid for s in range(seeds)]
    print(f"{len(pairs)} seed pairs ({grid}, {seeds} seeds, {epochs} epoch(s) per arm), data {data}, "
          f"{os.cpu_count()} cores")

    t0 = time.time()
    student = cfg.student(pairs[0][0], 0)
    _, tok, splits = experiment.prepare(student)  # once, as the study's workers do
    prepare_s = time.time() - t0
    t0 = time.time()
    for configuration, seed in pairs:  # the plain way: one pair after another, torch's default threads
        student = cfg.student(configuration, seed)
        for arm in ("scratch", "kd"):
            with mlflow.start_run():
                experiment.train_arm(student, arm, tok, splits)
    plain = time.time() - t0 + prepare_s
    print(f"plain sequential ({torch.get_num_threads()} threads): {plain:.0f} s")

    t0 = time.time()
    study.run(cfg)
    parallel = time.time() - t0
    print(f"study, {workers} single-thread workers: {parallel:.0f} s (speed-up {plain / parallel:.2f}x)")


if __name__ == "__main__":
    main()
