"""The shipped models: MLflow pyfuncs that take raw review texts, and their registration.

The student's pyfunc carries its safetensors weights, config and word tokenizer; the teacher's its
transformers checkpoint and the window it was trained on. Both return, per review, the label
(0 negative, 1 positive) and the positive-class probability, and both read the same inputs: a list
of strings, one string, a table with one column of reviews, or {"text": [...]}.

A student serves with int8 GRU and linear weights (``export.quantize_student``: faster on a CPU, with
logits that move a little) when loaded with ``model_config={"int8": True}``, or served with
``MLFLOW_PYFUNC_INFERENCE_CONFIG='{"int8": true}' mlflow models serve ...``; ``load_pyfunc(uri, int8=True)``
(``kd-imdb predict/evaluate --int8``) also quantises students logged before the option existed.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from mlflow.types.schema import AnyType, ColSpec, Schema
from safetensors.torch import load_file

import kd_imdb
from kd_imdb import teacher
from kd_imdb.config import SELECTION, StudentSpec, describe_arm
from kd_imdb.export import quantize_student
from kd_imdb.metrics import softmax
from kd_imdb.students import build_student
from kd_imdb.tokenizer import encode_texts, load_tokenizer
from kd_imdb.train import predict

log = logging.getLogger(__name__)

REGISTERED_NAME = "kd-imdb-student"
TEACHER_NAME = "kd-imdb-teacher"
EXAMPLE = ["A moving, beautifully acted film.", "Dull plot and wooden acting."]


def load_student(directory: str | Path):
    """(model, tokenizer, max_len) from a ``student/`` folder (model.safetensors, config.json, tokenizer.json)."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    model = build_student(StudentSpec.from_dict(config), seed=0)
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    return model.eval(), load_tokenizer(directory / "tokenizer.json"), config["max_len"]


# One unnamed input typed Any. Unnamed, so that MLflow's schema check lets a plain list of strings, one
# string or a Series through, in Python as over REST ({"inputs": [...]}, {"inputs": "..."}); a table
# binds by position, its first column (texts_from insists it is 'text'). The price: the named REST
# form {"inputs": {"text": [...]}} is refused by MLflow's parser with a 400. Any, not string: with a
# string column the scoring server casts JSON 5 and null to "5" and "None", and the model would score
# them as reviews; texts_from checks the types instead, so non-text is answered 400 with the review it
# concerns.
INPUT_SCHEMA = Schema([ColSpec(AnyType())])


def texts_from(model_input) -> list[str]:
    """Raw texts from a list of strings, one string, an unnamed Series, a DataFrame with a ``text`` column
    or a {"text": ...} mapping; anything else is a ValueError naming the first bad review."""
    if isinstance(model_input, dict):
        if "text" not in model_input:
            raise ValueError(f"input has no 'text' field (fields: {list(model_input)}); pass reviews in 'text'")
        model_input = model_input["text"]
    if isinstance(model_input, str):
        model_input = [model_input]
    if isinstance(model_input, pd.DataFrame):
        # A list, a string or an unnamed Series reaches the model as column 0. MLflow keeps only the first
        # column of a wider table, so a table is read only by its 'text' column: ids scored as reviews
        # would be silent nonsense.
        if list(model_input.columns) == [0]:
            model_input = model_input.rename(columns={0: "text"})
        if "text" not in model_input.columns:
            raise ValueError(f"input has no 'text' column (columns: {list(model_input.columns)}); pass a list of "
                             "reviews, or a table whose first (or only) column is 'text'")
        model_input = model_input["text"]
    if not isinstance(model_input, (list, tuple, pd.Series, np.ndarray)):
        raise ValueError(f"reviews must be a list of strings, got {type(model_input).__name__}; pass review texts")
    # tolist() turns numpy scalars into Python ones, so a bad review is named by its JSON type (int, not int64)
    texts = model_input.tolist() if isinstance(model_input, (np.ndarray, pd.Series)) else list(model_input)
    if len(texts) == 1 and isinstance(texts[0], (list, tuple, np.ndarray)):
        texts = list(texts[0])  # MLflow's serving makes {"inputs": {"text": [r1, r2]}} one row holding the list
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"review {bad[0]} is not a string ({type(texts[bad[0]]).__name__}); pass review texts")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise ValueError(f"review {empty[0]} is empty; pass non-empty review texts")
    return texts


