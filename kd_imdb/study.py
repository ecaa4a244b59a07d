"""The ``study`` entry point: the origin grid with paired seeds, resumable, run by parallel workers.

A study is cells (one per seed pair of each student configuration) -> the run tree (``ledger``) -> the
workers (``executor``) -> the tables (``analysis``).

Resume: a study is identified by its parameters and soft labels (tag ``kd_imdb.study_key``), but not by
its arms. Running it again reuses its runs, skips arms that finished, and retrains only arms that failed
or were killed (those runs are marked KILLED and left for the record), so every (configuration, seed,
arm) ends with exactly one FINISHED run. Running it with more arms extends it: only the new arms train,
against the scratch partners it already has.

Workers: each prepares the data once and then trains whole seed pairs; with ``storage`` (an Optuna RDB
URL) workers on other machines join with ``kd-imdb study-worker``.
"""
from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass

import mlflow
import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from kd_imdb import analysis, executor, experiment, ledger, tracking
from kd_imdb.config import ArmConfig, StudyConfig, format_grid

log = logging.getLogger(__name__)

class PairTrainer:
    """The study's cell handler: train the arms a seed pair still misses. Pickled once per worker, it
    prepares the data on its first pair and keeps it for the next."""

    def __init__(self, cfg: StudyConfig):
        self.cfg = cfg
        self.prepared = None

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg, "prepared": None}

    def __call__(self, cell: ledger.Cell | dict) -> int:
        """Train the missing arms of ``cell``; returns how many it trained (0: the pair was done)."""
        cell = ledger.Cell.from_json(cell) if isinstance(cell, dict) else cell
        client = MlflowClient()
        experiment_id = client.get_run(cell.pair_id).info.experiment_id
        # The pair is this worker's now: a run left RUNNING under it is a dead worker's.
        ledger.close_stale_runs(client, experiment_id, cell.pair_id)
        missing = ledger.missing_arms(client, experiment_id, cell.pair_id, self.cfg.arm_list())
        if missing:
            student = self.cfg.student(cell.configuration, cell.seed)
            if self.prepared is None:
                _, tok, splits = experiment.prepare(student, transfer="kd_transfer" in self.cfg.arm_list())
                self.prepared = (tok, splits)
            train_missing_arms(student, cell.pair_id, missing, *self.prepared)
        return len(missing)


def train_missing_arms(student: ArmConfig, pair_id: str, missing: list[str], tok, splits: dict) -> None:
    """Reopen the pair run, train each missing arm as a nested run, then summarise the pair."""
    client = MlflowClient()
    config_id = client.get_run(pair_id).data.tags["mlflow.parentRunId"]
    study_tag = {"kd_imdb.study": client.get_run(config_id).data.tags["mlflow.parentRunId"]}  # also in older trees
    with tracking.start_run(run_id=pair_id):  # this worker owns the pair now (its owner tags)
        tracking.log_params_once(student.flat())  # what its arms share
        for arm in missing:
            with tracking.start_run(run_name=student.run_name(arm), nested=True, tags=study_tag):
                experiment.train_arm(student, arm, tok, splits, status=executor.status_reporter())
        _log_pair_summary(client, pair_id)


def _log_pair_summary(client: MlflowClient, pair_id: str) -> None:
    """On the pair run: each arm's test metrics and KD minus scratch."""
    run = client.get_run(pair_id)
    arms = ledger.arm_runs(client, run.info.experiment_id, pair_id)
    m = {a: r.data.metrics for a, r in arms.items() if r.info.status == ledger.FINISHED}
    # Metric keys allow no "@": kd@linear logs kd.linear_test_accuracy.
    mlflow.log_metrics({f"{a.replace('@', '.')}_test_accuracy": m[a]["test_accuracy"] for a in m})
    if {"scratch", "kd"} <= set(m):
        mlflow.log_metric("kd_minus_scratch_test_accuracy", analysis.gain(analysis.arm_metrics_frame(m), "kd")["diff_mean"])


# ----------------------------------------------------------------------------- workers on several machines


def join(storage: str, study_name: str, index: int = 0) -> int:
    """``kd-imdb study-worker`` (and local worker ``index`` of a shared study): train the queued pairs of
    the Optuna study ``study_name`` until none is left; returns pairs trained here."""
    study = executor.load_shared_study(study_name, storage)
    # The storage names the study run; its experiment is where every run of this worker belongs (on
    # another machine MLflow would otherwise pick "Default", and the leader would not find the arms).
    mlflow.set_experiment(experiment_id=MlflowClient().get_run(study.user_attrs["study_run_id"]).info.experiment_id)
    trainer = PairTrainer(StudyConfig.from_flat(**study.user_attrs["config"], storage=storage, workers=0))
    trained = 0

    def handle(cell: dict) -> int:
        nonlocal trained
        n = trainer(cell)
        trained += n > 0
        return n  # the trial's value: arms trained here (0 = already done)

    executor.pop_cells(study, handle)
    return trained


def run_shared(cfg: StudyConfig, cells: list[ledger.Cell], tracking_uri: str, study_id: str) -> None:
    """Queue the missing pairs, run ``cfg.workers`` local workers on the storage, wait for all pairs."""
    config = {k: v for k, v in cfg.flat().items() if k not in ("workers", "storage")}  # what a remote worker needs
    queue = executor.create_queue(f"kd_imdb-study-{cfg.key()}", cfg.storage, {"config": config, "study_run_id": study_id})
    cells = sorted(cells, key=lambda c: (c.configuration, c.seed))
    executor.enqueue_cells(queue, [c.to_json() for c in cells], [bool(c.missing) for c in cells])
    name = queue.study_name
    log.info("Optuna study %s on %s: %d pairs queued; join with: kd-imdb study-worker --storage %s --study-name %s",
             name, cfg.storage, executor.waiting(queue), cfg.storage, name)
    executor.run_shared(queue, functools.partial(join, cfg.storage, name), cfg.workers, tracking_uri, "study worker")
    log.info("all queued pairs are done: %s", json.dumps({s.name: len(queue.get_trials(states=(s,)))
                                                          for s in optuna.trial.TrialState}))


