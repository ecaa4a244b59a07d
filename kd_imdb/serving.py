"""The shipped student: an MLflow pyfunc that takes raw review texts, and its registration.

The pyfunc carries the student's safetensors weights, config and word tokenizer as artifacts and
returns, per review, the label (0 negative, 1 positive) and the positive-class probability.
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
from mlflow.models import ModelSignature, infer_signature
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from mlflow.types.schema import AnyType, ColSpec, Schema
from safetensors.torch import load_file

import kd_imdb
from kd_imdb.config import StudentSpec, describe_arm
from kd_imdb.metrics import softmax
from kd_imdb.students import build_student
from kd_imdb.tokenizer import encode_texts, load_tokenizer
from kd_imdb.train import predict

log = logging.getLogger(__name__)

REGISTERED_NAME = "kd-imdb-student"
EXAMPLE = pd.DataFrame({"text": ["A moving, beautifully acted film.", "Dull plot and wooden acting."]})


def load_student(directory: str | Path):
    """(model, tokenizer, max_len) from a ``student/`` folder (model.safetensors, config.json, tokenizer.json)."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    model = build_student(StudentSpec.from_dict(config), seed=0)
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    return model.eval(), load_tokenizer(directory / "tokenizer.json"), config["max_len"]


# The input column is typed Any, not string: with a string column MLflow's scoring server casts JSON
# 5 and null to "5" and "None" before the model sees them, and scores them as reviews. texts_from
# checks the types instead, so non-text is answered 400. It is named 'text': an unnamed column would
# let a plain Python list through MLflow's schema check, but the scoring server then refuses the REST
# form {"inputs": {"text": [...]}}; in Python, pass a list as {"text": [...]} (or kd-imdb predict).
INPUT_SCHEMA = Schema([ColSpec(AnyType(), "text")])


def texts_from(model_input) -> list[str]:
    """Raw texts from a DataFrame with a ``text`` column, a Series, a list of strings, a {"text": ...}
    mapping or one string; anything else is a ValueError naming the first bad review."""
    if isinstance(model_input, dict):
        if "text" not in model_input:
            raise ValueError(f"input has no 'text' field (fields: {list(model_input)}); pass reviews in 'text'")
        model_input = model_input["text"]
    if isinstance(model_input, str):
        model_input = [model_input]
    if isinstance(model_input, pd.DataFrame):
        if "text" not in model_input.columns:
            raise ValueError(f"input has no 'text' column (columns: {list(model_input.columns)}); "
                             "pass a table with one review per row in 'text'")
        model_input = model_input["text"]
    if not isinstance(model_input, (list, tuple, pd.Series, np.ndarray)):
        raise ValueError(f"reviews must be a list of strings, got {type(model_input).__name__}; pass review texts")
    texts = list(model_input)
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

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        # MlflowExceptions are what the scoring server answers without a stack trace: bad input gets a
        # 400 with one line; anything else a 500 whose traceback stays in the server's log.
        try:
            texts = texts_from(model_input)
        except ValueError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        try:
            probability = softmax(predict(self.model, encode_texts(self.tokenizer, texts, self.max_len)))[:, 1]
        except Exception:
            log.exception("the student failed on a batch of %d reviews", len(texts))
            raise MlflowException("the student failed on this input; the server's log has the traceback",
                                  error_code=INTERNAL_ERROR) from None
        return pd.DataFrame({"label": (probability >= 0.5).astype(np.int64), "probability": probability})


def log_pyfunc(student_dir: str | Path, name: str = "model"):
    """Log the student in ``student_dir`` as a pyfunc model in the active run; returns its ModelInfo."""
    model = StudentModel()
    model.model, model.tokenizer, model.max_len = load_student(student_dir)
    signature = ModelSignature(inputs=INPUT_SCHEMA, outputs=infer_signature(EXAMPLE, model.predict(None, EXAMPLE)).outputs)
    with tempfile.TemporaryDirectory() as tmp:
        # The model needs the package's code, not its 1.4 MB demo sample or bytecode caches.
        code = Path(tmp) / "kd_imdb"
        shutil.copytree(Path(kd_imdb.__file__).parent, code, ignore=shutil.ignore_patterns("sample", "__pycache__"))
        return mlflow.pyfunc.log_model(
            name=name, python_model=StudentModel(), artifacts={"student": str(student_dir)}, signature=signature,
            input_example=EXAMPLE, code_paths=[str(code)], pip_requirements=model_requirements(),
        )


