"""GRU inference: the padded forward pass (what training runs) against the packed one (what eval mode
runs: each review's padding skipped), in one run, one thread, on real test reviews at batch 64.

    python benchmarks/gru_inference.py --data ../shared/data/imdb --max-len 512

Both paths run the same weights (dropout 0, so train mode computes the padded pass without noise); the
script measures their largest logit gap, then reviews/s of the model alone and with tokenisation, and
of the same student on ONNX Runtime (one thread, ``export_student_onnx``), which runs the padded batch,
and of its int8 copy (``export.quantize_student``: int8 GRU and linear weights, packed), with that
copy's largest logit gap from fp32.
Tokenisation is timed twice: ``encode_texts`` (its fast path) and the ``tokenizers`` library's own
``encode_batch``, which gives the same ids.
(Session 15 also exported the packed path, whose GRU node reads each review's length: the same logits,
and no faster on ONNX Runtime, 1,371 against 1,343 reviews/s for GRU-64; so the export stays padded.)
``--cnn-hidden`` adds CNN students at the same window for comparison (a CNN has no packed path: it
always runs the padded batch); ``--bigram-hidden`` adds GRUs with a bag of hashed bigrams
(``--bigram-buckets`` buckets), and ``--trigram-hidden`` GRUs whose bag holds bigrams and trigrams.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from kd_imdb import export
from kd_imdb.config import StudentSpec
from kd_imdb.data import load_data
from kd_imdb.students import build_student
from kd_imdb.tokenizer import encode_texts, train_tokenizer
from kd_imdb.train import pad


def reviews_per_s(fn, batches: list) -> float:
    fn(batches[0])  # warm-up
    t0 = time.perf_counter()
    for batch in batches:
        fn(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - t0)


@click.command()
@click.option("--data", default="sample", show_default=True)
@click.option("--reviews", default=512, show_default=True, type=int, help="Test reviews timed.")
@click.option("--max-len", "max_len", default=512, show_default=True, type=int)
@click.option("--hidden", "hiddens", default=[64, 128], multiple=True, show_default=True, type=int)
@click.option("--bidirectional-hidden", "bi_hiddens", multiple=True, type=int, help="Bidirectional GRUs to time too.")
@click.option("--cnn-hidden", "cnn_hiddens", multiple=True, type=int, help="CNN students (filters per width) to time too.")
@click.option("--bigram-hidden", "bigram_hiddens", multiple=True, type=int, help="GRUs with a bigram bag to time too.")
@click.option("--trigram-hidden", "trigram_hiddens", multiple=True, type=int,
              help="GRUs with a bag of bigrams and trigrams to time too.")
@click.option("--bigram-buckets", default=131072, show_default=True, type=int, help="The bags' buckets.")
def main(data: str, reviews: int, max_len: int, hiddens: tuple[int, ...], bi_hiddens: tuple[int, ...],
         cnn_hiddens: tuple[int, ...], bigram_hiddens: tuple[int, ...], trigram_hiddens: tuple[int, ...],
         bigram_buckets: int) -> None:
    torch.set_num_threads(1)
    os.environ["RAYON_NUM_THREADS"] = "1"  # and the tokenizers library, which would encode a batch on every core
    imdb = load_data(data)
    tok = train_tokenizer(imdb.split("train")["text"].tolist(), vocab_size=20000)
    texts = imdb.split("test")["text"].sample(min(reviews, len(imdb.split("test"))), random_state=0).tolist()
    text_batches = [texts[i:i + 64] for i in range(0, len(texts), 64)]
    seq_batches = [encode_texts(tok, b, max_len) for b in text_batches]
    words = np.mean([len(s) for b in seq_batches for s in b])
    tokenize = reviews_per_s(lambda b: encode_texts(tok, b, max_len), text_batches)
    library = reviews_per_s(lambda b: tok.encode_batch(b), text_batches)  # without encode_texts' fast path
    print(f"{len(texts)} test reviews, {words:.0f} words on average (max_len {max_len}), batch 64, 1 thread; "
          f"tokenisation alone {tokenize:,.0f} reviews/s (the tokenizers library alone: {library:,.0f})")
    print("| student | padded, model only | packed, model only | speed-up | padded + tokenisation | "
          "packed + tokenisation | max logit gap | ONNX Runtime, model only | int8 packed, model only | "
          "int8 packed + tokenisation | int8 max logit gap |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    students = ([(h, False, 0, 2) for h in hiddens] + [(h, True, 0, 2) for h in bi_hiddens]
                + [(h, False, bigram_buckets, 2) for h in bigram_hiddens]
                + [(h, False, bigram_buckets, 3) for h in trigram_hiddens])
    for hidden, bidirectional, buckets, ngrams in students:
        model = build_student(StudentSpec(arch="gru", hidden=hidden, dropout=0.0, bidirectional=bidirectional,
                                          bigram_buckets=buckets, bag_ngrams=ngrams), 0)
        with torch.no_grad():
            gap = max(float((model.train()(pad(b)) - model.eval()(pad(b))).abs().max()) for b in seq_batches)
        rates, total = {}, {}
        for name, training in (("padded", True), ("packed", False)):
            model.train(training)
            with torch.no_grad():
                rates[name] = reviews_per_s(lambda b, m=model: m(pad(b)), seq_batches)
                total[name] = reviews_per_s(lambda b, m=model: m(pad(encode_texts(tok, b, max_len))), text_batches)
        onnx = export.OnnxStudent(export.export_student_onnx(model, Path(tempfile.mkdtemp()) / "s.onnx"), threads=1)
        rates["onnx"] = reviews_per_s(lambda b, s=onnx: s(pad(b).numpy()), seq_batches)
        int8 = export.quantize_student(model.eval())
        with torch.no_grad():
            int8_gap = max(float((model(pad(b)) - int8(pad(b))).abs().max()) for b in seq_batches)
            rates["int8"] = reviews_per_s(lambda b, m=int8: m(pad(b)), seq_batches)
            total["int8"] = reviews_per_s(lambda b, m=int8: m(pad(encode_texts(tok, b, max_len))), text_batches)
        bag = {0: "", 2: " + bigram bag", 3: " + bigram and trigram bag"}[ngrams if buckets else 0]
        name = f"{'bidirectional ' if bidirectional else ''}GRU-{hidden}{bag}"
        print(f"| {name} | {rates['padded']:,.0f} | {rates['packed']:,.0f} | {rates['packed'] / rates['padded']:.2f}x | "
              f"{total['padded']:,.0f} | {total['packed']:,.0f} | {gap:.1e} | {rates['onnx']:,.0f} | "
              f"{rates['int8']:,.0f} | {total['int8']:,.0f} | {int8_gap:.1e} |")
    for hidden in cnn_hiddens:
        model = build_student(StudentSpec(arch="cnn", hidden=hidden, dropout=0.0), 0).eval()
        with torch.no_grad():
            rate = reviews_per_s(lambda b, m=model: m(pad(b)), seq_batches)
            total = reviews_per_s(lambda b, m=model: m(pad(encode_texts(tok, b, max_len))), text_batches)
        print(f"| CNN-{hidden} | {rate:,.0f} | — | — | {total:,.0f} | — | — | — | — | — | — |")


if __name__ == "__main__":
    main()
