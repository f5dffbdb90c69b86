"""OpenTelemetry export: spans made by OpenTelemetry's openai-v2 instrumentation
carry the record and the verdict, as a real OTLP/HTTP receiver decodes them.

The pipeline (tests/_fixtures/otlp.py) is the real SDK with the OTLP/HTTP
exporters, `SeedLockSpanProcessor` in front of a `BatchSpanProcessor`, and
`OpenAIInstrumentor`; the model server is the fake OpenAI backend.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

from langchain_seedlock import (
    InvalidArgumentError,
    OTelNotInstalledError,
    SeedLock,
    SeedLockCallbackHandler,
    SeedLockOTel,
)
from langchain_seedlock.testing import FakeBackend
from tests._fixtures.otlp import Otel, SpanOut

SEED = "gen_ai.request.seed"
FINGERPRINT = "openai.response.system_fingerprint"
VARIANT = "seedlock.variant"
EVENT = "gen_ai.evaluation.result"


def make_model(stub: FakeBackend, model: str = "gpt-4o-mini", **kwargs: Any) -> ChatOpenAI:
    kwargs.setdefault("seed", 1)
    return ChatOpenAI(
        model=model, base_url=stub.base_url, api_key="sk-test", max_retries=0, **kwargs
    )


def exporting(otel: Otel, **options: Any) -> SeedLockOTel:
    return SeedLockOTel(
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        logger_provider=otel.logger_provider,
        **options,
    )


def evaluation(span: SpanOut) -> dict[str, Any] | None:
    found = [attrs for name, attrs in span.events if name == EVENT]
    assert len(found) <= 1
    return found[0] if found else None


def test_openai_v2_span_carries_seed_fingerprint_and_verdict(stub: FakeBackend, otel: Otel) -> None:
    handler = SeedLockCallbackHandler(otel=exporting(otel))
    model = make_model(stub)
    for _ in range(2):
        model.invoke("hi", config={"callbacks": [handler]})
    handler.flush()

    first, second = otel.chat_spans()
    assert otel.chat_spans(ours=True) == []  # no second span for the same call
    for span in (first, second):
        assert span.scope != "langchain_seedlock"  # made by the instrumentation
        assert span.kind == 3  # CLIENT
        assert span.attributes[SEED] == 1
        assert span.attributes[FINGERPRINT] == "fp_stub_1"
        assert span.attributes["gen_ai.request.model"] == "gpt-4o-mini"
        for key in ("seedlock.request_hash", "seedlock.output_hash", "seedlock.backend_id"):
            assert span.attributes[key] == first.attributes[key]
    assert first.attributes[VARIANT] == "first"
    assert evaluation(first) is None  # nothing to compare the first call with
    assert second.attributes[VARIANT] == "reproduced"
    verdict = evaluation(second)
    assert verdict is not None
    assert verdict["gen_ai.evaluation.name"] == "seedlock.reproducibility"
    assert verdict["gen_ai.evaluation.score.label"] == "reproduced"
    assert verdict["gen_ai.evaluation.score.value"] == 1.0
    assert "fp_stub_1" in verdict["gen_ai.evaluation.explanation"]
    # The same event as a log record (the conventions' form), parented to the span.
    logged = [(n, sid, a) for n, sid, a in otel.receiver.events if n == EVENT]
    assert logged == [(EVENT, second.span_id, verdict)]


def test_stream_gets_the_fingerprint_openai_v2_leaves_out(stub: FakeBackend, otel: Otel) -> None:
    model = make_model(stub)
    "".join(chunk.text for chunk in model.stream("hi"))  # no seedlock handler
    (plain,) = otel.chat_spans()
    assert plain.attributes[SEED] == 1
    assert FINGERPRINT not in plain.attributes  # openai-v2 does not record it when streaming

    otel.receiver.clear()
    handler = SeedLockCallbackHandler(otel=exporting(otel))
    for _ in range(2):
        "".join(chunk.text for chunk in model.stream("hi", config={"callbacks": [handler]}))
    handler.flush()
    first, second = otel.chat_spans()
    assert first.attributes[FINGERPRINT] == second.attributes[FINGERPRINT] == "fp_stub_1"
    assert [first.attributes[VARIANT], second.attributes[VARIANT]] == ["first", "reproduced"]
    verdict = evaluation(second)
    assert verdict is not None
    assert verdict["gen_ai.evaluation.score.label"] == "reproduced"


async def test_async_invoke_and_stream(stub: FakeBackend, otel: Otel) -> None:
    handler = SeedLockCallbackHandler(otel=exporting(otel))
    model = make_model(stub)
    await model.ainvoke("hi", config={"callbacks": [handler]})
    await model.ainvoke("hi", config={"callbacks": [handler]})
    chunks = [c.text async for c in model.astream("hello", config={"callbacks": [handler]})]
    assert "".join(chunks)
    handler.flush()

    spans = otel.chat_spans()
    assert [s.attributes[VARIANT] for s in spans] == ["first", "reproduced", "first"]
    for span in spans:
        assert span.attributes[SEED] == 1
        assert span.attributes[FINGERPRINT] == "fp_stub_1"
    assert (
        spans[0].attributes["seedlock.request_hash"] != spans[2].attributes["seedlock.request_hash"]
    )


def drift_scenario(stub: FakeBackend, handler: SeedLockCallbackHandler, model: ChatOpenAI) -> None:
    """first, reproduced, new variant, known variant, explained (backend changed)."""
    for reply, fingerprint in [
        ("A", "fp_1"), ("A", "fp_1"), ("B", "fp_1"), ("B", "fp_1"), ("C", "fp_2"),
    ]:  # fmt: skip
        stub.reply, stub.fingerprint = reply, fingerprint
        model.invoke("hi", config={"callbacks": [handler]})
    handler.flush()


def test_drift_verdicts_as_evaluation_events(stub: FakeBackend, otel: Otel) -> None:
    handler = SeedLockCallbackHandler(otel=exporting(otel))
    drift_scenario(stub, handler, make_model(stub))

    spans = otel.chat_spans()
    assert [s.attributes[VARIANT] for s in spans] == ["first", "reproduced", "new", "known", "new"]
    verdicts = [evaluation(s) for s in spans]
    assert verdicts[0] is None
    labels = [(v["gen_ai.evaluation.score.label"], v["gen_ai.evaluation.score.value"])
              for v in verdicts if v is not None]  # fmt: skip
    assert labels == [
        ("reproduced", 1.0), ("new_variant", 0.0), ("known_variant", 0.5), ("explained", 0.0),
    ]  # fmt: skip
    new, known, explained = (v for v in verdicts[2:] if v is not None)
    assert "under an unchanged backend" in new["gen_ai.evaluation.explanation"]
    assert "known variant" in known["gen_ai.evaluation.explanation"]
    assert "fp_1 -> fp_2" in explained["gen_ai.evaluation.explanation"]
    assert spans[4].attributes[FINGERPRINT] == "fp_2"
    logged = {sid: a for n, sid, a in otel.receiver.events if n == EVENT}
    assert logged == {s.span_id: v for s, v in zip(spans, verdicts, strict=True) if v is not None}
    assert spans[4].attributes["seedlock.backend_id"] != spans[0].attributes["seedlock.backend_id"]


def test_metrics_count_outcomes_and_rate_per_model_and_backend(
    stub: FakeBackend, otel: Otel
) -> None:
    handler = SeedLockCallbackHandler(otel=exporting(otel))
    model = make_model(stub, model="metrics-model")  # its own series in the session's meters
    drift_scenario(stub, handler, model)
    metrics = otel.collect().metrics

    calls = {
        (attrs["seedlock.outcome"], attrs[FINGERPRINT]): n
        for name, attrs, n in metrics
        if name == "seedlock.calls" and attrs["gen_ai.request.model"] == "metrics-model"
    }
    assert calls == {
        ("first", "fp_1"): 1,
        ("reproduced", "fp_1"): 1,
        ("new_variant", "fp_1"): 1,
        ("known_variant", "fp_1"): 1,
        ("explained", "fp_2"): 1,
    }
    rates = {
        attrs[FINGERPRINT]: (rate, attrs["seedlock.backend_id"])
        for name, attrs, rate in metrics
        if name == "seedlock.reproducibility_rate"
        and attrs["gen_ai.request.model"] == "metrics-model"
    }
    # Under fp_1: 3 repeat calls, 2 with a known output. fp_2 has no repeat yet.
    assert set(rates) == {"fp_1"}
    assert rates["fp_1"][0] == pytest.approx(2 / 3)
    assert all(
        attrs["gen_ai.provider.name"] == "openai"
        for metric, attrs, _ in metrics
        if metric.startswith("seedlock.")
    )


@pytest.mark.parametrize("capture", [False, True])
def test_prompts_and_outputs_only_with_capture_content(
    stub: FakeBackend, otel: Otel, capture: bool
) -> None:
    stub.reply = "the secret answer 8841"
    handler = SeedLockCallbackHandler(capture_content=capture, otel=exporting(otel))
    make_model(stub).invoke("the private prompt 5521", config={"callbacks": [handler]})
    handler.flush()

    (span,) = otel.chat_spans()
    assert span.attributes["seedlock.request_hash"]
    exported = b"".join(s.raw for s in otel.collect().spans)
    for text in (b"the secret answer 8841", b"the private prompt 5521"):
        assert (text in exported) is capture
    assert b"sk-test" not in exported  # the API key: never
    if capture:
        assert span.attributes["seedlock.output_text"] == "the secret answer 8841"
        assert "the private prompt 5521" in span.attributes["seedlock.prompt_text"]


def test_own_span_when_no_span_is_recording(stub: FakeBackend, otel: Otel) -> None:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    OpenAIInstrumentor().uninstrument()  # no instrumentation span: ours is the only one
    handler = SeedLockCallbackHandler(otel=exporting(otel, create_spans=True))
    model = make_model(stub, temperature=0.5)
    for _ in range(2):
        model.invoke("hi", config={"callbacks": [handler]})
    handler.flush()

    # Inside a span of the user's: the attributes go there, no span of ours.
    tracer = otel.tracer_provider.get_tracer("user")
    with tracer.start_as_current_span("user step"):
        model.invoke("hi", config={"callbacks": [handler]})
    handler.flush()

    assert otel.chat_spans() == []
    first, second = otel.chat_spans(ours=True)
    for span in (first, second):
        assert span.name == "chat gpt-4o-mini"
        assert span.kind == 3  # CLIENT
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.provider.name"] == "openai"
        assert span.attributes["gen_ai.response.model"] == "gpt-4o-mini"
        assert span.attributes["gen_ai.request.temperature"] == 0.5
        assert span.attributes["gen_ai.usage.input_tokens"] == 11
        assert span.attributes[SEED] == 1
        assert span.attributes[FINGERPRINT] == "fp_stub_1"
    verdict = evaluation(second)
    assert verdict is not None
    assert verdict["gen_ai.evaluation.score.label"] == "reproduced"
    logged = [sid for n, sid, _ in otel.receiver.events if n == EVENT]
    (user,) = [s for s in otel.collect().spans if s.name == "user step"]
    assert logged == [second.span_id, user.span_id]
    assert user.attributes[VARIANT] == "reproduced"
    assert user.attributes[SEED] == 1
    assert evaluation(user) is not None


def test_middleware_option(stub: FakeBackend, otel: Otel) -> None:
    from langchain.agents import create_agent

    from langchain_seedlock import SeedLockMiddleware

    middleware = SeedLockMiddleware(SeedLock(seed=7), otel=exporting(otel))
    agent = create_agent(make_model(stub, seed=None), tools=[], middleware=[middleware])
    for _ in range(2):
        agent.invoke({"messages": [HumanMessage("hi")]})
    middleware.flush()

    first, second = otel.chat_spans()
    assert first.attributes[SEED] == second.attributes[SEED] == 7
    assert first.attributes[FINGERPRINT] == "fp_stub_1"
    assert [first.attributes[VARIANT], second.attributes[VARIANT]] == ["first", "reproduced"]
    assert evaluation(second) is not None


def test_failed_call_span_goes_on_unamended(stub: FakeBackend, otel: Otel) -> None:
    stub.status = 500
    handler = SeedLockCallbackHandler(otel=exporting(otel))
    with pytest.raises(Exception, match="500"):
        make_model(stub).invoke("hi", config={"callbacks": [handler]})
    (span,) = otel.chat_spans()
    assert "error.type" in span.attributes
    assert "seedlock.request_hash" not in span.attributes


# -- turning it on -------------------------------------------------------------------
def test_env_turns_it_on_for_handlers_left_at_the_default(
    stub: FakeBackend, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEDLOCK_OTEL", "1")
    on = SeedLockCallbackHandler()  # the global providers (set by the fixture)
    off = SeedLockCallbackHandler(otel=False)
    model = make_model(stub)
    model.invoke("hi", config={"callbacks": [on]})
    model.invoke("hello", config={"callbacks": [off]})
    on.flush()
    with_env, without = otel.chat_spans()
    assert with_env.attributes[VARIANT] == "first"
    assert "seedlock.request_hash" not in without.attributes


def test_env_value_must_be_a_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDLOCK_OTEL", "maybe")
    with pytest.raises(InvalidArgumentError, match="SEEDLOCK_OTEL"):
        SeedLockCallbackHandler()


def test_bad_span_processor_arguments() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from langchain_seedlock import SeedLockSpanProcessor

    with pytest.raises(InvalidArgumentError, match="processor"):
        SeedLockSpanProcessor(InMemorySpanExporter())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="max_hold"):
        SeedLockSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter()), max_hold=-1)


def test_bad_otel_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="otel"):
        SeedLockCallbackHandler(otel="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="create_spans"):
        SeedLockOTel(create_spans=1)  # type: ignore[arg-type]


@pytest.fixture
def no_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The `otel` extra missing: importing OpenTelemetry fails."""
    for name in ("opentelemetry", "opentelemetry.trace", "opentelemetry.metrics",
                 "opentelemetry.sdk", "opentelemetry.sdk.trace"):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.usefixtures("no_opentelemetry")
