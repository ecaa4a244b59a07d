"""End to end through ``mlflow run`` against a real ``mlflow server`` (SQLite store): teacher ->
soft_labels -> student pair, on the shipped sample with a tiny teacher built from a config."""
from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest
from conftest import BIN, ROOT, free_port, run_cli
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow  # trains models or serves them for tens of seconds: -m 'not slow' skips

STUDENT = ["-P", "hidden=8", "-P", "embedding_dim=16", "-P", "vocab_size=2000", "-P", "max_len=64",
           "-P", "epochs=1", "-P", "seed=3"]


def mlflow_run(entry: str, params: list[str], uri: str, tmp_path) -> str:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "e2e",
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(BIN / "mlflow"), "run", str(ROOT), "-e", entry, "--env-manager", "local", *params],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return re.search(r"Run \(ID '([0-9a-f]+)'\) succeeded", proc.stderr).group(1)


@pytest.fixture(scope="module")
def pipeline(mlflow_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    ckpt = str(tmp / "checkpoints")
    teacher = mlflow_run("teacher", ["-P", "model=tiny", "-P", "max_len=32", "-P", "epochs=1", "-P", "train_size=200",
                                     "-P", "batch_size=16", "-P", f"checkpoint_dir={ckpt}"], mlflow_server, tmp)
    labels = mlflow_run("soft_labels", ["-P", f"teacher_run_id={teacher}", "-P", f"cache_dir={ckpt}"], mlflow_server, tmp)
    pair = mlflow_run("student", ["-P", f"soft_labels_run_id={labels}", *STUDENT], mlflow_server, tmp)
    return {"uri": mlflow_server, "teacher": teacher, "labels": labels, "pair": pair, "tmp": tmp}


@pytest.fixture(scope="module")
def client(pipeline):
    return MlflowClient(tracking_uri=pipeline["uri"])


def artifact_paths(client, run_id, path=""):
    out = []
    for f in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, f.path) if f.is_dir else [f.path]
    return set(out)


