"""Students: seeded initial weights, shapes, padding invariance."""
import pytest
import torch

from kd_imdb.experiment import weights_sha256
from kd_imdb.students import StudentSpec, build_student


@pytest.mark.parametrize("arch", ["gru", "cnn"])
def test_same_seed_same_initial_weights(arch):
    spec = StudentSpec(arch=arch, hidden=8, embedding_dim=8, vocab_size=50)
    a, b, c = build_student(spec, 7), build_student(spec, 7), build_student(spec, 8)
    assert weights_sha256(a) == weights_sha256(b)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name
    assert weights_sha256(a) != weights_sha256(c)


@pytest.mark.parametrize("arch", ["gru", "cnn"])
def test_padding_does_not_change_logits(arch):
    """Length-bucketed batches pad at the end; a review's logits must not depend on its batch mates."""
    model = build_student(StudentSpec(arch=arch, hidden=8, embedding_dim=8, vocab_size=50), 0).eval()
    short = torch.tensor([[5, 6, 7, 8, 9]])
    padded = torch.tensor([[5, 6, 7, 8, 9, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        assert model(short).shape == (1, 2)
        assert torch.allclose(model(short), model(padded), atol=1e-6)


def test_cnn_accepts_reviews_shorter_than_its_widest_kernel():
    model = build_student(StudentSpec(arch="cnn", hidden=4, embedding_dim=4, vocab_size=20), 0).eval()
    with torch.no_grad():
        out = model(torch.tensor([[3], [4]]))
    assert out.shape == (2, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize("kwargs", [{"arch": "lstm"}, {"hidden": 0}, {"vocab_size": 2}])
def test_bad_spec_raises(kwargs):
    with pytest.raises(ValueError):
        StudentSpec(**kwargs)


@pytest.mark.parametrize("arch", ["gru", "cnn"])
def test_onnx_export_matches_pytorch(arch, tmp_path):
    import numpy as np

    from kd_imdb.export import OnnxStudent, export_student_onnx
    from kd_imdb.train import pad

    model = build_student(StudentSpec(arch=arch, hidden=8, embedding_dim=8, vocab_size=50), 0).eval()
    onnx = OnnxStudent(export_student_onnx(model, tmp_path / "s.onnx"))
    rng = np.random.default_rng(0)
    for batch, length in ((1, 3), (5, 40), (64, 7)):
        ids = pad([rng.integers(1, 50, size=rng.integers(1, length + 1)) for _ in range(batch)])
        with torch.no_grad():
            expected = model(ids).numpy()
        np.testing.assert_allclose(onnx(ids.numpy()), expected, atol=1e-5)


def test_gru_inference_skips_padding_with_the_same_logits_as_training_mode():
    """Eval mode packs the batch (each review's padding skipped); its logits are those of the padded
    forward pass that training uses (dropout off in both)."""
    from kd_imdb.train import pad

    model = build_student(StudentSpec(arch="gru", hidden=16, embedding_dim=8, vocab_size=50, dropout=0.0), 0)
    gen = torch.Generator().manual_seed(0)
    ids = pad([torch.randint(1, 50, (int(n),), generator=gen).numpy() for n in (1, 7, 40, 3, 40, 12)])
    with torch.no_grad():
        padded = model.train()(ids)
        packed = model.eval()(ids)
    torch.testing.assert_close(packed, padded, atol=1e-6, rtol=1e-5)
