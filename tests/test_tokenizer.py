"""The students' word-level tokenizer: vocabulary, normalisation, head+tail truncation, save and load."""
from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel

from kd_imdb.tokenizer import (
    BREAK,
    PAD,
    UNK,
    WORD,
    _fast_vocab,
    encode_texts,
    load_tokenizer,
    pipeline,
    train_tokenizer,
    truncate,
    words,
)

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


# Texts on which Python's re and unicodedata would split differently from the library: each must leave
# the fast path (the check below proves the naive Python steps really differ on each).
DISAGREE = [
    "you\u00b4ve got it",       # NFKC makes the acute accent a space and a combining mark: a word character to the crate
    "don\u200dt go",            # a zero-width joiner (Join_Control)
    "a\u203fb",                 # connector punctuation other than _
    "ΟΔΟΣ ΚΑΙ",                 # a word-final capital sigma: ς in Python, σ in the library
    "bad\x1cfilm",              # a file separator: whitespace to Python only
    "great<br\x1c/>film",       # ... also inside the <br /> that the normaliser replaces
    "grade\U0001f170plus",      # a negative squared letter (So): Alphabetic to the crate
    "\u0130stanbul",            # İ lower-cases to i and a combining dot
]
AGREE = ["A great film.<br />Great acting!", "Café, naïve — “déjà vu”… 10/10!", "ﬁlm\u00a0noir 12½ ₤5 ^_^",
         "über-cool 東京 film", "", "   ", "<BR>shouting<br/>twice<br  />"]


def naive_words(text: str) -> list[str]:
    return WORD.findall(unicodedata.normalize("NFKC", BREAK.sub(" ", text)).lower())


@pytest.mark.parametrize("text", DISAGREE)
def test_texts_where_python_would_split_differently_leave_the_fast_path(text):
    tok = pipeline(Tokenizer(WordLevel({PAD: 0, UNK: 1}, unk_token=UNK)))
    library = [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))]
    assert naive_words(text) != library  # the guard is needed for this text ...
    assert words(text) is None  # ... and it is there


def test_fast_path_gives_the_library_ids():
    texts = AGREE + DISAGREE
    tok = train_tokenizer(texts * 2, vocab_size=200, min_frequency=1)
    assert _fast_vocab(tok) is not None and all(words(t) is not None for t in AGREE)
    assert [e.tolist() for e in encode_texts(tok, texts, max_len=1000)] == [e.ids or [1] for e in tok.encode_batch(texts)]
    assert encode_texts(tok, ["Caf\u00e9 gr\u00e9at film"], 1000)[0].tolist() == tok.encode("Café gréat film").ids


def test_another_pipeline_takes_the_library_path():
    tok = train_tokenizer(TEXTS, vocab_size=50, min_frequency=1)
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # "film." stays one word: Python's split would differ
    assert _fast_vocab(tok) is None
    assert encode_texts(tok, ["great film."], 10)[0].tolist() == tok.encode("great film.").ids == [
        tok.token_to_id("great"), tok.token_to_id(UNK)]
