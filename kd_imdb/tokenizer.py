r"""The students' word-level tokenizer, trained with the ``tokenizers`` library on the train split.

Encoding has a fast path. The library builds offsets and an ``Encoding`` object for every word, and on one
core that cost about a third of a served GRU-64's time per review (2,800 reviews/s against about
9,000 for the same steps in Python's ``re``). ``encode_texts`` therefore repeats the pipeline in Python
(``<br />`` to a space, NFKC, lower case, ``\w+|[^\w\s]+``, vocabulary lookup) for the
tokenizers that ``train_tokenizer`` builds, and gives the library every review whose text holds a
character on which the two could disagree:

- combining marks, ``Pc`` other than ``_``, ``No``/``Nl``, ``So``, format and control characters: the
  ``regex`` crate counts marks, joiners, all connector punctuation and a few symbols as word
  characters and numbers other than digits not, Python's ``re`` the reverse;
- ``\x1c``-``\x1f``: whitespace to Python, not to the crate;
- ``ς``: Python lower-cases a word-final ``Σ`` to it, the library always to ``σ``;
- anything unassigned in Python's Unicode tables (the library's may be newer).

tests/test_tokenizer.py checks both paths agree on such characters; on the 100,000 IMDB reviews they
give the same ids for every review (RESULTS §24).
"""
from __future__ import annotations

import json
import re
import unicodedata

import numpy as np
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer

PAD, UNK = "[PAD]", "[UNK]"  # ids 0 and 1
BREAK = re.compile(r"<br\s*/?>")
WORD = re.compile(r"\w+|[^\w\s]+")  # the Whitespace pre-tokenizer's pattern
# Characters outside ASCII on which the Python steps and the library agree: letters, decimal digits,
# spaces, and punctuation and symbols that are neither word characters nor spaces to either.
# (Not So: a few symbols, such as the negative squared letters, are Alphabetic to the crate.)
SAFE_CATEGORIES = frozenset("Lu Ll Lt Lm Lo Nd Zs Pd Ps Pe Pi Pf Po Sm Sc Sk".split())
UNSAFE_ASCII = frozenset("\x1c\x1d\x1e\x1f")


def pipeline(tok: Tokenizer) -> Tokenizer:
    """``tok`` with the students' normalisation and pre-tokenisation.

    IMDB reviews carry HTML line breaks (``<br />``); they are turned into spaces before splitting.
    """
    tok.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(BREAK.pattern), " "), normalizers.NFKC(), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and runs of punctuation
    return tok


def train_tokenizer(texts: list[str], vocab_size: int = 20000, min_frequency: int = 2) -> Tokenizer:
    """A lower-cased word-level vocabulary of the ``vocab_size`` most frequent words in ``texts``."""
    tok = pipeline(Tokenizer(WordLevel(unk_token=UNK)))
    trainer = WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD, UNK])
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def load_tokenizer(path: str) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def truncate(ids: list[int], max_len: int, mode: str = "head+tail") -> list[int]:
    """At most ``max_len`` ids: the head, or (``head+tail``) the first quarter and the last three quarters."""
    if len(ids) <= max_len:
        return ids
    if mode == "head":
        return ids[:max_len]
    head = max_len // 4
    return ids[:head] + ids[len(ids) - (max_len - head):]


def _pipeline_json(tok: Tokenizer) -> str:
    """What the fast path must match: the tokenizer's normalizer, pre-tokenizer, post-processor and model type."""
    spec = json.loads(tok.to_str())
    return json.dumps([spec["normalizer"], spec["pre_tokenizer"], spec["post_processor"], spec["model"]["type"],
                       spec["model"].get("unk_token")])


_PLAIN = _pipeline_json(pipeline(Tokenizer(WordLevel({PAD: 0, UNK: 1}, unk_token=UNK))))
# id(tok) -> (tok, its vocabulary or None); one entry, the tokenizer in use, so that a study that
# builds a tokenizer per student does not keep them all alive
_VOCABS: dict[int, tuple[Tokenizer, dict[str, int] | None]] = {}


def _fast_vocab(tok: Tokenizer) -> dict[str, int] | None:
    """``tok``'s vocabulary when its pipeline is ``train_tokenizer``'s (the fast path applies), else None."""
    held = _VOCABS.get(id(tok))
    if held is None or held[0] is not tok:  # the tokenizer is kept with it, so its id is never reused
        _VOCABS.clear()
        held = _VOCABS[id(tok)] = (tok, tok.get_vocab() if _pipeline_json(tok) == _PLAIN else None)
    return held[1]


def words(text: str) -> list[str] | None:
    """The pre-tokenized words of ``text`` as the library makes them, or None where Python may differ."""
    if not UNSAFE_ASCII.isdisjoint(text):  # checked before <br\s*/?> is matched, since \s differs there too
        return None
    norm = unicodedata.normalize("NFKC", BREAK.sub(" ", text)).lower()
    if not norm.isascii():
        for ch in set(norm):
            if ord(ch) > 127 and (ch == "ς" or unicodedata.category(ch) not in SAFE_CATEGORIES):
                return None
    return WORD.findall(norm)


def encode_texts(tok: Tokenizer, texts: list[str], max_len: int, mode: str = "head+tail") -> list[np.ndarray]:
    """Token ids per review (int64 arrays of length 1..max_len; an empty review becomes [UNK]).

    The ids are the library's (``tok.encode``); most reviews take the fast path of the module docstring."""
    texts = list(texts)
    vocab = _fast_vocab(tok)
    unk = tok.token_to_id(UNK)
    ids: list[list[int] | None] = [None] * len(texts)
    if vocab is not None:
        for i, text in enumerate(texts):
            split = words(text)
            if split is not None:
                ids[i] = [vocab.get(w, unk) for w in split]
    slow = [i for i, row in enumerate(ids) if row is None]
    for i, enc in zip(slow, tok.encode_batch([texts[i] for i in slow]) if slow else []):
        ids[i] = enc.ids
    return [np.asarray(truncate(row, max_len, mode) or [unk], dtype=np.int64) for row in ids]
