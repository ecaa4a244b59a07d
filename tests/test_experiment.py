"""The control arms of a study: label smoothing, shuffled teacher, margin MSE and the transfer set,
each from the same initial weights as its scratch partner."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow  # trains models or serves them for tens of seconds: -m 'not slow' skips


@pytest.fixture(scope="module")
def arms_study(mlflow_server, tmp_path_factory):
    from kd_imdb.data import load_data
    from kd_imdb.soft_labels import write_logits

    tmp = tmp_path_factory.mktemp("arms")
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_EXPERIMENT_NAME": "arms"}
    data = load_data("sample", unsupervised=True)
    rng = np.random.default_rng(1)
    margin = np.where(data.frame["label"] == 0, -1.0, 1.0) * rng.gamma(2.0, 1.0, len(data.frame))
    frame = pd.DataFrame({"id": data.frame["id"], "logit_0": -margin / 2, "logit_1": margin / 2})
    frame = frame.drop_duplicates("id")  # one row per review: the sample's duplicate texts share an id
    write_logits(frame, {"teacher_run_id": "synthetic", "data_hash": data.content_hash}, tmp / "logits.parquet")
    proc = run_cli("soft-labels", "--logits-file", str(tmp / "logits.parquet"), "--unsupervised", "true", env=env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    labels_run = proc.stdout.strip().split()[-1]
    # Two more teachers for the kd@NAME arms: a copy of the main one and its mirror image.
    teachers = {}
    for name, sign in (("same", 1.0), ("flipped", -1.0)):
        other = frame.assign(logit_0=sign * frame["logit_0"], logit_1=sign * frame["logit_1"])
        write_logits(other, {"teacher_run_id": name, "data_hash": data.content_hash}, tmp / f"{name}.parquet")
        proc = run_cli("soft-labels", "--logits-file", str(tmp / f"{name}.parquet"), env=env, cwd=tmp)
        assert proc.returncode == 0, proc.stderr[-2000:]
        teachers[name] = proc.stdout.strip().split()[-1]
    proc = run_cli("study", "--soft-labels-run-id", labels_run, "--grid", "gru:8", "--seeds", "1", "--workers", "1",
                   "--arms", "scratch,kd,kd_mse,shuffled,label_smoothing,kd_transfer,kd@same,kd@flipped",
                   "--teachers", ",".join(f"{k}={v}" for k, v in teachers.items()), "--register", "false",
                   "--epochs", "1", "--max-len", "48", "--vocab-size", "1500", "--embedding-dim", "16", env=env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    study_id = proc.stdout.strip().split()[-1]
    runs = client.search_runs([client.get_run(study_id).info.experiment_id], "tags.`kd_imdb.arm` != ''")
    return {"runs": {r.data.tags["kd_imdb.arm"]: r for r in runs}, "data": data, "frame": frame,
            "client": client, "study_id": study_id, "tmp": tmp, "teachers": teachers, "labels_run": labels_run,
            "env": env}


def test_every_arm_starts_from_the_scratch_weights(arms_study):
    runs = arms_study["runs"]
    assert set(runs) == {"scratch", "kd", "kd_mse", "shuffled", "label_smoothing", "kd_transfer", "kd@same", "kd@flipped"}
    assert len({r.data.tags["init_sha256"] for r in runs.values()}) == 1
    assert all(r.info.status == "FINISHED" for r in runs.values())


def test_label_smoothing_matches_the_teacher_mean_confidence(arms_study):
    data, frame = arms_study["data"], arms_study["frame"].drop_duplicates("id").set_index("id")  # as registered
    train_ids = data.split("train")["id"]
    margin = (frame.loc[train_ids, "logit_1"] - frame.loc[train_ids, "logit_0"]).to_numpy()
    confidence = 1 / (1 + np.exp(-np.abs(margin)))  # max softmax probability of two logits
    expected = 2 * (1 - confidence.mean())
    assert float(arms_study["runs"]["label_smoothing"].data.params["label_smoothing"]) == pytest.approx(expected, rel=1e-5)
    assert "temperature" not in arms_study["runs"]["label_smoothing"].data.params


def test_transfer_set_adds_the_unlabelled_reviews(arms_study):
    runs, data = arms_study["runs"], arms_study["data"]
    assert runs["kd"].data.metrics["train_reviews"] == len(data.split("train"))
    assert runs["kd_transfer"].data.metrics["train_reviews"] == len(data.split("train")) + len(data.split("unsupervised"))


def test_arms_differ_only_in_their_loss(arms_study):
    losses = {arm: arms_study["client"].get_metric_history(r.info.run_id, "epoch_train_loss")[0].value
              for arm, r in arms_study["runs"].items() if arm != "kd@same"}
    assert len(set(np.round(list(losses.values()), 8))) == len(losses)  # every arm trained differently


def test_summary_compares_every_arm_with_scratch(arms_study):
    local = arms_study["client"].download_artifacts(arms_study["study_id"], "results/summary.csv", str(arms_study["tmp"]))
    summary = pd.read_csv(local)
    assert set(summary["arm"]) == {"kd", "kd_mse", "shuffled", "label_smoothing", "kd_transfer", "kd@same", "kd@flipped"}
    assert (summary["baseline"] == "scratch").all()


def test_kd_from_another_teacher_uses_that_teachers_labels(arms_study):
    runs, teachers = arms_study["runs"], arms_study["teachers"]
    history = {arm: [m.value for m in arms_study["client"].get_metric_history(runs[arm].info.run_id, "epoch_train_loss")]
               for arm in ("kd", "kd@same", "kd@flipped")}
    # A copy of the main teacher trains the very same student; its mirror image trains another one.
    assert history["kd@same"] == history["kd"]
    assert runs["kd@same"].data.metrics["test_accuracy"] == runs["kd"].data.metrics["test_accuracy"]
    assert history["kd@flipped"] != history["kd"]
    assert runs["kd@flipped"].data.tags["kd_imdb.teacher_run_id"] == teachers["flipped"]
    assert runs["kd@same"].data.tags["kd_imdb.teacher_run_id"] == teachers["same"]


def test_student_entry_point_trains_a_kd_at_name_arm(arms_study):
    """``student --mode kd@NAME --teachers NAME=RUN_ID`` trains the very student the study's arm trained."""
    client, teachers, study_run = arms_study["client"], arms_study["teachers"], arms_study["runs"]["kd@flipped"]
    proc = run_cli("student", "--soft-labels-run-id", arms_study["labels_run"], "--mode", "kd@flipped",
                   "--teachers", f"flipped={teachers['flipped']}", "--arch", "gru", "--hidden", "8", "--epochs", "1",
                   "--max-len", "48", "--vocab-size", "1500", "--embedding-dim", "16",
                   env={**arms_study["env"], "OMP_NUM_THREADS": "1"}, cwd=arms_study["tmp"])  # study workers: 1 thread
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = client.search_runs([study_run.info.experiment_id], "attributes.run_name = 'gru-8 s0 kd@flipped'")[0]
    # the printout is the arm's own row, with the run's test accuracy (not the pair table's empty cells)
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| gru-8 | kd@flipped |"))
    assert f"| {run.data.metrics['test_accuracy']:.3f} |" in row and "| |" not in row
    assert run.data.tags["kd_imdb.teacher_run_id"] == teachers["flipped"]
    assert run.data.tags["init_sha256"] == study_run.data.tags["init_sha256"]
    history = [[m.value for m in client.get_metric_history(r.info.run_id, "epoch_train_loss")] for r in (run, study_run)]
    assert history[0] == pytest.approx(history[1], rel=1e-5)
    # A kd@NAME arm without its teacher is a one-line error, not a traceback.
    proc = run_cli("student", "--soft-labels-run-id", arms_study["labels_run"], "--mode", "kd@linear",
                   env=arms_study["env"], cwd=arms_study["tmp"])
    assert proc.returncode != 0 and "kd@NAME with NAME in teachers" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_teacher_arm_is_refused():
    from kd_imdb.config import StudyConfig

    with pytest.raises(ValueError, match="kd@NAME"):
        StudyConfig.from_flat(soft_labels_run_id="x", arms="scratch,kd@linear", teachers="ensemble=y")
    with pytest.raises(ValueError, match="malformed"):
        StudyConfig.from_flat(soft_labels_run_id="x", arms="scratch,kd@linear", teachers="linear")
    study = StudyConfig.from_flat(soft_labels_run_id="x", arms="scratch,kd@linear", teachers="linear=y")
    assert study.arm_list()[-1] == "kd@linear"


