"""Output sketches: how far apart two outputs are, without keeping either text.

A sketch is a few hundred bytes computed from one output text with a secret
key (one per store, see `BaselineStore.sketch_key`). Two sketches made with
the same key tell:

- where the texts first differ, to within a power-of-two range of
  characters (`divergence_bucket`): the sketch keeps a keyed hash of the
  text's prefixes of 16, 32, 64, ... characters and of the whole text;
  equal prefix hashes mean equal prefixes, so the first difference lies
  between the longest equal prefix and the shortest unequal one;
- how similar they are (`estimate_similarity`): the Jaccard similarity of
  their sets of 3-word shingles, estimated from a bottom-k MinHash (the
  `MINHASH_K` smallest keyed shingle hashes). Texts with at most `MINHASH_K`
  distinct shingles keep all of them: the similarity of two such texts is
  exact;
- their lengths in characters and words.

Privacy: every hash is keyed BLAKE2b (truncated); without the key nobody can
test a guess ("was the answer 'yes'?", "did it contain this phrase?")
against a sketch, and a truncated hash cannot be inverted. The key lives in
the store, next to the sketches, and is never logged: whoever can read the
whole store can test guesses, as they already can against the stored output
hash (an unkeyed SHA-256). The sketch reveals the output's length.

Pure functions of their arguments (no I/O, no clock); `Sketcher` only caches
the keyed hash states.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import Final

VERSION: Final = 1
KEY_BYTES: Final = 32
"""Length of a sketch key (`new_key`)."""
MINHASH_K: Final = 128
"""Shingle hashes kept (bottom-k MinHash): 4 bytes each."""
SHINGLE_WORDS: Final = 3
FIRST_PREFIX: Final = 16
"""Prefix hashes at 16, 32, 64, ... characters (and the whole text)."""
PREFIX_HASH_BYTES: Final = 8
WORD_CACHE: Final = 50_000
# version, chars, words, distinct shingles, minhash values kept
_HEADER: Final = struct.Struct("<BIIIH")


def new_key() -> bytes:
    """A random sketch key (what a store generates once and keeps)."""
    import os

    return os.urandom(KEY_BYTES)


def words(text: str) -> list[str]:
    """The words of ``text``: split on whitespace."""
    return text.split()


def shingles(text: str) -> set[tuple[str, ...]]:
    """The text's 3-word shingles (a text under 3 words is one shingle; an
    empty one has none): what `estimate_similarity` estimates the Jaccard of."""
    w = words(text)
    if len(w) < SHINGLE_WORDS:
        return {tuple(w)} if w else set()
    return {tuple(w[i : i + SHINGLE_WORDS]) for i in range(len(w) - SHINGLE_WORDS + 1)}


def jaccard(a: set[tuple[str, ...]], b: set[tuple[str, ...]]) -> float:
    """Exact Jaccard similarity (1.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def prefix_positions(length: int) -> list[int]:
    """Character positions whose prefix a sketch hashes: 16, 32, 64, ... below
    ``length``, then ``length`` itself."""
    out = []
    p = FIRST_PREFIX
    while p < length:
        out.append(p)
        p *= 2
    out.append(length)
    return out


class Sketcher:
    """Makes sketches with one key (the key is never shown by ``repr``)."""

    __slots__ = ("_prefix", "_word", "_words")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or not 16 <= len(key) <= 64:
            raise ValueError("a sketch key is 16 to 64 bytes")
        self._prefix = hashlib.blake2b(
            key=key, digest_size=PREFIX_HASH_BYTES, person=b"seedlock.prefix"
        )
        self._word = hashlib.blake2b(key=key, digest_size=12, person=b"seedlock.word")
        # Keyed hash by word, memory only (as the output texts the monitor
        # keeps): a BLAKE2b call costs ~1 us, a hit ~50 ns, and outputs reuse
        # a small vocabulary. Cleared when full.
        self._words: dict[str, tuple[int, int, int]] = {}

    def __repr__(self) -> str:
        return "Sketcher(key=***)"

    def sketch(self, text: str) -> bytes:
        """The sketch of ``text`` (a few hundred bytes at most)."""
        n = len(text)
        prefix = []
        h = self._prefix.copy()
        start = 0
        for p in prefix_positions(n):
            h.update(text[start:p].encode("utf-8", "surrogatepass"))
            start = p
            prefix.append(h.copy().digest())
        w = words(text)
        hashes = self._shingle_hashes(w)
        values = _bottom_k(hashes)
        return b"".join(
            (
                _HEADER.pack(VERSION, n, len(w), len(hashes), len(values)),
                *prefix,
                struct.pack(f"<{len(values)}I", *values),
            )
        )

    def _shingle_hashes(self, w: list[str]) -> set[int]:
        # One keyed hash per distinct word, cut in three 32-bit values (one
        # per position in a shingle); a shingle's hash is the XOR of its
        # words' values for their positions: simple tabulation over words,
        # 3-independent (enough for MinHash), and a public function of keyed
        # hashes is as opaque as they are. An XOR of small ints costs ~30 ns,
        # a BLAKE2b call ~1 us.
        base = self._word
        hw = self._words
        if len(hw) > WORD_CACHE:
            hw.clear()
        for word in w:
            if word not in hw:
                h = base.copy()
                h.update(word.encode("utf-8", "surrogatepass"))
                d = h.digest()
                hw[word] = (
                    int.from_bytes(d[0:4], "little"),
                    int.from_bytes(d[4:8], "little"),
                    int.from_bytes(d[8:12], "little"),
                )
        t = [hw[word] for word in w]
        if len(t) < SHINGLE_WORDS:
            if not t:
                return set()
            t = t + [(0, 0, 0)] * (SHINGLE_WORDS - len(t))  # one shingle of all the words
        return {x[0] ^ y[1] ^ z[2] for x, y, z in zip(t, t[1:], t[2:], strict=False)}


def _bottom_k(values: Iterable[int]) -> list[int]:
    return sorted(values)[:MINHASH_K]


class Sketch:
    """A parsed sketch (raises ValueError on bytes that are not one)."""

    __slots__ = ("chars", "minhash", "prefix", "shingles", "words")

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) < _HEADER.size:
            raise ValueError("not a seedlock output sketch")
        data = bytes(data)
        version, chars, n_words, n_shingles, n_values = _HEADER.unpack_from(data)
        positions = prefix_positions(chars)
        size = _HEADER.size + PREFIX_HASH_BYTES * len(positions) + 4 * n_values
        if version != VERSION or len(data) != size or n_values != min(n_shingles, MINHASH_K):
            raise ValueError("not a seedlock output sketch (or a newer version)")
        offset = _HEADER.size
        self.chars: int = chars
        self.words: int = n_words
        self.shingles: int = n_shingles
        self.prefix: dict[int, bytes] = {}
        for p in positions:
            self.prefix[p] = data[offset : offset + PREFIX_HASH_BYTES]
            offset += PREFIX_HASH_BYTES
        self.minhash: frozenset[int] = frozenset(struct.unpack_from(f"<{n_values}I", data, offset))


