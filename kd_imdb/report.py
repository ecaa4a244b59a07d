"""Results tables printed at the end of a run, and the demo that chains the stages."""
from __future__ import annotations

import click

METRICS = ("accuracy", "f1", "precision", "recall")


def pair_table(results: dict[str, dict[str, dict]]) -> str:
    """A markdown table laid out like the origin study: one row per student, scratch and KD side by side.

    ``results`` maps a student name to ``{"scratch": metrics, "kd": metrics}`` (either may be absent).
    """
    head = "| student | " + " | ".join(f"{m} scratch | {m} KD" for m in METRICS) + " | teacher agreement KD |"
    rule = "|---" * (2 + 2 * len(METRICS)) + "|"
    rows = [head, rule]
    for name, arms in results.items():
        cells = []
        for m in METRICS:
            for arm in ("scratch", "kd"):
                value = arms.get(arm, {}).get(f"test_{m}")
                cells.append("" if value is None else f"{value:.3f}")
        agree = arms.get("kd", {}).get("test_teacher_agreement")
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {'' if agree is None else f'{agree:.3f}'} |")
    return "\n".join(rows)


def print_pair_table(results: dict[str, dict[str, dict]]) -> None:
    click.echo("\nTest metrics (model chosen on validation):\n" + pair_table(results))


def run_demo(teacher_model: str = "packaged", teacher_epochs: float = 3.0, max_len: int = 128,
             hidden: int = 64, seed: int = 0, student_epochs: int = 8, data: str = "sample") -> dict:
    """Teacher -> soft labels -> GRU pair on ``data``, each a nested run under one demo run."""
    import mlflow

    from kd_imdb import experiment, soft_labels, teacher, tracking

    uri = tracking.setup_tracking("kd_imdb")
    with tracking.start_run(run_name="demo", tags={"kd_imdb.stage": "demo"}) as demo_run:
        teacher_id = teacher.run(teacher.TeacherConfig(data=data, model=teacher_model, max_len=max_len,
                                                       epochs=teacher_epochs, seed=seed))
        labels_id = soft_labels.run(soft_labels.SoftLabelsConfig(teacher_run_id=teacher_id, data=data))
        results = experiment.run(experiment.StudentConfig(data=data, soft_labels_run_id=labels_id, arch="gru",
                                                          hidden=hidden, seed=seed, epochs=student_epochs, mode="pair"))
        teacher_metrics = mlflow.get_run(teacher_id).data.metrics
        table = pair_table({f"gru-{hidden}": results})
        mlflow.log_text(table, "results.md")
    click.echo(f"\nteacher ({teacher_model}) test accuracy: {teacher_metrics.get('test_accuracy', float('nan')):.3f}")
    print_pair_table({f"gru-{hidden}": results})
    click.echo(f"\ndemo run {demo_run.info.run_id} in {uri}")
    if uri.startswith("sqlite:///"):
        click.echo(f"open the MLflow UI:  mlflow ui --backend-store-uri {uri}   (then http://127.0.0.1:5000)")
    return {"teacher_run_id": teacher_id, "soft_labels_run_id": labels_id, "students": results}
