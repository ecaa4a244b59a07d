"""The students: a GRU net and a 1-D CNN net (Kim 2014), both tiny and trained from scratch, each
optionally beside a bag of hashed word bigrams, or bigrams and trigrams (fastText).

Both take token ids [B, L] padded with 0 at the end and return 2-class logits [B, 2].
``build_student`` seeds the initial weights with the seed alone, so the scratch and KD runs
of a seed pair start from identical weights.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from kd_imdb.config import StudentSpec


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over time of ``x`` [B, L, D] where ``mask`` [B, L] is true."""
    return x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)


def padded_pass(module: nn.Module) -> bool:
    """Whether ``module`` runs over the whole padded batch [B, L]: in training (batches are
    length-bucketed, and the padded pass is faster to differentiate on a CPU) and when traced or exported
    (ONNX needs static ops). Otherwise, in inference, each review costs its own length: the students
    embed and read only its real tokens, so a request's longest review no longer sets everyone's cost."""
    return module.training or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


BIGRAM_DIM = StudentSpec.bag_dim  # the default width of an n-gram's vector
BIGRAM_HASH = 1_000_003  # a prime; the bigram (a, b) of word ids falls in bucket (a * BIGRAM_HASH + b) mod buckets,
# the trigram (a, b, c) in ((a * BIGRAM_HASH + b) * BIGRAM_HASH + c) mod buckets (< 2**63 for ids < 9e6)


class BigramBag(nn.Module):
    """The mean vector of a review's hashed word bigrams (Joulin et al. 2017, "Bag of tricks for efficient
    text classification"), and with ``max_n`` 3 of its trigrams too, hashed into the same buckets as
    fastText does. A linear model on bigrams (NB-SVM, 0.916) beats every GRU-64 trained from
    scratch here: the bag hands the student the word pairs ("not good", "at all") directly instead of
    leaving them to 64 recurrent units. Buckets are hashed from the word ids inside the model, so the
    tokenizer, the ONNX export and the serving path are unchanged.

    The students read the bag through their linear output layer only, so each bucket's vector v_b
    reaches the logits as the one number w . v_b: a bucket's width buys no expressiveness, while the
    number of buckets sets how many n-grams share one number. ``dim`` 1 with 16 times the buckets
    spends the same parameters on 16 times fewer collisions (dropout then drops the whole bag, as a
    unit, in training)."""

    def __init__(self, buckets: int, max_n: int = 2, dim: int = BIGRAM_DIM):
        super().__init__()
        self.buckets, self.max_n = buckets, max_n
        self.embed = nn.Embedding(buckets, dim)
        nn.init.uniform_(self.embed.weight, -1 / dim, 1 / dim)  # fastText's initialisation

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, L] padded with 0 at the end -> [B, dim]."""
        total, count = 0, 0
        for n in range(2, self.max_n + 1):
            # word j of each n-gram: ids[:, j : j - (n-1)] [B, L-n+1] (negative ends keep the ONNX export's length dynamic)
            words = [ids[:, j:(j - n + 1) or None] for j in range(n)]
            h = words[0]
            for w in words[1:]:
                h = h * BIGRAM_HASH + w
            # [B, L-n+1]; padding is at the end, so an n-gram whose last word is real is real throughout
            real = words[-1] != 0
            per_review = real.sum(dim=1)  # [B]
            if padded_pass(self):
                total = total + (self.embed(h % self.buckets) * real.unsqueeze(-1)).sum(dim=1)  # [B, D]
            else:  # look up the real n-grams only (row-major, so each review's are contiguous)
                total = total + nn.functional.embedding_bag(
                    h[real] % self.buckets, self.embed.weight, per_review.cumsum(0) - per_review, mode="sum")  # [B, D]
            count = count + per_review.unsqueeze(1)  # [B, 1]
        return total / count.clamp(min=1)  # reviews shorter than 2 words: the zero vector


class GRUStudent(nn.Module):
    """Embedding -> one-layer GRU -> [last state ; max-pool over time] -> linear; bidirectional: the same
    features from a second GRU that reads each review right to left, concatenated; with bigram buckets,
    the ``BigramBag`` features too.

    Sequences are padded at the end and the GRU runs left to right, so the output at the last real
    token is exactly the unpadded one. The backward GRU reads each review reversed within its length
    (still padded at the end), so padding never reaches either direction, in training as in inference.
    Training runs over the padded batch (batches are length-bucketed, and packing is slower in the
    backward pass on a CPU). Inference packs the batch: only the real tokens are embedded, read and
    max-pooled (and the bag looks up only the real n-grams), so a review costs its own length, while a
    served request holds reviews of any length and its longest would otherwise set everyone's cost.
    The logits are those of the padded pass (tests/test_students.py).
    """

    def __init__(self, spec: StudentSpec):
        super().__init__()
        self.embed = nn.Embedding(spec.vocab_size, spec.embedding_dim, padding_idx=0)
        self.gru = nn.GRU(spec.embedding_dim, spec.hidden, batch_first=True)
        directions = 1
        if spec.bidirectional:
            self.gru_back = nn.GRU(spec.embedding_dim, spec.hidden, batch_first=True)
            directions = 2
        self.drop = nn.Dropout(spec.dropout)
        bag = spec.bag_dim if spec.bigram_buckets else 0
        self.out = nn.Linear(2 * directions * spec.hidden + bag, 2)
        if spec.bigram_buckets:
            # named for the bigrams it began with, so saved students' weights keep loading
            self.bigrams = BigramBag(spec.bigram_buckets, spec.bag_ngrams, spec.bag_dim)

    def read(self, gru: nn.GRU, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[last state ; max-pool over time] of ``gru`` reading ``ids`` [B, L] padded at the end -> [B, 2H]."""
        if padded_pass(self):
            states, _ = gru(self.embed(ids))  # [B, L, H]
            last_idx = (mask.sum(dim=1) - 1).clamp(min=0)  # [B]
            last = states.gather(1, last_idx.view(-1, 1, 1).expand(-1, 1, states.shape[2])).squeeze(1)  # [B, H]
            return torch.cat([last, masked_max(states, mask)], dim=-1)
        # Packed: the N real tokens of the batch, time-major, longest review first within each step.
        packed = pack_padded_sequence(ids, mask.sum(dim=1).clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        states, last = gru(packed._replace(data=self.embed(packed.data)))  # .data [N, H]; last [1, B, H] in input order
        # packed row -> its review: step t holds the first batch_sizes[t] reviews of sorted_indices
        slots = torch.arange(ids.shape[0])  # [B]
        rank = slots.expand(len(packed.batch_sizes), -1)[slots < packed.batch_sizes.unsqueeze(1)]  # [N]
        owner = packed.sorted_indices[rank.to(ids.device)].unsqueeze(1).expand(-1, states.data.shape[1])  # [N, H]
        peak = states.data.new_full((ids.shape[0], states.data.shape[1]), float("-inf"))
        return torch.cat([last[0], peak.scatter_reduce_(0, owner, states.data, "amax")], dim=-1)  # [B, 2H]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != 0  # [B, L]
        features = self.read(self.gru, ids, mask)  # [B, 2H]
        if hasattr(self, "gru_back"):
            # position t of the reversed review holds word length-1-t; padding stays at the end
            lengths = mask.sum(dim=1, keepdim=True)  # [B, 1]
            positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)  # [1, L]
            reverse_idx = torch.where(positions < lengths, lengths - 1 - positions, positions)  # [B, L]
            backward = self.read(self.gru_back, ids.gather(1, reverse_idx), mask)  # [B, 2H]
            features = torch.cat([features, backward], dim=-1)  # [B, 4H]
        if hasattr(self, "bigrams"):
            features = torch.cat([features, self.bigrams(ids)], dim=-1)  # [B, 2H or 4H + bag_dim]
        return self.out(self.drop(features))


