"""kd_imdb.ensemble's stacked teacher: weights fitted on validation only, logits from those weights."""
from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import run_cli
from mlflow.tracking import MlflowClient

from kd_imdb.data import load_data
from kd_imdb.ensemble import fit_stack, margins, stacked_logits
from kd_imdb.soft_labels import read_logits, write_logits


def test_fit_stack_weights_the_informative_member():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    signal = (2 * labels - 1) * 2.0 + rng.normal(size=2000)  # a good teacher's margin
    noise = rng.normal(size=2000)  # a teacher that knows nothing
    model, cv_accuracy = fit_stack(np.stack([signal, noise], axis=1), labels)
    w_signal, w_noise = model.coef_[0]
    assert w_signal > 1.0 and abs(w_noise) < 0.2
    assert 0.95 < cv_accuracy < 1.0  # P(N(2, 1) > 0) = 0.977


def test_stacked_logits_halve_the_stacked_log_odds_and_keep_unscored_reviews_nan():
    m = np.array([[1.0, -2.0], [np.nan, 0.5], [0.0, 0.0]])  # [n, k]; review 1 lacks member 0
    model, _ = fit_stack(np.array([[2.0, 1.0], [-2.0, -1.0], [1.5, 0.0], [-1.5, 0.0]] * 5), np.array([1, 0, 1, 0] * 5), folds=2)
    logits = stacked_logits(model, m)
    w, b = model.coef_[0], model.intercept_[0]
    assert logits.shape == (3, 2)
    np.testing.assert_allclose(margins(logits)[[0, 2]], [b + w[0] - 2 * w[1], b])
    np.testing.assert_allclose(logits[:, 0], -logits[:, 1])  # [-d/2, d/2]: softmax gives sigmoid(d)
    assert np.isnan(logits[1]).all()


def test_stacked_teacher_is_fitted_on_validation_only(local_store, tmp_path):
    data = load_data("sample", unsupervised=True)
    frame = data.frame[["id", "split", "label"]].drop_duplicates("id").reset_index(drop=True)
    rng = np.random.default_rng(1)
    runs = []
    for k, scale in enumerate((3.0, 0.5)):
        margin = (2 * frame["label"].fillna(0).to_numpy() - 1) * scale + rng.normal(size=len(frame))
        val = (frame["split"] == "validation").to_numpy()
        if k == 0:
            margin[~val] = -margin[~val]  # right on validation, wrong everywhere else: the weights must come from validation
        logits = pd.DataFrame({"id": frame["id"], "split": frame["split"], "logit_0": -margin / 2, "logit_1": margin / 2})
        write_logits(logits, {"data_hash": data.content_hash, "teacher_run_id": f"t{k}"}, tmp_path / f"t{k}.parquet")
        proc = run_cli("soft-labels", "--logits-file", str(tmp_path / f"t{k}.parquet"), "--unsupervised", "true", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(proc.stdout.strip().split()[-1])
    proc = run_cli("ensemble-labels", "--runs", ",".join(runs), "--unsupervised", "true", "--method", "stack", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(local_store)
    run = client.get_run(proc.stdout.strip().split()[-1])
    stacked, fp = read_logits(client.download_artifacts(run.info.run_id, "soft_labels/logits.parquet", str(tmp_path)))
    assert fp["teacher"] == "stack" and fp["members"] == runs and fp["teacher_run_id"] == "stack:" + "+".join(runs)
    assert fp["weights"][0] > 0  # fitted on validation, where member 0 is right
    assert run.data.metrics["teacher_val_accuracy"] > 0.95 and run.data.metrics["teacher_test_accuracy"] < 0.3
    assert 0.9 < run.data.metrics["stack_val_accuracy_cv"] <= 1.0
    # The logits are [-d/2, d/2] of d = b + w . m, from the weights in the fingerprint.
    members = [read_logits(tmp_path / f"t{k}.parquet")[0].set_index("id") for k in range(2)]
    m = np.stack([(f["logit_1"] - f["logit_0"]).loc[stacked["id"]].to_numpy() for f in members], axis=1)
    d = fp["intercept"] + m @ np.array(fp["weights"])
    np.testing.assert_allclose(stacked["logit_1"], d / 2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stacked["logit_0"], -d / 2, rtol=1e-4, atol=1e-4)
    assert len(stacked) == len(frame)  # unlabelled reviews too


def test_ensemble_refuses_a_run_named_twice(local_store, tmp_path):
    proc = run_cli("ensemble-labels", "--runs", "abc,abc", cwd=tmp_path)
    assert proc.returncode == 2 and "must differ" in proc.stderr
