"""kd_imdb.teacher's windowed view: every window of a review, and the pooling of window logits."""
from __future__ import annotations

import numpy as np
import pytest

from kd_imdb.teacher import encode_windows, load_tokenizer, pool_windows


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("packaged")


def test_windows_cover_the_review_and_end_at_its_end(tok):
    long = " ".join(f"w{i}" for i in range(60))
    body = tok(long, add_special_tokens=False)["input_ids"]
    windows, owner = encode_windows(tok, [long, "short one"], max_len=12, stride=7)
    n = len(body)
    starts = [*range(0, n - 10, 7), n - 10]
    assert owner.tolist() == [0] * len(starts) + [1]
    for w, s in zip(windows, starts):
        assert w == [tok.cls_token_id] + body[s:s + 10] + [tok.sep_token_id]
    covered = set().union(*(range(s, s + 10) for s in starts))
    assert covered == set(range(n))  # no token left unread
    assert windows[-1] == [tok.cls_token_id] + tok("short one", add_special_tokens=False)["input_ids"] + [tok.sep_token_id]


def test_a_review_of_exactly_one_window_gets_one(tok):
    text = " ".join(["good"] * 10)
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    windows, owner = encode_windows(tok, [text], max_len=n + 2, stride=3)
    assert len(windows) == 1 and owner.tolist() == [0]
    with pytest.raises(ValueError, match="stride"):
        encode_windows(tok, [text], max_len=16, stride=0)


def test_pooling_golden_values():
    logits = np.array([[0.0, 1.0], [0.0, -3.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.5]], dtype=np.float32)
    owner = np.array([0, 0, 0, 1, 2])
    np.testing.assert_allclose(pool_windows(logits, owner, 3, "mean"), [[1 / 3, -2 / 3], [2, 0], [0, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(pool_windows(logits, owner, 3, "ends"), [[0.5, 0.5], [2, 0], [0, 0.5]])
    np.testing.assert_allclose(pool_windows(logits, owner, 3, "max"), [[0, -3], [2, 0], [0, 0.5]])  # |margin| 3 wins
    with pytest.raises(ValueError, match="at least one window"):
        pool_windows(logits, owner, 4, "mean")
    with pytest.raises(ValueError, match="pooling"):
        pool_windows(logits, owner, 3, "median")
