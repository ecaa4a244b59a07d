"""kd_imdb.soft_labels: the logits file format, registering a logits file, and refusing stale soft labels."""
from __future__ import annotations

import json
import re
import shutil

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient

from kd_imdb.data import SAMPLE_PATH, ImdbData, load_data
from kd_imdb.soft_labels import ARTIFACT, META_KEY, SoftLabelsError, load_for_data, read_logits, write_logits
from kd_imdb.tracking import VALIDATION_TAG, TrackingError

FINGERPRINT = {"teacher_run_id": "external-test", "max_len": 128, "truncation": "head+tail", "onnx_int8": False}


def error_line(proc) -> str:
    """The one ``error:`` line of a failed CLI call (asserting there is exactly one and no traceback)."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return errors[0]


def all_runs(uri: str):
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.fixture(scope="module")
def sample():
    return load_data("sample")


@pytest.fixture(scope="module")
def sample_logits(sample) -> pd.DataFrame:
    """Random logits (fixed seed) for every review id of the sample."""
    ids = sample.frame["id"].drop_duplicates().to_numpy()
    rng = np.random.default_rng(1234)
    values = rng.normal(size=(len(ids), 2))
    return pd.DataFrame({"id": ids, "logit_0": values[:, 0], "logit_1": values[:, 1]})


@pytest.fixture(scope="module")
def db_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("db_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="module")
def other_csv(tmp_path_factory) -> str:
    """A different, small data set: 40 reviews of the sample as a CSV."""
    raw = pd.read_parquet(SAMPLE_PATH)
    sub = raw[raw["split"] != "unsupervised"].groupby(["split", "label"]).head(10)
    path = tmp_path_factory.mktemp("other") / "other.csv"
    sub.to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def registered(tmp_path_factory, sample, sample_logits, db_template):
    """``kd-imdb soft-labels --logits-file F`` on the sample, in a fresh SQLite store."""
    root = tmp_path_factory.mktemp("registered")
    shutil.copy(db_template, root / "mlflow.db")
    uri = f"sqlite:///{root}/mlflow.db"
    path = root / "teacher_logits.parquet"
    write_logits(sample_logits, {**FINGERPRINT, "data_hash": sample.content_hash}, path)
    proc = run_cli("soft-labels", "--logits-file", str(path), cwd=root, env={"MLFLOW_TRACKING_URI": uri})
    return {"root": root, "uri": uri, "path": path, "proc": proc}


# --- the file format ---------------------------------------------------------------------------------


def test_write_read_roundtrip_keeps_fingerprint(tmp_path):
    frame = pd.DataFrame({"id": ["a1", "b2", "c3"], "split": ["train", "validation", "test"],
                          "logit_0": [0.5, -1.25, 3.0], "logit_1": [-0.5, 1.25, -3.0]})
    fingerprint = {"teacher_run_id": "abc", "data_hash": "0123456789abcdef", "max_len": 64, "truncation": "head"}
    write_logits(frame, fingerprint, tmp_path / "l.parquet")
    back, fp = read_logits(tmp_path / "l.parquet")
    pd.testing.assert_frame_equal(back, frame)
    assert fp == fingerprint
    meta = pq.read_schema(tmp_path / "l.parquet").metadata
    assert json.loads(meta[META_KEY]) == fingerprint


def test_file_without_fingerprint_reads_empty(tmp_path):
    frame = pd.DataFrame({"id": ["a"], "logit_0": [1.0], "logit_1": [2.0]})
    frame.to_parquet(tmp_path / "plain.parquet", index=False)
    back, fp = read_logits(tmp_path / "plain.parquet")
    assert fp == {} and back["logit_1"].tolist() == [2.0]


def test_missing_column_is_named(tmp_path):
    pd.DataFrame({"id": ["a"], "logit_0": [1.0]}).to_parquet(tmp_path / "half.parquet", index=False)
    with pytest.raises(SoftLabelsError, match=r"missing column\(s\) logit_1;") as info:
        read_logits(tmp_path / "half.parquet")
    assert "half.parquet" in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_raise(tmp_path, bad):
    frame = pd.DataFrame({"id": ["a", "b"], "logit_0": [1.0, 2.0], "logit_1": [0.0, bad]})
    write_logits(frame, {"data_hash": "x"}, tmp_path / "nf.parquet")
    with pytest.raises(SoftLabelsError, match="non-finite"):
        read_logits(tmp_path / "nf.parquet")


def test_non_numeric_logits_raise(tmp_path):
    """A malformed file is a SoftLabelsError (one line from the CLI), not a TypeError with a traceback."""
    frame = pd.DataFrame({"id": ["a", "b"], "logit_0": ["1.0", "high"], "logit_1": ["0.0", "low"]})
    frame.to_parquet(tmp_path / "str.parquet", index=False)
    with pytest.raises(SoftLabelsError, match="non-numeric logits"):
        read_logits(tmp_path / "str.parquet")


def test_an_id_twice_with_different_logits_is_refused(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b", "a", "b"], "logit_0": [0.0, 1.0, 0.0, 2.0], "logit_1": [1.0, 0.0, 1.0, 0.0]})
    write_logits(frame, FINGERPRINT, tmp_path / "dup.parquet")
    with pytest.raises(SoftLabelsError, match=r"1 review id\(s\) appear twice with different logits \(e.g. 'b'\)"):
        read_logits(tmp_path / "dup.parquet")
    write_logits(frame.iloc[:3], FINGERPRINT, tmp_path / "same.parquet")  # the same logits twice: IMDB's duplicate texts
    assert len(read_logits(tmp_path / "same.parquet")[0]) == 3


def test_missing_or_corrupt_file(tmp_path):
    with pytest.raises(SoftLabelsError, match="not found"):
        read_logits(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"junk" * 100)
    with pytest.raises(SoftLabelsError, match="not a readable parquet"):
        read_logits(tmp_path / "junk.parquet")


# --- registering a logits file -----------------------------------------------------------------------


def test_register_logits_file(registered, sample, sample_logits):
    proc = registered["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = re.search(r"soft labels run: ([0-9a-f]{32})", proc.stdout).group(1)
    client = MlflowClient(registered["uri"])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["kd_imdb.stage"] == "soft_labels"
    assert tags["fingerprint.data_hash"] == sample.content_hash
    assert tags["fingerprint.teacher_run_id"] == "external-test"
    assert tags["fingerprint.registered_from"] == str(registered["path"])
    assert run.data.params["data_hash"] == sample.content_hash
    assert run.data.params["logits_file"] == str(registered["path"])

    # the teacher's scores, computed here from the random logits, joined by review id
    by_id = sample_logits.set_index("id")
    metrics = run.data.metrics
    for split, prefix in (("train", "train"), ("validation", "val"), ("test", "test")):
        part = sample.split(split)
        logits = by_id.loc[part["id"], ["logit_0", "logit_1"]].to_numpy()
        accuracy = float((logits.argmax(axis=1) == part["label"].to_numpy()).mean())
        assert metrics[f"teacher_{prefix}_accuracy"] == pytest.approx(accuracy, abs=1e-12), split
    assert 0.4 < metrics["teacher_test_accuracy"] < 0.6  # random logits score at chance
    assert metrics["reviews"] == len(sample_logits) == 1997  # 3 reviews occur in both train and test

    # the artifact round-trips, with the fingerprint in its metadata and in fingerprint.json
    local = client.download_artifacts(run_id, ARTIFACT, str(registered["root"] / "dl"))
    frame, fingerprint = read_logits(local)
    assert fingerprint == {**FINGERPRINT, "data_hash": sample.content_hash,
                           "registered_from": str(registered["path"])}
    assert list(frame.columns) == ["id", "split", "logit_0", "logit_1"]
    merged = frame.merge(sample_logits, on="id", how="left", suffixes=("", "_mine"))
    assert len(frame) == 1997 and frame["id"].is_unique and set(frame["id"]) == set(sample_logits["id"])
    np.testing.assert_array_equal(merged["logit_0"], merged["logit_0_mine"])
    np.testing.assert_array_equal(merged["logit_1"], merged["logit_1_mine"])
    split_of = sample.frame.drop_duplicates("id").set_index("id")["split"]
    assert (frame.set_index("id")["split"] == split_of.loc[frame["id"]]).all()
    fp_json = client.download_artifacts(run_id, "soft_labels/fingerprint.json", str(registered["root"] / "dl2"))
    assert json.loads(open(fp_json).read()) == fingerprint


def test_load_for_data_aligns_by_id_on_the_same_validation_split_only(registered, sample, sample_logits, monkeypatch):
    """Logits join by review id whatever the row order; a stage that carved another validation split is
    refused (its validation reviews may be ones the teacher selected on or trained on)."""
    assert registered["proc"].returncode == 0
    run_id = re.search(r"soft labels run: (\w+)", registered["proc"].stdout).group(1)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    mlflow.set_tracking_uri(registered["uri"])
    run = MlflowClient().get_run(run_id)
    assert run.data.tags[VALIDATION_TAG] == sample.validation_hash
    ids = MlflowClient().download_artifacts(run_id, "data/validation_ids.txt", str(registered["root"] / "val"))
    assert open(ids).read().split("\n") == sorted(sample.split("validation")["id"])
    by_id = sample_logits.set_index("id")
    shuffled = ImdbData(sample.frame.sample(frac=1, random_state=1).reset_index(drop=True), "sample")
    assert shuffled.validation_hash == sample.validation_hash
    aligned = load_for_data(run_id, shuffled)
    assert aligned.shape == (2000, 2)
    np.testing.assert_array_equal(aligned.to_numpy(), by_id.loc[shuffled.frame["id"]].to_numpy())
    with pytest.raises(TrackingError, match="another validation split"):
        load_for_data(run_id, load_data("sample", seed=7))


def test_load_for_data_refuses_other_data(registered, sample, other_csv, monkeypatch):
    assert registered["proc"].returncode == 0
    run_id = re.search(r"soft labels run: (\w+)", registered["proc"].stdout).group(1)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    mlflow.set_tracking_uri(registered["uri"])
    other = load_data(other_csv)
    assert other.content_hash != sample.content_hash
    assert set(other.frame["id"]) < set(sample.frame["id"])  # every review has logits, still refused
    with pytest.raises(SoftLabelsError) as info:
        load_for_data(run_id, other)
    assert f"made for data {sample.content_hash}" in str(info.value)
    assert f"loaded data is {other.content_hash}" in str(info.value)


def test_student_refuses_stale_soft_labels(registered, sample, other_csv):
    assert registered["proc"].returncode == 0
    run_id = re.search(r"soft labels run: (\w+)", registered["proc"].stdout).group(1)
    before = {r.info.run_id for r in all_runs(registered["uri"])}
    proc = run_cli("student", "--mode", "kd", "--soft-labels-run-id", run_id, "--data", other_csv,
                   "--epochs", "1", cwd=registered["root"], env={"MLFLOW_TRACKING_URI": registered["uri"]})
    line = error_line(proc)
    assert f"soft labels of run {run_id} were made for data {sample.content_hash}" in line
    assert f"loaded data is {load_data(other_csv).content_hash}" in line
    runs = all_runs(registered["uri"])
    assert {r.info.run_id for r in runs} == before  # refused before any student run started
    assert "RUNNING" not in {r.info.status for r in runs}


# --- logits files that do not fit the data -----------------------------------------------------------


def test_register_refuses_other_data_hash(tmp_path, sample, sample_logits, db_template):
    path = tmp_path / "stale.parquet"
    write_logits(sample_logits, {**FINGERPRINT, "data_hash": "0000000000000000"}, path)
    shutil.copy(db_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli("soft-labels", "--logits-file", str(path), cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    line = error_line(proc)
    assert str(path) in line
    assert f"made for data 0000000000000000, but sample is {sample.content_hash}" in line
    runs = all_runs(uri)
    assert [r.info.status for r in runs] == ["FAILED"]  # the run had started: it ends FAILED
    assert runs[0].data.tags["kd_imdb.stage"] == "soft_labels"
    assert not any((tmp_path / "mlruns").rglob("logits.parquet"))  # nothing was logged


def test_register_refuses_partial_file(tmp_path, sample, sample_logits, db_template):
    half = sample_logits.iloc[::2]
    path = tmp_path / "half.parquet"
    half.to_parquet(path, index=False)  # no fingerprint
    assert read_logits(path)[1] == {}
    missing_train = int((~sample.split("train")["id"].isin(set(half["id"]))).sum())
    assert 0 < missing_train < 900
    shutil.copy(db_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli("soft-labels", "--logits-file", str(path), cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    line = error_line(proc)
    assert f"{path}: no logits for {missing_train} of 900 train reviews" in line
    runs = all_runs(uri)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not any((tmp_path / "mlruns").rglob("logits.parquet"))


def test_soft_labels_refuse_a_teacher_that_selected_on_another_validation_split(local_store, sample):
    """A teacher trained with another --val-fraction has seen some of this split's validation reviews;
    labelling with it is refused before any work, and the soft-labels run is closed FAILED."""
    from kd_imdb.soft_labels import SoftLabelsConfig, run

    with mlflow.start_run() as teacher:
        mlflow.set_tag(VALIDATION_TAG, load_data("sample", val_fraction=0.2).validation_hash)
    with pytest.raises(TrackingError, match="another validation split"):
        run(SoftLabelsConfig(teacher_run_id=teacher.info.run_id))
    runs = mlflow.search_runs(filter_string="tags.`kd_imdb.stage` = 'soft_labels'")
    assert list(runs["status"]) == ["FAILED"]