# ----------------------------------------------------------------------------- the entry point


def report(study_id: str) -> str:
    """Analyse a study again from the arm runs that have FINISHED, also while it runs or after it was
    stopped, and log ``results/`` to the study run anew; returns the table."""
    tracking.setup_tracking(tracking.EXPERIMENT)
    client = MlflowClient()
    try:
        study = client.get_run(study_id)
    except MlflowException as exc:
        raise ValueError(f"no run {study_id!r} on the tracking server; pass the id the study command printed") from exc
    if study.data.tags.get("kd_imdb.stage") != "study" or "kd_imdb.resumes" in study.data.tags:
        raise ValueError(f"run {study_id} is not a study's first run; pass the id the study command printed")
    return analysis.analyse_and_log(ledger.collect(client, study.info.experiment_id, study_id), study_id, client)[1]


def check_inputs(cfg: StudyConfig) -> None:
    """What can only be checked against the tracking server and the storage, checked before the first run
    opens: the soft-labels runs exist, and the Optuna storage answers."""
    tracking.require_run(cfg.base.soft_labels_run_id, "soft-labels")
    for name, run_id in cfg.base.distillation.teachers.items():
        tracking.require_run(run_id, f"teacher {name!r} soft-labels")
    if cfg.storage:
        executor.make_storage(cfg.storage)


def study_name(cfg: StudyConfig) -> str:
    """The study run's name: its grid, the students' n-gram bag and seed pairs, e.g. ``study gru16-256/cnn64-256 x5``
    or ``study gru64+bigrams x3``."""
    spans = []
    for arch in dict.fromkeys(a for a, _ in cfg.grid):
        hidden = sorted(h for a, h in cfg.grid if a == arch)
        bi = "bi" if arch == "gru" and cfg.base.student.bidirectional else ""
        spans.append(f"{bi}{arch}{hidden[0]}{f'-{hidden[-1]}' if len(hidden) > 1 else ''}")
    return f"study {'/'.join(spans)}{cfg.base.student.bag_suffix} x{cfg.seeds}"


@dataclass(frozen=True)
class StudyResult:
    study_id: str
    table: str  # the study's markdown table (results.md)


def run(cfg: StudyConfig) -> StudyResult:
    """Plan the grid, train what is missing with the workers, then analyse and log the results."""
    uri = tracking.setup_tracking(tracking.EXPERIMENT)
    check_inputs(cfg)
    client = MlflowClient()
    key = cfg.key()
    about = (f"The origin's grid ({format_grid(cfg.grid)}), {cfg.seeds} seed pairs, arms {', '.join(cfg.arm_list())}, "
             f"soft labels {cfg.base.soft_labels_run_id}: the table is results/results.md")
    tags = {"kd_imdb.stage": "study", tracking.DESCRIPTION_TAG: about}
    with tracking.start_run(run_name=study_name(cfg), tags=tags, system_metrics=True) as active:
        experiment_id = active.info.experiment_id
        study_id = ledger.find_study(client, experiment_id, [key, cfg.legacy_key()]) or active.info.run_id
        if study_id != active.info.run_id:
            # This invocation's run points at the study it resumed; the study's runs stay in one tree.
            # Its params say what this invocation asked for (more arms, say); the study keeps its own.
            mlflow.set_tags({"kd_imdb.resumes": study_id})
        client.set_tag(study_id, "kd_imdb.study_key", key)  # on a resumed study, a legacy key gives way
        tracking.log_params_once(cfg.flat())
        tracking.log_config(cfg.flat())
        seeds = range(cfg.first_seed, cfg.first_seed + cfg.seeds)
        # Shared grids: a live remote worker may hold a pair; its taker closes what a dead one left.
        cells = ledger.plan(client, experiment_id, study_id, cfg.grid, seeds, cfg.arm_list(),
                            close_stale=not cfg.storage)
        todo = [c for c in cells if c.missing]
        log.info("study %s: %d seed pairs to train, %d already finished", study_id, len(todo), len(cells) - len(todo))
        mlflow.log_metrics({"pairs_todo": len(todo), "pairs_done_before": len(cells) - len(todo)})
        t0 = time.time()
        try:
            if cfg.storage:
                run_shared(cfg, cells, uri, study_id)
            else:
                # Largest models first, so the long ones do not end up alone at the tail.
                todo.sort(key=lambda c: -c.configuration[1])
                executor.run_local(PairTrainer(cfg), todo, cfg.workers, uri, kind="study worker", unit="pair")
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the whole tree ends KILLED, none of it left RUNNING
            ledger.close_stopped(client, cells, pairs=not cfg.storage)
            raise
        mlflow.log_metric("train_wall_seconds", time.time() - t0)
        ledger.finish_configurations(client, cells)
        frame = ledger.collect(client, experiment_id, study_id)
        summary, table = analysis.analyse_and_log(frame, study_id, client)
        ledger.log_configuration_metrics(client, cells, analysis.configuration_metrics(summary))
        if cfg.register and not frame.empty:
            # Imported here: importing serving defines its pyfunc class, which MLflow warns about.
            from kd_imdb.serving import register_best

            versions = register_best(frame, client)
            mlflow.set_tags({f"registered.{alias}": version for alias, version in versions.items()})
        if study_id != active.info.run_id:
            client.set_terminated(study_id, status=ledger.FINISHED)
    return StudyResult(study_id, table)
