"""kd_imdb.cli: input that can only be checked against the tracking server or the storage is checked
before the first run opens; every such error is one ``error:`` line, exit 2, and leaves no run behind."""
from __future__ import annotations

import pandas as pd
import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient

from kd_imdb.data import load_data
from kd_imdb.soft_labels import write_logits

UNREACHABLE_PG = "postgresql+psycopg2://postgres@127.0.0.1:1/test"  # nothing listens on port 1


def error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


@pytest.fixture
def labels(local_store, tmp_path) -> str:
    """A soft-labels run (registered constant logits on the sample): the only run in the store."""
    data = load_data("sample")
    write_logits(pd.DataFrame({"id": data.frame["id"].unique(), "logit_0": 0.0, "logit_1": 1.0}),
                 {"data_hash": data.content_hash}, tmp_path / "l.parquet")
    proc = run_cli("soft-labels", "--logits-file", str(tmp_path / "l.parquet"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().split()[-1]


def runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize("args, message", [
    (["--grid", "lstm:16"], "grid 'lstm:16': lstm:16: arch must be one of"),
    (["--grid", "gru:0"], "grid 'gru:0': gru:0: hidden must lie in [1, 4096]"),
    (["--grid", "gru:8", "--teachers", "linear=nope"], "teacher 'linear' soft-labels run 'nope' not found"),
    (["--grid", "gru:8", "--storage", UNREACHABLE_PG], f"Optuna storage {UNREACHABLE_PG}: cannot use it (OperationalError"),
])
def test_study_refuses_bad_input_before_any_run(labels, local_store, tmp_path, args, message):
    proc = run_cli("study", "--soft-labels-run-id", labels, "--seeds", "1", *args, cwd=tmp_path)
    assert message in error_line(proc)
    assert [r.info.run_id for r in runs(local_store)] == [labels]


def test_missing_runs_are_named(labels, local_store, tmp_path):
    proc = run_cli("study", "--soft-labels-run-id", "nope", "--grid", "gru:8", cwd=tmp_path)
    assert "soft-labels run 'nope' not found" in error_line(proc)
    proc = run_cli("sweep", "--soft-labels-run-id", "nope", "--storage", f"sqlite:///{tmp_path}/o.db", cwd=tmp_path)
    assert "soft-labels run 'nope' not found" in error_line(proc)
    proc = run_cli("soft-labels", "--teacher-run-id", "nope", cwd=tmp_path)
    assert "teacher run 'nope' not found" in error_line(proc)
    proc = run_cli("ensemble-labels", "--runs", f"{labels},nope", cwd=tmp_path)
    assert "soft-labels run 'nope' not found" in error_line(proc)
    proc = run_cli("confirm", "--sweep-run-id", labels, cwd=tmp_path)
    assert f"run {labels} is not a finished sweep" in error_line(proc)
    assert [r.info.run_id for r in runs(local_store)] == [labels]


@pytest.mark.parametrize("command", ["study-worker", "sweep-worker"])
def test_worker_with_an_unknown_study_name(local_store, tmp_path, command):
    import optuna

    storage = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(study_name="the-real-one", storage=storage)
    proc = run_cli(command, "--storage", storage, "--study-name", "nope", cwd=tmp_path)
    line = error_line(proc)
    assert f"no study 'nope' in {storage} (studies there: the-real-one)" in line
    proc = run_cli(command, "--storage", UNREACHABLE_PG, "--study-name", "nope", cwd=tmp_path)
    assert "cannot use it (OperationalError" in error_line(proc)
