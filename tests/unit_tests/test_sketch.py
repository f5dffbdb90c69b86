"""Output sketches: the divergence bucket always holds the first difference, the
similarity estimate is close to the exact shingle Jaccard, nothing of the text
is kept; and a drift seen by another process is sized from stored sketches."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_openai import ChatOpenAI

from langchain_seedlock import SeedLockCallbackHandler
from langchain_seedlock._drift_events import first_difference
from langchain_seedlock._events import (
    K_DIFF_CHAR,
    K_DIVERGENCE_AT,
    K_OUTPUT_TEXT,
    K_SIMILARITY,
    K_SIMILARITY_ESTIMATE,
)
from langchain_seedlock._sketch import (
    MINHASH_K,
    Sketch,
    Sketcher,
    divergence_bucket,
    estimate_similarity,
    jaccard,
    new_key,
    shingles,
)
from langchain_seedlock._store import MemoryStore
from langchain_seedlock.testing import FakeBackend, assert_drift, capture_seedlock_events

KEY = bytes(range(32))
SKETCHER = Sketcher(KEY)
# A fixed vocabulary: synthetic "answers" that share words as real ones do.
VOCAB = [f"w{i}" for i in range(400)] + ["the", "a", "of", "and", "to", "in", "is"]


def text_of(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n_words))


def edit(rng: random.Random, text: str, share: float) -> str:
    """Replace about ``share`` of the words of ``text``, in runs (as a model
    that diverges, then comes back to the same phrasing)."""
    words = text.split()
    i = 0
    while i < len(words):
        if rng.random() < share / 4:
            for j in range(i, min(i + 4, len(words))):
                words[j] = rng.choice(VOCAB)
            i += 4
        else:
            i += 1
    return " ".join(words)


def bucket(a: str, b: str) -> tuple[int, int]:
    return divergence_bucket(SKETCHER.sketch(a), SKETCHER.sketch(b))


def estimate(a: str, b: str) -> float:
    return estimate_similarity(SKETCHER.sketch(a), SKETCHER.sketch(b))


def test_bucket_of_known_edits() -> None:
    base = "The quick brown fox jumps over the lazy dog. " * 10  # 450 characters
    assert bucket(base, base[:100] + "X" + base[101:]) == (64, 128)
    assert bucket(base, "X" + base[1:]) == (0, 16)
    assert bucket(base, base[:20] + "!") == (16, 22)  # differs at 20, before 21 + 1
    assert bucket(base, base[:40]) == (32, 41)  # a prefix: "differs" at its length
    assert bucket(base, base[:-1] + "?") == (256, 450)
    assert bucket(base, base) == (450, 451)


@settings(max_examples=300, deadline=None)
@given(
    a=st.text(alphabet="ab \u00e9\U0001f600", max_size=300),
    at=st.integers(min_value=0, max_value=300),
    insert=st.text(alphabet="abc ", max_size=5),
    cut=st.integers(min_value=0, max_value=5),
)
def test_bucket_always_holds_the_first_difference(a: str, at: int, insert: str, cut: int) -> None:
    at = min(at, len(a))
    b = a[:at] + insert + a[at + cut :]
    lo, hi = bucket(a, b)
    assert lo <= first_difference(a, b) < hi


def test_short_texts_are_exact() -> None:
    rng = random.Random(1)
    for _ in range(50):
        a = text_of(rng, rng.randint(0, MINHASH_K))
        b = edit(rng, a, rng.random())
        assert estimate(a, b) == pytest.approx(jaccard(shingles(a), shingles(b)))


def test_long_texts_are_estimated_within_a_tenth() -> None:
    rng = random.Random(2)
    errors = []
    for i in range(200):
        a = text_of(rng, 300)
        b = edit(rng, a, i / 200)  # similarities over the whole range
        sa, sb = shingles(a), shingles(b)
        assert len(sa) > MINHASH_K  # the estimated regime
        errors.append(abs(estimate(a, b) - jaccard(sa, sb)))
    assert sum(e <= 0.1 for e in errors) / len(errors) >= 0.95
    assert max(errors) < 0.25


def test_sketch_is_small_keyed_and_keeps_no_text() -> None:
    rng = random.Random(3)
    text = text_of(rng, 400)  # ~2,000 characters
    sketch = SKETCHER.sketch(text)
    assert len(sketch) <= 600
    assert Sketch(sketch).chars == len(text)
    assert Sketch(sketch).words == 400
    assert not any(w.encode() in sketch for w in text.split() if len(w) >= 3)
    other = Sketcher(new_key()).sketch(text)
    assert other != sketch
    assert len(other) == len(sketch)
    # Sketches of one text under two keys share nothing: no match across stores.
    assert estimate_similarity(sketch, other) < 0.1
    assert "0001" not in repr(SKETCHER)
    assert KEY.hex() not in repr(SKETCHER)


@pytest.mark.parametrize("junk", [b"", b"\x01", b"\x02" + bytes(40), SKETCHER.sketch("hi")[:-1]])
def test_damaged_sketch_is_refused(junk: bytes) -> None:
    with pytest.raises(ValueError, match="sketch"):
        Sketch(junk)


def test_memory_store_keeps_a_sketch_not_the_text() -> None:
    store = MemoryStore()
    from tests.unit_tests.test_store_memory_sqlite import rec

    store.write([rec(text="an answer of a few words")])
    (row,) = store.outputs_for("r1")
    key = store.sketch_key()
    assert row.output_text is None
    assert key is not None
    assert row.sketch == Sketcher(key).sketch("an answer of a few words")
    assert store.sketch_key() == key
    assert MemoryStore().sketch_key() != key


USUAL = " ".join(f"Step {i}: stir the pot and wait a minute." for i in range(12))
CHANGED = USUAL[:150] + " Then something else entirely happens here." + USUAL[190:]


def test_a_drift_seen_by_another_process_is_sized_from_sketches(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with FakeBackend() as backend:
        model = ChatOpenAI(
            model="m", base_url=backend.base_url, api_key="sk-test", seed=3, max_retries=0
        )
        backend.reply = USUAL
        first = SeedLockCallbackHandler(store=url)  # process 1 sees the usual answer
        model.invoke("cook", config={"callbacks": [first]})
        model.invoke("cook", config={"callbacks": [first]})
        first.close()
        backend.reply = CHANGED
        second = SeedLockCallbackHandler(store=url)  # process 2: the texts are not stored
        with capture_seedlock_events() as events:
            model.invoke("cook", config={"callbacks": [second]})
        second.close()
    (drift,) = assert_drift(events, count=1)
    assert drift[K_SIMILARITY_ESTIMATE] is True
    assert drift[K_DIFF_CHAR] is None
    assert K_OUTPUT_TEXT not in drift
    lo, hi = (int(x) for x in drift[K_DIVERGENCE_AT].strip("[)").split(","))
    assert lo <= first_difference(USUAL, CHANGED) < hi
    exact = jaccard(shingles(USUAL), shingles(CHANGED))
    assert abs(drift[K_SIMILARITY] - exact) <= 0.1
    assert "estimated from sketches" in drift["seedlock.summary"]
    conn = sqlite3.connect(tmp_path / "shared.db")
    rows = conn.execute("SELECT output_text, length(sketch) FROM outputs").fetchall()
    conn.close()
    assert len(rows) == 2
    assert all(text is None and size for text, size in rows)


def test_sqlite_store_sketches_a_known_output_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_seedlock._store import _memory
    from langchain_seedlock._store._sqlite import SQLiteStore
    from tests.unit_tests.test_store_memory_sqlite import rec

    made: list[str] = []
    real = _memory._sketcher

    class Counting:
        def __init__(self, key: bytes) -> None:
            self.inner = real(key)

        def sketch(self, text: str) -> bytes:
            made.append(text)
            return self.inner.sketch(text)

    monkeypatch.setattr(_memory, "_sketcher", Counting)
    with SQLiteStore(tmp_path / "once.db") as store:
        for _ in range(3):
            store.write([rec(text="same answer"), rec(text="same answer")])
        store.write([rec(output_hash="o2", text="other answer")])
        assert [o.count for o in store.outputs_for("r1")] == [6, 1]
    assert made == ["same answer", "other answer"]
