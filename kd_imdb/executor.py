"""One way to run cells of work: local single-thread worker processes, or workers on any number of
machines that pop cells from a queue in Optuna's RDB storage (PostgreSQL, SQLite).

It takes callables and knows neither studies nor sweeps. A study's cell is a seed pair, a sweep's is
a trial; both come here.

Local workers are spawned processes (fresh interpreters: no forked OpenMP state) with one intra-op
thread each: on a small CPU, single-thread workers beat one process using all cores, because tiny
GRU/CNN steps cannot keep several threads busy. They die with the process that started them. The
parent draws one progress bar over the cells; a worker shows what it is doing there (``status``), so
the console holds one line, not one interleaved bar per worker.

The shared queue: one Optuna trial per cell is enqueued (``Study.enqueue_trial``). Optuna makes the pop
atomic, so no cell runs twice; heartbeats mark a killed worker's trial FAILED after a grace period and
``RetryHeartbeatStaleTrialCallback`` queues it again, so nothing is lost. MLflow stays the record of what
finished: a cell whose runs already finished returns at once.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing as mp
import os
import queue as queues
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import mlflow
import optuna
import torch
from sqlalchemy.pool import NullPool
from tqdm.auto import tqdm

from kd_imdb import tracking

# Heartbeats and their retry callback are "experimental" in Optuna: one warning per worker and call,
# about features this module relies on deliberately.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class WorkerLost(RuntimeError):
    """A worker process died (killed, out of memory): a fault, not bad input; a rerun resumes."""


class NotQueued(Exception):
    """A trial the sampler made because another worker took the last queued one: it fails unrun."""


# ----------------------------------------------------------------------------- local processes


def die_with_parent(parent_pid: int) -> None:
    """On Linux, a worker gets SIGKILL when its parent dies (even by SIGKILL): an orphan would otherwise
    finish its cell after a rerun had already redone it, and the cell would count twice.

    The request only covers a parent that dies after it is made. A spawned worker makes it once its
    interpreter has started, seconds after the parent forked it; a parent killed in those seconds left
    an orphan that trained on (session 17: a study stopped two seconds after it began). So a worker
    whose parent is already gone exits here instead."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # re-parented: the parent died before the request
        os._exit(1)


_status: tuple[Any, int] | None = None  # in a local worker with a parent's progress bar: (its queue, our index)


def status_reporter() -> Callable[[str], None] | None:
    """In a local worker whose parent draws a progress bar: a function that shows a line of text as this
    worker's status there. Elsewhere None (the caller draws its own progress)."""
    return _report if _status is not None else None


def cell_done() -> None:
    """In a local worker under a parent's progress bar: count one cell (a seed pair, a trial) as done."""
    if _status is not None:
        _report(None)


def _report(text: str | None) -> None:
    channel, index = _status
    channel.put((index, text))  # None: a cell finished


def _process_main(target: Callable[[int], Any], index: int, tracking_uri: str, parent_pid: int, status=None) -> None:
    global _status
    die_with_parent(parent_pid)
    tracking.stop_on_sigterm()
    torch.set_num_threads(1)
    mlflow.set_tracking_uri(tracking_uri)
    if status is not None:
        _status = (status, index)
        # the parent's bar counts the trials; Optuna's line per trial would break it up
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        target(index)
    except tracking.Stopped:  # its runs are closed KILLED; no traceback for a stop
        sys.exit(tracking.STOPPED_EXIT_STATUS)


