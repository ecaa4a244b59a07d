"""The demo: teacher -> soft labels -> three GRU students of one seed, each stage a nested run of one
demo run, on the shipped sample by default (``make demo``).

The three arms tell the study's story: ``scratch`` learns from the 900 labels, ``kd`` from the
teacher's soft labels on the same reviews, ``kd_transfer`` from the teacher's labels on the sample's
5,500 unlabelled reviews as well. All three start from the same initial weights.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import mlflow

from kd_imdb import analysis, experiment, soft_labels, teacher, tracking
from kd_imdb.config import ArmConfig, Distillation, StudentSpec, Training


@dataclass(frozen=True)
class DemoResult:
    run_id: str
    tracking_uri: str
    teacher_run_id: str
    soft_labels_run_id: str
    teacher_test_accuracy: float
    students: dict  # {arm: test and validation metrics}
    table: str  # one row per arm


def run(teacher_model: str = "packaged", teacher_epochs: float = 2.5, max_len: int = 128,
        hidden: int = 64, seed: int = 0, student_epochs: int = 8, student_max_len: int = 256,
        data: str = "sample") -> DemoResult:
    """Teacher -> soft labels (unlabelled reviews too) -> scratch, kd and kd_transfer students on
    ``data``, each a nested run under one demo run."""
    uri = tracking.setup_tracking(tracking.EXPERIMENT)
    with tracking.start_run(run_name="demo", tags={"kd_imdb.stage": "demo"}) as demo_run:
        teacher_id = teacher.run(teacher.TeacherConfig(data=data, model=teacher_model, max_len=max_len,
                                                       epochs=teacher_epochs, seed=seed))
        labels_id = soft_labels.run(soft_labels.SoftLabelsConfig(teacher_run_id=teacher_id, data=data, unsupervised=True))
        pair = ArmConfig(data=data, soft_labels_run_id=labels_id, seed=seed, student=StudentSpec(hidden=hidden),
                         training=Training(epochs=student_epochs, max_len=student_max_len))
        results = experiment.run(pair)  # scratch and kd: one pair run, two arm runs
        results |= experiment.run(replace(pair, distillation=Distillation(mode="kd_transfer")))  # same seed, same weights
        table = analysis.arm_table(f"gru-{hidden}", results)
        mlflow.log_text(table, "results.md")
    accuracy = mlflow.get_run(teacher_id).data.metrics.get("test_accuracy", float("nan"))
    return DemoResult(demo_run.info.run_id, uri, teacher_id, labels_id, accuracy, results, table)
