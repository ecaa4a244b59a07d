"""kd_imdb.serving behind a real ``mlflow models serve``: every REST input format answers, non-text is a 400
with one line and no stack trace, and a bounded load test (benchmarks/serving_load.py) gets no 5xx."""
from __future__ import annotations

import json
import subprocess

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import torch
from conftest import BIN, ROOT, free_port, wait_until_it_answers
from mlflow.exceptions import MlflowException

from kd_imdb.config import StudentSpec
from kd_imdb.data import load_data
from kd_imdb.experiment import save_student
from kd_imdb.serving import log_pyfunc, model_name, texts_from
from kd_imdb.students import build_student
from kd_imdb.tokenizer import train_tokenizer

pytestmark = pytest.mark.slow  # trains models or serves them for tens of seconds: -m 'not slow' skips


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny GRU student logged as the pyfunc, served on a free loopback port; yields its URL."""
    root = tmp_path_factory.mktemp("served")
    texts = load_data("sample").split("train")["text"].tolist()
    spec = StudentSpec(arch="gru", hidden=4, embedding_dim=8, vocab_size=300)
    save_student(root / "student", build_student(spec, 0), spec, train_tokenizer(texts, vocab_size=300), 64)
    store = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(store)
    with mlflow.start_run():
        info = log_pyfunc(root / "student")
    mlflow.set_tracking_uri(None)
    port = free_port()
    log = open(root / "serve.log", "w")
    proc = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", info.model_uri, "--env-manager", "local",
                             "--host", "127.0.0.1", "-p", str(port)], cwd=root, stdout=log, stderr=subprocess.STDOUT,
                            env={"PATH": f"{BIN}:/usr/bin:/bin", "MLFLOW_TRACKING_URI": store, "HOME": str(root)})
    url = f"http://127.0.0.1:{port}"
    wait_until_it_answers(f"{url}/ping", proc, root / "serve.log")
    yield url, info.model_uri, store
    proc.terminate()
    proc.wait(timeout=30)


def post(url: str, body: str) -> requests.Response:
    return requests.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=30)


def test_every_rest_input_format_gets_the_same_predictions(served):
    url, frame = served[0], pd.DataFrame({"text": ["a fine film", "a dull film"]})
    bodies = [json.dumps({"inputs": frame["text"].tolist()}),
              json.dumps({"instances": frame["text"].tolist()}),
              json.dumps({"instances": [{"text": t} for t in frame["text"]]}),
              json.dumps({"dataframe_records": frame.to_dict(orient="records")}),
              json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)})]
    answers = []
    for body in bodies:
        response = post(url, body)
        assert response.status_code == 200, response.text
        answers.append(response.json()["predictions"])
    assert len(answers[0]) == 2 and {"label", "probability"} <= set(answers[0][0])
    assert all(a == answers[0] for a in answers)
    single = post(url, json.dumps({"inputs": "a fine film"}))  # one string: one review
    assert single.status_code == 200
    assert single.json()["predictions"][0]["probability"] == pytest.approx(answers[0][0]["probability"], abs=1e-6)


def test_the_loaded_pyfunc_takes_a_list_a_string_a_series_and_a_table_alike(served):
    _, model_uri, store = served
    mlflow.set_tracking_uri(store)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    reviews = load_data("sample").split("test")["text"].head(2).tolist()
    expected = model.predict(reviews)["probability"].tolist()
    assert expected[0] != expected[1]
    for same in (pd.Series(reviews), pd.DataFrame({"text": reviews}), pd.DataFrame({"text": reviews, "id": [1, 2]}),
                 {"text": reviews}):
        assert model.predict(same)["probability"].tolist() == expected
    # MLflow passes on only a table's first column: a table led by anything but 'text' is refused, not scored
    with pytest.raises(MlflowException, match=r"no 'text' column \(columns: \['id'\]\)"):
        model.predict(pd.DataFrame({"id": [1, 2], "text": reviews}))
    assert model.predict(reviews[0])["probability"].tolist() == pytest.approx(expected[:1], abs=1e-6)
    assert model.metadata.signature.inputs.has_input_names() is False  # why a plain list passes MLflow's check


def test_the_student_serves_int8_when_its_model_config_asks(served):
    _, model_uri, store = served
    mlflow.set_tracking_uri(store)
    try:
        fp32 = mlflow.pyfunc.load_model(model_uri)
        int8 = mlflow.pyfunc.load_model(model_uri, model_config={"int8": True})
    finally:
        mlflow.set_tracking_uri(None)
    assert isinstance(int8.unwrap_python_model().model.gru, torch.ao.nn.quantized.dynamic.GRU)
    assert isinstance(fp32.unwrap_python_model().model.gru, torch.nn.GRU)  # logged as fp32
    reviews = load_data("sample").split("test")["text"].head(20).tolist()
    p32, p8 = fp32.predict(reviews)["probability"].to_numpy(), int8.predict(reviews)["probability"].to_numpy()
    assert 0 < np.abs(p32 - p8).max() < 0.01  # int8 weights: close to fp32, not equal


@pytest.mark.parametrize("body, reason", [
    ('{"inputs": [5]}', "review 0 is not a string (int)"),
    ('{"inputs": {"text": ["a fine film"]}}', "un-named"),  # MLflow's parser: the input has no name
    ('{"inputs": ["a fine film", 7]}', "review 1 is not a string (int)"),
    ('{"instances": [null]}', "review 0 is not a string (NoneType)"),
    ('{"dataframe_records": [{"text": 5}]}', "review 0 is not a string (int)"),
    ('{"dataframe_split": {"columns": ["text"], "data": [[null]]}}', "review 0 is not a string"),
    ('{"inputs": [""]}', "review 0 is empty"),
    ('{"text": 5}', "exactly one of the input fields"),
    ("null", "exactly one of the input fields"),
    ("not json", "valid JSON"),
])
def test_non_text_is_a_400_with_its_reason_and_no_stack_trace(served, body, reason):
    url = served[0]
    response = post(url, body)
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert reason in message, message
    assert "stack_trace" not in response.json() and "Traceback" not in response.text
    assert str(ROOT) not in response.text and "site-packages" not in response.text  # no server paths


def test_the_cli_edge_and_the_pyfunc_read_reviews_alike():
    assert texts_from({"text": ["a", "b"]}) == ["a", "b"]
    assert texts_from(pd.DataFrame({"text": ["a"]})) == ["a"]
    assert texts_from(pd.DataFrame({0: ["a", "b"]})) == ["a", "b"]  # MLflow's unnamed column
    assert texts_from("one review") == ["one review"]
    for bad in ({"text": 5}, {"review": "a"}, 5, [None], pd.DataFrame({"a": ["x"], "b": ["y"]})):
        with pytest.raises(ValueError):
            texts_from(bad)


def test_a_bounded_load_gets_no_5xx_and_400_for_every_malformed_body(served, tmp_path):
    url = served[0]
    out = tmp_path / "load.json"
    proc = subprocess.run([str(BIN / "python"), str(ROOT / "benchmarks" / "serving_load.py"), "--url", url,
                           "--clients", "4", "--requests", "20", "--malformed-every", "5", "--json-out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["requests"] == 80 and figures["server_errors"] == 0 and figures["wrong_status"] == []
    assert figures["status"] == {"200": 64, "400": 16}  # every 5th of each client's 20 is malformed
    assert figures["tracebacks"] == 0 and 0 < figures["p50_ms"] <= figures["p99_ms"]


def test_model_names_keep_only_what_mlflow_accepts(tmp_path):
    names = [model_name("student-gru-64+bigrams-s1-kd_transfer"), model_name("teacher-bge-small-en-v1.5-512"),
             model_name("student-cnn-64-s0-kd@linear")]
    assert names == ["student-gru-64-bigrams-s1-kd_transfer", "teacher-bge-small-en-v1-5-512", "student-cnn-64-s0-kd-linear"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/m.db")
    try:
        for name in names:  # MLflow takes each as a logged model's name
            assert mlflow.initialize_logged_model(name=name).name == name
    finally:
        mlflow.set_tracking_uri(None)
