"""The pure drift decision and the rate detector, tested with plain values."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from langchain_seedlock._decide import (
    BackendRate,
    ModelHistory,
    RateCusum,
    RequestHistory,
    Variant,
    Verdict,
    classify,
    decide,
    is_noisy,
    usual,
    wilson,
)
from langchain_seedlock._record import CallRecord


def hist(**backends: dict[str, int]) -> dict[str, dict[str, Variant]]:
    return {
        b: {h: Variant(n, float(i)) for i, (h, n) in enumerate(outs.items())}
        for b, outs in backends.items()
    }


def test_first_call_is_the_baseline() -> None:
    d = classify("o1", "b1", {})
    assert (d.verdict, d.severity, d.repeat) == (Verdict.FIRST, "debug", False)


def test_usual_output_reproduces_quietly() -> None:
    d = classify("a", "b1", hist(b1={"a": 6, "b": 3}))
    assert (d.verdict, d.severity, d.known, d.output_count) == (
        Verdict.REPRODUCED,
        "debug",
        True,
        6,
    )


def test_known_variant_is_info_with_counts() -> None:
    d = classify("b", "b1", hist(b1={"a": 6, "b": 3, "c": 1}))
    assert (d.verdict, d.severity) == (Verdict.KNOWN_VARIANT, "info")
    assert (d.usual_output, d.usual_count, d.output_count, d.distinct_outputs) == ("a", 6, 3, 3)


def test_new_variant_warns_unless_the_backend_is_noisy() -> None:
    h = hist(b1={"a": 6})
    loud = classify("z", "b1", h)
    quiet = classify("z", "b1", h, backend_noisy=True)
    assert (loud.verdict, loud.severity, loud.known, loud.distinct_outputs) == (
        Verdict.NEW_VARIANT, "warning", False, 2,
    )  # fmt: skip
    assert (quiet.verdict, quiet.severity) == (Verdict.NEW_VARIANT, "info")


def test_new_backend_explains_a_new_output_and_reproduces_a_known_one() -> None:
    h = hist(b_old={"a": 5})
    explained = classify("z", "b_new", h)
    assert (explained.verdict, explained.severity, explained.usual_output) == (
        Verdict.EXPLAINED, "info", "a",
    )  # fmt: skip
    assert classify("a", "b_new", h).verdict is Verdict.REPRODUCED


def test_incomplete_output_is_never_a_variant() -> None:
    d = classify("cut", "b1", hist(b1={"a": 3}), complete=False)
    assert (d.verdict, d.repeat, d.known) == (Verdict.INCOMPLETE, False, False)


def test_usual_tie_goes_to_the_oldest() -> None:
    vs = {"new": Variant(2, 10.0), "old": Variant(2, 1.0)}
    found = usual(vs)
    assert found is not None
    assert found[0] == "old"


@given(st.integers(0, 200), st.integers(1, 200))
def test_wilson_interval_contains_the_rate(k: int, n: int) -> None:
    k = min(k, n)
    lo, hi = wilson(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_noisy_needs_evidence() -> None:
    assert not is_noisy(5, 10)  # too few calls to say
    assert is_noisy(60, 100)
    assert not is_noisy(100, 100)


def _stream(cusum: RateCusum, rng: random.Random, p: float, n: int) -> list[int]:
    """Feed n Bernoulli(p) observations; the indexes (1-based) of alarms."""
    return [i for i in range(1, n + 1) if cusum.update(rng.random() < p) is not None]


@pytest.mark.parametrize("seed", range(5))
def test_drop_from_90_to_50_is_flagged_within_100_calls(seed: int) -> None:
    rng = random.Random(seed)
    cusum = RateCusum()
    assert _stream(cusum, rng, 0.9, 500) == []
    alarms = _stream(cusum, rng, 0.5, 100)
    assert alarms, "no alarm within 100 calls of the drop"
    assert alarms[0] <= 100


def test_alarm_reports_old_and_new_rates_with_intervals() -> None:
    rng = random.Random(1)
    cusum = RateCusum()
    _stream(cusum, rng, 0.9, 300)
    change = None
    while change is None:
        change = cusum.update(rng.random() < 0.5)
    assert change.old_rate > 0.8
    assert change.new_rate < 0.7
    assert change.new_interval[0] <= change.new_rate <= change.new_interval[1]
    assert change.old_interval[1] > change.new_interval[1]


def test_no_false_alarm_over_10000_calls_of_a_stable_60_30_10_backend() -> None:
    """Known-output stream of a backend answering each request with one of 3
    variants (60/30/10): after each variant is discovered, every call is known."""
    rng = random.Random(7)
    cusum = RateCusum()
    seen: dict[int, set[str]] = {}
    alarms = 0
    for i in range(10_000):
        request = i % 10
        out = rng.choices("abc", (6, 3, 1))[0]
        known = seen.setdefault(request, set())
        if known:  # a repeat call
            alarms += cusum.update(out in known) is not None
        known.add(out)
    assert alarms == 0


@pytest.mark.parametrize("seed", range(3))
def test_no_false_alarm_at_a_stable_noisy_rate(seed: int) -> None:
    rng = random.Random(seed)
    assert _stream(RateCusum(), rng, 0.9, 10_000) == []


# -- decide: one call against plain-data history -------------------------------------
def call(out: str, *, fp: str | None = "fp1", at: float = 0.0, **kw: object) -> CallRecord:
    fields: dict[str, object] = {"seed": 1, "system_fingerprint": fp, "at": at, **kw}
    return CallRecord("openai", "m", "req", out, **fields)  # type: ignore[arg-type]


def test_decide_keeps_the_first_output_as_the_baseline() -> None:
    request, model, rate = RequestHistory(), ModelHistory(), BackendRate()
    record = call("a", output_text="hello", output_tokens=3)
    d = decide(record, "b1", request, model, rate, report_missing=True)
    assert d.verdict is not None
    assert d.verdict.verdict is Verdict.FIRST
    assert (d.compared, d.fingerprint_changed, d.fingerprint_missing) == (None, None, False)
    (out,) = request.by_backend["b1"].values()
    assert (out.count, out.text, out.length, out.fingerprint) == (1, "hello", (3, 3), "fp1")
    assert model.last_fingerprint == "fp1"
    assert (rate.repeats, rate.known) == (0, 0)  # a first call is no repeat


def test_decide_new_variant_compares_with_the_usual_output() -> None:
    request, model, rate = RequestHistory(), ModelHistory(), BackendRate()
    for _ in range(3):
        decide(call("a", output_text="usual"), "b1", request, model, rate, report_missing=True)
    d = decide(call("b", output_text="other"), "b1", request, model, rate, report_missing=True)
    assert d.verdict is not None
    assert d.verdict.verdict is Verdict.NEW_VARIANT
    assert d.compared is not None
    usual_out, usual_hash, current = d.compared
    assert (usual_hash, usual_out.count, usual_out.text) == ("a", 3, "usual")
    assert (current.count, current.text) == (1, "other")
    assert d.rate == (2, 3) == (rate.known, rate.repeats)
    # The copies are the caller's: the history goes on without them.
    usual_out.count = 99
    assert request.by_backend["b1"]["a"].count == 3


def test_decide_reports_a_fingerprint_change_with_when_each_was_seen() -> None:
    model = ModelHistory(last_fingerprint="fp1", seen={"fp1": (10.0, 20.0)})
    d = decide(
        call("a", fp="fp2", at=30.0), "b2", RequestHistory(), model, None, report_missing=True
    )
    change = d.fingerprint_changed
    assert change is not None
    assert (change.previous, change.previous_first_seen, change.previous_last_seen) == (
        "fp1", 10.0, 20.0,
    )  # fmt: skip
    assert change.first_seen == 30.0
    assert model.last_fingerprint == "fp2"
    assert model.seen["fp2"] == (30.0, 30.0)
    assert d.verdict is None  # no rate: an unseeded call is compared with nothing


def test_decide_reports_a_missing_fingerprint_only_when_asked() -> None:
    model = ModelHistory()
    first = decide(call("a", fp=None), "b", RequestHistory(), model, None, report_missing=True)
    again = decide(call("a", fp=None), "b", RequestHistory(), model, None, report_missing=False)
    assert (first.fingerprint_missing, again.fingerprint_missing) == (True, False)


def test_decide_never_keeps_a_cut_output() -> None:
    request = RequestHistory()
    decide(call("a"), "b1", request, ModelHistory(), BackendRate(), report_missing=True)
    cut = call("partial", complete=False)
    d = decide(cut, "b1", request, None, BackendRate(), report_missing=True)
    assert d.incomplete
    assert set(request.by_backend["b1"]) == {"a"}  # neither variant nor baseline