class StudentModel(mlflow.pyfunc.PythonModel):
    """Review texts in, ``label`` and ``probability`` (of the positive class) out."""

    def load_context(self, context) -> None:
        self.model, self.tokenizer, self.max_len = load_student(context.artifacts["student"])
        if (context.model_config or {}).get("int8"):
            self.model = quantize_student(self.model)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return answer(model_input, lambda texts: predict(self.model, encode_texts(self.tokenizer, texts, self.max_len)),
                      "student")


class TeacherModel(mlflow.pyfunc.PythonModel):
    """The teacher behind the same interface, reading each review at the window it was trained on."""

    def load_context(self, context) -> None:
        self.tokenizer = teacher.load_tokenizer(context.artifacts["teacher"])
        self.model = teacher.load_model(context.artifacts["teacher"])
        self.max_len, self.truncation = context.model_config["max_len"], context.model_config["truncation"]

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return answer(model_input, lambda texts: teacher.predict_logits(
            self.model, teacher.encode(self.tokenizer, texts, self.max_len, self.truncation),
            self.tokenizer.pad_token_id, progress=False), "teacher")


def answer(model_input, logits_of, what: str) -> pd.DataFrame:
    """``label`` and ``probability`` for the reviews in ``model_input``; ``logits_of(texts)`` gives [n, 2]."""
    # MlflowExceptions are what the scoring server answers without a stack trace: bad input gets a
    # 400 with one line; anything else a 500 whose traceback stays in the server's log.
    try:
        texts = texts_from(model_input)
    except ValueError as exc:
        raise MlflowException.invalid_parameter_value(str(exc)) from None
    try:
        probability = softmax(logits_of(texts))[:, 1]
    except Exception:
        log.exception("the %s failed on a batch of %d reviews", what, len(texts))
        raise MlflowException(f"the {what} failed on this input; the server's log has the traceback",
                              error_code=INTERNAL_ERROR) from None
    return pd.DataFrame({"label": (probability >= 0.5).astype(np.int64), "probability": probability})


OUTPUT_SCHEMA = Schema([ColSpec("long", "label"), ColSpec("double", "probability")])


def log_pyfunc(student_dir: str | Path, name: str = "model"):
    """Log the student in ``student_dir`` as a pyfunc model in the active run; returns its ModelInfo.
    It serves fp32; ``model_config={"int8": True}`` at load time serves int8 weights."""
    return _log_with_package(StudentModel(), {"student": str(student_dir)}, name, model_requirements(),
                             model_config={"int8": False})


def log_teacher_pyfunc(checkpoint_dir: str | Path, max_len: int, truncation: str, name: str = "teacher"):
    """Log the transformers checkpoint in ``checkpoint_dir`` as a pyfunc that reads ``max_len`` tokens
    (``truncation``) of each review; returns its ModelInfo."""
    return _log_with_package(TeacherModel(), {"teacher": str(checkpoint_dir)}, name,
                             model_requirements() + ["transformers"],
                             model_config={"max_len": max_len, "truncation": truncation})


def _log_with_package(python_model, artifacts: dict, name: str, requirements: list[str], model_config=None):
    with tempfile.TemporaryDirectory() as tmp:
        # The model needs the package's code, not its demo sample or bytecode caches.
        code = Path(tmp) / "kd_imdb"
        shutil.copytree(Path(kd_imdb.__file__).parent, code, ignore=shutil.ignore_patterns("sample", "__pycache__"))
        return mlflow.pyfunc.log_model(
            name=name, python_model=python_model, artifacts=artifacts, model_config=model_config,
            signature=ModelSignature(inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA), input_example=EXAMPLE,
            code_paths=[str(code)], pip_requirements=requirements,
        )