def test_extra_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    install = "pip install 'langchain-seedlock[otel]'"
    with pytest.raises(OTelNotInstalledError) as raised:
        SeedLockCallbackHandler(otel=True)
    assert install in str(raised.value)
    assert isinstance(raised.value, ImportError)
    with pytest.raises(OTelNotInstalledError):
        SeedLockOTel()
    from langchain_seedlock import SeedLockMiddleware

    with pytest.raises(OTelNotInstalledError, match=r"langchain-seedlock\[otel\]"):
        SeedLockMiddleware(SeedLock(seed=1), otel=True)
    monkeypatch.delitem(sys.modules, "langchain_seedlock._otel_processor", raising=False)
    with pytest.raises(OTelNotInstalledError):
        from langchain_seedlock._otel_processor import SeedLockSpanProcessor  # noqa: F401
    monkeypatch.setenv("SEEDLOCK_OTEL", "1")
    with pytest.raises(OTelNotInstalledError):
        SeedLockCallbackHandler()
    monkeypatch.delenv("SEEDLOCK_OTEL")
    SeedLockCallbackHandler()  # off: no OpenTelemetry needed


# -- concurrency, deferred decisions, holding ------------------------------------------
def test_concurrent_calls_each_amend_their_own_span(stub: FakeBackend, otel: Otel) -> None:
    from langchain_core.runnables import RunnableParallel

    handler = SeedLockCallbackHandler(otel=exporting(otel))
    stub.delay = 0.05  # the calls overlap
    names = [f"model-{i}" for i in range(6)]
    parallel = RunnableParallel({name: make_model(stub, model=name) for name in names})
    parallel.invoke("hi", config={"callbacks": [handler], "max_concurrency": 6})
    handler.flush()

    spans = otel.chat_spans()
    assert len(spans) == len(names)
    for span in spans:
        # gen_ai.response.model is the instrumentation's own reading of the
        # response; gen_ai.request.model and the hashes were written by us.
        assert span.attributes["gen_ai.request.model"] == span.attributes["gen_ai.response.model"]
        assert span.attributes[VARIANT] == "first"
    assert len({s.attributes["seedlock.request_hash"] for s in spans}) == len(names)


