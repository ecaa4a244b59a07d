"""Workers on several machines share a study's grid through Optuna's RDB storage (PostgreSQL, SQLite).

The ``study`` command plans the MLflow run tree, then enqueues one Optuna trial per seed pair that is
not finished (``Study.enqueue_trial``), storing the plan and the study's parameters as study user
attributes. Any number of workers (``kd-imdb study-worker --storage URL --study-name NAME`` on other
machines, plus ``workers`` local processes) pop queued trials until none is left. Optuna makes the
pop atomic, so no pair is trained twice; heartbeats mark a killed worker's trial FAILED after a grace
period and ``RetryFailedTrialCallback`` queues it again, so nothing is lost. MLflow stays the record
of what finished: a trial whose arms already finished returns at once.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time

import optuna

log = logging.getLogger(__name__)

def make_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats: a killed worker's trial goes FAILED after 4 missed beats and is
    queued again (``KD_IMDB_HEARTBEAT_S``, default 10 s)."""
    heartbeat = int(os.environ.get("KD_IMDB_HEARTBEAT_S", "10"))
    try:
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=heartbeat, grace_period=4 * heartbeat,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=3),
        )
    except Exception as exc:  # sqlalchemy's OperationalError, ArgumentError, a missing driver module...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"Optuna storage {url}: cannot use it ({type(exc).__name__}: {reason}); check the URL "
                         "and that the database answers") from exc


def load_shared_study(name: str, url: str) -> optuna.Study:
    """A study another process created in the storage at ``url``; an unknown name is a one-line error."""
    storage = make_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError as exc:
        known = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
        raise ValueError(f"no study {name!r} in {url} (studies there: {known}); pass the --study-name "
                         "the leader printed") from exc


def study_name(cfg) -> str:
    return f"kd_imdb-study-{cfg.key()}"


def enqueue(cfg, items: list[dict], study_id: str) -> optuna.Study:
    """Create (or load) the Optuna study and queue every pair with a missing arm that is not queued or running."""
    from dataclasses import asdict

    storage = make_storage(cfg.storage)
    study = optuna.create_study(study_name=study_name(cfg), storage=storage, direction="maximize",
                                load_if_exists=True)
    cells = {str(i): {"configuration": list(it["configuration"]), "seed": it["seed"], "pair_id": it["pair_id"]}
             for i, it in enumerate(sorted(items, key=lambda it: (it["configuration"], it["seed"])))}
    study.set_user_attr("plan", cells)
    study.set_user_attr("config", {k: v for k, v in asdict(cfg).items() if k not in ("workers", "storage")})
    study.set_user_attr("study_run_id", study_id)
    pending = {t.params.get("cell") for t in study.get_trials(deepcopy=False)
               if t.state in (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)}
    missing = {tuple(it["configuration"]) + (it["seed"],) for it in items if it["missing"]}
    for index, cell in cells.items():
        if tuple(cell["configuration"]) + (cell["seed"],) in missing and int(index) not in pending:
            study.enqueue_trial({"cell": int(index)}, user_attrs={"queued": True})
    return study


def _waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


class NotQueued(Exception):
    """A trial the sampler made because another worker took the last queued one: it fails unrun."""


def drain(study: optuna.Study, objective, timeout: float | None = None) -> None:
    """Run queued trials one at a time until the queue is empty and no trial runs anywhere.

    While another worker's trial is running this worker waits: if that worker was killed, its
    heartbeat goes stale, the trial is marked FAILED and (RetryFailedTrialCallback) queued again,
    so it is not lost.
    """
    deadline = time.time() + timeout if timeout else None
    while deadline is None or time.time() < deadline:
        optuna.storages.fail_stale_trials(study)
        if _waiting(study):
            study.optimize(objective, n_trials=1, catch=(NotQueued,))
        elif study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            time.sleep(2)
        else:
            return


