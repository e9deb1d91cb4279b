"""Text similarity for dedup and decontamination: normalised words, shingles, MinHash LSH.

Problems are compared on lower-cased tokens: runs of letters and digits, and each other
symbol on its own (LaTeX commands keep their name, ``\\frac`` -> ``frac``). Math delimiters
and LaTeX spacing are dropped first, so ``$x$`` and ``\\(x\\)`` read the same, while
``2n - 1`` and ``2n + 1`` do not.
Near-duplicates: MinHash LSH (``datasketch``) finds candidate pairs, then the exact Jaccard
similarity of the two shingle sets decides, so the result does not depend on LSH noise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from datasketch import MinHash, MinHashLSH

_WORD = re.compile(r"[^\W_]+")
_TOKEN = re.compile(r"[^\W_]+|[^\w\s\\]")
_NOISE = re.compile(r"\\[()\[\],;:! ]|\$|~|\\(?:left|right|displaystyle|quad|qquad)(?![a-z])")


def normalise_text(text: str) -> str:
    """Lower case, whitespace collapsed: what counts as an exact duplicate."""
    return " ".join(text.lower().split())


def tokens(text: str) -> list[str]:
    """Lower-cased tokens of ``text``, symbols included (see the module doc)."""
    return _TOKEN.findall(_NOISE.sub(" ", text.lower()))


def words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits only: what n-gram overlap counts, as usual in
    decontamination (a run of symbols such as "1 , 2 , 3 , 4" says little)."""
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> set[str]:
    """The n-word sequences of ``tokens``, joined by spaces (none if there are fewer than n)."""
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def shingles(text: str, size: int) -> frozenset[str]:
    """Word shingles of ``text``; a text shorter than ``size`` words is one shingle of all."""
    toks = tokens(text)
    if len(toks) < size:
        return frozenset([" ".join(toks)])
    return frozenset(ngrams(toks, size))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def minhashes(sets: Sequence[frozenset[str]], num_perm: int) -> list[MinHash]:
    """One MinHash per shingle set (fixed seed: the same text always hashes the same)."""
    return MinHash.bulk([[s.encode() for s in sorted(x)] for x in sets], num_perm=num_perm)


class NearIndex:
    """Shingle sets indexed for ``Jaccard ≥ threshold`` queries (LSH, then exact check)."""

    def __init__(self, threshold: float, num_perm: int) -> None:
        self.threshold, self.num_perm = threshold, num_perm
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._sets: dict[str, frozenset[str]] = {}

    def add(self, key: str, shingle_set: frozenset[str], signature: MinHash) -> None:
        self._lsh.insert(key, signature)
        self._sets[key] = shingle_set

    def best_match(
        self, shingle_set: frozenset[str], signature: MinHash
    ) -> tuple[str, float] | None:
        """The most similar indexed key at or above the threshold, with its Jaccard, or None."""
        best: tuple[str, float] | None = None
        for key in sorted(self._lsh.query(signature)):
            score = jaccard(shingle_set, self._sets[key])
            if score >= self.threshold and (best is None or score > best[1]):
                best = (key, score)
        return best


def build_index(
    keys: Iterable[str], sets: Sequence[frozenset[str]], threshold: float, num_perm: int
) -> NearIndex:
    index = NearIndex(threshold, num_perm)
    for key, s, m in zip(keys, sets, minhashes(sets, num_perm), strict=True):
        index.add(key, s, m)
    return index
