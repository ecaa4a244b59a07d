"""kd-imdb evaluate: a real pyfunc student and a tiny teacher checkpoint scored on a user's own file,
in a real SQLite store, through the CLI (exit codes, one error line, runs closed)."""
from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_cli
from mlflow.tracking import MlflowClient

from kd_imdb import evaluation, teacher
from kd_imdb.config import StudentSpec
from kd_imdb.data import DataError, load_data, load_labelled
from kd_imdb.evaluation import EvaluateConfig, confusion
from kd_imdb.experiment import save_student
from kd_imdb.metrics import classification_metrics
from kd_imdb.serving import load_pyfunc, log_pyfunc
from kd_imdb.students import build_student
from kd_imdb.tokenizer import train_tokenizer


@pytest.fixture
def student_uri(local_store, tmp_path):
    """A tiny GRU student logged as the pyfunc in the local store; its runs:/ URI."""
    texts = load_data("sample").split("train")["text"].tolist()
    spec = StudentSpec(arch="gru", hidden=4, embedding_dim=8, vocab_size=300)
    save_student(tmp_path / "student", build_student(spec, 0), spec, train_tokenizer(texts, vocab_size=300), 64)
    with mlflow.start_run():
        return log_pyfunc(tmp_path / "student", name="student").model_uri


@pytest.fixture
def user_file(tmp_path):
    """A user's own labelled file, no split column: 60 sample test reviews, labels as strings of 0/1."""
    test = load_data("sample").split("test").groupby("label").head(30)
    path = tmp_path / "mine.csv"
    test[["text", "label"]].to_csv(path, index=False)
    return path, test.reset_index(drop=True)


def test_a_file_without_splits_is_read_whole_and_a_split_is_chosen_by_name(user_file):
    path, expected = user_file
    whole = load_labelled(str(path), "test")  # no split column: every row, whatever --split says
    assert len(whole) == 60 and sorted(whole["id"]) == sorted(expected["id"])
    assert load_labelled("sample", "test")["label"].value_counts().to_dict() == {0: 500, 1: 500}
    assert len(load_labelled("sample", "all")) == 2000  # the unlabelled rows are left out
    with pytest.raises(DataError, match="no labelled reviews in split 'validation'.*labelled splits: test, train"):
        load_labelled("sample", "validation")


def test_confusion_table_counts_each_cell():
    table = confusion(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]))
    assert table["reviews"].tolist() == [1, 1, 1, 2] and table.iloc[1].to_dict() == {
        "true": "negative", "predicted": "positive", "reviews": 1}


def test_evaluate_logs_a_run_whose_metrics_are_the_students_own(student_uri, user_file, local_store):
    path, expected = user_file
    proc = run_cli("evaluate", "--model", student_uri, "--data", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("accuracy ")
    client = MlflowClient(local_store)
    (run,) = client.search_runs(client.get_experiment_by_name("kd_imdb").experiment_id,
                                "tags.`kd_imdb.stage` = 'evaluate'")
    assert run.info.status == "FINISHED" and run.info.run_name == "evaluate student on mine.csv (test)"
    assert run.data.tags["kd_imdb.model_kind"] == "pyfunc" and run.data.params["reviews"] == "60"
    # the same numbers as scoring the pyfunc directly
    probability = mlflow.pyfunc.load_model(student_uri).predict(expected[["text"]])["probability"].to_numpy()
    p = np.clip(probability, 1e-7, 1 - 1e-7)
    direct = classification_metrics(np.stack([np.log1p(-p), np.log(p)], axis=1), expected["label"].to_numpy())
    for key in ("accuracy", "f1", "ece", "brier"):
        assert run.data.metrics[key] == pytest.approx(direct[key], abs=1e-6)
    assert run.data.metrics["accuracy_ci_low"] < run.data.metrics["accuracy"] < run.data.metrics["accuracy_ci_high"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert artifacts == {"evaluation/confusion.json", "evaluation/reliability.png", "evaluation/predictions.json"}
    table = json.loads(open(client.download_artifacts(run.info.run_id, "evaluation/confusion.json")).read())
    cells = dict(zip(((r[0], r[1]) for r in table["data"]), (r[2] for r in table["data"])))
    assert sum(cells.values()) == 60
    assert cells[("positive", "positive")] + cells[("negative", "negative")] == round(direct["accuracy"] * 60)
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "imdb-test" and json.loads(dataset.dataset.source)["uri"] == str(path)


def test_evaluate_int8_scores_the_quantised_student_and_refuses_a_teacher(student_uri, user_file, local_store, tmp_path):
    path, expected = user_file
    proc = run_cli("evaluate", "--model", student_uri, "--data", str(path), "--int8")
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(local_store)
    (run,) = client.search_runs(client.get_experiment_by_name("kd_imdb").experiment_id,
                                "tags.`kd_imdb.stage` = 'evaluate'")
    assert run.info.run_name == "evaluate student int8 on mine.csv (test)" and run.data.params["int8"] == "True"
    int8 = load_pyfunc(student_uri, int8=True)
    assert isinstance(int8.unwrap_python_model().model.gru, torch.ao.nn.quantized.dynamic.GRU)
    p = np.clip(int8.predict(expected[["text"]])["probability"].to_numpy(), 1e-7, 1 - 1e-7)
    direct = classification_metrics(np.stack([np.log1p(-p), np.log(p)], axis=1), expected["label"].to_numpy())
    assert run.data.metrics["brier"] == pytest.approx(direct["brier"], abs=1e-6)  # the int8 student's own numbers
    # a teacher has no int8 student path: one error line, exit 2, and its run closes FAILED
    folder = tmp_path / "teacher"
    teacher.load_model("tiny", seed=0).save_pretrained(folder)
    teacher.load_tokenizer("packaged").save_pretrained(folder)
    proc = run_cli("evaluate", "--model", str(folder), "--data", str(path), "--int8")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "--int8 applies to students" in errors[0]
    runs = client.search_runs(client.get_experiment_by_name("kd_imdb").experiment_id, "tags.`kd_imdb.stage` = 'evaluate'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]


def test_a_teacher_checkpoint_is_scored_at_its_own_window(local_store, tmp_path, user_file):
    path, expected = user_file
    folder = tmp_path / "teacher"
    teacher.load_model("tiny", seed=0).save_pretrained(folder)
    tokenizer = teacher.load_tokenizer("packaged")
    tokenizer.save_pretrained(folder)
    run_id, _ = evaluation.run(EvaluateConfig(model=str(folder), data=str(path)))  # in-process: the CLI is tested above
    run = MlflowClient(local_store).get_run(run_id)
    assert run.data.tags["kd_imdb.model_kind"] == "teacher" and run.info.run_name == "evaluate teacher on mine.csv (test)"
    model = teacher.load_model(str(folder))
    logits = teacher.predict_logits(model, teacher.encode(tokenizer, expected["text"].tolist(), 128), tokenizer.pad_token_id)
    assert run.data.metrics["accuracy"] == pytest.approx(classification_metrics(logits, expected["label"].to_numpy())["accuracy"])


def test_a_folder_that_is_no_model_is_one_error_line_and_exit_2_and_the_run_closes_failed(user_file, local_store, tmp_path):
    path, _ = user_file
    proc = run_cli("evaluate", "--model", str(tmp_path), "--data", str(path))  # a folder that is no model
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "neither an MLflow model" in errors[0]
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    client = MlflowClient(local_store)
    runs = client.search_runs(client.get_experiment_by_name("kd_imdb").experiment_id, "tags.`kd_imdb.stage` = 'evaluate'")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert pd.notna(runs[0].info.end_time)
