"""Serving benchmark: the shipped student (PyTorch and ONNX Runtime) against the teacher (PyTorch fp32 and
ONNX Runtime int8) on CPU: reviews/s and p50/p99 latency at batch 1 and 64, tokenisation included.
The ONNX student's outputs are checked against PyTorch first. Figures are printed and logged to MLflow.

    python benchmarks/serving.py --student models:/kd-imdb-student@champion --teacher <teacher model folder>
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import mlflow
import numpy as np
import torch

from kd_imdb import export
from kd_imdb import teacher as teacher_mod
from kd_imdb.data import load_data
from kd_imdb.serving import load_student
from kd_imdb.tokenizer import encode_texts
from kd_imdb.train import pad


def student_dir(uri: str) -> Path:
    """A student folder from a local path, runs:/.../student, or a registered pyfunc (models:/...)."""
    local = Path(uri) if Path(uri).exists() else Path(mlflow.artifacts.download_artifacts(uri))
    return local / "artifacts" / "student" if (local / "artifacts" / "student").is_dir() else local


def timed(fn, batches) -> tuple[np.ndarray, float]:
    """Per-batch latencies (s) and reviews/s."""
    latencies, n = [], 0
    for batch in batches:
        t0 = time.perf_counter()
        fn(batch)
        latencies.append(time.perf_counter() - t0)
        n += len(batch)
    return np.array(latencies), n / sum(latencies)


@click.command()
@click.option("--student", "student_uri", required=True, help="models:/kd-imdb-student@champion, runs:/.../student or a folder.")
@click.option("--teacher", "teacher_dir", required=True, help="A teacher model folder (the teacher run's model/ artifact).")
@click.option("--data", default="sample", show_default=True)
@click.option("--reviews", default=256, show_default=True, type=int, help="Test reviews per measurement.")
@click.option("--teacher-max-len", "teacher_max_len", default=128, show_default=True, type=int)
def main(student_uri: str, teacher_dir: str, data: str, reviews: int, teacher_max_len: int) -> None:
    texts = load_data(data).split("test")["text"].sample(reviews, random_state=0).tolist()
    model, tok, max_len = load_student(student_dir(student_uri))
    tmp = Path(tempfile.mkdtemp())
    onnx_student = export.OnnxStudent(export.export_student_onnx(model, tmp / "student.onnx"))
    ids = pad(encode_texts(tok, texts[:64], max_len))
    with torch.inference_mode():
        gap = float(np.abs(onnx_student(ids.numpy()) - model(ids).numpy()).max())
    assert gap < 1e-4, f"ONNX student differs from PyTorch by {gap}"
    t_tok = teacher_mod.load_tokenizer(teacher_dir)
    t_model = teacher_mod.load_model(teacher_dir).eval()
    onnx_teacher = export.OnnxTeacher(export.export_teacher_int8(t_model, tmp / "teacher-int8.onnx"), t_tok.pad_token_id)

    @torch.inference_mode()
    def student_torch(batch):
        return model(pad(encode_texts(tok, batch, max_len))).numpy()

    def student_onnx(batch):
        return onnx_student(pad(encode_texts(tok, batch, max_len)).numpy())

    def teacher_torch(batch):
        enc = teacher_mod.encode(t_tok, batch, teacher_max_len)
        return teacher_mod.predict_logits(t_model, enc, t_tok.pad_token_id, batch_size=len(batch), desc="t")

    def teacher_onnx(batch):
        return onnx_teacher.predict(teacher_mod.encode(t_tok, batch, teacher_max_len), batch_size=len(batch))

    paths = {"student PyTorch": student_torch, "student ONNX": student_onnx,
             "teacher PyTorch fp32": teacher_torch, "teacher ONNX int8": teacher_onnx}
    n_params = sum(p.numel() for p in model.parameters())
    print(f"student {student_uri} ({n_params:,} parameters, max_len {max_len}); teacher {teacher_dir} "
          f"(max_len {teacher_max_len}); {reviews} test reviews; torch threads {torch.get_num_threads()}; "
          f"ONNX vs PyTorch max |logit gap| {gap:.2e}")
    print("| path | batch 1 p50 ms | batch 1 p99 ms | batch 1 reviews/s | batch 64 p50 ms | batch 64 p99 ms | "
          "batch 64 reviews/s |")
    print("|---|---|---|---|---|---|---|")
    metrics = {"onnx_student_max_gap": gap}
    for name, fn in paths.items():
        n1 = reviews if name.startswith("student") else min(reviews, 64)  # the teacher is slow at batch 1
        fn(texts[:4])  # warm-up
        lat1, rate1 = timed(fn, [[t] for t in texts[:n1]])
        lat64, rate64 = timed(fn, [texts[i:i + 64] for i in range(0, reviews, 64)])
        row = [np.percentile(lat1, 50) * 1e3, np.percentile(lat1, 99) * 1e3, rate1,
               np.percentile(lat64, 50) * 1e3, np.percentile(lat64, 99) * 1e3, rate64]
        print(f"| {name} | " + " | ".join(f"{v:,.1f}" for v in row) + " |", flush=True)
        key = name.lower().replace(" ", "_")
        metrics.update({f"{key}_b1_p50_ms": row[0], f"{key}_b1_p99_ms": row[1], f"{key}_b1_reviews_per_s": row[2],
                        f"{key}_b64_p50_ms": row[3], f"{key}_b64_p99_ms": row[4], f"{key}_b64_reviews_per_s": row[5]})
    with mlflow.start_run(run_name="serving benchmark", tags={"kd_imdb.stage": "benchmark"}):
        mlflow.log_params({"student": student_uri, "teacher": teacher_dir, "reviews": reviews,
                           "teacher_max_len": teacher_max_len, "threads": torch.get_num_threads()})
        mlflow.log_metrics(metrics)


if __name__ == "__main__":
    main()
