"""The demo driver end to end on the shipped sample, with a tiny teacher built from a config."""
from __future__ import annotations

import mlflow
import pytest

from kd_imdb import demo

pytestmark = pytest.mark.slow  # fine-tunes a (tiny) teacher and trains a student pair


def test_the_demo_chains_teacher_labels_and_three_arms_of_one_seed_under_one_run(local_store):
    result = demo.run(teacher_model="tiny", teacher_epochs=1.0, max_len=32, hidden=8, student_epochs=1,
                      student_max_len=32)
    assert result.tracking_uri == local_store
    client = mlflow.tracking.MlflowClient()
    children = client.search_runs([client.get_run(result.run_id).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert {r.info.run_id for r in children} >= {result.teacher_run_id, result.soft_labels_run_id}
    assert list(result.students) == ["scratch", "kd", "kd_transfer"]
    arm_runs = client.search_runs([client.get_run(result.run_id).info.experiment_id], "tags.`kd_imdb.stage` = 'student'")
    assert sorted(r.info.run_name for r in arm_runs) == ["gru-8 s0 kd", "gru-8 s0 kd_transfer", "gru-8 s0 scratch"]
    assert len({r.data.tags["init_sha256"] for r in arm_runs}) == 1  # one seed: the same initial weights
    transfer = next(r for r in arm_runs if r.data.tags["kd_imdb.arm"] == "kd_transfer")
    assert transfer.data.metrics["train_reviews"] == 900 + 5500  # the sample's labelled train and its unlabelled reviews
    assert 0.0 <= result.teacher_test_accuracy <= 1.0
    rows = result.table.splitlines()
    scratch, transfer_acc = result.students["scratch"]["test_accuracy"], result.students["kd_transfer"]["test_accuracy"]
    assert [row.split(" | ")[1] for row in rows[2:]] == ["scratch", "kd", "kd_transfer"]
    assert rows[4].startswith("| gru-8 | kd_transfer | KD on train plus the teacher-labelled unlabelled reviews")
    assert f"| {transfer_acc:.3f} | {transfer_acc - scratch:+.3f} |" in rows[4]
    assert mlflow.artifacts.load_text(f"runs:/{result.run_id}/results.md") == result.table
