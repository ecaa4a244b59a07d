"""Fault injection: real processes killed with SIGKILL or stopped with SIGTERM mid-work, then the rerun,
with exact counts.

Each case kills one process while it holds unfinished work: the study process, one of its local
workers, a ``study-worker`` on a PostgreSQL Optuna storage, ``soft-labels`` between two cached chunks,
and a sweep mid-trial. Afterwards no run stays RUNNING (the killed one is closed KILLED), every cell
is finished exactly once, and nothing finished before the kill is trained again. SIGTERM differs from
SIGKILL in one way: the stopped processes close their own runs KILLED before they exit (exit status 143),
so nothing waits for a later command or a stale heartbeat.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import BIN, fresh_postgres_database, run_cli
from mlflow.tracking import MlflowClient
from test_study import finished_cells, register_synthetic_soft_labels
from test_sweep import TINY as SWEEP_TINY

from kd_imdb import tracking
from kd_imdb.executor import make_storage  # one NullPool engine per call: no idle connections left open

pytestmark = pytest.mark.slow  # trains models or serves them for tens of seconds: -m 'not slow' skips

GRID = ["--grid", "gru:8,12", "--seeds", "1", "--register", "false", "--epochs", "2", "--max-len", "48",
        "--vocab-size", "1500", "--embedding-dim", "16"]


@pytest.fixture(scope="module")
def env(mlflow_server):
    return {"MLFLOW_TRACKING_URI": mlflow_server, "KD_IMDB_HEARTBEAT_S": "1"}


@pytest.fixture(scope="module")
def labels(env, tmp_path_factory):
    return register_synthetic_soft_labels({**env, "MLFLOW_EXPERIMENT_NAME": "faults"}, tmp_path_factory.mktemp("labels"))


def popen(args: list[str], env: dict, cwd: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "kd-imdb"), *args], env={**os.environ, **env, "PATH": f"{BIN}:{os.environ['PATH']}"},
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def wait_for(what: str, probe, proc: subprocess.Popen, timeout: float = 300):
    """Poll ``probe`` until it returns something truthy; fail if ``proc`` exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = probe()
        if found:
            return found
        assert proc.poll() is None, f"exited before {what}: {proc.stdout.read()[-2000:]}"
        time.sleep(0.2)
    pytest.fail(f"no {what} in {timeout} s")


def arm_runs_of(client: MlflowClient, experiment: str, status: str = "") -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    query = "tags.`kd_imdb.arm` != ''" + (f" and attributes.status = '{status}'" if status else "")
    return client.search_runs([exp.experiment_id], query)


def assert_each_cell_once(client: MlflowClient, experiment: str, study_id: str, cells: int, killed: int) -> None:
    exp = client.get_experiment_by_name(experiment).experiment_id
    counted = finished_cells(client, exp, study_id)
    assert len(counted) == cells and set(counted.values()) == {1}, counted
    statuses = Counter(r.info.status for r in arm_runs_of(client, experiment))
    assert statuses == Counter({"FINISHED": cells, "KILLED": killed}), statuses


