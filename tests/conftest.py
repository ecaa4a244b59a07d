"""Shared fixtures: a real ``mlflow server`` (SQLite store) on 127.0.0.1, and a local SQLite store."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
# Two xdist workers on two cores, each starting CLI processes: a second intra-op thread per process only
# fights the others for a core (tiny models; set before anything imports torch, and inherited by the CLI).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def mlflow_environment_restored():
    """``mlflow.set_experiment`` and ``set_tracking_uri`` write ``os.environ`` (for child processes) and
    MLflow's module state: an in-process test's store must not leak into a later test (MLFLOW_EXPERIMENT_ID,
    or the fluent API's active experiment, naming an experiment of a store that is gone: "No Experiment
    with id=1 exists" in whichever file the worker ran next)."""
    from mlflow.tracking import fluent

    before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    fluent._active_experiment_id = None  # no public reset; set_experiment is the only writer
    for key in [k for k in os.environ if k.startswith("MLFLOW_") and k not in before]:
        del os.environ[key]
    os.environ.update(before)


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``gpu`` need CUDA: without it they are skipped, with the reason shown (-ra)."""
    import torch

    if not torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PG = "postgresql://postgres@127.0.0.1:5432"  # psycopg2 below; SQLAlchemy URLs name the driver


def fresh_postgres_database(name: str) -> str:
    """Drop and create database ``name`` on the local PostgreSQL (trust auth); return its URL."""
    import psycopg2

    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"


def start_mlflow_server(root: Path, backend: str):
    """Start ``mlflow server`` on a free port with ``backend``; return (process, uri) once it answers."""
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend, "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )
    uri = f"http://127.0.0.1:{port}"
    wait_until_it_answers(f"{uri}/health", proc, root / "server.log")
    return proc, uri


def wait_until_it_answers(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Poll ``url`` until it answers 200; raise with the end of ``log`` if ``proc`` exits or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server with a SQLite backend and local artifacts; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow_server")
    proc, uri = start_mlflow_server(root, f"sqlite:///{root}/mlflow.db")
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def db_template(tmp_path_factory) -> Path:
    """An initialised SQLite tracking store: copying it saves each fresh store MLflow's schema
    migration (seconds per store)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("db_template") / "mlflow.db"
    cwd = os.getcwd()
    os.chdir(path.parent)  # the Default experiment's artifact root is ./mlruns of the cwd at creation: not the repo's
    try:
        MlflowClient(f"sqlite:///{path}").search_experiments()
    finally:
        os.chdir(cwd)
    return path


@pytest.fixture
def local_store(tmp_path, monkeypatch, db_template):
    """A fresh local SQLite tracking store in a temp dir (the embedded default), as cwd."""
    import shutil

    import mlflow

    monkeypatch.chdir(tmp_path)
    shutil.copy(db_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600,
            stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run ``kd-imdb`` in a subprocess (real exit codes and stderr), ``stdin`` on its standard input."""
    full_env = {**os.environ, **(env or {}), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    return subprocess.run([str(BIN / "kd-imdb"), *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout, input=stdin)
