"""The demo driver end to end on the shipped sample, with a tiny teacher built from a config."""
from __future__ import annotations

import mlflow
import pytest

from kd_imdb import demo

pytestmark = pytest.mark.slow  # fine-tunes a (tiny) teacher and trains a student pair


def test_the_demo_chains_teacher_labels_and_a_pair_under_one_run(local_store):
    result = demo.run(teacher_model="tiny", teacher_epochs=1.0, max_len=32, hidden=8, student_epochs=1)
    assert result.tracking_uri == local_store
    client = mlflow.tracking.MlflowClient()
    children = client.search_runs([client.get_run(result.run_id).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert {r.info.run_id for r in children} >= {result.teacher_run_id, result.soft_labels_run_id}
    assert set(result.students) == {"scratch", "kd"}
    assert 0.0 <= result.teacher_test_accuracy <= 1.0
    rows = result.table.splitlines()
    assert rows[2].startswith("| gru-8 | ") and f"{result.students['kd']['test_accuracy']:.3f}" in rows[2]
    assert mlflow.artifacts.load_text(f"runs:/{result.run_id}/results.md") == result.table
