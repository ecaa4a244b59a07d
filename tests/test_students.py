"""Students: seeded initial weights, shapes, padding invariance."""
import numpy as np
import pytest
import torch

from kd_imdb.config import StudentSpec
from kd_imdb.experiment import weights_sha256
from kd_imdb.students import build_student

# every kind of student: (arch, bidirectional, bigram buckets, the bag's longest n-gram)
KINDS = [("gru", False, 0, 2), ("gru", True, 0, 2), ("cnn", False, 0, 2), ("gru", False, 97, 2), ("cnn", False, 97, 2),
         ("gru", False, 97, 3), ("cnn", False, 97, 3)]


def tiny(arch: str, bidirectional: bool = False, bigram_buckets: int = 0, bag_ngrams: int = 2, **kwargs) -> StudentSpec:
    return StudentSpec(arch=arch, bidirectional=bidirectional, bigram_buckets=bigram_buckets, bag_ngrams=bag_ngrams,
                       **{"hidden": 8, "embedding_dim": 8, "vocab_size": 50, **kwargs})


@pytest.mark.parametrize("arch,bidirectional,buckets,ngrams", KINDS)
def test_same_seed_same_initial_weights(arch, bidirectional, buckets, ngrams):
    spec = tiny(arch, bidirectional, buckets, ngrams)
    a, b, c = build_student(spec, 7), build_student(spec, 7), build_student(spec, 8)
    assert weights_sha256(a) == weights_sha256(b)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name
    assert weights_sha256(a) != weights_sha256(c)


@pytest.mark.parametrize("arch,bidirectional,buckets,ngrams", KINDS)
@pytest.mark.parametrize("training", [False, True])
def test_padding_does_not_change_logits(arch, bidirectional, buckets, ngrams, training):
    """Length-bucketed batches pad at the end; a review's logits must not depend on its batch mates,
    in training (padded forward pass) as in inference (packed)."""
    model = build_student(tiny(arch, bidirectional, buckets, ngrams, dropout=0.0), 0).train(training)
    short = torch.tensor([[5, 6, 7, 8, 9]])
    padded = torch.tensor([[5, 6, 7, 8, 9, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        assert model(short).shape == (1, 2)
        torch.testing.assert_close(model(short), model(padded), atol=1e-6, rtol=1e-5)


def test_bidirectional_gru_reads_the_review_backwards():
    """The backward half of the features is the forward read of the reversed review; a unidirectional
    student has no backward GRU, so its weights (and every earlier run's) are unchanged by the option."""
    model = build_student(tiny("gru", True, dropout=0.0), 0).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 0, 0], [3, 4, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        features = []
        model.drop.register_forward_hook(lambda module, args, out: features.append(args[0]))
        model(ids)
        for row, n in enumerate((5, 2)):
            review = ids[row : row + 1, :n]
            backward = model.read(model.gru_back, review.flip(1), review != 0)
            forward = model.read(model.gru, review, review != 0)
            torch.testing.assert_close(features[0][row], torch.cat([forward, backward], dim=-1)[0])
    assert model.out.in_features == 4 * 8
    assert "gru_back.weight_ih_l0" not in build_student(tiny("gru"), 0).state_dict()
    with pytest.raises(ValueError, match="bidirectional"):
        tiny("cnn", True)


def test_cnn_accepts_reviews_shorter_than_its_widest_kernel():
    model = build_student(StudentSpec(arch="cnn", hidden=4, embedding_dim=4, vocab_size=20), 0).eval()
    with torch.no_grad():
        out = model(torch.tensor([[3], [4]]))
    assert out.shape == (2, 2) and torch.isfinite(out).all()


def test_bigram_bag_is_the_mean_of_the_review_bigrams_vectors():
    """The bag of [5, 6, 7] (then padding) is the mean of the vectors of buckets hash(5, 6) and hash(6, 7);
    the student reads it beside its own features, and a student without buckets has no bag."""
    from kd_imdb.students import BIGRAM_DIM, BIGRAM_HASH

    model = build_student(tiny("gru", bigram_buckets=97, dropout=0.0), 0).eval()
    table = model.bigrams.embed.weight  # [97, BIGRAM_DIM]
    with torch.no_grad():
        bag = model.bigrams(torch.tensor([[5, 6, 7, 0, 0], [9, 0, 0, 0, 0]]))
    expected = (table[(5 * BIGRAM_HASH + 6) % 97] + table[(6 * BIGRAM_HASH + 7) % 97]) / 2
    torch.testing.assert_close(bag[0], expected)
    torch.testing.assert_close(bag[1], torch.zeros(BIGRAM_DIM))  # one word: no bigram
    assert model.out.in_features == 2 * 8 + BIGRAM_DIM
    assert table.shape == (97, BIGRAM_DIM) and table.abs().max() <= 1 / BIGRAM_DIM
    assert "bigrams.embed.weight" not in build_student(tiny("gru"), 0).state_dict()
    assert tiny("gru", bigram_buckets=97).name == "gru-8+bigrams"


def test_trigram_bag_adds_the_review_trigrams_to_the_same_buckets():
    """With bag_ngrams 3 the bag of [5, 6, 7] is the mean over its 2 bigrams and its 1 trigram, all
    hashed into one table; a two-word review has its bigram only; the bigram bag is unchanged."""
    from kd_imdb.students import BIGRAM_HASH

    model = build_student(tiny("cnn", bigram_buckets=97, bag_ngrams=3, dropout=0.0), 0).eval()
    table = model.bigrams.embed.weight  # [97, BIGRAM_DIM]
    with torch.no_grad():
        bag = model.bigrams(torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]]))
        bigrams_only = build_student(tiny("cnn", bigram_buckets=97, dropout=0.0), 0).bigrams(torch.tensor([[5, 6, 7, 0]]))
    trigram = ((5 * BIGRAM_HASH + 6) * BIGRAM_HASH + 7) % 97
    expected = (table[(5 * BIGRAM_HASH + 6) % 97] + table[(6 * BIGRAM_HASH + 7) % 97] + table[trigram]) / 3
    torch.testing.assert_close(bag[0], expected)
    torch.testing.assert_close(bag[1], table[(8 * BIGRAM_HASH + 9) % 97])
    torch.testing.assert_close(bigrams_only[0], (table[(5 * BIGRAM_HASH + 6) % 97] + table[(6 * BIGRAM_HASH + 7) % 97]) / 2)
    assert tiny("gru", bigram_buckets=97, bag_ngrams=3).name == "gru-8+bi+trigrams"


