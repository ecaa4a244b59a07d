"""The demo: teacher -> soft labels -> one seed pair of GRU students, each stage a nested run of one
demo run, on the shipped sample by default (``make demo``)."""
from __future__ import annotations

from dataclasses import dataclass

import mlflow

from kd_imdb import analysis, experiment, soft_labels, teacher, tracking
from kd_imdb.config import ArmConfig, StudentSpec, Training


@dataclass(frozen=True)
class DemoResult:
    run_id: str
    tracking_uri: str
    teacher_run_id: str
    soft_labels_run_id: str
    teacher_test_accuracy: float
    students: dict  # {arm: test and validation metrics}
    table: str  # the origin's layout: scratch and KD side by side


def run(teacher_model: str = "packaged", teacher_epochs: float = 3.0, max_len: int = 128,
        hidden: int = 64, seed: int = 0, student_epochs: int = 8, data: str = "sample") -> DemoResult:
    """Teacher -> soft labels -> GRU pair on ``data``, each a nested run under one demo run."""
    uri = tracking.setup_tracking(tracking.EXPERIMENT)
    with tracking.start_run(run_name="demo", tags={"kd_imdb.stage": "demo"}) as demo_run:
        teacher_id = teacher.run(teacher.TeacherConfig(data=data, model=teacher_model, max_len=max_len,
                                                       epochs=teacher_epochs, seed=seed))
        labels_id = soft_labels.run(soft_labels.SoftLabelsConfig(teacher_run_id=teacher_id, data=data))
        student = ArmConfig(data=data, soft_labels_run_id=labels_id, seed=seed, student=StudentSpec(hidden=hidden),
                            training=Training(epochs=student_epochs))
        results = experiment.run(student)
        table = analysis.pair_table({f"gru-{hidden}": results})
        mlflow.log_text(table, "results.md")
    accuracy = mlflow.get_run(teacher_id).data.metrics.get("test_accuracy", float("nan"))
    return DemoResult(demo_run.info.run_id, uri, teacher_id, labels_id, accuracy, results, table)