def test_each_arm_gets_its_reviews_loss_and_schedule():
    """arm_inputs without training: the transfer set appends the unlabelled reviews (label -1), kd_hard
    adds its hard epochs and selects among them, label smoothing matches the teacher's confidence, and
    the KD loss is kd_loss on the rows' teacher logits."""
    import torch

    from kd_imdb.config import ArmConfig
    from kd_imdb.experiment import Split, arm_inputs
    from kd_imdb.losses import hard_loss, kd_loss

    def split(n, labels, conf):
        teacher = np.stack([np.zeros(n), np.full(n, np.log(conf / (1 - conf)))], axis=1).astype(np.float32)
        return Split([np.array([2, 3])] * n, np.asarray(labels), np.arange(n).astype(str), teacher, {"lin": -teacher})

    splits = {"train": split(4, [1, 0, 1, 1], 0.9), "unsupervised": split(3, [-1, -1, -1], 0.8)}
    cfg = ArmConfig.from_flat(soft_labels_run_id="x", epochs=2, hard_epochs=3, temperature=4.0, alpha=0.5, teachers="lin=y")
    cpu = torch.device("cpu")
    logits, rows = torch.tensor([[0.3, -0.2], [1.0, 0.5]]), torch.tensor([2, 1])
    train = splits["train"]
    kd = arm_inputs(cfg, "kd", splits, cpu)
    assert (len(kd.train_seqs), kd.epochs, kd.first_selectable_epoch) == (4, 2, 1)
    expected = kd_loss(logits, torch.as_tensor(train.teacher)[rows], torch.tensor([1, 0]), 4.0, 0.5)
    torch.testing.assert_close(kd.loss_fn(logits, rows, 1), expected)
    hard = arm_inputs(cfg, "kd_hard", splits, cpu)
    assert (hard.epochs, hard.first_selectable_epoch) == (5, 3)
    torch.testing.assert_close(hard.loss_fn(logits, rows, 3), hard_loss(logits, torch.tensor([1, 0]), 0.0))
    transfer = arm_inputs(cfg, "kd_transfer", splits, cpu)
    assert len(transfer.train_seqs) == 7
    smooth = arm_inputs(cfg, "label_smoothing", splits, cpu)
    assert smooth.params["label_smoothing"] == pytest.approx(2 * (1 - 0.9), abs=1e-6)
    other = arm_inputs(cfg, "kd@lin", splits, cpu)
    expected = kd_loss(logits, -torch.as_tensor(train.teacher)[rows], torch.tensor([1, 0]), 4.0, 0.5)
    torch.testing.assert_close(other.loss_fn(logits, rows, 1), expected)
    with pytest.raises(ValueError, match="unknown arm"):
        arm_inputs(cfg, "bogus", splits, cpu)
