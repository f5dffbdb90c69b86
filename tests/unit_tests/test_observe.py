"""The observation core every door calls, tested with plain values: one lock
policy (`apply_lock`) and one record builder (`record_from_result`)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from langchain_seedlock import LockViolationError, SeedLock
from langchain_seedlock import _observe as core
from langchain_seedlock._hashing import output_hash, request_hash_from_messages
from langchain_seedlock._record import MAX_FINGERPRINT_CHARS
from langchain_seedlock.testing import capture_seedlock_events, events_named

LOCK = SeedLock(seed=5, temperature=0.2, max_tokens=50, on_violation="warn")
SENT = [HumanMessage("hi")]


# -- apply_lock: one policy, wherever a value sits -------------------------------------
@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"temperature": 1.9}, "temperature"),
        ({"extra_body": {"seed": 999}}, "seed"),
        ({"model_kwargs": {"max_completion_tokens": 7}}, "max_tokens"),
        ({"temperature": None}, "temperature"),  # None asks to drop the locked value
    ],
)
def test_apply_lock_raises_wherever_the_value_sits(given: dict[str, Any], field: str) -> None:
    with pytest.raises(LockViolationError) as info:
        core.apply_lock(given, LOCK.replace(on_violation="raise"), source="test")
    assert info.value.field == field


def test_apply_lock_warns_then_sends_the_locked_value_in_every_place() -> None:
    given = {"temperature": 1.9, "extra_body": {"seed": 999, "top_k": 3}, "stop": None}
    with capture_seedlock_events() as events:
        sent, violations = core.apply_lock(given, LOCK, source="test", log_fields={"x": 1})
    assert sent == {"temperature": 0.2, "extra_body": {"seed": 5, "top_k": 3}, "stop": None}
    assert given["extra_body"] == {"seed": 999, "top_k": 3}  # the caller's mapping is kept
    assert sorted(v.field for v in violations) == ["seed", "temperature"]
    warned = events_named(events, "lock_violation")
    assert sorted((e["field"], e["source"], e["x"]) for e in warned) == [
        ("seed", "test", 1),
        ("temperature", "test", 1),
    ]


def test_apply_lock_ignore_is_silent_and_equal_values_become_the_locked_type() -> None:
    with capture_seedlock_events() as events:
        sent, violations = core.apply_lock(
            {"seed": 5.0, "top_p": 0.3}, LOCK.replace(on_violation="ignore"), source="test"
        )
    assert (violations, events) == ([], [])
    assert sent == {"seed": 5, "top_p": 0.3}
    assert type(sent["seed"]) is int


def test_with_lock_sends_every_locked_parameter_once_under_the_seed_field() -> None:
    settings = core.with_lock(
        {"max_completion_tokens": 50, "top_p": 0.3}, LOCK, seed_key="random_seed"
    )
    assert settings == {"top_p": 0.3, "random_seed": 5, "temperature": 0.2, "max_tokens": 50}


def test_check_observed_refuses_with_enforce_whatever_the_policy() -> None:
    assert (
        core.check_observed(
            {"seed": 5, "temperature": 0.2, "max_tokens": 50}, LOCK, enforce=True, source="t"
        )
        == []
    )
    with pytest.raises(LockViolationError) as info:
        core.check_observed({"temperature": 1.0}, LOCK, enforce=True, source="t")
    assert info.value.field == "seed"  # a missing seed first
    missing = core.check_observed({}, LOCK, enforce=False, source="t")
    assert {v.field for v in missing} == {"seed", "temperature", "max_tokens"}


# -- record_from_result: one record, whichever door -----------------------------------
def record(message: AIMessage, **kw: Any) -> Any:
    fields: dict[str, Any] = {
        "provider": "openai", "request_model": "m", "outputs": [message], "sent": SENT,
        "params": {"model": "m", "seed": 11, "temperature": 0.3}, **kw,
    }  # fmt: skip
    return core.record_from_result(**fields)


def test_record_of_an_unlocked_call_hashes_what_was_sent() -> None:
    message = AIMessage("there", response_metadata={"finish_reason": "stop"})
    r = record(message, params={"model": "m", "extra_body": {"seed": 11}, "temperature": 0.3})
    assert r.seed == 11  # the seed sent (extra_body counts), not assumed
    assert r.lock_hash is None
    assert r.request_hash == request_hash_from_messages(
        "openai", SENT, {"model": "m", "seed": 11, "temperature": 0.3}
    )
    assert r.output_hash == output_hash([message])
    assert r.params == {"temperature": 0.3}
    assert r.complete


def test_record_reuses_a_locked_models_stamp_and_bounds_the_fingerprint() -> None:
    huge = "fp_" + "x" * 1000
    message = AIMessage("there")
    message.response_metadata.update(
        core.stamp(LOCK, fingerprint=huge, req_hash="req-hash", out_hash="out-hash")
    )
    r = record(message, lock=LOCK)
    assert (r.request_hash, r.output_hash, r.seed, r.lock_hash) == (
        "req-hash", "out-hash", 5, LOCK.lock_hash,
    )  # fmt: skip
    assert r.system_fingerprint is not None
    assert len(r.system_fingerprint) <= MAX_FINGERPRINT_CHARS
    assert not r.complete  # an OpenAI answer without a finish reason was cut
    meta = core.run_metadata(r)
    assert meta["system_fingerprint"] == r.system_fingerprint
    assert meta["seedlock.lock_hash"] == LOCK.lock_hash


def test_record_takes_the_fingerprint_from_llm_output_first() -> None:
    message = AIMessage("there", response_metadata={"system_fingerprint": "from-message"})
    r = record(message, llm_output={"system_fingerprint": "from-llm-output"})
    assert r.system_fingerprint == "from-llm-output"
    assert record(message, chunk_fingerprint="from-chunk").system_fingerprint == "from-chunk"
