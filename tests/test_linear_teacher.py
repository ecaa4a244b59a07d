"""The linear and ensemble teachers write the soft-labels schema; students can distil from them."""
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import run_cli
from mlflow.tracking import MlflowClient

from kd_imdb.linear_teacher import LinearTeacherConfig, NBScaler


def read(client, run_id, tmp):
    from kd_imdb.soft_labels import read_logits

    return read_logits(client.download_artifacts(run_id, "soft_labels/logits.parquet", str(tmp)))


def test_linear_and_ensemble_teachers(local_store, tmp_path):
    from kd_imdb.data import load_data
    from kd_imdb.soft_labels import write_logits

    proc = run_cli("linear-teacher", "--data", "sample", "--unsupervised", "true", "--c-grid", "1,8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    linear = proc.stdout.strip().split()[-1]
    client = MlflowClient(local_store)
    m = client.get_run(linear).data.metrics
    assert 0.75 < m["teacher_test_accuracy"] < 0.95  # ~0.8 from 900 reviews
    assert m["teacher_train_accuracy"] < 0.97  # out-of-fold: not memorised
    assert m["best_c"] in (1.0, 8.0)
    assert m["best_c"] == max((1.0, 8.0), key=lambda c: m[f"val_accuracy_c_{c:g}"])
    frame, fingerprint = read(client, linear, tmp_path)
    data = load_data("sample", unsupervised=True)
    assert fingerprint["data_hash"] == data.content_hash and fingerprint["teacher"] == "tfidf-logreg"
    assert set(frame["id"]) == set(data.frame["id"])  # unlabelled reviews scored too
    np.testing.assert_allclose(frame["logit_0"], -frame["logit_1"])

    other = frame.assign(logit_0=0.0, logit_1=1.0)  # a constant second teacher
    write_logits(other, {"data_hash": data.content_hash, "teacher_run_id": "const"}, tmp_path / "const.parquet")
    proc = run_cli("soft-labels", "--logits-file", str(tmp_path / "const.parquet"), "--unsupervised", "true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    const = proc.stdout.strip().split()[-1]
    proc = run_cli("ensemble-labels", "--runs", f"{linear},{const}", "--unsupervised", "true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ens, fp = read(client, proc.stdout.strip().split()[-1], tmp_path)
    merged = ens.set_index("id").join(frame.set_index("id").add_suffix("_lin"))
    np.testing.assert_allclose(merged["logit_1"], (merged["logit_1_lin"] + 1.0) / 2, rtol=1e-5)
    assert fp["teacher_run_id"] == f"ensemble:{linear}+{const}"

    # A student distils from the linear teacher like from any other.
    proc = run_cli("student", "--mode", "kd", "--soft-labels-run-id", linear, "--hidden", "8", "--embedding-dim", "16",
                   "--vocab-size", "1500", "--max-len", "48", "--epochs", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_ensemble_needs_two_runs(local_store, tmp_path):
    proc = run_cli("ensemble-labels", "--runs", "abc", cwd=tmp_path)
    assert proc.returncode == 2 and "at least two" in proc.stderr


def test_nb_ratio_golden_values():
    """r = log((p / |p|_1) / (q / |q|_1)), p and q the alpha-smoothed binarised counts per class."""
    x = sp.csr_matrix(np.array([[2, 0, 1], [1, 1, 0], [0, 3, 0]]))  # counts; reviews 0, 1 positive, 2 negative
    scaler = NBScaler(alpha=1.0).fit(x, [1, 1, 0])
    p, q = np.array([1 + 2, 1 + 1, 1 + 1]), np.array([1 + 0, 1 + 1, 1 + 0])  # smoothed binarised counts
    np.testing.assert_allclose(scaler.r_, np.log(p / 7) - np.log(q / 4))
    np.testing.assert_allclose(scaler.transform(x).toarray(), (x.toarray() > 0) * scaler.r_)


def test_nbsvm_teacher(local_store, tmp_path):
    proc = run_cli("linear-teacher", "--kind", "nbsvm", "--max-ngram", "3", "--c-grid", "0.1,1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = MlflowClient(local_store).get_run(proc.stdout.strip().split()[-1])
    m = run.data.metrics
    assert 0.75 < m["teacher_test_accuracy"] < 0.95
    assert m["teacher_train_accuracy"] < 0.97  # cross-fitted, r refitted in each fold
    assert m["best_c"] == max((0.1, 1.0), key=lambda c: m[f"val_accuracy_c_{c:g}"])
    assert run.data.tags["fingerprint.teacher"] == "nbsvm" and run.data.tags["fingerprint.max_ngram"] == "3"
    assert run.info.run_name == "linear_teacher nbsvm"


@pytest.mark.parametrize("kwargs, message", [({"kind": "svm"}, "kind"), ({"max_ngram": 0}, "max_ngram"),
                                             ({"folds": 1}, "folds"), ({"c_grid": "1,-2"}, "positive")])
def test_bad_linear_config_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LinearTeacherConfig(**kwargs)