def test_teacher_run(pipeline, client):
    run = client.get_run(pipeline["teacher"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == "tiny" and run.data.params["max_len"] == "32"
    assert run.data.params["truncation"] == "head+tail"
    for split in ("val", "test"):
        for m in ("accuracy", "f1", "precision", "recall", "log_loss", "ece"):
            assert f"{split}_{m}" in run.data.metrics
        assert 0.0 <= run.data.metrics[f"{split}_accuracy"] <= 1.0
    assert len(client.get_metric_history(run.info.run_id, "loss")) >= 2  # per-step loss
    assert "eval_accuracy" in run.data.metrics  # per-epoch validation
    assert {"model/config.json", "model/model.safetensors", "model/tokenizer.json",
            "predictions/predictions.parquet"} <= artifact_paths(client, run.info.run_id)


def test_the_teacher_is_registered_and_serves_its_own_logits(pipeline, client):
    """The teacher run's checkpoint is registered as kd-imdb-teacher: described, tagged, and as a pyfunc it
    gives the run's own test predictions (same window), for a list, one string, and through kd-imdb predict."""
    import mlflow
    import pandas as pd

    from kd_imdb.data import load_data
    from kd_imdb.metrics import softmax

    (version,) = client.search_model_versions(f"name = 'kd-imdb-teacher' and run_id = '{pipeline['teacher']}'")
    assert version.tags["base_model"] == "tiny-bert" and version.tags["max_len"] == "32"
    assert version.tags["teacher_run"] == pipeline["teacher"]
    run = client.get_run(pipeline["teacher"])
    assert version.tags["test_accuracy"] == f"{run.data.metrics['test_accuracy']:.4f}"
    assert pipeline["teacher"] in version.description and "32 tokens (head+tail)" in version.description
    assert "teachers" in client.get_registered_model("kd-imdb-teacher").description.lower()

    logged = pd.read_parquet(client.download_artifacts(pipeline["teacher"], "predictions/predictions.parquet",
                                                       str(pipeline["tmp"])))
    test = load_data("sample").split("test").head(6)
    expected = softmax(logged.set_index("id").loc[test["id"], ["logit_0", "logit_1"]].to_numpy())[:, 1]
    mlflow.set_tracking_uri(pipeline["uri"])
    try:
        model = mlflow.pyfunc.load_model(f"models:/kd-imdb-teacher/{version.version}")
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_allclose(model.predict(test["text"].tolist())["probability"], expected, atol=1e-5)
    assert model.predict(test["text"].iloc[0])["probability"].iloc[0] == pytest.approx(expected[0], abs=1e-5)
    proc = run_cli("predict", "--model", f"models:/kd-imdb-teacher/{version.version}", test["text"].iloc[0],
                   env={"MLFLOW_TRACKING_URI": pipeline["uri"]}, cwd=pipeline["tmp"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\t")[1] == f"{expected[0]:.4f}"


def test_mlflow_run_logs_params_without_shell_quotes(pipeline, client):
    """mlflow run logs each entry point parameter shell-quoted: an empty default would show as ''."""
    for stage in ("teacher", "labels", "pair"):
        params = client.get_run(pipeline[stage]).data.params
        assert params and not [k for k, v in params.items() if v.startswith("'") or v == ""], (stage, params)
    assert client.get_run(pipeline["labels"]).data.params["logits_file"] == "none"


def test_soft_labels_run_reuses_teacher_predictions(pipeline, client):
    from kd_imdb.data import load_data
    from kd_imdb.soft_labels import read_logits

    run = client.get_run(pipeline["labels"])
    teacher = client.get_run(pipeline["teacher"])
    data = load_data("sample")
    assert run.data.tags["fingerprint.teacher_run_id"] == pipeline["teacher"]
    assert run.data.tags["fingerprint.data_hash"] == data.content_hash
    assert run.data.tags["fingerprint.max_len"] == "32"
    # The test logits were taken from the teacher run, so the scores agree to the last digit.
    assert run.data.metrics["teacher_test_accuracy"] == teacher.data.metrics["test_accuracy"]
    local = client.download_artifacts(run.info.run_id, "soft_labels/logits.parquet", str(pipeline["tmp"]))
    frame, fingerprint = read_logits(local)
    assert fingerprint["teacher_run_id"] == pipeline["teacher"]
    assert set(frame["id"]) == set(data.frame["id"])
    assert np.isfinite(frame[["logit_0", "logit_1"]].to_numpy()).all()


def test_student_pair_nested_runs_start_from_identical_weights(pipeline, client):
    parent = client.get_run(pipeline["pair"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{pipeline['pair']}'")
    arms = {c.data.tags["kd_imdb.arm"]: c for c in children}
    assert set(arms) == {"scratch", "kd"}
    assert arms["scratch"].data.tags["init_sha256"] == arms["kd"].data.tags["init_sha256"]
    assert arms["kd"].data.params["temperature"] == "2.0" and arms["kd"].data.params["mode"] == "kd"
    assert "temperature" not in arms["scratch"].data.params
    for arm in arms.values():
        assert arm.info.status == "FINISHED"
        assert {"student/model.safetensors", "student/config.json", "student/tokenizer.json"} <= artifact_paths(
            client, arm.info.run_id)
        assert 0.0 <= arm.data.metrics["test_teacher_agreement"] <= 1.0
    diff = arms["kd"].data.metrics["test_accuracy"] - arms["scratch"].data.metrics["test_accuracy"]
    assert parent.data.metrics["kd_minus_scratch_test_accuracy"] == pytest.approx(diff)
    # MLflow logged the entry point's parameters; the code did not log them again under other names.
    assert parent.data.params["hidden"] == "8" and "hidden_size" not in parent.data.params


def test_same_seed_again_gives_identical_metrics(pipeline, client):
    """A scratch run alone with the pair's seed reproduces the pair's scratch arm exactly."""
    parent = client.get_run(pipeline["pair"])
    scratch = [c for c in client.search_runs([parent.info.experiment_id],
                                             f"tags.mlflow.parentRunId = '{pipeline['pair']}'")
               if c.data.tags["kd_imdb.arm"] == "scratch"][0]
    args = ["student", "--mode", "scratch", "--hidden", "8", "--embedding-dim", "16", "--vocab-size", "2000",
            "--max-len", "64", "--epochs", "1", "--seed", "3"]
    proc = run_cli(*args, env={"MLFLOW_TRACKING_URI": pipeline["uri"], "MLFLOW_EXPERIMENT_NAME": "e2e-again"},
                   cwd=pipeline["tmp"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = client.search_runs([client.get_experiment_by_name("e2e-again").experiment_id])[0]
    for m in ("test_accuracy", "test_f1", "test_log_loss", "val_accuracy"):
        assert again.data.metrics[m] == scratch.data.metrics[m]


def test_unreachable_tracking_server_is_one_line_error(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    proc = run_cli("student", "--mode", "scratch", "--epochs", "1", env={"MLFLOW_TRACKING_URI": uri}, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: tracking server")
    assert "unreachable" in proc.stderr and "Traceback" not in proc.stderr


def test_teacher_rerun_resumes_from_its_checkpoint(pipeline, client):
    """The same teacher config again finds its Trainer checkpoint and resumes instead of retraining."""
    ckpt = str(pipeline["tmp"] / "checkpoints")
    again = mlflow_run("teacher", ["-P", "model=tiny", "-P", "max_len=32", "-P", "epochs=1", "-P", "train_size=200",
                                   "-P", "batch_size=16", "-P", f"checkpoint_dir={ckpt}", "-P", "register=false"],
                       pipeline["uri"], pipeline["tmp"])
    first, second = client.get_run(pipeline["teacher"]), client.get_run(again)
    assert not client.search_model_versions(f"run_id = '{again}'")  # register=false
    assert first.data.tags["kd_imdb.resumed_from"] == "none"
    assert "checkpoint-" in second.data.tags["kd_imdb.resumed_from"]
    # resumed at the end of training: the same weights, so the same test logits and metrics
    assert second.data.metrics["test_accuracy"] == first.data.metrics["test_accuracy"]
    assert second.data.metrics["test_log_loss"] == pytest.approx(first.data.metrics["test_log_loss"], rel=1e-5)


def test_onnx_int8_labelling_logs_its_agreement_with_fp32(pipeline, client):
    proc = run_cli("soft-labels", "--teacher-run-id", pipeline["teacher"], "--onnx-int8", "true", "--cache-dir",
                   str(pipeline["tmp"] / "int8"), env={"MLFLOW_TRACKING_URI": pipeline["uri"],
                                                        "MLFLOW_EXPERIMENT_NAME": "e2e"}, cwd=pipeline["tmp"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = client.get_run(proc.stdout.strip().split()[-1])
    assert run.data.tags["fingerprint.onnx_int8"] == "True"
    assert 0.0 <= run.data.metrics["int8_mean_kl"] < 0.01
    assert 0.5 <= run.data.metrics["int8_top1_agreement"] <= 1.0
    assert run.data.metrics["label_reviews_per_s"] > 0


def test_windowed_labelling_scores_whole_reviews(pipeline, client):
    """--stride: every window of every review is scored and pooled (pooling chosen on validation); the
    artifact's logits are the pooled window logits of the chunk cache; a torn chunk is recomputed."""
    import glob

    import pandas as pd

    from kd_imdb.soft_labels import read_logits
    from kd_imdb.teacher import POOLINGS, pool_windows

    env = {"MLFLOW_TRACKING_URI": pipeline["uri"], "MLFLOW_EXPERIMENT_NAME": "e2e"}
    cache = pipeline["tmp"] / "windows"
    args = ("soft-labels", "--teacher-run-id", pipeline["teacher"], "--stride", "20", "--cache-dir", str(cache))
    proc = run_cli(*args, env=env, cwd=pipeline["tmp"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = client.get_run(proc.stdout.strip().split()[-1])
    m, tags = run.data.metrics, run.data.tags
    assert tags["fingerprint.truncation"] == "windows/20" and m["reused_reviews"] == 0
    assert m["windows_per_review"] > 3  # max_len 32: sample reviews span many windows
    assert tags["fingerprint.pooling"] == max(POOLINGS, key=lambda h: m[f"val_accuracy_pool_{h}"])
    logits, _ = read_logits(client.download_artifacts(run.info.run_id, "soft_labels/logits.parquet", str(pipeline["tmp"])))
    [chunk] = glob.glob(f"{cache}/soft_labels-*/chunk-*.parquet")
    windows = pd.read_parquet(chunk)
    codes, ids = pd.factorize(windows["id"])
    pooled = pool_windows(windows[["logit_0", "logit_1"]].to_numpy(), codes, len(ids), tags["fingerprint.pooling"])
    expected = pd.DataFrame(pooled, index=ids, columns=["logit_0", "logit_1"]).loc[logits["id"]]
    np.testing.assert_allclose(logits[["logit_0", "logit_1"]].to_numpy(), expected.to_numpy(), rtol=1e-6)
    assert len(windows) == pytest.approx(m["windows_per_review"] * len(ids))

    with open(chunk, "r+b") as f:  # a crash mid-write, from before writes were atomic
        f.truncate(100)
    again = run_cli(*args, env=env, cwd=pipeline["tmp"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert "unreadable" in again.stderr and "recomputing" in again.stderr
    rerun = client.get_run(again.stdout.strip().split()[-1]).data.metrics
    assert rerun["teacher_test_accuracy"] == m["teacher_test_accuracy"]
    assert rerun["teacher_test_log_loss"] == pytest.approx(m["teacher_test_log_loss"], rel=1e-5)
