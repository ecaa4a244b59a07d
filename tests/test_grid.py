"""Workers sharing one study grid through Optuna's storage on PostgreSQL, with MLflow's backend store on
PostgreSQL too: the multi-machine set-up, on one machine."""
from __future__ import annotations

import os
import subprocess
import time

import optuna
import pytest
from conftest import BIN, fresh_postgres_database, start_mlflow_server
from mlflow.tracking import MlflowClient
from test_study import SMALL, finished_cells, register_synthetic_soft_labels

from kd_imdb.executor import make_storage  # one NullPool engine per call: no idle connections left open

pytestmark = pytest.mark.slow  # trains models or serves them for tens of seconds: -m 'not slow' skips

GRID = ["--grid", "gru:8,12;cnn:8", "--seeds", "2", "--register", "false", *SMALL]


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory):
    """An mlflow server whose backend store is a fresh PostgreSQL database."""
    backend = fresh_postgres_database("kd_imdb_test_mlflow")
    proc, uri = start_mlflow_server(tmp_path_factory.mktemp("pg_server"), backend)
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pg_soft_labels(postgres_server, tmp_path_factory):
    return register_synthetic_soft_labels({"MLFLOW_TRACKING_URI": postgres_server, "MLFLOW_EXPERIMENT_NAME": "grid"},
                                          tmp_path_factory.mktemp("labels"))


def test_two_workers_share_the_grid_on_postgres(postgres_server, pg_soft_labels, tmp_path):
    storage = fresh_postgres_database("kd_imdb_test_optuna")
    env = {**os.environ, "MLFLOW_TRACKING_URI": postgres_server, "MLFLOW_EXPERIMENT_NAME": "grid",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    # The study command plans and queues the grid and waits (0 local workers); two workers do the work.
    planner = subprocess.Popen([str(BIN / "kd-imdb"), "study", "--soft-labels-run-id", pg_soft_labels,
                                "--storage", storage, "--workers", "0", *GRID],
                               env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    names = []
    while time.time() < deadline and not names:
        assert planner.poll() is None, planner.stderr.read()[-2000:]
        try:
            names = [s.study_name for s in optuna.get_all_study_summaries(make_storage(storage)) if s.n_trials >= 6]
        except Exception:
            pass
        time.sleep(1)
    assert names, "the study command did not queue the grid"
    # Workers on other machines know only the storage and the study name: no experiment name.
    worker_env = {k: v for k, v in env.items() if k != "MLFLOW_EXPERIMENT_NAME"}
    workers = [subprocess.Popen([str(BIN / "kd-imdb"), "study-worker", "--storage", storage, "--study-name", names[0]],
                                env=worker_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    for w in workers:
        out, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-2000:]
    out, err = planner.communicate(timeout=300)
    assert planner.returncode == 0, err[-2000:]
    study_id = out.strip().split()[-1]

    client = MlflowClient(postgres_server)
    experiment_id = client.get_experiment_by_name("grid").experiment_id
    cells = finished_cells(client, experiment_id, study_id)
    assert len(cells) == 12 and set(cells.values()) == {1}  # 3 students x 2 seeds x 2 arms, each once
    study = optuna.load_study(study_name=names[0], storage=make_storage(storage))
    trained = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value > 0]
    assert sorted(t.params["cell"] for t in trained) == list(range(6))  # every pair trained exactly once
    assert len({t.user_attrs["worker"] for t in trained}) == 2  # and both workers took part
    assert "results/results.md" in {f.path for f in client.list_artifacts(study_id, "results")}
    default = client.get_experiment_by_name("Default")
    assert client.search_runs([default.experiment_id]) == []  # nothing went astray
    # Rerun: every pair is found finished, none is trained again.
    again = subprocess.run([str(BIN / "kd-imdb"), "study", "--soft-labels-run-id", pg_soft_labels, "--storage", storage,
                            "--workers", "0", *GRID], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 seed pairs to train, 6 already finished" in again.stderr
    assert finished_cells(client, experiment_id, study_id) == cells


def test_a_remote_sweep_worker_logs_into_the_sweeps_experiment(postgres_server, pg_soft_labels, tmp_path):
    from test_sweep import TINY

    storage = fresh_postgres_database("kd_imdb_test_sweep")
    env = {**os.environ, "MLFLOW_TRACKING_URI": postgres_server, "MLFLOW_EXPERIMENT_NAME": "grid",
           "PATH": f"{BIN}:{os.environ['PATH']}", "KD_IMDB_HEARTBEAT_S": "1"}
    # The leader only queues and waits (0 local workers), so the remote worker runs every trial: a
    # leader that trained too could finish all six before the worker has imported torch.
    leader = subprocess.Popen([str(BIN / "kd-imdb"), "sweep", "--soft-labels-run-id", pg_soft_labels, "--n-trials", "6",
                               "--workers", "0", "--storage", storage, "--study-name", "remote", *TINY],
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    queued = lambda: [s.study_name for s in optuna.get_all_study_summaries(make_storage(storage))]  # noqa: E731
    while time.time() < deadline and "remote" not in queued():
        assert leader.poll() is None, leader.stderr.read()[-2000:]
        time.sleep(0.5)
    worker_env = {k: v for k, v in env.items() if k != "MLFLOW_EXPERIMENT_NAME"}
    worker = subprocess.Popen([str(BIN / "kd-imdb"), "sweep-worker", "--storage", storage, "--study-name", "remote"],
                              env=worker_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, worker_err = worker.communicate(timeout=600)
    assert worker.returncode == 0, worker_err[-2000:]
    out, err = leader.communicate(timeout=600)
    assert leader.returncode == 0, err[-2000:]
    parent = out.strip().split()[-1]
    client = MlflowClient(postgres_server)
    experiment_id = client.get_experiment_by_name("grid").experiment_id
    trials = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(int(r.data.tags["optuna.trial"]) for r in trials) == list(range(6))  # each trial once, all nested
    study = optuna.load_study(study_name="remote", storage=make_storage(storage))
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 6 and {t.user_attrs["worker"].split(":")[1] for t in finished} == {str(worker.pid)}
    default = client.get_experiment_by_name("Default")
    assert client.search_runs([default.experiment_id]) == []


def test_the_documented_postgresql_urls_work(tmp_path):
    """README's forms: ``mlflow server --backend-store-uri postgresql://...`` and ``--storage postgresql://...``
    (SQLAlchemy 2 reads a bare postgresql:// as psycopg 3, which the postgres extra installs)."""
    from conftest import run_cli

    backend = fresh_postgres_database("kd_imdb_test_plain_url").replace("postgresql+psycopg2://", "postgresql://")
    proc, uri = start_mlflow_server(tmp_path, backend)  # raises if the server cannot start
    try:
        assert MlflowClient(uri).search_experiments()[0].name == "Default"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    storage = fresh_postgres_database("kd_imdb_test_plain_optuna").replace("postgresql+psycopg2://", "postgresql://")
    optuna.create_study(study_name="leader", storage=make_storage(storage))
    for command in ("study-worker", "sweep-worker"):  # the storage answers; only the study name is wrong
        out = run_cli(command, "--storage", storage, "--study-name", "nope", cwd=tmp_path,
                      env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
        assert out.returncode == 2 and f"no study 'nope' in {storage} (studies there: leader)" in out.stderr, out.stderr[-2000:]