def model_requirements() -> list[str]:
    """The served model's requirements, torch pinned to the version it was saved with: an unpinned
    ``torch`` pulls a multi-GB CUDA build where a CPU student needs none of it."""
    return [f"torch=={torch.__version__.split('+')[0]}", "tokenizers", "safetensors", "pandas", "numpy", "mlflow"]


MODEL_DESCRIPTION = (
    "Tiny GRU/CNN students distilled from a transformer teacher on IMDB (kd_imdb). Input: review texts "
    "(a list of strings, one string, or a table whose first column, 'text', holds them). Output: label (1 = positive) and "
    "the positive-class probability. @champion is the best student by validation accuracy; @best-<arch> "
    "the best of its architecture. Each version's description names its study, teacher and test accuracy."
)


def model_name(text: str) -> str:
    """A logged model's name from ``text``: MLflow refuses '/', ':', '.', '%' and quotes in it, so every
    character but letters, digits, '_' and '-' becomes '-' (``gru-64+bigrams`` -> ``gru-64-bigrams``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", text)


def register_best(runs: pd.DataFrame, client, by: str = "val_accuracy") -> dict:
    """Register the best student by ``by`` (a validation measure of ``SELECTION``, never test) as
    ``kd-imdb-student@champion``, and the best of each architecture under the alias ``best-<arch>``.
    Returns {alias: version}."""
    if by not in SELECTION:
        raise ValueError(f"a champion is selected on one of {', '.join(SELECTION)}, not {by!r}")
    if runs.empty or by not in runs:
        return {}
    runs = runs.reset_index(drop=True)  # rows of several studies' runs.csv repeat their labels

    def best(part: pd.DataFrame):
        return part[by].idxmax() if SELECTION[by] == "max" else part[by].idxmin()

    chosen = {"champion": runs.loc[best(runs)]}
    for arch, part in runs.groupby("arch"):
        chosen[f"best-{arch}"] = part.loc[best(part)]
    versions, logged = {}, {}
    for alias, row in chosen.items():
        run_id = row["run_id"]
        if run_id not in logged:
            # named after what it is: the logged-model list and the registry's source tell students apart
            name = model_name(f"student-{row['configuration']}-s{row['seed']}-{row['arm']}")
            with tempfile.TemporaryDirectory() as tmp:
                student_dir = client.download_artifacts(run_id, "student", tmp)
                with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
                    info = log_pyfunc(student_dir, name=name)
            logged[run_id] = mlflow.register_model(info.model_uri, REGISTERED_NAME).version
            describe_version(client, logged[run_id], row, by)
        client.set_registered_model_alias(REGISTERED_NAME, alias, logged[run_id])
        versions[alias] = logged[run_id]
        log.info("registered %s version %s (%s, %s %.4f) as @%s", REGISTERED_NAME, logged[run_id],
                 row["configuration"], by, row[by], alias)
    client.update_registered_model(REGISTERED_NAME, description=MODEL_DESCRIPTION)
    return versions


def describe_version(client, version: str, row: pd.Series, by: str) -> None:
    """A registered version's description and tags: what it is, where it came from, how it scored."""
    run = client.get_run(row["run_id"])
    study = run.data.tags.get("kd_imdb.study", "")
    teacher = run.data.params.get("soft_labels_run_id", "")
    tags = {"arch": row["arch"], "hidden": str(row["hidden"]), "seed": str(row["seed"]), "arm": row["arm"],
            "teacher_run": teacher, "study_run": study, "val_accuracy": f"{row['val_accuracy']:.4f}",
            "test_accuracy": f"{row['test_accuracy']:.4f}", "selected_on": by}
    if "val_log_loss" in row and pd.notna(row["val_log_loss"]):
        tags["val_log_loss"] = f"{row['val_log_loss']:.4f}"
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_NAME, version, key, value)
    client.update_model_version(REGISTERED_NAME, version, description=(
        f"{row['configuration']} seed {row['seed']}, arm {row['arm']}: {describe_arm(row['arm'])}. "
        f"From study run {study or '(none)'}, soft labels (teacher) run {teacher}. "
        f"Validation accuracy {row['val_accuracy']:.4f}"
        + (f", log-loss {tags['val_log_loss']}" if "val_log_loss" in tags else "")
        + f" (selected on {by}), test accuracy {row['test_accuracy']:.4f}."))


