"""Every drift event, produced by a real sequence of calls through the stub server.

The models are plain `ChatOpenAI` (no lock): the handler computes the hashes
from the messages and invocation params itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_openai import ChatOpenAI
from structlog.testing import capture_logs

from langchain_seedlock._callbacks import SeedLockCallbackHandler
from langchain_seedlock._drift import DriftMonitor
from langchain_seedlock._drift_events import first_difference, similarity
from langchain_seedlock._events import (
    CALL,
    FINGERPRINT_CHANGED,
    FINGERPRINT_MISSING,
    OUTPUT_DRIFT,
    UNSEEDED_CALL,
)
from langchain_seedlock._store import BaselineStore, open_store
from tests._fixtures.stub_openai import StubOpenAI


@pytest.fixture
def store() -> Iterator[BaselineStore]:
    s = open_store("memory://")
    yield s
    s.close()


@pytest.fixture
def handler(store: BaselineStore) -> Iterator[SeedLockCallbackHandler]:
    h = SeedLockCallbackHandler(store=store)
    yield h
    h.close()


def make_model(stub: StubOpenAI, **kwargs: Any) -> ChatOpenAI:
    kwargs.setdefault("seed", 1)
    return ChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", max_retries=0, **kwargs
    )


def named(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == name]


def test_call_line_has_the_otel_keys(stub: StubOpenAI, handler: SeedLockCallbackHandler) -> None:
    model = make_model(stub, temperature=0.5)
    with capture_logs() as logs:
        msg = model.invoke("hi", config={"callbacks": [handler]})
    (call,) = named(logs, CALL)
    assert call["log_level"] == "debug"
    assert call["gen_ai.provider.name"] == "openai"
    assert call["gen_ai.request.model"] == "gpt-4o-mini"
    assert call["gen_ai.response.model"] == "gpt-4o-mini"
    assert call["gen_ai.request.seed"] == 1
    assert call["gen_ai.request.temperature"] == 0.5
    assert call["openai.response.system_fingerprint"] == "fp_stub_1"
    assert call["gen_ai.usage.input_tokens"] == 11
    assert call["gen_ai.usage.output_tokens"] == 7
    assert len(call["seedlock.request_hash"]) == 64
    assert len(call["seedlock.output_hash"]) == 64
    assert call["run_id"]
    # content is not logged by default
    assert msg.text not in repr(logs)
    assert "seedlock.output_text" not in call
    # nothing else needed attention
    assert [line["event"] for line in logs] == [CALL]


def test_same_request_same_output_is_quiet(
    stub: StubOpenAI, handler: SeedLockCallbackHandler
) -> None:
    model = make_model(stub)
    with capture_logs() as logs:
        for _ in range(3):
            model.invoke("hi", config={"callbacks": [handler]})
    assert [line["event"] for line in logs] == [CALL, CALL, CALL]
    assert len({line["seedlock.request_hash"] for line in logs}) == 1


def test_fingerprint_changed(
    stub: StubOpenAI, handler: SeedLockCallbackHandler, store: BaselineStore
) -> None:
    model = make_model(stub)
    with capture_logs() as logs:
        model.invoke("hi", config={"callbacks": [handler]})
        stub.fingerprint = "fp_stub_2"
        model.invoke("hi", config={"callbacks": [handler]})
        model.invoke("hi", config={"callbacks": [handler]})  # same new fingerprint: quiet
    (changed,) = named(logs, FINGERPRINT_CHANGED)
    assert changed["log_level"] == "warning"
    assert changed["seedlock.previous_fingerprint"] == "fp_stub_1"
    assert changed["openai.response.system_fingerprint"] == "fp_stub_2"
    assert changed["seedlock.model_key"] == "openai:gpt-4o-mini"
    first_calls = named(logs, CALL)
    assert changed["run_id"] == first_calls[1]["run_id"]
    prev_first = changed["seedlock.previous_fingerprint_first_seen"]
    assert prev_first <= changed["seedlock.fingerprint_first_seen"]
    assert changed["seedlock.previous_fingerprint_last_seen"] >= prev_first
    # the output did not change: no drift
    assert named(logs, OUTPUT_DRIFT) == []
    handler.flush()
    (stored,) = store.events(name=FINGERPRINT_CHANGED)
    assert stored.fields["seedlock.previous_fingerprint"] == "fp_stub_1"


def test_unexplained_output_drift(
    stub: StubOpenAI, handler: SeedLockCallbackHandler, store: BaselineStore
) -> None:
    model = make_model(stub)
    with capture_logs() as logs:
        stub.reply = "The answer is forty-two."
        model.invoke("hi", config={"callbacks": [handler]})
        model.invoke("hi", config={"callbacks": [handler]})
        stub.reply = "The answer is forty-three."
        model.invoke("hi", config={"callbacks": [handler]})
    (drift,) = named(logs, OUTPUT_DRIFT)
    calls = named(logs, CALL)
    assert drift["log_level"] == "warning"
    assert drift["seedlock.explained"] is False
    assert drift["seedlock.request_hash"] == calls[0]["seedlock.request_hash"]
    assert drift["seedlock.previous_output_hash"] == calls[0]["seedlock.output_hash"]
    assert drift["seedlock.output_hash"] == calls[2]["seedlock.output_hash"]
    assert drift["seedlock.previous_fingerprint"] == "fp_stub_1"
    assert drift["openai.response.system_fingerprint"] == "fp_stub_1"
    assert drift["seedlock.previous_output_count"] == 2
    assert drift["seedlock.output_count"] == 1
    assert drift["seedlock.distinct_outputs"] == 2
    assert drift["seedlock.first_difference.char"] == len("The answer is forty-t")
    assert drift["seedlock.first_difference.token"] is None  # no logprobs asked
    # one of the three distinct 3-word shingles is shared: "The answer is"
    assert drift["seedlock.similarity"] == 0.3333
    assert drift["seedlock.similarity_is_estimate"] is False
    assert "seedlock.output_text" not in drift  # no content without capture_content
    handler.flush()
    (stored,) = store.events(name=OUTPUT_DRIFT)
    assert stored.fields["seedlock.explained"] is False
    (summary,) = store.requests()
    assert (summary.calls, summary.distinct_outputs, summary.distinct_backends) == (3, 2, 1)


def test_explained_output_drift(stub: StubOpenAI, handler: SeedLockCallbackHandler) -> None:
    model = make_model(stub)
    with capture_logs() as logs:
        stub.reply = "alpha beta gamma"
        model.invoke("hi", config={"callbacks": [handler]})
        stub.fingerprint = "fp_new_build"
        stub.reply = "alpha beta delta"
        model.invoke("hi", config={"callbacks": [handler]})
    (drift,) = named(logs, OUTPUT_DRIFT)
    assert drift["seedlock.explained"] is True
    assert drift["seedlock.previous_fingerprint"] == "fp_stub_1"
    assert drift["openai.response.system_fingerprint"] == "fp_new_build"
    assert drift["seedlock.previous_backend_id"] != drift["seedlock.backend_id"]
    assert drift["seedlock.first_difference.char"] == len("alpha beta ")
    assert len(named(logs, FINGERPRINT_CHANGED)) == 1


def test_variants_new_then_known_then_reproduced(
    stub: StubOpenAI, handler: SeedLockCallbackHandler
) -> None:
    """A A B A B: B is new (a warning), going back to A reproduces, B again is a
    known variant (info), each with the counts of the usual output."""
    model = make_model(stub)
    with capture_logs() as logs:
        for reply in ["A", "A", "B", "A", "B"]:
            stub.reply = reply
            model.invoke("hi", config={"callbacks": [handler]})
    variants = [line["seedlock.variant"] for line in named(logs, "seedlock.call")]
    assert variants == ["first", "reproduced", "new", "reproduced", "known"]
    (drift,) = named(logs, OUTPUT_DRIFT)
    assert (drift["log_level"], drift["seedlock.variant"], drift["seedlock.explained"]) == (
        "warning", "new", False,
    )  # fmt: skip
    assert (drift["seedlock.previous_output_count"], drift["seedlock.output_count"]) == (2, 1)
    assert drift["seedlock.summary"].startswith("new answer for request")
    (known,) = named(logs, "seedlock.output_variant")
    assert (known["log_level"], known["seedlock.variant"]) == ("info", "known")
    assert (known["seedlock.previous_output_count"], known["seedlock.output_count"]) == (3, 2)
    assert known["seedlock.distinct_outputs"] == 2


def test_drift_token_index_from_logprobs(
    stub: StubOpenAI, handler: SeedLockCallbackHandler
) -> None:
    model = make_model(stub, logprobs=True)
    with capture_logs() as logs:
        stub.reply = "one two three four"
        model.invoke("hi", config={"callbacks": [handler]})
        stub.reply = "one two tree four"
        model.invoke("hi", config={"callbacks": [handler]})
    (drift,) = named(logs, OUTPUT_DRIFT)
    assert drift["seedlock.first_difference.token"] == 2
    assert drift["seedlock.first_difference.char"] == len("one two t")


def test_unseeded_calls_do_not_drift_but_are_reported(
    stub: StubOpenAI, handler: SeedLockCallbackHandler
) -> None:
    model = make_model(stub, seed=None)
    with capture_logs() as logs:
        model.invoke("hi", config={"callbacks": [handler]})
        model.invoke("hi", config={"callbacks": [handler]})  # random reply each time
    unseeded = named(logs, UNSEEDED_CALL)
    assert len(unseeded) == 2
    assert unseeded[0]["log_level"] == "warning"
    assert unseeded[0]["gen_ai.request.seed"] is None
    assert unseeded[0]["gen_ai.request.model"] == "gpt-4o-mini"
    assert named(logs, OUTPUT_DRIFT) == []
    calls = named(logs, CALL)
    assert calls[0]["seedlock.output_hash"] != calls[1]["seedlock.output_hash"]


def test_fingerprint_missing_once_per_model(
    stub: StubOpenAI, handler: SeedLockCallbackHandler
) -> None:
    stub.fingerprint = None
    with capture_logs() as logs:
        for _ in range(3):
            make_model(stub).invoke("hi", config={"callbacks": [handler]})
        make_model(stub, model_kwargs={}).bind(model="gpt-4o").invoke(
            "hi", config={"callbacks": [handler]}
        )
    missing = named(logs, FINGERPRINT_MISSING)
    assert [m["seedlock.model_key"] for m in missing] == [
        "openai:gpt-4o-mini",
        "openai:gpt-4o",
    ]
    assert missing[0]["log_level"] == "info"
    assert missing[0]["gen_ai.request.model"] == "gpt-4o-mini"
    assert all(c["openai.response.system_fingerprint"] is None for c in named(logs, CALL))


def test_capture_content_puts_text_in_events_and_store(stub: StubOpenAI) -> None:
    store = open_store("memory://")
    handler = SeedLockCallbackHandler(store=store, capture_content=True)
    model = make_model(stub)
    with capture_logs() as logs:
        stub.reply = "first answer"
        model.invoke("what?", config={"callbacks": [handler]})
        stub.reply = "second answer"
        model.invoke("what?", config={"callbacks": [handler]})
    handler.close()
    (drift,) = named(logs, OUTPUT_DRIFT)
    assert drift["seedlock.previous_output_text"] == "first answer"
    assert drift["seedlock.output_text"] == "second answer"
    call = named(logs, CALL)[0]
    assert call["seedlock.output_text"] == "first answer"
    assert "what?" in call["seedlock.prompt_text"]
    texts = {o.output_text for o in store.outputs_for(call["seedlock.request_hash"])}
    assert texts == {"first answer", "second answer"}


def test_no_content_in_store_by_default(
    stub: StubOpenAI, handler: SeedLockCallbackHandler, store: BaselineStore
) -> None:
    stub.reply = "secret answer"
    make_model(stub).invoke("private prompt", config={"callbacks": [handler]})
    handler.flush()
    (summary,) = store.requests()
    (row,) = store.outputs_for(summary.request_hash)
    assert row.output_text is None


def test_api_key_never_logged_or_stored(
    stub: StubOpenAI, handler: SeedLockCallbackHandler, store: BaselineStore
) -> None:
    key = "sk-very-secret-key-1234567890"
    model = ChatOpenAI(model="gpt-4o-mini", base_url=stub.base_url, api_key=key, seed=3)
    with capture_logs() as logs:
        model.invoke("hi", config={"callbacks": [handler]})
        stub.reply = "changed"
        model.invoke("hi", config={"callbacks": [handler]})
    handler.flush()
    assert key not in repr(logs)
    assert key not in repr(store.events()) + repr(store.requests()) + repr(store.models())


def test_baseline_survives_the_process_sqlite(stub: StubOpenAI, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/b.db"
    model = make_model(stub)
    stub.reply = "yesterday's answer"
    first = SeedLockCallbackHandler(store=url)
    model.invoke("hi", config={"callbacks": [first]})
    first.close()
    # A new handler (a new process, as far as memory goes) reads the baseline.
    stub.reply = "today's answer"
    second = SeedLockCallbackHandler(store=url)
    with capture_logs() as logs:
        model.invoke("hi", config={"callbacks": [second]})
    second.close()
    (drift,) = named(logs, OUTPUT_DRIFT)
    assert drift["seedlock.previous_output_count"] == 1
    assert drift["seedlock.explained"] is False
    # text is not stored without capture_content: the position is unknown
    assert drift["seedlock.first_difference.char"] is None


def test_first_difference_and_similarity_helpers() -> None:
    assert first_difference("abc", "abd") == 2
    assert first_difference("abc", "abc") == 3
    assert first_difference("ab", "abc") == 2
    long_a = "x" * 3000 + "a"
    long_b = "x" * 3000 + "b"
    assert first_difference(long_a, long_b) == 3000
    # Jaccard of 3-word shingles, the measure the sketches estimate
    assert similarity("a b c d", "a b c e") == 0.3333
    assert similarity("a b c d", "a b c d") == 1.0
    assert similarity("", "") == 1.0
    long_words = " ".join(f"w{i}" for i in range(20_000))  # linear: no quadratic blow-up
    assert similarity(long_words, long_words + " end") == round(19_998 / 19_999, 4)


def test_monitor_call_level_is_configurable() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        DriftMonitor(call_level="chatty")


async def test_aobserve_reads_the_store_asynchronously() -> None:
    from langchain_seedlock._record import CallRecord

    store = open_store("memory://")
    first = DriftMonitor(store)
    base: dict[str, Any] = {
        "provider": "openai",
        "request_model": "m",
        "request_hash": "r",
        "seed": 1,
        "system_fingerprint": "fp",
    }
    assert await first.aobserve(CallRecord(output_hash="a", **base)) == [CALL]
    first.close()
    second = DriftMonitor(store)  # knows nothing in memory: reads the baseline
    names = await second.aobserve(CallRecord(output_hash="b", **base))
    assert names == [CALL, OUTPUT_DRIFT]
    second.close()
