"""kd_imdb.export: the teacher's int8 recipes quantise what they say, and agree with fp32; so does the
int8 student."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from kd_imdb import export, teacher
from kd_imdb.config import StudentSpec
from kd_imdb.students import build_student
from kd_imdb.train import predict


@pytest.fixture(scope="module")
def tiny():
    return teacher.load_model(teacher.TINY, seed=0).eval()


def test_channel_recipe_quantises_only_the_encoders_weight_matmuls(tiny, tmp_path):
    path = export.export_teacher_int8(tiny, tmp_path / "t.onnx", "channel")
    nodes = onnx.load(str(path)).graph.node
    ops = [n.op_type for n in nodes]
    # 2 layers x (query, key, value, attention output, intermediate, output) weight MatMuls
    assert ops.count("MatMulInteger") == 12
    fp32 = sorted(n.name for n in nodes if n.op_type == "MatMul")  # each layer's 2 attention products, pooler, classifier
    assert fp32 == ["/bert/encoder/layer.0/attention/self/MatMul", "/bert/encoder/layer.0/attention/self/MatMul_1",
                    "/bert/encoder/layer.1/attention/self/MatMul", "/bert/encoder/layer.1/attention/self/MatMul_1",
                    "/bert/pooler/dense/Gemm_MatMul", "/classifier/Gemm_MatMul"]
    tensor = export.export_teacher_int8(tiny, tmp_path / "t-tensor.onnx", "tensor")
    assert [n.op_type for n in onnx.load(str(tensor)).graph.node].count("MatMulInteger") > 12  # the old recipe: more
    with pytest.raises(ValueError, match="recipe"):
        export.export_teacher_int8(tiny, tmp_path / "x.onnx", "fp8")


def test_int8_teacher_agrees_with_fp32(tiny, tmp_path):
    tok = teacher.load_tokenizer(teacher.TINY)
    ids, owner = teacher.encode_windows(tok, ["a fine film, well acted " * 20, "dull", "bad plot " * 9], 24, 11)
    fp32 = teacher.predict_logits(tiny, ids, tok.pad_token_id, batch_size=4)
    int8 = export.OnnxTeacher(export.export_teacher_int8(tiny, tmp_path / "t.onnx"), tok.pad_token_id).predict(ids, 4)
    assert int8.shape == fp32.shape == (len(ids), 2)
    np.testing.assert_allclose(int8, fp32, atol=0.05)  # a random tiny BERT: logits near 0, rounding small
    assert export.agreement(fp32, fp32) == {"int8_top1_agreement": 1.0, "int8_mean_kl": 0.0}


def test_int8_student_quantises_the_gru_and_linear_weights_and_agrees_with_fp32():
    net = build_student(StudentSpec(arch="gru", hidden=16, embedding_dim=32, vocab_size=200, dropout=0.0,
                                    bigram_buckets=512), seed=0).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    int8 = export.quantize_student(net)
    assert isinstance(int8.gru, torch.ao.nn.quantized.dynamic.GRU)
    assert isinstance(int8.out, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(net.gru, torch.nn.GRU)  # the fp32 student is untouched
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 200, size=n) for n in rng.integers(3, 60, size=64)]
    fp32, q = predict(net, seqs), predict(int8, seqs)
    gap = np.abs(fp32 - q).max()
    assert 0 < gap < 0.05  # int8 weights move the logits, a little
    # activations are quantised per batch, so batch-mates move a review's logits, but only a little
    alone = predict(int8, seqs[:1])
    np.testing.assert_allclose(q[:1], alone, atol=1e-2)
    assert export.agreement(fp32, q)["int8_top1_agreement"] >= 0.95
