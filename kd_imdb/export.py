"""Exporters: the teacher to ONNX Runtime int8 (fast labelling), measured against fp32; the students to
ONNX, and to PyTorch with int8 GRU and linear weights (faster serving on a CPU)."""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.special import log_softmax
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


# Quantisation recipes for the teacher, by name (all dynamic: int8 weights, activations quantised per batch).
#   tensor:  per-tensor weight scales on every MatMul, Gemm and Gather (the embeddings too); the first recipe
#   channel: per-output-channel weight scales on the encoder's weight MatMuls only; the attention products,
#            the embeddings, the pooler and the classifier stay fp32 (little of the time, most of the error)
INT8_RECIPES = ("tensor", "channel")


def export_teacher_int8(model, path: str | Path, recipe: str = "channel") -> Path:
    """Export a sequence classifier to ONNX and quantise it to int8 by ``recipe`` (see ``INT8_RECIPES``).

    Returns the int8 model's path; an existing export at ``path`` is reused.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if recipe not in INT8_RECIPES:
        raise ValueError(f"int8 recipe must be one of {INT8_RECIPES}, got {recipe!r}")
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fp32 = path.with_name(path.stem + "-fp32.onnx")
    model = model.eval()
    ids = torch.ones((2, 16), dtype=torch.long)
    torch.onnx.export(
        model, (ids, torch.ones_like(ids)), str(fp32), input_names=["input_ids", "attention_mask"],
        output_names=["logits"], dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                               "attention_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch"}},
        opset_version=17, dynamo=False,
    )
    if recipe == "tensor":
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
        return path
    graph = onnx.load(str(fp32)).graph
    weights = {init.name for init in graph.initializer}
    # the encoder's weight MatMuls (query, key, value, attention output, feed-forward); not the attention's
    # activation-by-activation products (scores, weighted values), whose int8 rounding costs most accuracy
    encoder = [n.name for n in graph.node if n.op_type == "MatMul" and "/encoder/" in n.name and n.input[1] in weights]
    quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], nodes_to_quantize=encoder)
    return path


class OnnxTeacher:
    """ONNX Runtime inference with the same length-sorted dynamic padding as the PyTorch path."""

    def __init__(self, path: str | Path, pad_id: int, threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.pad_id = pad_id

    def predict(self, input_ids: list[list[int]], batch_size: int = 64, desc: str = "onnx") -> np.ndarray:
        order = np.argsort([len(s) for s in input_ids], kind="stable")
        out = np.zeros((len(input_ids), 2), dtype=np.float32)
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", mininterval=5):
            idx = order[start:start + batch_size]
            width = max(len(input_ids[i]) for i in idx)
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                ids[row, : len(input_ids[i])] = input_ids[i]
                mask[row, : len(input_ids[i])] = 1
            out[idx] = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        return out


def agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    """Top-1 agreement and mean KL(reference || other) between two logit sets [n, 2]."""
    lp, lq = log_softmax(reference, axis=1), log_softmax(other, axis=1)
    kl = np.maximum((np.exp(lp) * (lp - lq)).sum(axis=1), 0.0)  # >= 0; float error can dip below
    return {"int8_top1_agreement": float((reference.argmax(1) == other.argmax(1)).mean()),
            "int8_mean_kl": float(kl.mean())}


def export_student_onnx(model, path: str | Path) -> Path:
    """Export a GRU/CNN student (token ids [B, L] -> logits [B, 2]) to ONNX with dynamic batch and length."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = torch.randint(1, 10, (2, 12))
    torch.onnx.export(model.eval(), (ids,), str(path), input_names=["ids"], output_names=["logits"],
                      dynamic_axes={"ids": {0: "batch", 1: "seq"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return path


def quantize_student(model: nn.Module) -> nn.Module:
    """An eval-mode copy of a student whose GRUs and linear layers hold int8 weights (PyTorch dynamic
    quantisation: activations are quantised at run time; embeddings and the bag stay fp32).

    At a GRU-64 the recurrence and the input projection of each word (embedding [E] -> gates [3H]) are
    most of the work, and int8 weights make both cheaper on one core (RESULTS §24 round 10). The packed
    path (each review's padding skipped) is kept. The logits move a little: measure agreement with fp32
    before shipping it (``agreement``). ``torch.ao.quantization`` warns that it is deprecated;
    constraints.txt pins the torch that has it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.GRU, nn.Linear},
                                                      dtype=torch.qint8)


class OnnxStudent:
    """A student on ONNX Runtime: padded token ids in, logits out."""

    def __init__(self, path: str | Path, threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"ids": ids.astype(np.int64)})[0]
