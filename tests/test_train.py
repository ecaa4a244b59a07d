"""The student training loop: determinism, untouched random streams, KD versus scratch."""
import numpy as np
import pytest
import torch

from kd_imdb.config import StudentSpec
from kd_imdb.experiment import distilled, supervised
from kd_imdb.students import build_student
from kd_imdb.train import FitConfig, fit, length_bucketed_batches, pad, predict, resolve_device

CPU = torch.device("cpu")


def toy_task(n=96, seed=0):
    """Reviews of random length whose label is whether token 3 outnumbers token 4."""
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(2, 12, size=rng.integers(3, 20)) for _ in range(n)]
    labels = np.array([int((s == 3).sum() > (s == 4).sum()) for s in seqs])
    return seqs, labels


def train_once(teacher=None, seed=0, epochs=2):
    seqs, labels = toy_task()
    model = build_student(StudentSpec(arch="gru", hidden=8, embedding_dim=8, vocab_size=12), seed)
    loss = supervised(labels[:64], CPU) if teacher is None else distilled(labels[:64], teacher, CPU, 2.0, 1.0)
    result = fit(model, seqs[:64], seqs[64:], labels[64:], loss, FitConfig(seed=seed, epochs=epochs, lr=1e-2, batch_size=16))
    return model, result


def test_same_seed_twice_gives_identical_metrics_and_weights():
    (_, r1), (_, r2) = train_once(), train_once()
    assert r1.history == r2.history
    for a, b in zip(r1.state_dict.values(), r2.state_dict.values()):
        assert torch.equal(a, b)


def test_kd_and_scratch_differ_only_in_their_loss():
    """With teacher logits equal to a huge-margin copy of the labels, KD (alpha=1, T small) approaches CE,
    but any other teacher changes the result, so the two arms are genuinely different."""
    seqs, labels = toy_task()
    teacher = np.stack([1 - labels[:64], labels[:64]], axis=1).astype(np.float32) * 4.0
    _, scratch = train_once()
    _, kd = train_once(teacher=teacher)
    assert scratch.history[0]["train_loss"] != kd.history[0]["train_loss"]


def test_predict_draws_no_randomness():
    seqs, _ = toy_task()
    model = build_student(StudentSpec(arch="gru", hidden=8, embedding_dim=8, vocab_size=12), 0)
    state = torch.get_rng_state()
    logits = predict(model, seqs)
    assert torch.equal(state, torch.get_rng_state())
    assert logits.shape == (len(seqs), 2)
    # input order is kept although batches are length-sorted
    assert np.allclose(logits[5], predict(model, [seqs[5]])[0], atol=1e-5)


def test_length_bucketed_batches_cover_every_review_once_and_bucket_lengths():
    lengths = np.random.default_rng(0).integers(1, 500, size=1000)
    batches = length_bucketed_batches(lengths, 32, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 40  # random batches would spread about 450 tokens
    again = length_bucketed_batches(lengths, 32, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_pad_right_pads_with_zeros():
    out = pad([np.array([1, 2, 3]), np.array([4])])
    assert out.tolist() == [[1, 2, 3], [4, 0, 0]]


def test_hard_epochs_select_among_hard_phase():
    seqs, labels = toy_task()
    teacher = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    model = build_student(StudentSpec(arch="gru", hidden=8, embedding_dim=8, vocab_size=12), 0)
    loss = distilled(labels[:64], teacher, CPU, 2.0, 1.0, kd_epochs=2)  # KD for 2 epochs, then hard labels
    result = fit(model, seqs[:64], seqs[64:], labels[64:], loss,
                 FitConfig(seed=0, epochs=3, lr=1e-2, batch_size=16, first_selectable_epoch=3))
    assert len(result.history) == 3
    assert result.best_epoch == 3


def test_resolve_device_prefers_argument_then_environment_then_hardware(monkeypatch):
    monkeypatch.delenv("KD_IMDB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device().type == expected
    monkeypatch.setenv("KD_IMDB_DEVICE", "cpu")
    assert resolve_device().type == "cpu"
    assert resolve_device("meta").type == "meta"  # an explicit argument wins over the environment


def test_trained_weights_come_back_on_the_cpu_and_match_the_model():
    model, result = train_once()
    assert all(t.device.type == "cpu" for t in result.state_dict.values())
    assert result.state_dict.keys() == model.state_dict().keys()


@pytest.mark.gpu
def test_on_a_gpu_a_student_starts_from_the_cpus_weights_and_learns_the_same_task():
    """CUDA kernels give other floats, so a GPU run is not the CPU run to the bit: it must start from the
    seed's weights, return its weights on the CPU, and reach the same validation accuracy within 0.1."""
    seqs, labels = toy_task(n=256)
    spec = StudentSpec(arch="gru", hidden=8, embedding_dim=8, vocab_size=12)
    runs = {}
    for device in ("cpu", "cuda"):
        model = build_student(spec, 0)
        runs[device] = fit(model, seqs[:192], seqs[192:], labels[192:], supervised(labels[:192], torch.device(device)),
                           FitConfig(seed=0, epochs=3, lr=1e-2, batch_size=16, device=device))
        assert next(model.parameters()).device.type == device
    assert all(t.device.type == "cpu" for t in runs["cuda"].state_dict.values())
    accuracy = {d: r.history[-1]["val_accuracy"] for d, r in runs.items()}
    assert abs(accuracy["cuda"] - accuracy["cpu"]) <= 0.1, accuracy


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_cosine_schedule_shrinks_the_steps_to_nothing_by_the_end(schedule):
    """Adam's first step moves the largest weight by lr exactly; under the cosine schedule the steps
    shrink with the lr towards 0 at the end of the last epoch, under the constant one they do not."""
    seqs, labels = toy_task()
    model = build_student(StudentSpec(arch="gru", hidden=8, embedding_dim=8, vocab_size=12, dropout=0.0), 0)
    inner = supervised(labels[:64], CPU)
    snapshots = []

    def loss(logits, rows, epoch):  # called once per step, before that step's update
        snapshots.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
        return inner(logits, rows, epoch)

    fit(model, seqs[:64], seqs[64:], labels[64:], loss,
        FitConfig(seed=0, epochs=3, lr=1e-2, batch_size=8, lr_schedule=schedule))
    steps = [(b - a).abs().max().item() for a, b in zip(snapshots, snapshots[1:])]
    assert len(steps) == 3 * 8 - 1
    assert steps[0] == pytest.approx(1e-2, rel=1e-3)  # the lr at progress 0 is the full lr either way
    if schedule == "cosine":
        assert steps[-1] < 2e-4  # the update of step 23 of 24: lr * (1 + cos(pi * 22/24)) / 2 = 1.7e-4
    else:
        assert steps[-1] > 1e-3
