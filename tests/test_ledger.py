"""The run tree on a real local SQLite store: planning is idempotent, the missing-arms rule, stale runs,
and the collected table."""
from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from kd_imdb import ledger


def make_arm(client, experiment_id, pair_id, arm, status, arch="gru", hidden=8, accuracy=0.5):
    run = client.create_run(experiment_id, tags={"mlflow.parentRunId": pair_id, "kd_imdb.arm": arm}, run_name=arm)
    client.log_param(run.info.run_id, "arch", arch)
    client.log_param(run.info.run_id, "hidden", str(hidden))
    client.log_metric(run.info.run_id, "test_accuracy", accuracy)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def test_plan_builds_the_tree_once_and_finds_what_is_missing(local_store):
    client = MlflowClient()
    experiment_id = client.create_experiment("ledger")
    study_id = client.create_run(experiment_id, tags={"kd_imdb.study_key": "k1"}).info.run_id
    configurations = [("gru", 8), ("cnn", 8)]
    cells = ledger.plan(client, experiment_id, study_id, configurations, range(3, 5), ("scratch", "kd"))
    assert [(c.configuration, c.seed) for c in cells] == [(("gru", 8), 3), (("gru", 8), 4), (("cnn", 8), 3), (("cnn", 8), 4)]
    assert all(c.missing == ("scratch", "kd") for c in cells)
    assert len({c.pair_id for c in cells}) == 4 and len({c.config_id for c in cells}) == 2

    pair = cells[0].pair_id
    make_arm(client, experiment_id, pair, "scratch", "FINISHED", accuracy=0.7)
    make_arm(client, experiment_id, pair, "kd", "FAILED")
    stale = make_arm(client, experiment_id, pair, "kd", "RUNNING")  # a dead worker's
    again = ledger.plan(client, experiment_id, study_id, configurations, range(3, 5), ("scratch", "kd"))
    assert [c.pair_id for c in again] == [c.pair_id for c in cells]  # found, not created again
    assert again[0].missing == ("kd",)
    assert client.get_run(stale).info.status == "KILLED"

    make_arm(client, experiment_id, pair, "kd", "FINISHED", accuracy=0.8)
    assert ledger.missing_arms(client, experiment_id, pair, ("scratch", "kd", "kd_mse")) == ["kd_mse"]
    assert ledger.arm_runs(client, experiment_id, pair)["kd"].info.status == "FINISHED"  # over the newer KILLED one

    table = ledger.collect(client, experiment_id, study_id)
    assert table[["configuration", "arch", "hidden", "seed", "arm"]].values.tolist() == [
        ["gru-8", "gru", 8, 3, "kd"], ["gru-8", "gru", 8, 3, "scratch"]]
    assert table["test_accuracy"].tolist() == [0.8, 0.7]
    assert ledger.find_study(client, experiment_id, ["old", "k1"]) == study_id
    assert ledger.find_study(client, experiment_id, ["other"]) is None


def test_a_shared_plan_leaves_running_arms_to_their_worker(local_store):
    client = MlflowClient()
    experiment_id = client.create_experiment("ledger-shared")
    study_id = client.create_run(experiment_id).info.run_id
    cell, = ledger.plan(client, experiment_id, study_id, [("gru", 8)], range(1), ("scratch",))
    live = make_arm(client, experiment_id, cell.pair_id, "scratch", "RUNNING")
    cell, = ledger.plan(client, experiment_id, study_id, [("gru", 8)], range(1), ("scratch",), close_stale=False)
    assert cell.missing == ("scratch",) and client.get_run(live).info.status == "RUNNING"
    ledger.finish_configurations(client, [cell])
    assert client.get_run(cell.config_id).info.status == "FINISHED"
    assert ledger.Cell.from_json(cell.to_json()) == ledger.Cell(("gru", 8), 0, cell.pair_id)
    assert mlflow.active_run() is None