def test_sigkill_of_the_study_process(env, labels, tmp_path):
    env = {**env, "MLFLOW_EXPERIMENT_NAME": "fault-study"}
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    args = ["study", "--soft-labels-run-id", labels, "--workers", "1", *GRID]
    proc = popen(args, env, tmp_path, start_new_session=True)
    # kill while an arm runs (after one finished): between seed pairs no arm run is open
    wait_for("a finished arm and a running one", lambda: arm_runs_of(client, "fault-study", "FINISHED")
             and arm_runs_of(client, "fault-study", "RUNNING"), proc)
    os.kill(proc.pid, signal.SIGKILL)  # the study process only: its workers must die with it
    proc.wait()
    time.sleep(2)
    before = {r.info.run_id for r in arm_runs_of(client, "fault-study", "FINISHED")}
    assert 1 <= len(before) < 4
    rerun = run_cli(*args, env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert_each_cell_once(client, "fault-study", rerun.stdout.strip().split()[-1], cells=4, killed=1)
    assert before <= {r.info.run_id for r in arm_runs_of(client, "fault-study", "FINISHED")}  # none retrained


def test_sigkill_of_one_local_worker(env, labels, tmp_path):
    env = {**env, "MLFLOW_EXPERIMENT_NAME": "fault-worker"}
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    args = ["study", "--soft-labels-run-id", labels, "--workers", "2", *GRID]
    proc = popen(args, env, tmp_path)
    # An arm run a worker opened (its owner pid is the worker's, not the study process's).
    running = wait_for("a worker's running arm", lambda: [r for r in arm_runs_of(client, "fault-worker", "RUNNING")
                                                         if r.data.tags["kd_imdb.pid"] != str(proc.pid)], proc)
    victim = int(running[0].data.tags["kd_imdb.pid"])
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    # The other worker finishes the queue; the study then ends with one line, status 1, and its run FAILED.
    assert proc.returncode == 1, out[-2000:]
    assert "error: 1 study worker(s) died (exit codes [-9])" in out and "Traceback" not in out
    first = client.search_runs([client.get_experiment_by_name("fault-worker").experiment_id],
                               "tags.`kd_imdb.stage` = 'study'")
    assert [r.info.status for r in first] == ["FAILED"]
    rerun = run_cli(*args, env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "1 seed pairs to train, 1 already finished" in rerun.stderr
    assert_each_cell_once(client, "fault-worker", rerun.stdout.strip().split()[-1], cells=4, killed=1)
    killed = arm_runs_of(client, "fault-worker", "KILLED")
    assert [r.data.tags["kd_imdb.pid"] for r in killed] == [str(victim)]
    # closed by the next command, with the pair run the victim held (which the rerun then finished)
    closed = re.search(r"closed 2 run\(s\) KILLED whose process on \S+ is gone: (\S+), (\S+)", rerun.stderr)
    assert closed and killed[0].info.run_id in closed.groups(), rerun.stderr[-2000:]


def test_sigterm_of_the_study_process_closes_every_run_killed(env, labels, tmp_path):
    env = {**env, "MLFLOW_EXPERIMENT_NAME": "stop-study"}
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    args = ["study", "--soft-labels-run-id", labels, "--workers", "2", *GRID]
    proc = popen(args, env, tmp_path)
    wait_for("a finished arm and a running one", lambda: arm_runs_of(client, "stop-study", "FINISHED")
             and arm_runs_of(client, "stop-study", "RUNNING"), proc)
    proc.send_signal(signal.SIGTERM)  # the study process only: it passes the stop on to its two workers
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-2000:]
    assert "stopped by SIGTERM: its open runs are closed KILLED" in out and "Traceback" not in out
    # At once, with no later command: the study, configuration, pair and arm runs are all closed, none FAILED.
    runs = client.search_runs([client.get_experiment_by_name("stop-study").experiment_id])
    statuses = Counter(r.info.status for r in runs)
    assert statuses["RUNNING"] == statuses["FAILED"] == 0 and statuses["KILLED"] >= 2, statuses
    study = [r for r in runs if r.data.tags.get("kd_imdb.stage") == "study"]
    assert [r.info.status for r in study] == ["KILLED"]
    killed = arm_runs_of(client, "stop-study", "KILLED")
    workers = {int(r.data.tags["kd_imdb.pid"]) for r in killed}
    assert killed and proc.pid not in workers  # closed by the workers themselves
    deadline = time.time() + 30
    while any(tracking.process_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(tracking.process_alive(pid) for pid in workers)
    before = {r.info.run_id for r in arm_runs_of(client, "stop-study", "FINISHED")}
    rerun = run_cli(*args, env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "whose process on" not in rerun.stderr  # nothing was left for it to close
    assert_each_cell_once(client, "stop-study", rerun.stdout.strip().split()[-1], cells=4, killed=len(killed))
    assert before <= {r.info.run_id for r in arm_runs_of(client, "stop-study", "FINISHED")}  # none retrained


def leader_and_busy_worker(env: dict, labels: str, tmp_path: Path, database: str) -> tuple:
    """A leader that only queues (0 local workers) on a fresh PostgreSQL database, and a ``study-worker``
    A once it trains an arm: (leader, A, storage URL, study name, the workers' env)."""
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    storage = fresh_postgres_database(database)
    leader = popen(["study", "--soft-labels-run-id", labels, "--workers", "0", "--storage", storage, *GRID], env, tmp_path)
    name = wait_for("a queued study", lambda: [s.study_name for s in optuna.get_all_study_summaries(make_storage(storage))
                                               if s.n_trials >= 2], leader)[0]
    worker_env = {k: v for k, v in env.items() if k != "MLFLOW_EXPERIMENT_NAME"}
    a = popen(["study-worker", "--storage", storage, "--study-name", name], worker_env, tmp_path)
    wait_for("worker A's running arm", lambda: [r for r in arm_runs_of(client, env["MLFLOW_EXPERIMENT_NAME"], "RUNNING")
                                                if r.data.tags["kd_imdb.pid"] == str(a.pid)], a)
    return leader, a, storage, name, worker_env


def finish_with_worker_b(client: MlflowClient, leader, storage: str, name: str, worker_env: dict, tmp_path: Path) -> None:
    """A second ``study-worker`` B drains the queue; the leader ends; every cell is finished once, one arm KILLED."""
    b = popen(["study-worker", "--storage", storage, "--study-name", name], worker_env, tmp_path)
    out, _ = b.communicate(timeout=600)
    assert b.returncode == 0, out[-2000:]
    out, _ = leader.communicate(timeout=300)
    assert leader.returncode == 0, out[-2000:]
    experiment = client.get_run(out.strip().split()[-1]).info.experiment_id
    assert_each_cell_once(client, client.get_experiment(experiment).name, out.strip().split()[-1], cells=4, killed=1)


def test_sigterm_of_a_study_worker_queues_its_pair_again_at_once(env, labels, tmp_path):
    """A ``study-worker`` on another machine stopped by SIGTERM mid-pair closes its arm run KILLED and
    puts its pair back on the PostgreSQL queue itself: the next worker takes it without waiting for a
    stale heartbeat."""
    env = {**env, "MLFLOW_EXPERIMENT_NAME": "stop-remote", "KD_IMDB_HEARTBEAT_S": "600"}  # a stale beat: never
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    leader, a, storage, name, worker_env = leader_and_busy_worker(env, labels, tmp_path, "kd_imdb_test_stop")
    a.send_signal(signal.SIGTERM)
    out, _ = a.communicate(timeout=120)
    assert a.returncode == 143, out[-2000:]  # (Optuna logs the stopped trial as failed, with its traceback)
    assert out.strip().splitlines()[-1] == "stopped by SIGTERM: its open runs are closed KILLED; rerun the same command to go on"
    study = optuna.load_study(study_name=name, storage=make_storage(storage))
    states = Counter(t.state.name for t in study.trials)
    assert states["FAIL"] == 1 and states["RUNNING"] == 0 and states["WAITING"] >= 1, states  # A's pair, queued again
    assert [r.data.tags["kd_imdb.pid"] for r in arm_runs_of(client, "stop-remote", "KILLED")] == [str(a.pid)]
    finish_with_worker_b(client, leader, storage, name, worker_env, tmp_path)


def test_sigkill_of_a_study_worker_on_postgres(env, labels, tmp_path):
    """The leader only queues (0 local workers); worker A is killed mid-pair; worker B, started after,
    waits until A's heartbeat goes stale, then retrains A's pair (closing A's arm run KILLED) and the rest."""
    env = {**env, "MLFLOW_EXPERIMENT_NAME": "fault-remote"}
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    leader, a, storage, name, worker_env = leader_and_busy_worker(env, labels, tmp_path, "kd_imdb_test_faults")
    a.kill()
    a.wait()
    finish_with_worker_b(client, leader, storage, name, worker_env, tmp_path)
    study = optuna.load_study(study_name=name, storage=make_storage(storage))
    states = Counter(t.state.name for t in study.trials)
    assert states["FAIL"] == 1 and states["RUNNING"] == 0 and states["WAITING"] == 0  # A's pair, failed then retried
    trained = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value > 0]
    assert sorted(t.params["cell"] for t in trained) == [0, 1]  # every pair trained once to the end


def test_sigkill_of_soft_labels_between_chunks(env, tmp_path):
    env = {**env, "MLFLOW_EXPERIMENT_NAME": "fault-labels"}
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    teacher = run_cli("teacher", "--model", "tiny", "--max-len", "32", "--epochs", "1", "--train-size", "64",
                      "--batch-size", "16", "--checkpoint-dir", str(tmp_path / "teacher"), env=env, cwd=tmp_path)
    assert teacher.returncode == 0, teacher.stderr[-2000:]
    teacher_id = teacher.stdout.strip().split()[-1]
    # Batches of one review, chunks of 20: the 900 train reviews (validation and test come from the
    # teacher run) take 45 chunks and a few seconds, so the kill lands between two chunks.
    args = ["soft-labels", "--teacher-run-id", teacher_id, "--chunk-size", "20", "--batch-size", "1"]
    cache = tmp_path / "cache"
    proc = popen([*args, "--cache-dir", str(cache)], env, tmp_path)
    wait_for("two cached chunks", lambda: len(list(cache.glob("*/chunk-*.parquet"))) >= 2, proc)
    proc.kill()
    proc.wait()
    cached = len(list(cache.glob("*/chunk-*.parquet")))
    rerun = run_cli(*args, "--cache-dir", str(cache), env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    resumed = client.get_run(rerun.stdout.strip().split()[-1])
    assert resumed.data.metrics["label_chunks"] == 45
    assert 2 <= resumed.data.metrics["label_chunks_from_cache"] == cached < 45  # killed part-way, resumed there
    statuses = Counter(r.info.status for r in client.search_runs(
        [client.get_experiment_by_name("fault-labels").experiment_id], "tags.`kd_imdb.stage` = 'soft_labels'"))
    assert statuses == Counter({"FINISHED": 1, "KILLED": 1})
    # The resumed labels are the labels of an uninterrupted job, to the last bit.
    fresh = run_cli(*args, "--cache-dir", str(tmp_path / "fresh"), env=env, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    frames = [pd.read_parquet(client.download_artifacts(r, "soft_labels/logits.parquet", str(tmp_path / r)))
              for r in (resumed.info.run_id, fresh.stdout.strip().split()[-1])]
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_sigkill_of_a_sweep_mid_trial(env, labels, tmp_path):
    env = {**env, "MLFLOW_EXPERIMENT_NAME": "fault-sweep"}
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    storage = f"sqlite:///{tmp_path}/optuna.db"
    args = ["sweep", "--soft-labels-run-id", labels, "--n-trials", "3", "--storage", storage, "--study-name", "killed",
            *SWEEP_TINY, "--epochs", "3"]
    proc = popen(args, env, tmp_path)

    def trial_runs(status: str = "") -> list:
        exp = client.get_experiment_by_name("fault-sweep")
        query = "tags.`optuna.study` = 'killed'" + (f" and attributes.status = '{status}'" if status else "")
        return client.search_runs([exp.experiment_id], query) if exp else []

    # Kill once the first trial's MLflow run is open: its first of three epochs is still training.
    wait_for("a running trial", lambda: trial_runs("RUNNING"), proc)
    proc.kill()
    proc.wait()
    # A new sweep invocation on the same storage finishes the job: the dead trial goes FAILED (its
    # heartbeat stops) and is queued again, so 3 trials still finish.
    rerun = run_cli(*args, env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    study = optuna.load_study(study_name="killed", storage=make_storage(storage))
    states = Counter(t.state.name for t in study.trials)
    assert states["COMPLETE"] + states["PRUNED"] == 3 and states["FAIL"] == 1 and states["RUNNING"] == 0
    killed = trial_runs("KILLED")
    assert len(killed) == 1 and int(killed[0].data.tags["kd_imdb.pid"]) == proc.pid
    parents = {r.data.tags["mlflow.parentRunId"] for r in trial_runs()}
    assert {client.get_run(p).info.status for p in parents} == {"KILLED", "FINISHED"}  # the killed sweep, the rerun