async def test_concurrent_async_calls(stub: FakeBackend, otel: Otel) -> None:
    import asyncio

    handler = SeedLockCallbackHandler(otel=exporting(otel))
    stub.delay = 0.05
    models = [make_model(stub, model=f"async-{i}") for i in range(5)]
    await asyncio.gather(*(m.ainvoke("hi", config={"callbacks": [handler]}) for m in models))
    handler.flush()
    spans = otel.chat_spans()
    assert len(spans) == len(models)
    for span in spans:
        assert span.attributes["gen_ai.request.model"] == span.attributes["gen_ai.response.model"]


async def test_verdict_decided_later_by_the_store_reader(
    stub: FakeBackend, otel: Otel, tmp_path: Any
) -> None:
    # On an event loop a cache miss is read and decided by the monitor's
    # reader thread: the span waits for that verdict.
    url = f"sqlite:///{tmp_path / 'b.db'}"
    with SeedLockCallbackHandler(store=url, otel=exporting(otel)) as handler:
        await make_model(stub).ainvoke("hi", config={"callbacks": [handler]})
        handler.flush()
    with SeedLockCallbackHandler(store=url, otel=exporting(otel)) as handler:
        await make_model(stub).ainvoke("hi", config={"callbacks": [handler]})
        handler.flush()
    first, second = otel.chat_spans()
    assert first.attributes[VARIANT] == "first"
    assert second.attributes[VARIANT] == "reproduced"  # known from the store, not memory
    assert evaluation(second) is not None


def test_a_span_whose_verdict_never_comes_goes_on_after_max_hold() -> None:
    import time

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from langchain_seedlock import SeedLockSpanProcessor, _otel

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SeedLockSpanProcessor(SimpleSpanProcessor(exported), max_hold=0.2))
    exporter = _otel.door_exporter(SeedLockOTel(tracer_provider=provider), False)
    assert exporter is not None
    exporter.start()  # a call that is never decided (its door died)
    tracer = provider.get_tracer("test")
    tracer.start_span("chat m", attributes={"gen_ai.operation.name": "chat"}).end()
    tracer.start_span("not a model call").end()
    assert [s.name for s in exported.get_finished_spans()] == ["not a model call"]
    deadline = time.monotonic() + 30  # waits for the reaper; asserts no duration
    while len(exported.get_finished_spans()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    names = [s.name for s in exported.get_finished_spans()]
    assert names == ["not a model call", "chat m"]
    provider.shutdown()