class CNNStudent(nn.Module):
    """Embedding -> parallel 1-D convolutions (3, 4, 5 tokens wide, ``hidden`` filters each) -> ReLU ->
    max-pool over time -> linear (Kim 2014, "Convolutional neural networks for sentence classification");
    with bigram buckets, the ``BigramBag`` features join the pooled ones."""

    def __init__(self, spec: StudentSpec):
        super().__init__()
        self.kernel_sizes = spec.kernel_sizes
        self.embed = nn.Embedding(spec.vocab_size, spec.embedding_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(spec.embedding_dim, spec.hidden, k) for k in spec.kernel_sizes)
        self.drop = nn.Dropout(spec.dropout)
        bag = spec.bag_dim if spec.bigram_buckets else 0
        self.out = nn.Linear(len(spec.kernel_sizes) * spec.hidden + bag, 2)
        if spec.bigram_buckets:
            # named for the bigrams it began with, so saved students' weights keep loading
            self.bigrams = BigramBag(spec.bigram_buckets, spec.bag_ngrams, spec.bag_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        bag = [self.bigrams(ids)] if hasattr(self, "bigrams") else []  # [B, bag_dim], from the unpadded ids
        # Pad every batch by the widest kernel minus one: short reviews still get a window, and windows
        # ending on padding are masked below, so the result does not depend on the padding (no
        # data-dependent shapes either, which keeps the ONNX export exact).
        ids = nn.functional.pad(ids, (0, max(self.kernel_sizes) - 1))
        mask = ids != 0  # [B, L]
        x = self.embed(ids).transpose(1, 2)  # [B, E, L]
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs):
            h = torch.relu(conv(x)).transpose(1, 2)  # [B, L-k+1, H]
            # windows ending on a real token; the first window always counts, so none is empty
            valid = torch.cat([torch.ones_like(mask[:, :1]), mask[:, k:]], dim=1)  # [B, L-k+1]
            pooled.append(masked_max(h, valid))
        return self.out(self.drop(torch.cat(pooled + bag, dim=-1)))


def build_student(spec: StudentSpec, seed: int) -> nn.Module:
    """A freshly initialised student; its weights depend on ``spec`` and ``seed`` alone."""
    torch.manual_seed(seed)
    return GRUStudent(spec) if spec.arch == "gru" else CNNStudent(spec)
