"""Wall time of the full default study on this machine, from measured per-review costs.

    MLFLOW_TRACKING_URI=... python benchmarks/study_wall_time.py --soft-labels-run-id <run> --data ../shared/data/imdb

Training the whole grid here takes hours, so this measures what one run is made of instead: for every
student of the grid, seconds per training review (the real KD step on a random sample of train, so the
real length mix) with 1 and with 2 threads, and seconds per evaluated review. A run of the study costs
``epochs x (n_train x train + n_val x eval) + (n_val + n_test) x eval``; the plain way trains the runs one
after another with both threads, the study with ``workers`` single-thread processes, longest first.
``--check`` also prints the estimate for a study measured end to end before (RESULTS.md section 6), to
see how far the estimate is off.
"""
from __future__ import annotations

import heapq
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: progress bars would drown the table

import click
import numpy as np
import torch


def seconds_per_review(cfg, splits, threads: int, reviews: int) -> tuple[float, float]:
    """(train, eval) seconds per review for ``cfg``'s student at ``threads`` threads."""
    from kd_imdb.experiment import distilled
    from kd_imdb.students import build_student
    from kd_imdb.train import FitConfig, fit, predict

    torch.set_num_threads(threads)
    tr = splits["train"]
    idx = np.random.default_rng(0).choice(len(tr.seqs), size=reviews, replace=False)
    seqs = [tr.seqs[i] for i in idx]
    loss = distilled(tr.labels[idx], tr.teacher[idx], torch.device("cpu"), cfg.distillation.temperature, cfg.distillation.alpha)
    one_epoch = FitConfig(seed=0, epochs=1, lr=cfg.training.lr, batch_size=cfg.training.batch_size, device="cpu")
    model = build_student(cfg.student, 0)
    # one batch first: allocator and kernel warm-up are not part of the steady state
    fit(model, seqs[:64], seqs[:8], tr.labels[idx[:8]], loss, one_epoch)
    t0 = time.perf_counter()
    fit(model, seqs, seqs[:8], tr.labels[idx[:8]], loss, one_epoch)
    train = (time.perf_counter() - t0) / reviews
    t0 = time.perf_counter()
    predict(model, seqs)
    return train, (time.perf_counter() - t0) / reviews


def run_seconds(epochs: int, n: dict, train: float, evaluate: float) -> float:
    """One run: ``epochs`` x (train, then validate), then validation and test once more for the report."""
    return epochs * (n["train"] * train + n["validation"] * evaluate) + (n["validation"] + n["test"]) * evaluate


def wall(costs: list[float], workers: int) -> float:
    """Longest-first list scheduling of run costs on ``workers`` (what the study's queue does)."""
    loads = [0.0] * workers
    for c in sorted(costs, reverse=True):
        heapq.heapreplace(loads, loads[0] + c)
    return max(loads)


@click.command()
@click.option("--soft-labels-run-id", "soft_labels_run_id", required=True)
@click.option("--data", default="../shared/data/imdb", show_default=True)
@click.option("--grid", default="gru:16,32,64,128,256;cnn:64,128,256", show_default=True)
@click.option("--reviews", default=1280, show_default=True, help="Training reviews timed per student.")
@click.option("--workers", default=2, show_default=True)
@click.option("--check", is_flag=True, help="Also estimate RESULTS.md section 6's measured study.")
def main(soft_labels_run_id: str, data: str, grid: str, reviews: int, workers: int, check: bool) -> None:
    from kd_imdb import experiment, ledger
    from kd_imdb.config import StudyConfig

    cfg = StudyConfig.from_flat(soft_labels_run_id=soft_labels_run_id, data=data, grid=grid, register=False)
    _, _, splits = experiment.prepare(cfg.student(cfg.grid[0], 0))
    n = {s: len(splits[s].seqs) for s in ("train", "validation", "test")}
    print(f"torch {torch.__version__}, {n['train']} train / {n['validation']} validation / {n['test']} test reviews, "
          f"{reviews} timed per student")
    print("| student | epochs | train ms/review, 1 thread | 2 threads | eval ms/review | one run, 1 thread (s) | 2 threads (s) |")
    print("|---|---|---|---|---|---|---|")
    run_1, run_2 = {}, {}
    for configuration in cfg.grid:
        s = cfg.student(configuration, 0)
        train1, eval1 = seconds_per_review(s, splits, 1, reviews)
        train2, eval2 = seconds_per_review(s, splits, 2, reviews)
        run_1[configuration] = run_seconds(s.epochs, n, train1, eval1)
        run_2[configuration] = run_seconds(s.epochs, n, train2, eval2)
        print(f"| {ledger.config_name(configuration)} | {s.epochs} | {1000 * train1:.2f} | {1000 * train2:.2f} | "
              f"{1000 * eval1:.2f} | {run_1[configuration]:.0f} | {run_2[configuration]:.0f} |")

    def report(label: str, configurations, seeds: int) -> None:
        runs = [c for c in configurations for _ in range(2 * seeds)]  # scratch and KD per seed pair
        plain = sum(run_2[c] for c in runs)
        parallel = wall([run_1[c] for c in runs], workers)
        print(f"{label}, {seeds} seed pairs: plain sequential (2 threads) {plain / 3600:.2f} h; "
              f"study with {workers} single-thread workers {parallel / 3600:.2f} h; speed-up {plain / parallel:.2f}x")

    for seeds in (3, 5):
        report("full default grid", cfg.grid, seeds)
    if check:
        report("RESULTS.md section 6 (measured: 1,599 s = 0.44 h)",
               [c for c in cfg.grid if c in {("gru", 16), ("gru", 32), ("gru", 64), ("cnn", 64)}], 3)


if __name__ == "__main__":
    main()