def start_workers(target: Callable[[int], Any], n: int, tracking_uri: str, status=None) -> list:
    """Start ``n`` worker processes; worker ``i`` runs ``target(i)`` (``target`` must pickle). With a
    ``status`` queue, workers send (index, text) lines there (``status_reporter``)."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_process_main, args=(target, i, tracking_uri, os.getpid(), status)) for i in range(n)]
    for p in procs:
        p.start()
    return procs


def join_workers(procs: list, kind: str = "worker", strict: bool = True) -> list[int]:
    """Wait for the workers; if any died (a non-zero exit code) raise WorkerLost, or with ``strict``
    false return their exit codes (where the others redo a dead worker's work)."""
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed and strict:
        raise WorkerLost(f"{len(failed)} {kind}(s) died (exit codes {failed}); the work they held is not "
                         "finished: rerun the same command to redo it")
    return failed


def _take_from(queue, handle: Callable[[Any], Any], index: int) -> None:
    while (cell := queue.get()) is not None:
        handle(cell)
        cell_done()


def run_local(handle: Callable[[Any], Any], cells: Sequence[Any], workers: int, tracking_uri: str,
              kind: str = "worker", unit: str = "cell") -> None:
    """Run ``handle(cell)`` for every cell, in order, on ``workers`` processes sharing one queue, under
    one progress bar over the cells that shows each worker's last status line.

    ``handle`` is pickled once per worker, so it can keep what it prepares (the data) between cells.
    """
    if not cells:
        return
    queue = mp.get_context("spawn").Queue()
    n = min(workers, len(cells))
    for cell in [*cells, *[None] * n]:
        queue.put(cell)
    join_workers(run_with_progress(functools.partial(_take_from, queue, handle), n, tracking_uri, len(cells), unit),
                 kind)


def run_with_progress(target: Callable[[int], Any], n: int, tracking_uri: str, total: int, unit: str) -> list:
    """Start ``n`` workers on ``target`` and draw one progress bar over ``total`` cells, with each
    worker's status, until every worker has exited; returns the processes for ``join_workers``."""
    status = mp.get_context("spawn").Queue()
    procs = start_workers(target, n, tracking_uri, status)
    with stopping(procs):
        show_progress(status, procs, total, unit)
    return procs


@contextlib.contextmanager
def stopping(procs: list) -> Iterator[None]:
    """Stopped by SIGTERM while waiting on ``procs``: pass it on, so that each worker closes its own runs
    KILLED, wait for them (``stop_workers``), then stop too."""
    try:
        yield
    except tracking.Stopped:
        stop_workers(procs)
        raise


def stop_workers(procs: list, grace_s: float = 60.0) -> None:
    """SIGTERM each live worker and wait for it to close its runs; SIGKILL one that takes over ``grace_s``."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()


def show_progress(status, procs: list, total: int, unit: str) -> None:
    """Draw one bar over ``total`` cells from the workers' (index, text) lines until every worker has exited."""
    lines: dict[int, str] = {}
    with tqdm(total=total, unit=unit, mininterval=2, dynamic_ncols=True) as bar:
        while True:
            try:
                index, text = status.get(timeout=1)
            except queues.Empty:
                if not any(p.is_alive() for p in procs):
                    return
                continue
            if text is None:
                bar.update(1)
            else:
                lines[index] = text
                bar.set_postfix_str(" | ".join(f"w{i} {t}" for i, t in sorted(lines.items())), refresh=False)


# ----------------------------------------------------------------------------- the shared queue


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats: a killed worker's trial goes FAILED after 4 missed beats and is
    queued again (``KD_IMDB_HEARTBEAT_S``, default 10 s)."""
    heartbeat = int(os.environ.get("KD_IMDB_HEARTBEAT_S", "10"))
    # No connection pool: a worker touches the queue once per seed pair or trial, and pooled idle
    # connections of many workers (each with a heartbeat thread) exhaust a PostgreSQL's max_connections.
    engine = {"poolclass": NullPool} if not url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=4 * heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
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
        known = ", ".join(optuna.get_all_study_names(storage)) or "none"
        raise ValueError(f"no study {name!r} in {url} (studies there: {known}); pass the --study-name "
                         "the leader printed") from exc


def create_queue(name: str, url: str, attrs: dict[str, Any]) -> optuna.Study:
    """Create (or load, on a rerun) the queue ``name`` in the storage at ``url``, holding ``attrs`` (JSON)
    for the workers that join it from other machines."""
    study = optuna.create_study(study_name=name, storage=make_storage(url), direction="maximize", load_if_exists=True)
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return study


def waiting(study: optuna.Study) -> int:
    """Trials queued and not taken yet."""
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def enqueue_cells(study: optuna.Study, cells: list[dict], todo: list[bool]) -> None:
    """Store ``cells`` (JSON) as the plan and queue each cell marked in ``todo`` that is not already
    queued or running (a rerun does not queue a cell twice)."""
    study.set_user_attr("plan", {str(i): cell for i, cell in enumerate(cells)})
    # A queued trial has no params until a worker takes it, hence the cell in its user attributes too.
    pending = {t.params.get("cell", t.user_attrs.get("cell")) for t in study.get_trials(deepcopy=False)
               if t.state in (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)}
    for index, wanted in enumerate(todo):
        if wanted and index not in pending:
            study.enqueue_trial({"cell": index}, user_attrs={"queued": True, "cell": index})


def queue_empty_trials(study: optuna.Study, n_trials: int) -> int:
    """Queue empty trials (the sampler fills in their parameters) until the study holds ``n_trials`` that
    are queued, running or finished; workers only run queued trials, so between them they run exactly
    that many. Returns how many were queued now."""
    counted = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING,
               optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    missing = max(0, n_trials - len(study.get_trials(deepcopy=False, states=counted)))
    for _ in range(missing):
        study.enqueue_trial({}, user_attrs={"queued": True})
    return missing


def drain(study: optuna.Study, objective: Callable[[optuna.Trial], float], timeout: float | None = None) -> None:
    """Run queued trials one at a time until the queue is empty and no trial runs anywhere.

    While another worker's trial is running this worker waits: if that worker was killed, its
    heartbeat goes stale, the trial is marked FAILED and (RetryHeartbeatStaleTrialCallback) queued again,
    so it is not lost. A worker stopped by SIGTERM queues its own trial again at once, with its parameters.
    """
    def stoppable(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except tracking.Stopped:  # stopped, not failed: Optuna marks it FAIL, so queue it again for another worker
            attrs = {k: v for k, v in trial.user_attrs.items() if k != "worker"}
            study.enqueue_trial(trial.params, user_attrs=attrs)
            raise

    deadline = time.time() + timeout if timeout else None
    while deadline is None or time.time() < deadline:
        optuna.storages.fail_stale_trials(study)
        if waiting(study):
            study.optimize(stoppable, n_trials=1, catch=(NotQueued,))
        elif study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            time.sleep(2)
        else:
            return


def pop_cells(study: optuna.Study, handle: Callable[[dict], float]) -> None:
    """Run ``handle(cell)`` for each queued cell of ``study``'s plan until none is queued or running;
    the trial's value is what ``handle`` returns."""
    plan = study.user_attrs["plan"]
    me = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: optuna.Trial) -> float:
        if not trial.user_attrs.get("queued"):
            raise NotQueued()
        index = trial.suggest_int("cell", 0, len(plan) - 1)
        trial.set_user_attr("worker", me)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if any(t.number < trial.number and t.params.get("cell") == index for t in running):
            raise optuna.TrialPruned()  # a twin of this cell is alive elsewhere
        return float(handle(plan[str(index)]))

    drain(study, objective)


def wait_for_workers(study: optuna.Study, take_queued: Callable[[], Any] | None = None, poll_s: float = 5.0) -> None:
    """Wait until no trial is queued or running anywhere. A dead worker's trial goes FAILED when its
    heartbeat is stale and is queued again: for the remote workers, or for ``take_queued()`` here."""
    active = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    while study.get_trials(deepcopy=False, states=active):
        time.sleep(poll_s)
        optuna.storages.fail_stale_trials(study)
        if take_queued is not None and waiting(study):
            take_queued()


def run_shared(study: optuna.Study, join: Callable[..., Any], workers: int, tracking_uri: str,
               kind: str = "worker") -> None:
    """Run ``workers`` local processes on the queue of ``study`` (worker ``i`` runs ``join(i)``) and wait
    until no cell is queued or running anywhere: remote workers may still hold cells, and with local
    workers a cell a dead worker left is taken here (``join()``). Then raise WorkerLost if a local worker
    died."""
    procs = start_workers(join, workers, tracking_uri)
    with stopping(procs):
        for p in procs:
            p.join()
    wait_for_workers(study, join if workers else None)
    join_workers(procs, kind)
