"""The product table: every model a user could ship for IMDB, measured in one run on one CPU core.

    python benchmarks/product.py --data ../shared/data/imdb \\
        --logits "stack=results/stacked_teacher_logits.parquet" \\
        --logits "windowed MiniLM=results/windowed_teacher_logits.parquet" \\
        --logits "MiniLM-128=results/teacher_logits.parquet" --student "GRU-64 KD=runs:/<run id>/student"

Rows: TF-IDF LR and NB-SVM (fitted here on the train split with the C chosen in RESULTS §21, served by
scikit-learn), the MiniLM teachers (PyTorch fp32 and ONNX Runtime int8), the stack of three, and each
student (PyTorch, PyTorch with int8 GRU and linear weights, and ONNX Runtime). The int8 student's
accuracy is its own, measured on every test review; its note gives its top-1 agreement with fp32.
Columns: parameters, test accuracy with its Wilson interval on all test reviews, reviews/s at batch 64
and p50 latency at batch 1, tokenisation included, one thread.

Teacher accuracies come from their committed logits files (their fine-tuned weights are not in the
repository); their speed is measured on the packaged MiniLM-L6 (``--transformer``), which has the same
architecture and so the same cost. The stack's speed is its three members run one after the other.
"""
from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path

import click
import mlflow
import numpy as np
import torch

from kd_imdb import export, stats, teacher
from kd_imdb.data import load_data
from kd_imdb.linear_teacher import make_model
from kd_imdb.serving import load_student
from kd_imdb.soft_labels import read_logits
from kd_imdb.tokenizer import encode_texts
from kd_imdb.train import pad, predict


def speed(fn, texts: list[str], batch1: int) -> tuple[float, float]:
    """(reviews/s at batch 64, p50 ms at batch 1) of ``fn`` (list of texts -> anything)."""
    def one_pass() -> None:
        for i in range(0, len(texts), 64):
            fn(texts[i:i + 64])

    one_pass()  # warm-up: first-call allocations at every padded length are not timed (they cost long inputs most)
    t0 = time.perf_counter()
    one_pass()
    rate = len(texts) / (time.perf_counter() - t0)
    latencies = []
    for text in texts[:batch1]:
        t0 = time.perf_counter()
        fn([text])
        latencies.append(time.perf_counter() - t0)
    return rate, float(np.median(latencies) * 1e3)


def row(name: str, params: int, correct: np.ndarray, rate: float, p50: float, note: str = "") -> dict:
    acc, lo, hi = stats.accuracy_ci(correct)
    return {"model": name, "parameters": params, "accuracy": acc, "lo": lo, "hi": hi, "reviews_per_s": rate,
            "p50_ms": p50, "note": note}


