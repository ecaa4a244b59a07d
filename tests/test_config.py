"""Configs: frozen and validated; the flat form round-trips; studies keep their keys; a study's and a
sweep's runs are their base arm run changed by replace."""
import dataclasses
import json

import pytest

from kd_imdb.config import (
    DEFAULT_GRID,
    ArmConfig,
    Distillation,
    StudentSpec,
    StudyConfig,
    SweepConfig,
    Training,
    format_grid,
    parse_grid,
    parse_teachers,
)


def test_configs_are_frozen():
    cfg = ArmConfig(soft_labels_run_id="s")
    for target, name in ((cfg, "seed"), (cfg.student, "hidden"), (cfg.training, "epochs"), (cfg.distillation, "alpha")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(target, name, 1)


@pytest.mark.parametrize("bad, match", [
    (lambda: StudentSpec(arch="lstm"), "arch"),
    (lambda: StudentSpec(arch="cnn", bidirectional=True), "bidirectional"),
    (lambda: StudentSpec(kernel_sizes=[3, 4]), "kernel_sizes"),
    (lambda: Training(label_budget=1), "label_budget"),
    (lambda: Training(epochs=-1), "epochs"),
    (lambda: Training(lr_schedule="linear"), "lr_schedule"),
    (lambda: Distillation(temperature=0), "temperature"),
    (lambda: Distillation(alpha=1.5), "alpha"),
    (lambda: Distillation(mode="kd@linear"), "kd@NAME"),
    (lambda: ArmConfig(distillation=Distillation(mode="kd")), "soft_labels_run_id"),
    (lambda: ArmConfig.from_flat(teachers="linear"), "malformed"),
    (lambda: StudyConfig.from_flat(soft_labels_run_id="x", grid="gru16"), "malformed"),
    (lambda: StudyConfig.from_flat(soft_labels_run_id="x", grid="gru:0"), "gru:0"),
    (lambda: StudyConfig.from_flat(soft_labels_run_id="x", grid="cnn:64", bidirectional=True), "bidirectional"),
    (lambda: StudyConfig.from_flat(soft_labels_run_id="x", arms="kd"), "scratch"),
    (lambda: StudyConfig.from_flat(soft_labels_run_id=""), "soft_labels_run_id"),
    (lambda: SweepConfig.from_flat(soft_labels_run_id="x", t_min=3.0, t_max=2.0), "t_min"),
])
def test_bad_values_are_refused_on_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_flat_forms_round_trip_through_json():
    """config.json and the Optuna queue carry the flat form; parsing it gives the same config back."""
    arm = ArmConfig.from_flat(soft_labels_run_id="s", arch="cnn", hidden=128, epochs=5, mode="kd@lin", teachers="lin=a,ens=b",
                              label_budget=1000, temperature=4.0, seed=3, bigram_buckets=4096)
    study = StudyConfig.from_flat(soft_labels_run_id="s", grid="gru:16,32;cnn:64;gru:8", arms="scratch,kd,kd@lin",
                                  teachers="lin=a", finetune_hard_epochs=1, bidirectional=False, workers=3,
                                  bigram_buckets=8192, bag_ngrams=3)
    sweep = SweepConfig.from_flat(soft_labels_run_id="s", hidden=16, bidirectional=True, t_max=8.0, sweep_alpha=True,
                                  lr_schedule="cosine")
    for cfg in (arm, study, sweep):
        again = type(cfg).from_flat(**json.loads(json.dumps(cfg.flat())))
        assert again.flat() == cfg.flat()
        assert again == cfg or cfg is sweep  # the sweep writes its derived study name into the flat form
    assert arm.distillation.teachers == {"lin": "a", "ens": "b"} and arm.flat()["teachers"] == "lin=a,ens=b"
    assert (arm.student.bigram_buckets, study.student(("gru", 16), 0).student.bigram_buckets) == (4096, 8192)
    assert (arm.student.bag_ngrams, study.student(("gru", 16), 0).student.bag_ngrams) == (2, 3)
    assert study.grid == (("gru", 16), ("gru", 32), ("cnn", 64), ("gru", 8))
    assert study.arm_list() == ("scratch", "kd", "kd@lin", "kd_hard")


def test_epochs_zero_means_the_origins_schedule_per_architecture():
    study = StudyConfig.from_flat(soft_labels_run_id="s", grid="gru:16;cnn:64")
    assert study.flat()["epochs"] == 0  # the study keeps 0 (its key hashed it so)
    assert [study.student(c, 0).epochs for c in study.grid] == [4, 3]
    assert study.student(("gru", 16), 0).flat()["epochs"] == 4  # an arm run logs what it trained
    assert ArmConfig.defaults()["epochs"] == 0


def test_a_study_cell_is_its_base_with_the_student_and_seed_replaced():
    study = StudyConfig.from_flat(soft_labels_run_id="s", grid="gru:16;cnn:64", max_len=512, temperature=3.0,
                                  embedding_dim=96, teachers="lin=a")
    cell = study.student(("cnn", 64), 7)
    assert cell == dataclasses.replace(study.base, seed=7,
                                       student=dataclasses.replace(study.base.student, arch="cnn", hidden=64))
    assert (cell.training.max_len, cell.distillation.temperature, cell.student.embedding_dim) == (512, 3.0, 96)
    assert cell.distillation.teachers == {"lin": "a"}
    trial = SweepConfig.from_flat(soft_labels_run_id="s").student(5.0, 0.5)
    assert (trial.distillation.mode, trial.distillation.temperature, trial.distillation.alpha) == ("kd", 5.0, 0.5)
    assert trial.student.hidden == 32  # the sweep's default student


def test_grid_strings_parse_once_and_format_back():
    assert format_grid(parse_grid(DEFAULT_GRID)) == DEFAULT_GRID
    assert format_grid(parse_grid(" gru : 16 ; cnn:64 ")) == "gru:16;cnn:64"
    assert parse_teachers(" a = 1 , b=2 ") == {"a": "1", "b": "2"}


def test_study_keys_are_those_of_the_flat_study_before_the_redesign():
    """Golden keys: the old StudyConfig hashed its flat fields, without the teachers, the label budget
    and bidirectional when unset, so studies started before keep resuming."""
    base = dict(soft_labels_run_id="abc", grid="gru:256", seeds=3)
    assert StudyConfig.from_flat(**base, arms="scratch,kd,label_smoothing").legacy_key() == "bd5bb8ef53646e4c"
    assert StudyConfig.from_flat(**base, arms="scratch,kd@linear", teachers="linear=x").legacy_key() == "d4c4bb693274fe5c"
    assert StudyConfig.from_flat(**base, bidirectional=True).key() != StudyConfig.from_flat(**base).key()
    # lr_schedule came later: at its default it leaves the key as it was
    assert StudyConfig.from_flat(**base, lr_schedule="constant").key() == StudyConfig.from_flat(**base).key()
    assert StudyConfig.from_flat(**base, lr_schedule="cosine").key() != StudyConfig.from_flat(**base).key()
    assert StudyConfig.from_flat(**base, bigram_buckets=0).key() == StudyConfig.from_flat(**base).key()
    assert StudyConfig.from_flat(**base, bigram_buckets=4096).key() != StudyConfig.from_flat(**base).key()
    bag = dict(base, bigram_buckets=4096)  # bag_ngrams came later still: bigram-bag studies keep their key
    assert StudyConfig.from_flat(**bag, bag_ngrams=2).key() == StudyConfig.from_flat(**bag).key()
    assert StudyConfig.from_flat(**bag, bag_ngrams=3).key() != StudyConfig.from_flat(**bag).key()
    assert StudyConfig.from_flat(**bag, bag_dim=16).key() == StudyConfig.from_flat(**bag).key()  # bag_dim: later again
    assert StudyConfig.from_flat(**bag, bag_dim=1).key() != StudyConfig.from_flat(**bag).key()


def test_old_student_configs_load():
    """A student's config.json from before bidirectional (and with max_len beside the spec) still loads."""
    old = {"arch": "cnn", "hidden": 8, "embedding_dim": 16, "vocab_size": 50, "dropout": 0.3, "kernel_sizes": [3, 4],
           "max_len": 64}
    assert StudentSpec.from_dict(old) == StudentSpec(arch="cnn", hidden=8, embedding_dim=16, vocab_size=50,
                                                     kernel_sizes=(3, 4))
    assert StudentSpec.from_dict(StudentSpec(bidirectional=True).to_dict()).bidirectional