@pytest.mark.parametrize("arch", ["gru", "cnn"])
def test_bag_dim_sets_the_numbers_per_bucket(arch, tmp_path):
    """bag_dim 1: each bucket is one number, the output layer reads one bag feature, and the bag is
    still the mean over the review's bigrams; the parameters are buckets x bag_dim."""
    from kd_imdb.export import OnnxStudent, export_student_onnx
    from kd_imdb.students import BIGRAM_HASH

    spec = tiny(arch, bigram_buckets=97 * 16, bag_dim=1, dropout=0.0)
    model = build_student(spec, 0).eval()
    table = model.bigrams.embed.weight  # [1552, 1]
    assert table.shape == (97 * 16, 1) and table.abs().max() <= 1.0
    assert model.out.in_features == (2 * 8 if arch == "gru" else 3 * 8) + 1
    with torch.no_grad():
        bag = model.bigrams(torch.tensor([[5, 6, 7, 0]]))
    expected = (table[(5 * BIGRAM_HASH + 6) % 1552] + table[(6 * BIGRAM_HASH + 7) % 1552]) / 2
    torch.testing.assert_close(bag[0], expected)
    default = build_student(tiny(arch, bigram_buckets=97), 0)
    assert model.bigrams.embed.weight.numel() == default.bigrams.embed.weight.numel() == 1552
    assert spec.name == f"{arch}-8+bigrams-d1" and tiny(arch, bigram_buckets=97, bag_dim=16).name == f"{arch}-8+bigrams"
    onnx = OnnxStudent(export_student_onnx(model, tmp_path / "s.onnx"))  # the export takes the narrow bag too
    ids = torch.tensor([[5, 6, 7, 0, 0], [9, 8, 7, 6, 5]])
    with torch.no_grad():
        np.testing.assert_allclose(onnx(ids.numpy()), model(ids).numpy(), atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"arch": "lstm"}, {"hidden": 0}, {"vocab_size": 2}, {"bigram_buckets": -1},
                                    {"bigram_buckets": 97, "bag_ngrams": 4}, {"bag_ngrams": 3},
                                    {"bigram_buckets": 97, "bag_dim": 0}])
def test_bad_spec_raises(kwargs):
    with pytest.raises(ValueError):
        StudentSpec(**kwargs)


@pytest.mark.parametrize("arch,bidirectional,buckets,ngrams", KINDS)
def test_onnx_export_matches_pytorch(arch, bidirectional, buckets, ngrams, tmp_path):
    from kd_imdb.export import OnnxStudent, export_student_onnx
    from kd_imdb.train import pad

    model = build_student(tiny(arch, bidirectional, buckets, ngrams), 0).eval()
    onnx = OnnxStudent(export_student_onnx(model, tmp_path / "s.onnx"))
    rng = np.random.default_rng(0)
    for batch, length in ((1, 3), (5, 40), (64, 7)):
        ids = pad([rng.integers(1, 50, size=rng.integers(1, length + 1)) for _ in range(batch)])
        with torch.no_grad():
            expected = model(ids).numpy()
        np.testing.assert_allclose(onnx(ids.numpy()), expected, atol=1e-5)


@pytest.mark.parametrize("arch,bidirectional,buckets,ngrams", KINDS)
def test_inference_skips_padding_with_the_same_logits_as_training_mode(arch, bidirectional, buckets, ngrams):
    """Eval mode embeds and reads each review's real tokens only (packed GRU, the bag's n-grams by
    embedding_bag); its logits are those of the padded forward pass that training uses (dropout off in
    both), in a batch whose lengths differ as a served request's do."""
    from kd_imdb.train import pad

    model = build_student(tiny(arch, bidirectional, buckets, ngrams, hidden=16, dropout=0.0), 0)
    gen = torch.Generator().manual_seed(0)
    ids = pad([torch.randint(1, 50, (int(n),), generator=gen).numpy() for n in (1, 7, 40, 3, 40, 12, 2)])
    with torch.no_grad():
        padded = model.train()(ids)
        packed = model.eval()(ids)
    torch.testing.assert_close(packed, padded, atol=1e-6, rtol=1e-5)
    assert not torch.equal(packed[1], packed[2])  # the reviews' logits differ, so each row was read as its own