@click.command()
@click.option("--data", default="sample", show_default=True)
@click.option("--logits", "logits", multiple=True, help="NAME=FILE: a teacher's committed logits (its accuracy).")
@click.option("--student", "students", multiple=True, help="NAME=URI: runs:/<id>/student, models:/..., or a folder.")
@click.option("--transformer", default="packaged", show_default=True, help="MiniLM weights timed for the teacher rows.")
@click.option("--speed-reviews", default=512, show_default=True, type=int, help="Test reviews timed at batch 64.")
@click.option("--batch1-reviews", default=64, show_default=True, type=int, help="Test reviews timed at batch 1.")
@click.option("--tfidf-c", default=16.0, show_default=True, type=float)
@click.option("--nbsvm-c", default=3.0, show_default=True, type=float)
@click.option("--stride", default=126, show_default=True, type=int, help="Windowed teacher: tokens between windows.")
@click.option("--out", default="", help="Also write the table (markdown) here.")
def main(data: str, logits: tuple[str, ...], students: tuple[str, ...], transformer: str, speed_reviews: int,
         batch1_reviews: int, tfidf_c: float, nbsvm_c: float, stride: int, out: str) -> None:
    torch.set_num_threads(1)  # one core for every row; scikit-learn's liblinear and vectorisers use one anyway
    os.environ["RAYON_NUM_THREADS"] = "1"  # and the tokenizers library, which would encode a batch on every core
    imdb = load_data(data)
    train, test = imdb.split("train"), imdb.split("test")
    labels = test["label"].to_numpy()
    timed = test["text"].sample(min(speed_reviews, len(test)), random_state=0).tolist()
    rows, members = [], {}

    for name, kind, ngram, c in (("TF-IDF LR (1-2-grams)", "tfidf", 2, tfidf_c), ("NB-SVM (1-3-grams)", "nbsvm", 3, nbsvm_c)):
        model = make_model(kind, ngram, c).fit(train["text"], train["label"])
        correct = model.predict(test["text"]) == labels
        rate, p50 = speed(model.decision_function, timed, batch1_reviews)
        members[kind] = (rate, p50)
        rows.append(row(name, int(model[-1].coef_.size + 1), correct, rate, p50, "scikit-learn"))
        print(rows[-1], flush=True)

    tok, model = teacher.load_tokenizer(transformer), teacher.load_model(transformer).eval()
    n_teacher = sum(p.numel() for p in model.parameters())
    onnx = export.OnnxTeacher(export.export_teacher_int8(model, Path(tempfile.mkdtemp()) / "t-int8.onnx"),
                              tok.pad_token_id, threads=1)
    paths = {
        "MiniLM-128 fp32": lambda t: teacher.predict_logits(model, teacher.encode(tok, t, 128), tok.pad_token_id, 64),
        "MiniLM-128 int8": lambda t: onnx.predict(teacher.encode(tok, t, 128), 64),
        "windowed MiniLM fp32": lambda t: teacher.predict_logits(
            model, teacher.encode_windows(tok, t, 128, stride)[0], tok.pad_token_id, 64),
        "windowed MiniLM int8": lambda t: onnx.predict(teacher.encode_windows(tok, t, 128, stride)[0], 64),
    }
    by_name = dict(item.split("=", 1) for item in logits)
    accuracy = {}
    for name, file in by_name.items():
        frame, _ = read_logits(file)
        scored = test[["id", "label"]].merge(frame.drop_duplicates("id"), on="id")
        if len(scored) < len(test):
            print(f"note: {name}: {file} scores {len(scored)} of the {len(test)} test reviews; its accuracy is over those")
        accuracy[name] = (scored["logit_1"] > scored["logit_0"]).to_numpy() == scored["label"].to_numpy()
    for path, fn in paths.items():
        rate, p50 = speed(fn, timed if "fp32" not in path else timed[:128], batch1_reviews // 2)
        members[path] = (rate, p50)
        source = path.rsplit(" ", 1)[0]
        if source in accuracy:
            rows.append(row(path, n_teacher, accuracy[source], rate, p50, "accuracy: committed logits"))
            print(rows[-1], flush=True)
    if "stack" in accuracy:
        for precision in ("fp32", "int8"):
            parts = [members[f"windowed MiniLM {precision}"], members["nbsvm"], members["tfidf"]]
            rate = 1 / sum(1 / r for r, _ in parts)
            rows.append(row(f"stack ({precision} MiniLM + NB-SVM + TF-IDF)", n_teacher + rows[0]["parameters"]
                            + rows[1]["parameters"], accuracy["stack"], rate, sum(p for _, p in parts),
                            "members one after the other"))

    for item in students:
        name, uri = item.split("=", 1)
        local = Path(uri) if Path(uri).exists() else Path(mlflow.artifacts.download_artifacts(uri))
        folder = local / "artifacts" / "student" if (local / "artifacts" / "student").is_dir() else local
        net, stok, max_len = load_student(folder)
        n = sum(p.numel() for p in net.parameters())
        onnx_student = export.OnnxStudent(export.export_student_onnx(net, Path(tempfile.mkdtemp()) / "s.onnx"), threads=1)
        int8 = export.quantize_student(net)
        ids = encode_texts(stok, test["text"].tolist(), max_len)
        logits_torch, logits_int8 = predict(net, ids), predict(int8, ids)
        correct = {"PyTorch": logits_torch.argmax(1) == labels, "PyTorch int8": logits_int8.argmax(1) == labels}
        correct["ONNX Runtime"] = correct["PyTorch"]
        agree = export.agreement(logits_torch, logits_int8)["int8_top1_agreement"]

        def student_torch(t, net=net, stok=stok, max_len=max_len):
            with torch.inference_mode():
                return net(pad(encode_texts(stok, t, max_len))).numpy()

        def student_onnx(t, sess=onnx_student, stok=stok, max_len=max_len):
            return sess(pad(encode_texts(stok, t, max_len)).numpy())

        runtimes = (("PyTorch", student_torch), ("PyTorch int8", functools.partial(student_torch, net=int8)),
                    ("ONNX Runtime", student_onnx))
        for runtime, fn in runtimes:
            rate, p50 = speed(fn, timed, batch1_reviews)
            note = f"max_len {max_len}" + (f"; top-1 agreement with fp32 {agree:.4f}" if runtime == "PyTorch int8" else "")
            rows.append(row(f"{name} ({runtime})", n, correct[runtime], rate, p50, note))
            print(rows[-1], flush=True)

    lines = ["| model | parameters | test accuracy [95% CI] | reviews/s (batch 64) | p50 ms (batch 1) | note |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['accuracy']:.4f} [{r['lo']:.4f}, {r['hi']:.4f}] | "
                     f"{r['reviews_per_s']:,.1f} | {r['p50_ms']:.2f} | {r['note']} |")
    table = "\n".join(lines)
    print(f"\none thread (torch {torch.__version__}); {len(timed)} test reviews timed at batch 64, "
          f"{batch1_reviews} at batch 1 (teachers: 128 and {batch1_reviews // 2}); accuracy on {len(test):,} test reviews\n")
    print(table)
    if out:
        Path(out).write_text(table + "\n")


if __name__ == "__main__":
    main()
