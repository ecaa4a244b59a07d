"""kd_imdb.export: the teacher's int8 recipes quantise what they say, and agree with fp32."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from kd_imdb import export, teacher


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
