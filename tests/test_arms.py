"""The control arms of a study: label smoothing, shuffled teacher, margin MSE and the transfer set,
each from the same initial weights as its scratch partner."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli


@pytest.fixture(scope="module")
def arms_study(mlflow_server, tmp_path_factory):
    from kd_imdb.data import load_data
    from kd_imdb.soft_labels import write_logits

    tmp = tmp_path_factory.mktemp("arms")
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_EXPERIMENT_NAME": "arms"}
    data = load_data("sample", unsupervised=True)
    rng = np.random.default_rng(1)
    margin = np.where(data.frame["label"] == 0, -1.0, 1.0) * rng.gamma(2.0, 1.0, len(data.frame))
    frame = pd.DataFrame({"id": data.frame["id"], "logit_0": -margin / 2, "logit_1": margin / 2})
    write_logits(frame, {"teacher_run_id": "synthetic", "data_hash": data.content_hash}, tmp / "logits.parquet")
    proc = run_cli("soft-labels", "--logits-file", str(tmp / "logits.parquet"), "--unsupervised", "true", env=env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    labels_run = proc.stdout.strip().split()[-1]
    proc = run_cli("study", "--soft-labels-run-id", labels_run, "--grid", "gru:8", "--seeds", "1", "--workers", "1",
                   "--arms", "scratch,kd,kd_mse,shuffled,label_smoothing,kd_transfer", "--register", "false",
                   "--epochs", "1", "--max-len", "48", "--vocab-size", "1500", "--embedding-dim", "16", env=env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    study_id = proc.stdout.strip().split()[-1]
    runs = client.search_runs([client.get_run(study_id).info.experiment_id], "tags.`kd_imdb.arm` != ''")
    return {"runs": {r.data.tags["kd_imdb.arm"]: r for r in runs}, "data": data, "frame": frame,
            "client": client, "study_id": study_id, "tmp": tmp}


def test_every_arm_starts_from_the_scratch_weights(arms_study):
    runs = arms_study["runs"]
    assert set(runs) == {"scratch", "kd", "kd_mse", "shuffled", "label_smoothing", "kd_transfer"}
    assert len({r.data.tags["init_sha256"] for r in runs.values()}) == 1
    assert all(r.info.status == "FINISHED" for r in runs.values())


def test_label_smoothing_matches_the_teacher_mean_confidence(arms_study):
    data, frame = arms_study["data"], arms_study["frame"].drop_duplicates("id").set_index("id")  # as registered
    train_ids = data.split("train")["id"]
    margin = (frame.loc[train_ids, "logit_1"] - frame.loc[train_ids, "logit_0"]).to_numpy()
    confidence = 1 / (1 + np.exp(-np.abs(margin)))  # max softmax probability of two logits
    expected = 2 * (1 - confidence.mean())
    assert float(arms_study["runs"]["label_smoothing"].data.params["label_smoothing"]) == pytest.approx(expected, rel=1e-5)
    assert "temperature" not in arms_study["runs"]["label_smoothing"].data.params


def test_transfer_set_adds_the_unlabelled_reviews(arms_study):
    runs, data = arms_study["runs"], arms_study["data"]
    assert runs["kd"].data.metrics["train_reviews"] == len(data.split("train"))
    assert runs["kd_transfer"].data.metrics["train_reviews"] == len(data.split("train")) + len(data.split("unsupervised"))


def test_arms_differ_only_in_their_loss(arms_study):
    losses = {arm: arms_study["client"].get_metric_history(r.info.run_id, "epoch_train_loss")[0].value
              for arm, r in arms_study["runs"].items()}
    assert len(set(np.round(list(losses.values()), 8))) == len(losses)  # every arm trained differently


def test_summary_compares_every_arm_with_scratch(arms_study):
    local = arms_study["client"].download_artifacts(arms_study["study_id"], "results/summary.csv", str(arms_study["tmp"]))
    summary = pd.read_csv(local)
    assert set(summary["arm"]) == {"kd", "kd_mse", "shuffled", "label_smoothing", "kd_transfer"}
    assert (summary["baseline"] == "scratch").all()