def model_requirements() -> list[str]:
    """The served model's requirements, torch pinned to the version it was saved with: an unpinned
    ``torch`` pulls a multi-GB CUDA build where a CPU student needs none of it."""
    return [f"torch=={torch.__version__.split('+')[0]}", "tokenizers", "safetensors", "pandas", "numpy", "mlflow"]


MODEL_DESCRIPTION = (
    "Tiny GRU/CNN students distilled from a transformer teacher on IMDB (kd_imdb). Input: review texts "
    "(a table with a 'text' column, or {'text': [...]}). Output: label (1 = positive) and "
    "the positive-class probability. @champion is the best student by validation accuracy; @best-<arch> "
    "the best of its architecture. Each version's description names its study, teacher and test accuracy."
)


def register_best(runs: pd.DataFrame, client) -> dict:
    """Register the best student by validation accuracy (never test) as ``kd-imdb-student@champion``,
    and the best of each architecture under the alias ``best-<arch>``. Returns {alias: version}."""
    if runs.empty or "val_accuracy" not in runs:
        return {}
    chosen = {"champion": runs.loc[runs["val_accuracy"].idxmax()]}
    for arch, part in runs.groupby("arch"):
        chosen[f"best-{arch}"] = part.loc[part["val_accuracy"].idxmax()]
    versions, logged = {}, {}
    for alias, row in chosen.items():
        run_id = row["run_id"]
        if run_id not in logged:
            # named after what it is: the logged-model list and the registry's source tell students apart
            name = re.sub(r"[^A-Za-z0-9._-]", ".", f"student-{row['configuration']}-s{row['seed']}-{row['arm']}")
            with tempfile.TemporaryDirectory() as tmp:
                student_dir = client.download_artifacts(run_id, "student", tmp)
                with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
                    info = log_pyfunc(student_dir, name=name)
            logged[run_id] = mlflow.register_model(info.model_uri, REGISTERED_NAME).version
            describe_version(client, logged[run_id], row)
        client.set_registered_model_alias(REGISTERED_NAME, alias, logged[run_id])
        versions[alias] = logged[run_id]
        log.info("registered %s version %s (%s, val accuracy %.4f) as @%s", REGISTERED_NAME, logged[run_id],
                 row["configuration"], row["val_accuracy"], alias)
    client.update_registered_model(REGISTERED_NAME, description=MODEL_DESCRIPTION)
    return versions


def describe_version(client, version: str, row: pd.Series) -> None:
    """A registered version's description and tags: what it is, where it came from, how it scored."""
    run = client.get_run(row["run_id"])
    study = run.data.tags.get("kd_imdb.study", "")
    teacher = run.data.params.get("soft_labels_run_id", "")
    tags = {"arch": row["arch"], "hidden": str(row["hidden"]), "seed": str(row["seed"]), "arm": row["arm"],
            "teacher_run": teacher, "study_run": study, "val_accuracy": f"{row['val_accuracy']:.4f}",
            "test_accuracy": f"{row['test_accuracy']:.4f}"}
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_NAME, version, key, value)
    client.update_model_version(REGISTERED_NAME, version, description=(
        f"{row['configuration']} seed {row['seed']}, arm {row['arm']}: {describe_arm(row['arm'])}. "
        f"From study run {study or '(none)'}, soft labels (teacher) run {teacher}. "
        f"Validation accuracy {row['val_accuracy']:.4f} (selected on it), test accuracy {row['test_accuracy']:.4f}."))


def predict_texts(model_uri: str, texts: list[str]) -> pd.DataFrame:
    """Load a registered (or any) pyfunc student and score ``texts``."""
    return mlflow.pyfunc.load_model(model_uri).predict(pd.DataFrame({"text": texts}))
