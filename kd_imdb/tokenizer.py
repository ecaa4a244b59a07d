"""The students' word-level tokenizer, trained with the ``tokenizers`` library on the train split."""
from __future__ import annotations

import numpy as np
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer

PAD, UNK = "[PAD]", "[UNK]"  # ids 0 and 1


def train_tokenizer(texts: list[str], vocab_size: int = 20000, min_frequency: int = 2) -> Tokenizer:
    """A lower-cased word-level vocabulary of the ``vocab_size`` most frequent words in ``texts``.

    IMDB reviews carry HTML line breaks (``<br />``); they are turned into spaces before splitting.
    """
    tok = Tokenizer(WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"<br\s*/?>"), " "), normalizers.NFKC(), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and runs of punctuation
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


def encode_texts(tok: Tokenizer, texts: list[str], max_len: int, mode: str = "head+tail") -> list[np.ndarray]:
    """Token ids per review (int64 arrays of length 1..max_len; an empty review becomes [UNK])."""
    out = []
    for enc in tok.encode_batch(list(texts)):
        ids = truncate(enc.ids, max_len, mode) or [tok.token_to_id(UNK)]
        out.append(np.asarray(ids, dtype=np.int64))
    return out
