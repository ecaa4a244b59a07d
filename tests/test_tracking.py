"""kd_imdb.tracking: a run whose process was killed does not stay RUNNING."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import mlflow
import pandas as pd
import pytest
from conftest import BIN, run_cli
from mlflow.tracking import MlflowClient

from kd_imdb import tracking
from kd_imdb.data import SAMPLE_PATH, ids_hash, load_data
from kd_imdb.soft_labels import write_logits


def test_a_killed_run_is_closed_killed_by_the_next_command(local_store, tmp_path):
    client = MlflowClient(local_store)
    env = {**os.environ, "MLFLOW_TRACKING_URI": local_store, "PATH": f"{BIN}:{os.environ['PATH']}"}
    with open(tmp_path / "victim.log", "w") as victim_log:  # the child keeps its own copy of the handle
        victim = subprocess.Popen([str(BIN / "kd-imdb"), "linear-teacher", "--kind", "nbsvm", "--max-ngram", "3",
                                   "--c-grid", "0.01,0.03,0.1,0.3,1,3,10,30"], cwd=tmp_path, env=env,
                                  stdout=subprocess.DEVNULL, stderr=victim_log)
    deadline, running = time.time() + 120, []
    while not running and time.time() < deadline:
        time.sleep(0.5)
        experiments = [e.experiment_id for e in client.search_experiments()]
        running = client.search_runs(experiments, "attributes.status = 'RUNNING'") if experiments else []
    assert victim.poll() is None and len(running) == 1, (tmp_path / "victim.log").read_text()[-3000:]
    run = running[0]
    assert run.data.tags["kd_imdb.pid"] == str(victim.pid) and run.data.tags["kd_imdb.host"] == socket.gethostname()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # nobody closed it

    data = load_data("sample")
    logits = pd.DataFrame({"id": data.frame["id"].unique(), "logit_0": 0.0, "logit_1": 1.0})
    write_logits(logits, {"data_hash": data.content_hash}, tmp_path / "l.parquet")
    proc = run_cli("soft-labels", "--logits-file", str(tmp_path / "l.parquet"), cwd=tmp_path,
                   env={"MLFLOW_TRACKING_URI": local_store})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    assert f"closed 1 run(s) KILLED whose process on {socket.gethostname()} is gone: {run.info.run_id}" in proc.stderr
    assert client.get_run(proc.stdout.strip().split()[-1]).info.status == "FINISHED"  # its own run is not touched


def test_a_stopped_run_ends_killed_and_a_failed_one_failed(local_store):
    """Ctrl-C or SIGTERM (``tracking.Stopped``) passes through every open run and ends each KILLED,
    innermost first; any other exception still ends its run FAILED."""
    client = MlflowClient(local_store)
    with pytest.raises(tracking.Stopped):
        with tracking.start_run(run_name="outer") as outer, tracking.start_run(run_name="inner") as inner:
            raise tracking.Stopped("stopped by signal 15")
    with pytest.raises(RuntimeError):
        with tracking.start_run(run_name="failed") as failed:
            raise RuntimeError("boom")
    assert [client.get_run(r.info.run_id).info.status for r in (outer, inner, failed)] == ["KILLED", "KILLED", "FAILED"]
    assert client.get_run(inner.info.run_id).data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert mlflow.active_run() is None


def test_sigterm_handling_is_set_only_from_the_main_thread():
    """``signal.signal`` raises ValueError outside the main thread: a command run in-process from a
    test runner's thread must still work, and leave SIGTERM's handler as it was."""
    before = signal.getsignal(signal.SIGTERM)
    errors = []

    def call():
        try:
            tracking.stop_on_sigterm()
        except Exception as exc:  # noqa: BLE001 - the test reports what was raised
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    assert errors == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_every_command_logs_into_one_described_experiment(local_store, tmp_path):
    data = load_data("sample")
    logits = pd.DataFrame({"id": data.frame["id"].unique(), "logit_0": 0.0, "logit_1": 1.0})
    write_logits(logits, {"data_hash": data.content_hash}, tmp_path / "l.parquet")
    env = {"MLFLOW_TRACKING_URI": local_store, "MLFLOW_EXPERIMENT_NAME": "", "MLFLOW_EXPERIMENT_ID": ""}
    client = MlflowClient(local_store)
    for args, name in (([], "kd_imdb"), (["--experiment-name", "mine"], "mine")):
        proc = run_cli(*args, "soft-labels", "--logits-file", str(tmp_path / "l.parquet"), cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        run = client.get_run(proc.stdout.strip().split()[-1])
        experiment = client.get_experiment(run.info.experiment_id)
        assert experiment.name == name
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        assert experiment.tags["mlflow.note.content"].startswith("Knowledge distillation of a transformer teacher")
    # a user's own description stays
    client.set_experiment_tag(experiment.experiment_id, "mlflow.note.content", "my notes")
    proc = run_cli("--experiment-name", "mine", "soft-labels", "--logits-file", str(tmp_path / "l.parquet"),
                   cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert client.get_experiment(experiment.experiment_id).tags["mlflow.note.content"] == "my notes"


def test_splits_are_logged_as_datasets_named_by_their_ids(local_store):
    mlflow.set_tracking_uri(local_store)
    splits = {"train": ["r3", "r1", "r2"], "test": ["t1"]}
    with mlflow.start_run() as run:
        tracking.log_datasets("sample", splits, "abc123")
    inputs = MlflowClient(local_store).get_run(run.info.run_id).inputs.dataset_inputs
    by_name = {i.dataset.name: i for i in inputs}
    assert set(by_name) == {"imdb-train", "imdb-test"}
    train = by_name["imdb-train"]
    assert train.dataset.digest == ids_hash(["r1", "r2", "r3"])  # row order does not matter
    assert str(SAMPLE_PATH) in train.dataset.source
    assert {t.key: t.value for t in train.tags} == {"mlflow.data.context": "train", "reviews": "3",
                                                    "kd_imdb.data_hash": "abc123"}
    assert "stanfordnlp/imdb" in tracking.dataset_source("stanfordnlp/imdb").to_json()


def test_long_runs_log_system_metrics_unless_switched_off(local_store, tmp_path):
    client = MlflowClient(local_store)
    seen = {}
    for switch in ("1", "0"):
        # sample every second (MLflow's default is 10 s) so that a linear teacher on the sample gets samples
        env = {"MLFLOW_TRACKING_URI": local_store, "KD_IMDB_SYSTEM_METRICS": switch,
               "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1", "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING": "1"}
        proc = run_cli("linear-teacher", "--kind", "nbsvm", "--max-ngram", "3", "--c-grid", "0.01,0.1,1,10",
                       cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        metrics = client.get_run(proc.stdout.strip().split()[-1]).data.metrics
        seen[switch] = sorted(k for k in metrics if k.startswith("system/"))
    assert "system/cpu_utilization_percentage" in seen["1"] and "system/system_memory_usage_megabytes" in seen["1"]
    assert seen["0"] == []