TEACHER_DESCRIPTION = (
    "Transformer teachers fine-tuned on IMDB by kd_imdb's teacher stage: the models the students are "
    "distilled from. Same input and output as kd-imdb-student: review texts in; label (1 = positive) and "
    "the positive-class probability out. Each version reads reviews at the window it was trained on and "
    "its description names its base model, window, run and test accuracy."
)


def register_teacher(run_id: str, client) -> str:
    """Log a teacher run's ``model/`` checkpoint as a pyfunc in that run and register it as
    ``kd-imdb-teacher``, with a description and tags; returns the new version."""
    run = client.get_run(run_id)
    params, metrics = run.data.params, run.data.metrics
    max_len, truncation = int(params["max_len"]), params["truncation"]
    base = {teacher.PACKAGED: "all-MiniLM-L6-v2", teacher.TINY: "tiny-bert"}.get(params["model"], params["model"])
    name = model_name(f"teacher-{Path(base).name}-{max_len}")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = client.download_artifacts(run_id, "model", tmp)
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            info = log_teacher_pyfunc(checkpoint, max_len, truncation, name=name)
    version = mlflow.register_model(info.model_uri, TEACHER_NAME).version
    accuracy = {k: f"{metrics[k]:.4f}" for k in ("val_accuracy", "test_accuracy") if k in metrics}
    tags = {"base_model": base, "max_len": str(max_len), "truncation": truncation, "teacher_run": run_id, **accuracy}
    for key, value in tags.items():
        client.set_model_version_tag(TEACHER_NAME, version, key, value)
    client.update_model_version(TEACHER_NAME, version, description=(
        f"{base} fine-tuned {params.get('epochs', '?')} epochs on {params.get('data', '?')}, reading {max_len} "
        f"tokens ({truncation}) of each review. Teacher run {run_id}. "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in accuracy.items()) + "."))
    client.update_registered_model(TEACHER_NAME, description=TEACHER_DESCRIPTION)
    log.info("registered %s version %s (%s, %d tokens)", TEACHER_NAME, version, base, max_len)
    return version


def load_pyfunc(model_uri: str, int8: bool = False):
    """A pyfunc student or teacher; ``int8``: a student with int8 GRU and linear weights (a ValueError
    for a teacher, whose int8 path is ONNX Runtime: ``kd-imdb soft-labels --onnx-int8``)."""
    model = mlflow.pyfunc.load_model(model_uri)
    if int8:
        inner = model.unwrap_python_model()
        if type(inner).__name__ != "StudentModel":
            raise ValueError(f"--int8 applies to students, and {model_uri} is a teacher; drop --int8")
        inner.model = quantize_student(inner.model)  # also for students logged without the int8 option
    return model


def predict_texts(model_uri: str, texts: list[str], int8: bool = False) -> pd.DataFrame:
    """Load a registered (or any) pyfunc student or teacher and score ``texts`` (``int8``: see ``load_pyfunc``)."""
    # a one-column table: models logged before the input was unnamed (it was 'text') read it too
    return load_pyfunc(model_uri, int8).predict(pd.DataFrame({"text": texts}))
