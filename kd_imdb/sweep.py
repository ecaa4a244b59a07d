"""The ``sweep`` entry point: an Optuna search over the KD temperature (and optionally alpha).

The origin study fixed T=2. Here one student configuration (default GRU-32) is trained with KD for
each trial's T (log-uniform, default 1 to 20) and alpha, from the same initial weights and batch order
in every trial (seed fixed), maximising validation accuracy; test is never read. A median pruner stops
trials whose per-epoch validation accuracy falls below the median of earlier trials at that epoch.

MLflow: one parent run; each trial a nested run with its parameters, per-epoch metrics and final state
(tag ``optuna.state``: COMPLETE or PRUNED). At the end the parent holds the optimisation history,
validation accuracy against T (and alpha) and parameter importances as PNG files, plus the best
parameters. Storage: a local SQLite file by default; an RDB URL (PostgreSQL across machines) lets
several workers share one study, stopping at ``n_trials`` finished trials between them.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
import tempfile
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import optuna
from mlflow.tracking import MlflowClient

from kd_imdb import analysis, executor, experiment, ledger, tracking
from kd_imdb.config import StudyConfig, SweepConfig
from kd_imdb.study import run as run_study

log = logging.getLogger(__name__)


def load_study(cfg: SweepConfig, worker: int | None = 0) -> optuna.Study:
    """Create or join the study (heartbeats: a killed worker's trial is marked FAILED and queued again).

    Each worker samples with its own seed: workers sharing one seed draw the same temperatures, so
    N workers would try each value N times. Local worker ``i`` seeds from (sampler_seed, i), which keeps
    a one-worker sweep reproducible; a ``sweep-worker`` from another machine (``worker=None``) draws a
    fresh seed.
    """
    seed = None if worker is None else int(np.random.SeedSequence([cfg.sampler_seed, worker]).generate_state(1)[0])
    return optuna.create_study(
        study_name=cfg.name, storage=executor.make_storage(cfg.storage), direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )


def objective_for(cfg: SweepConfig, tok, splits, parent_run_id: str):
    """The trial function: one KD student as a nested MLflow run under ``parent_run_id``."""

    def objective(trial: optuna.Trial) -> float:
        if not trial.user_attrs.get("queued"):
            raise executor.NotQueued()  # made because another worker took the last queued trial: never run
        temperature = trial.suggest_float("temperature", cfg.t_min, cfg.t_max, log=True)
        alpha = trial.suggest_float("alpha", 0.0, 1.0) if cfg.sweep_alpha else 1.0
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        student = cfg.student(temperature, alpha)

        last_epoch = student.epochs + student.training.hard_epochs

        def report(metrics: dict, epoch: int) -> None:
            experiment.log_epoch(metrics, epoch)
            trial.report(metrics["val_accuracy"], epoch)
            # After the last epoch there is nothing left to save: the trial completes with its value.
            if epoch < last_epoch and trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: validation accuracy {metrics['val_accuracy']:.4f}")

        pruned = False
        name = f"trial {trial.number} T={temperature:.3g}" + (f" alpha={alpha:.2f}" if cfg.sweep_alpha else "")
        with tracking.start_run(run_name=name, parent_run_id=parent_run_id, nested=True,
                                tags={"optuna.trial": str(trial.number), "optuna.study": cfg.name}):
            try:
                reporter = executor.status_reporter()  # the bar's line names the trial, not only the student
                status = (lambda text: reporter(f"trial {trial.number} {text}")) if reporter else None
                metrics = experiment.train_arm(student, "kd", tok, splits, log_fn=report, status=status)
            except optuna.TrialPruned:
                pruned = True  # a normal end: the run finishes, tagged PRUNED
            finally:
                executor.cell_done()
            # a trial is not a study's arm: grouping student runs by stage keeps trials out of KD means
            mlflow.set_tags({"optuna.state": "PRUNED" if pruned else "COMPLETE", "kd_imdb.stage": "sweep_trial",
                             "kd_imdb.sweep": parent_run_id})
        if pruned:
            raise optuna.TrialPruned()
        return metrics["val_accuracy"]

    return objective


def work(cfg: SweepConfig, parent_run_id: str, worker: int | None = 0) -> None:
    """Run queued trials until none is left (or ``timeout`` passes)."""
    study = load_study(cfg, worker)
    # Trials belong in the sweep run's experiment, whatever this machine's default is.
    mlflow.set_experiment(experiment_id=MlflowClient().get_run(parent_run_id).info.experiment_id)
    _, tok, splits = experiment.prepare(cfg.student(2.0, 1.0))
    executor.drain(study, objective_for(cfg, tok, splits, parent_run_id), timeout=cfg.timeout or None)


def run(cfg: SweepConfig) -> dict:
    """The ``sweep`` entry point: the parent run, ``workers`` local worker processes, then the plots."""
    uri = tracking.setup_tracking(tracking.EXPERIMENT)
    tracking.require_run(cfg.base.soft_labels_run_id, "soft-labels")
    executor.make_storage(cfg.storage)  # an unusable storage is an error before the parent run opens
    student = cfg.base.student
    with tracking.start_run(run_name=f"sweep {student.name}", tags={"kd_imdb.stage": "sweep"},
                            system_metrics=True) as parent:
        tracking.log_params_once(cfg.flat())
        tracking.log_config(cfg.flat())
        study = load_study(cfg)  # creates the study before the workers race for it
        study.set_user_attr("config", cfg.flat())  # what kd-imdb sweep-worker on another machine needs
        study.set_user_attr("parent_run_id", parent.info.run_id)
        mlflow.log_metric("trials_queued_now", executor.queue_empty_trials(study, cfg.n_trials))
        if cfg.workers == 0:
            log.info("%d trials queued; run them with: kd-imdb sweep-worker --storage %s --study-name %s",
                     cfg.n_trials, cfg.storage, cfg.name)
            executor.wait_for_workers(study)
        elif cfg.workers == 1:
            work(cfg, parent.info.run_id)
        else:
            procs = executor.run_with_progress(functools.partial(work, cfg, parent.info.run_id), cfg.workers, uri,
                                               executor.waiting(study), "trial")
            # A dead worker's trial goes FAILED and is queued again for the others; the sweep goes on.
            if lost := executor.join_workers(procs, "sweep worker", strict=False):
                log.warning("%d sweep worker(s) died (exit codes %s)", len(lost), lost)
        study = load_study(cfg)
        states = {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in optuna.trial.TrialState}
        mlflow.log_metrics({f"trials_{k.lower()}": v for k, v in states.items()})
        best = study.best_trial
        mlflow.log_metrics({"best_val_accuracy": best.value, **{f"best_{k}": v for k, v in best.params.items()}})
        with tempfile.TemporaryDirectory() as tmp:
            for path in analysis.plot_sweep(study, Path(tmp)):
                mlflow.log_artifact(str(path), "sweep")
            tracking.log_dict_artifact({"best_params": best.params, "best_val_accuracy": best.value,
                                        "best_trial": best.number, "states": states}, "sweep/best.json")
    return {"best_params": best.params, "best_val_accuracy": best.value, "states": states, "run_id": parent.info.run_id}


def join(storage: str, study_name: str) -> None:
    """``kd-imdb sweep-worker``: run a sweep's queued trials from another machine."""
    study = executor.load_shared_study(study_name, storage)
    work(SweepConfig.from_flat(**{**study.user_attrs["config"], "storage": storage}), study.user_attrs["parent_run_id"], None)


def sweep_config(sweep_run) -> SweepConfig:
    """The configuration a sweep ran with: its ``config.json``; for sweeps logged before that file
    existed, its params, each read back as its field's type."""
    config = tracking.load_config(sweep_run.info.run_id)
    if config is None:
        types = {k: type(v) for k, v in SweepConfig.defaults().items()}
        parse = {int: int, float: float, bool: lambda v: v == "True", str: str}
        config = {k: parse[types[k]](v) for k, v in sweep_run.data.params.items() if k in types}
    return SweepConfig.from_flat(**config)


def confirm(sweep_run_id: str, seeds: int = 5, workers: int = 2) -> str:
    """Retrain the sweep's best T (and alpha) with the study's paired-seed protocol on fresh seed pairs,
    next to T=2; return KD at the best T against scratch and against KD at T=2 (CIs, paired tests).

    Fresh seeds: the sweep's trials all used its one seed; the confirmation uses seeds 100.. so the
    winner is judged on runs that did not select it.
    """
    tracking.setup_tracking(tracking.EXPERIMENT)
    sweep = tracking.require_run(sweep_run_id, "sweep")
    m = sweep.data.metrics
    if sweep.data.tags.get("kd_imdb.stage") != "sweep" or "best_temperature" not in m:
        raise ValueError(f"run {sweep_run_id} is not a finished sweep (no best_temperature); pass the run id "
                         "that kd-imdb sweep printed")
    best_t, best_alpha = m["best_temperature"], m.get("best_alpha", 1.0)
    swept = sweep_config(sweep)
    student = swept.base.student
    # The sweep's student, its seeds fresh; only its temperature and alpha change between the two studies.
    base = replace(swept.base, distillation=replace(swept.base.distillation, mode="pair"))
    grid = ((student.arch, student.hidden),)
    frames = {}
    with tracking.start_run(run_name=f"confirm {student.arch}-{student.hidden}", tags={"kd_imdb.stage": "confirm",
                                                                                 "kd_imdb.sweep": sweep_run_id}):
        for label, (t, a) in {"best": (best_t, best_alpha), "t2": (2.0, 1.0)}.items():
            at_t = replace(base, distillation=replace(base.distillation, temperature=t, alpha=a))
            study_id = run_study(StudyConfig(base=at_t, grid=grid, seeds=seeds, first_seed=100, workers=workers,
                                             register=False)).study_id
            client = MlflowClient()
            frames[label] = ledger.collect(client, client.get_run(study_id).info.experiment_id, study_id)
        table, means = analysis.confirm_table(frames["best"], frames["t2"])
        mlflow.log_metrics({"best_temperature": best_t, "best_alpha": best_alpha})
        mlflow.log_text(table.to_csv(index=False), "confirm/comparisons.csv")
        mlflow.log_metrics({f"test_accuracy_{k}": v[0] for k, v in means.items()})
    lines = [f"best T {best_t:.3g}, alpha {best_alpha:.3g}; test accuracy over {seeds} fresh seed pairs:"]
    lines += [f"  {k}: {mean:.4f} [{low:.4f}, {high:.4f}]" for k, (mean, low, high) in means.items()]
    return "\n".join([*lines, table.to_string(index=False)])