def divergence_bucket(a: bytes, b: bytes) -> tuple[int, int]:
    """``(lo, hi)``: the first character where the two sketched texts differ
    is at least ``lo`` and below ``hi`` (as `first_difference` counts it:
    the shorter length when one text is a prefix of the other; the length
    when they are equal)."""
    sa, sb = Sketch(a), Sketch(b)
    lo, hi = 0, min(sa.chars, sb.chars) + 1
    for p, h in sa.prefix.items():
        other = sb.prefix.get(p)
        if other is None:
            continue
        if other == h:
            lo = max(lo, p)
        else:
            hi = min(hi, p)
    return lo, max(hi, lo + 1)


def estimate_similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of the two texts' 3-word shingle sets
    (exact when each has at most `MINHASH_K` distinct shingles: both sets
    are then in the sketches whole)."""
    ka, kb = Sketch(a), Sketch(b)
    sa, sb = ka.minhash, kb.minhash
    if len(sa) == ka.shingles and len(sb) == kb.shingles:  # both complete: exact
        union_all = sa | sb
        return len(sa & sb) / len(union_all) if union_all else 1.0
    union = sorted(sa | sb)[:MINHASH_K]
    if not union:
        return 1.0
    both = sum(1 for x in union if x in sa and x in sb)
    return both / len(union)


def sketch_distance(a: bytes | None, b: bytes | None) -> tuple[str, float] | None:
    """(``seedlock.divergence_at`` label, estimated similarity) of two outputs
    from their sketches; None when one is missing or unreadable (a newer
    version, or damaged): say nothing rather than guess."""
    if a is None or b is None:
        return None
    try:
        return bucket_label(divergence_bucket(a, b)), estimate_similarity(a, b)
    except ValueError:
        return None


def bucket_label(bucket: tuple[int, int]) -> str:
    """``(64, 128)`` -> ``"[64, 128)"`` (the value of ``seedlock.divergence_at``)."""
    return f"[{bucket[0]}, {bucket[1]})"
