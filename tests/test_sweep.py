"""The temperature sweep: Optuna storage shared by two workers, nested MLflow runs, pruning, plots, and
the confirmation on fresh seed pairs (a sweep killed mid-trial: test_faults.py)."""
from __future__ import annotations

import json
import os

import optuna
import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient
from test_study import register_synthetic_soft_labels

pytestmark = pytest.mark.slow  # trains models or serves them for tens of seconds: -m 'not slow' skips

TINY = ["--arch", "gru", "--hidden", "8", "--epochs", "2", "--max-len", "48", "--vocab-size", "1500",
        "--embedding-dim", "16"]


@pytest.fixture(scope="module")
def env(mlflow_server):
    return {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_EXPERIMENT_NAME": "sweep-tests", "KD_IMDB_HEARTBEAT_S": "1"}


@pytest.fixture(scope="module")
def labels(env, tmp_path_factory):
    return register_synthetic_soft_labels(env, tmp_path_factory.mktemp("sweep_labels"))


@pytest.fixture(scope="module")
def sweep(env, labels, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    storage = f"sqlite:///{tmp}/optuna.db"
    proc = run_cli("sweep", "--soft-labels-run-id", labels, "--n-trials", "5", "--workers", "2", "--storage", storage,
                   "--study-name", "t-sweep", *TINY, env=env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"storage": storage, "run_id": proc.stdout.strip().split()[-1], "tmp": tmp,
            "client": MlflowClient(env["MLFLOW_TRACKING_URI"])}


def test_two_workers_run_exactly_the_requested_trials(sweep):
    study = optuna.load_study(study_name="t-sweep", storage=sweep["storage"])
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 5
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both workers took trials
    assert all(1.0 <= t.params["temperature"] <= 20.0 for t in finished)
    # each worker samples with its own seed: no temperature is tried twice
    assert len({t.params["temperature"] for t in finished}) == len(finished)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]


def test_every_trial_is_one_nested_mlflow_run(sweep):
    client = sweep["client"]
    parent = client.get_run(sweep["run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{sweep['run_id']}'")
    study = optuna.load_study(study_name="t-sweep", storage=sweep["storage"])
    by_trial = {int(c.data.tags["optuna.trial"]): c for c in children}
    assert len(children) == len(by_trial) == 5  # once each
    for run in children:  # named by what they are, and not counted among a study's student runs
        t = float(run.data.params["temperature"])
        assert run.info.run_name == f"trial {run.data.tags['optuna.trial']} T={t:.3g}"
        assert run.data.tags["kd_imdb.stage"] == "sweep_trial" and run.data.tags["kd_imdb.sweep"] == sweep["run_id"]
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            run = by_trial[trial.number]
            assert run.data.tags["optuna.state"] == "COMPLETE"
            assert float(run.data.params["temperature"]) == pytest.approx(trial.params["temperature"])
            assert run.data.metrics["val_accuracy"] == pytest.approx(trial.value)
            assert len(client.get_metric_history(run.info.run_id, "epoch_val_accuracy")) >= 2  # per epoch
            assert max(trial.intermediate_values) == 2  # reported every epoch, the last one included
        elif trial.state == optuna.trial.TrialState.PRUNED:
            assert by_trial[trial.number].data.tags["optuna.state"] == "PRUNED"
            assert max(trial.intermediate_values) < 2  # never pruned after its last epoch: nothing left to save


def test_sweep_artifacts_and_best(sweep):
    client, tmp = sweep["client"], sweep["tmp"]
    local = client.download_artifacts(sweep["run_id"], "sweep", str(tmp))
    files = set(os.listdir(local))
    assert {"optimization_history.png", "val_accuracy_vs_params.png", "val_accuracy_vs_temperature.png", "best.json"} <= files
    assert open(os.path.join(local, "optimization_history.png"), "rb").read(4) == b"\x89PNG"
    best = json.load(open(os.path.join(local, "best.json")))
    study = optuna.load_study(study_name="t-sweep", storage=sweep["storage"])
    assert best["best_val_accuracy"] == pytest.approx(study.best_value)
    assert client.get_run(sweep["run_id"]).data.metrics["best_temperature"] == pytest.approx(study.best_params["temperature"])


def test_confirm_retrains_best_t_on_fresh_seed_pairs(sweep, env):
    proc = run_cli("confirm", "--sweep-run-id", sweep["run_id"], "--seeds", "2", "--workers", "2", env=env, cwd=sweep["tmp"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "KD@best T - scratch" in proc.stdout and "KD@best T - KD@T=2" in proc.stdout
    client = sweep["client"]
    experiment_id = client.get_run(sweep["run_id"]).info.experiment_id
    studies = client.search_runs([experiment_id], "tags.`kd_imdb.study_key` != ''")
    temps = sorted(float(s.data.params["temperature"]) for s in studies)
    study = optuna.load_study(study_name="t-sweep", storage=sweep["storage"])
    assert temps == sorted([2.0, study.best_params["temperature"]])
    for s in studies:
        assert s.data.params["first_seed"] == "100"  # fresh seeds, not the sweep's
    # Scratch arms do not depend on T: both confirmation studies trained identical scratch students.
    from kd_imdb.ledger import collect

    scratch = [collect(client, experiment_id, s.info.run_id).query("arm == 'scratch'").set_index("seed")["test_accuracy"]
               for s in studies]
    assert list(scratch[0].index) == [100, 101]
    assert scratch[0].to_dict() == scratch[1].to_dict()
    confirm_runs = client.search_runs([experiment_id], "tags.`kd_imdb.stage` = 'confirm'")
    assert len(confirm_runs) == 1
    table = client.download_artifacts(confirm_runs[0].info.run_id, "confirm/comparisons.csv", str(sweep["tmp"]))
    import pandas as pd

    comparisons = pd.read_csv(table)
    assert list(comparisons["comparison"]) == ["KD@best T - scratch", "KD@best T - KD@T=2", "KD@T=2 - scratch"]
    assert (comparisons["n_pairs"] == 2).all()


def test_sweep_config_refuses_negative_workers_and_takes_zero():
    from kd_imdb.config import SweepConfig

    assert SweepConfig.from_flat(soft_labels_run_id="abc", workers=0).workers == 0  # queue only: sweep-workers do it
    with pytest.raises(ValueError, match="workers >= 0"):
        SweepConfig.from_flat(soft_labels_run_id="abc", workers=-1)


def test_a_sweep_logged_before_config_json_is_read_from_its_typed_params(local_store):
    """Sweeps from before config.json logged only params (strings): confirm reads them as their types."""
    import mlflow

    from kd_imdb.config import SweepConfig
    from kd_imdb.sweep import sweep_config

    params = {"soft_labels_run_id": "abc", "hidden": "16", "epochs": "3", "lr": "0.001", "sweep_alpha": "True",
              "max_len": "64", "t_max": "8.0"}
    with mlflow.start_run() as old:
        mlflow.log_params(params)
    assert sweep_config(mlflow.get_run(old.info.run_id)) == SweepConfig.from_flat(
        soft_labels_run_id="abc", hidden=16, epochs=3, lr=0.001, sweep_alpha=True, max_len=64, t_max=8.0)
    with mlflow.start_run() as new:
        mlflow.log_params(params)
        mlflow.log_dict({"soft_labels_run_id": "abc", "hidden": 24}, "config.json")  # the file wins
    assert sweep_config(mlflow.get_run(new.info.run_id)).base.student.hidden == 24
