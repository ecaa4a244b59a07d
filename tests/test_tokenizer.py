"""The students' word-level tokenizer: vocabulary, normalisation, head+tail truncation, save and load."""
from __future__ import annotations

import numpy as np

from kd_imdb.tokenizer import PAD, UNK, encode_texts, load_tokenizer, train_tokenizer, truncate

TEXTS = ["A great film.<br />Great acting!", "a GREAT plot, bad acting", "great great film"] * 2


def test_vocabulary_keeps_the_most_frequent_words_after_the_special_tokens():
    tok = train_tokenizer(TEXTS, vocab_size=5)
    assert (tok.token_to_id(PAD), tok.token_to_id(UNK)) == (0, 1)
    assert tok.get_vocab_size() == 5
    assert tok.token_to_id("great") == 2  # the most frequent word (lower-cased) comes first
    assert tok.token_to_id("<") is None and tok.token_to_id("br") is None  # <br /> became a space


def test_truncation_keeps_a_quarter_of_head_and_the_tail():
    ids = list(range(100))
    assert truncate(ids, 8) == [0, 1, 94, 95, 96, 97, 98, 99]
    assert truncate(ids, 8, "head") == list(range(8))
    assert truncate([5, 6], 8) == [5, 6]


def test_encoding_is_int64_never_empty_and_survives_save_and_load(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=50, min_frequency=1)
    encoded = encode_texts(tok, ["great film", "", "unseenword great"], max_len=4)
    assert [e.dtype for e in encoded] == [np.int64] * 3
    assert encoded[1].tolist() == [1]  # an empty review is one [UNK]
    assert encoded[2][0] == 1 and encoded[2][1] == tok.token_to_id("great")
    tok.save(str(tmp_path / "tokenizer.json"))
    again = encode_texts(load_tokenizer(tmp_path / "tokenizer.json"), ["great film", "", "unseenword great"], max_len=4)
    assert [e.tolist() for e in again] == [e.tolist() for e in encoded]