def wait_for_workers(study: optuna.Study, take_queued=None, poll_s: float = 5.0) -> None:
    """Wait until no trial is queued or running anywhere. A dead worker's trial goes FAILED when its
    heartbeat is stale and is queued again: for the remote workers, or for ``take_queued()`` here."""
    active = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    while study.get_trials(deepcopy=False, states=active):
        time.sleep(poll_s)
        optuna.storages.fail_stale_trials(study)
        if take_queued is not None and _waiting(study):
            take_queued()


def work(storage_url: str, name: str, tracking_uri: str) -> int:
    """Pop queued pairs and train their missing arms until the queue is empty; returns pairs trained."""
    import mlflow
    import torch

    from kd_imdb import experiment
    from kd_imdb.study import StudyConfig, arm_runs, close_stale_runs, train_missing_arms

    torch.set_num_threads(1)
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.tracking.MlflowClient()
    study = load_shared_study(name, storage_url)
    # The storage names the study run; its experiment is where every run of this worker belongs (on
    # another machine MLflow would otherwise pick "Default", and the leader would not find the arms).
    mlflow.set_experiment(experiment_id=client.get_run(study.user_attrs["study_run_id"]).info.experiment_id)
    cfg = StudyConfig(**study.user_attrs["config"], storage=storage_url, workers=0)
    plan = study.user_attrs["plan"]
    prepared = {}
    trained = 0
    me = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: optuna.Trial) -> float:
        nonlocal trained
        if not trial.user_attrs.get("queued"):
            raise NotQueued()
        cell = trial.suggest_int("cell", 0, len(plan) - 1)
        trial.set_user_attr("worker", me)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if any(t.number < trial.number and t.params.get("cell") == cell for t in running):
            raise optuna.TrialPruned()  # a twin of this pair is alive elsewhere
        item = plan[str(cell)]
        student = cfg.student(tuple(item["configuration"]), item["seed"])
        experiment_id = client.get_run(item["pair_id"]).info.experiment_id
        close_stale_runs(client, experiment_id, item["pair_id"])
        arms = arm_runs(client, experiment_id, item["pair_id"])
        missing = [a for a in cfg.arm_list() if a not in arms or arms[a].info.status != "FINISHED"]
        if missing:
            if not prepared:
                _, tok, splits = experiment.prepare(student, transfer="kd_transfer" in cfg.arm_list())
                prepared.update(tok=tok, splits=splits)
            train_missing_arms(student, item["pair_id"], missing, prepared["tok"], prepared["splits"])
            trained += 1
        return float(len(missing))  # the trial's value: arms trained here (0 = already done)

    drain(study, objective)
    return trained


def join(storage: str, study_name: str) -> int:
    """``kd-imdb study-worker``: train a shared study's queued pairs from another machine."""
    import mlflow

    return work(storage, study_name, mlflow.get_tracking_uri())


def run_shared(cfg, items: list[dict], tracking_uri: str, study_id: str) -> None:
    """Queue the missing pairs, run ``cfg.workers`` local workers on the storage, wait for all pairs."""
    import multiprocessing as mp

    study = enqueue(cfg, items, study_id)
    name = study.study_name
    log.info("Optuna study %s on %s: %d pairs queued; join with: kd-imdb study-worker --storage %s --study-name %s",
             name, cfg.storage, _waiting(study), cfg.storage, name)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=work, args=(cfg.storage, name, tracking_uri)) for _ in range(cfg.workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    # Remote workers may still hold pairs: wait until nothing is queued or running; with local workers,
    # a pair a dead worker left is trained here.
    wait_for_workers(study, (lambda: work(cfg.storage, name, tracking_uri)) if cfg.workers else None)
    from kd_imdb.study import check_workers

    check_workers(procs)
    log.info("all queued pairs are done: %s", json.dumps({s.name: len(study.get_trials(states=(s,)))
                                                          for s in optuna.trial.TrialState}))
