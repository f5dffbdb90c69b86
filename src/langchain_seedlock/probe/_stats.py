"""The probe's statistics: pure functions of the outputs, no I/O."""

from __future__ import annotations

import difflib
import itertools
import math
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any


def text_distance(a: str, b: str) -> float:
    """``1 - difflib ratio``: 0 for identical texts, 1 for nothing in common."""
    if a == b:
        return 0.0
    # autojunk off: its heuristic drops frequent characters from long texts
    # and would make the distance depend on length.
    return 1.0 - difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def cosine_distance(u: Sequence[float], v: Sequence[float]) -> float:
    """``1 - cosine similarity``, clamped to [0, 2]."""
    dot = sum(x * y for x, y in zip(u, v, strict=True))
    norm = math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v))
    if norm == 0:
        return 0.0 if not any(u) and not any(v) else 1.0
    return min(2.0, max(0.0, 1.0 - dot / norm))


def exact_match_rate(outputs: Sequence[str]) -> float:
    """Fraction of outputs equal to the most common one (0.0 when empty)."""
    if not outputs:
        return 0.0
    return Counter(outputs).most_common(1)[0][1] / len(outputs)


def first_divergence(outputs: Sequence[Sequence[Hashable]]) -> int | None:
    """First index where the outputs differ (characters of texts, or tokens of
    token lists); None if all are identical."""
    if len({tuple(o) for o in outputs}) <= 1:
        return None
    shortest = min(len(o) for o in outputs)
    for i in range(shortest):
        if len({o[i] for o in outputs}) > 1:
            return i
    return shortest  # one output is a prefix of another


def mean_pairwise(values: Sequence[Any], distance: Callable[[Any, Any], float]) -> float:
    """Mean distance over all unordered pairs (0.0 with fewer than two values)."""
    pairs = list(itertools.combinations(values, 2))
    if not pairs:
        return 0.0
    return sum(distance(a, b) for a, b in pairs) / len(pairs)
