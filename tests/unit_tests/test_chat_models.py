"""LockedChatOpenAI on the wire: every path sends the lock, and results carry the record.

All calls go to a real HTTP stub server on 127.0.0.1 (tests/_fixtures/stub_openai.py);
assertions are on the request bodies it received.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache
from langchain_core.load import dumpd, loads
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langchain_openai import AzureChatOpenAI, ChatOpenAI
from pydantic import BaseModel

from langchain_seedlock import (
    LockedAzureChatOpenAI,
    LockedChatOpenAI,
    LockViolationError,
    ParamDroppedError,
    SeedLock,
    UnsupportedModelError,
    lock_model,
)
from langchain_seedlock._hashing import output_hash
from langchain_seedlock.testing import capture_seedlock_events
from tests._fixtures.stub_openai import StubOpenAI

LOCK = SeedLock(seed=42, temperature=0.3, max_tokens=64, top_p=0.9)
RECORD_KEYS = (
    "system_fingerprint",
    "seed",
    "seedlock_lock_hash",
    "seedlock_request_hash",
    "seedlock_output_hash",
)


def make(stub: StubOpenAI, lock: SeedLock = LOCK, **kwargs: Any) -> LockedChatOpenAI:
    return LockedChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test-key", lock=lock, **kwargs
    )


def assert_locked(body: dict[str, Any], lock: SeedLock = LOCK) -> None:
    assert body["seed"] == lock.seed
    for name, value in lock.params.items():
        key = "max_completion_tokens" if name == "max_tokens" else name
        assert body[key] == value, (key, body)


@tool
def get_weather(city: str) -> str:
    """Weather in a city."""
    return f"sunny in {city}"


class Planet(BaseModel):
    """A planet."""

    name: str
    moons: int


# -- every calling path sends the lock -----------------------------------------


def test_invoke(stub: StubOpenAI) -> None:
    msg = make(stub).invoke("hi")
    assert_locked(stub.last_request)
    assert msg.content.startswith("seed=42 t=0.3")


async def test_ainvoke(stub: StubOpenAI) -> None:
    await make(stub).ainvoke("hi")
    assert_locked(stub.last_request)


def test_stream(stub: StubOpenAI) -> None:
    chunks = list(make(stub).stream("hi"))
    assert stub.last_request["stream"] is True
    assert_locked(stub.last_request)
    assert len(chunks) > 2


async def test_astream(stub: StubOpenAI) -> None:
    chunks = [c async for c in make(stub).astream("hi")]
    assert_locked(stub.last_request)
    assert chunks


def test_batch(stub: StubOpenAI) -> None:
    make(stub).batch(["a", "b", "c"])
    assert len(stub.requests) == 3
    for body in stub.requests:
        assert_locked(body)


async def test_abatch(stub: StubOpenAI) -> None:
    await make(stub).abatch(["a", "b"])
    assert len(stub.requests) == 2
    for body in stub.requests:
        assert_locked(body)


async def test_astream_events(stub: StubOpenAI) -> None:
    events = [e async for e in make(stub).astream_events("hi", version="v2")]
    assert_locked(stub.last_request)
    end = [e for e in events if e["event"] == "on_chat_model_end"][-1]
    assert end["data"]["output"].response_metadata["seed"] == 42


def test_streaming_field_routes_invoke_through_stream(stub: StubOpenAI) -> None:
    msg = make(stub, streaming=True).invoke("hi")
    assert stub.last_request["stream"] is True
    assert_locked(stub.last_request)
    assert msg.response_metadata["seedlock_request_hash"]


def test_inside_a_chain(stub: StubOpenAI) -> None:
    chain = ChatPromptTemplate.from_messages([("user", "Tell me about {topic}")]) | make(stub)
    chain.invoke({"topic": "Mars"})
    assert_locked(stub.last_request)
    assert stub.last_request["messages"][-1]["content"] == "Tell me about Mars"


def test_with_config(stub: StubOpenAI) -> None:
    make(stub).with_config(tags=["x"], run_name="locked").invoke("hi")
    assert_locked(stub.last_request)


def test_bind_tools(stub: StubOpenAI) -> None:
    stub.tool_calls = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    msg = make(stub).bind_tools([get_weather], tool_choice="any").invoke("weather?")
    assert_locked(stub.last_request)
    assert stub.last_request["tools"][0]["function"]["name"] == "get_weather"
    assert isinstance(msg, AIMessage)
    assert msg.tool_calls[0]["args"] == {"city": "Paris"}
    assert msg.response_metadata["seedlock_output_hash"] == output_hash([msg])


def test_bind_tools_stream(stub: StubOpenAI) -> None:
    stub.tool_calls = [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    model = make(stub).bind_tools([get_weather])
    full: Any = None
    for chunk in model.stream("weather?"):
        full = chunk if full is None else full + chunk
    assert_locked(stub.last_request)
    assert full.tool_calls[0]["args"] == {"city": "Oslo"}
    invoked = model.invoke("weather?")
    assert (
        full.response_metadata["seedlock_output_hash"]
        == invoked.response_metadata["seedlock_output_hash"]
    )


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
@pytest.mark.parametrize("include_raw", [False, True])
def test_with_structured_output(stub: StubOpenAI, method: str, include_raw: bool) -> None:
    if method == "function_calling":
        stub.tool_calls = [{"name": "Planet", "arguments": {"name": "Mars", "moons": 2}}]
    else:
        stub.reply = json.dumps({"name": "Mars", "moons": 2})
    structured = make(stub).with_structured_output(Planet, method=method, include_raw=include_raw)  # type: ignore[arg-type]
    out = structured.invoke("a planet")
    assert_locked(stub.last_request)
    parsed = out["parsed"] if include_raw else out
    assert parsed == Planet(name="Mars", moons=2)
    if include_raw:
        assert out["raw"].response_metadata["seed"] == 42


async def test_with_structured_output_astream(stub: StubOpenAI) -> None:
    stub.reply = json.dumps({"name": "Venus", "moons": 0})
    structured = make(stub).with_structured_output(Planet, method="json_schema")
    outs = [o async for o in structured.astream("a planet")]
    assert_locked(stub.last_request)
    assert outs[-1] == Planet(name="Venus", moons=0)


# -- overrides: raise, warn, ignore ------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.invoke("hi", temperature=0.9),
        lambda m: m.invoke("hi", seed=1),
        lambda m: m.bind(seed=7).invoke("hi"),
        lambda m: m.bind(max_tokens=5).invoke("hi"),
        lambda m: m.bind(max_completion_tokens=5).invoke("hi"),
        lambda m: m.bind_tools([get_weather], top_p=0.1).invoke("hi"),
        lambda m: list(m.stream("hi", temperature=1.0)),
        lambda m: m.batch(["a"], temperature=1.0),
        lambda m: m.with_config(configurable={}).bind(seed=3).invoke("hi"),
    ],
)
def test_override_raises_and_sends_nothing(stub: StubOpenAI, call: Any) -> None:
    with pytest.raises(LockViolationError) as info:
        call(make(stub))
    assert stub.requests == []
    assert info.value.field in {"seed", "temperature", "max_tokens", "top_p"}
    assert "nothing was sent" in str(info.value)


async def test_async_override_raises_and_sends_nothing(stub: StubOpenAI) -> None:
    with pytest.raises(LockViolationError):
        await make(stub).bind(seed=9).ainvoke("hi")
    with pytest.raises(LockViolationError):
        _ = [c async for c in make(stub).astream("hi", temperature=2.0)]
    assert stub.requests == []


def test_equal_values_pass(stub: StubOpenAI) -> None:
    make(stub).bind(seed=42, temperature=0.3, max_completion_tokens=64).invoke("hi")
    assert_locked(stub.last_request)


def test_warn_logs_and_sends_the_locked_value(stub: StubOpenAI) -> None:
    lock = LOCK.replace(on_violation="warn")
    with capture_seedlock_events() as logs:
        make(stub, lock=lock).bind(seed=7).invoke("hi", temperature=1.5)
    assert_locked(stub.last_request, lock)
    events = {e["field"]: e for e in logs if e["event"] == "seedlock.lock_violation"}
    assert events["seed"]["attempted"] == 7
    assert events["seed"]["locked"] == 42
    assert events["temperature"]["attempted"] == 1.5
    assert events["temperature"]["log_level"] == "warning"
    assert events["temperature"]["action"] == "sent_locked_value"


def test_ignore_sends_the_locked_value_silently(stub: StubOpenAI) -> None:
    lock = LOCK.replace(on_violation="ignore")
    with capture_seedlock_events() as logs:
        make(stub, lock=lock).invoke("hi", temperature=1.5, stop=["x"])
    assert_locked(stub.last_request, lock)
    assert stub.last_request["stop"] == ["x"]  # not locked: passes through
    assert [e for e in logs if e["event"].startswith("seedlock.")] == []


def test_locked_stop_wins(stub: StubOpenAI) -> None:
    lock = SeedLock(seed=1, stop=["END"], on_violation="ignore")
    make(stub, lock=lock).invoke("hi", stop=["other"])
    assert stub.last_request["stop"] == ["END"]
    with pytest.raises(LockViolationError):
        make(stub, lock=lock.replace(on_violation="raise")).invoke("hi", stop=["other"])


# -- construction -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": 1},
        {"temperature": 0.9},
        {"max_tokens": 10},
        {"max_completion_tokens": 10},
        {"model_kwargs": {"seed": 3}},
    ],
)
def test_conflicting_constructor_arguments_are_refused(
    stub: StubOpenAI, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(LockViolationError) as info:
        make(stub, **kwargs)
    assert info.value.source == "constructor argument"


def test_equal_constructor_arguments_are_accepted(stub: StubOpenAI) -> None:
    make(stub, seed=42, temperature=0.3).invoke("hi")
    assert_locked(stub.last_request)


def test_responses_api_is_refused(stub: StubOpenAI) -> None:
    with pytest.raises(UnsupportedModelError, match="Responses API"):
        make(stub, use_responses_api=True)


@pytest.mark.parametrize("policy", ["raise", "warn"])
def test_parameter_dropped_by_the_integration(stub: StubOpenAI, policy: str) -> None:
    # langchain-openai silently removes temperature != 1 for gpt-5 models.
    lock = SeedLock(seed=3, temperature=0.2, on_violation=policy)  # type: ignore[arg-type]
    model = LockedChatOpenAI(
        model="gpt-5-mini",
        base_url=stub.base_url,
        api_key="sk-x",
        lock=lock,
        use_responses_api=False,
    )
    if policy == "raise":
        with pytest.raises(ParamDroppedError, match="temperature"):
            model.invoke("hi")
        assert stub.requests == []
        return
    with capture_seedlock_events() as logs:
        model.invoke("hi")
    assert "temperature" not in stub.last_request
    dropped = [e for e in logs if e["event"] == "seedlock.param_dropped"]
    assert dropped[0]["field"] == "temperature"
    assert dropped[0]["locked"] == 0.2
    assert dropped[0]["gen_ai.request.model"] == "gpt-5-mini"


# -- the record on every result ---------------------------------------------------------


def test_invoke_metadata(stub: StubOpenAI) -> None:
    msg = make(stub).invoke("hi")
    meta = msg.response_metadata
    for key in RECORD_KEYS:
        assert key in meta
    assert meta["system_fingerprint"] == "fp_stub_1"
    assert meta["seed"] == 42
    assert meta["seedlock_lock_hash"] == LOCK.lock_hash
    assert meta["seedlock_output_hash"] == output_hash([msg])
    assert len(meta["seedlock_request_hash"]) == 64


def test_request_hash_tracks_the_request(stub: StubOpenAI) -> None:
    model = make(stub)
    a, b, c = model.invoke("hi"), model.invoke("hi"), model.invoke("bye")
    assert (
        a.response_metadata["seedlock_request_hash"] == b.response_metadata["seedlock_request_hash"]
    )
    assert (
        a.response_metadata["seedlock_request_hash"] != c.response_metadata["seedlock_request_hash"]
    )
    other = make(stub, lock=LOCK.replace(seed=43)).invoke("hi")
    assert (
        other.response_metadata["seedlock_request_hash"]
        != a.response_metadata["seedlock_request_hash"]
    )


def test_missing_fingerprint_is_none(stub: StubOpenAI) -> None:
    stub.fingerprint = None
    assert make(stub).invoke("hi").response_metadata["system_fingerprint"] is None
    full: Any = None
    for chunk in make(stub).stream("hi"):
        full = chunk if full is None else full + chunk
    assert full.response_metadata["system_fingerprint"] is None


@pytest.mark.parametrize("where", ["last", "first", "all"])
def test_stream_keeps_the_fingerprint_wherever_it_was_sent(stub: StubOpenAI, where: str) -> None:
    stub.fingerprint = "fp_streamed"
    stub.fingerprint_chunks = where
    model = make(stub)
    full: Any = None
    for chunk in model.stream("hi"):
        assert isinstance(chunk, AIMessageChunk)
        full = chunk if full is None else full + chunk
    assert full.response_metadata["system_fingerprint"] == "fp_streamed"
    invoked = model.invoke("hi")
    for key in ("seed", "seedlock_lock_hash", "seedlock_request_hash", "seedlock_output_hash"):
        assert full.response_metadata[key] == invoked.response_metadata[key], key


async def test_astream_keeps_the_fingerprint(stub: StubOpenAI) -> None:
    stub.fingerprint_chunks = "first"
    full: Any = None
    async for chunk in make(stub).astream("hi"):
        full = chunk if full is None else full + chunk
    assert full.response_metadata["system_fingerprint"] == "fp_stub_1"
    assert full.response_metadata["seedlock_output_hash"] == output_hash([full])


def test_each_generation_of_n_gets_its_own_record(stub: StubOpenAI) -> None:
    model = make(stub, lock=LOCK.replace(n=3))
    result = model.generate([[HumanMessage("hi")]])
    generations = result.generations[0]
    assert len(generations) == 3
    assert stub.last_request["n"] == 3
    hashes = {g.message.response_metadata["seedlock_output_hash"] for g in generations}
    assert len(hashes) == 3
    for g in generations:
        assert g.message.response_metadata["system_fingerprint"] == "fp_stub_1"
        assert g.message.response_metadata["seedlock_output_hash"] == output_hash([g.message])
    assert result.llm_output is not None
    assert result.llm_output["seedlock_output_hash"] == output_hash(
        [g.message for g in generations]
    )


# -- lock_model on OpenAI models, serialization, cache --------------------------------------


def test_lock_model_on_chat_openai_keeps_settings(stub: StubOpenAI) -> None:
    plain = ChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", timeout=7, max_retries=1
    )
    locked = lock_model(plain, LOCK)
    assert type(locked) is LockedChatOpenAI
    assert locked.request_timeout == 7
    assert locked.max_retries == 1
    assert locked.model_name == "gpt-4o-mini"
    locked.invoke("hi")
    assert_locked(stub.last_request)
    assert lock_model(locked, LOCK) is locked
    with pytest.raises(UnsupportedModelError, match="already locked"):
        lock_model(locked, LOCK.replace(seed=1))


def test_lock_model_on_azure() -> None:
    azure = AzureChatOpenAI(
        azure_deployment="dep",
        api_version="2024-10-21",
        azure_endpoint="http://127.0.0.1:9",
        api_key="k",
    )
    locked = lock_model(azure, LOCK)
    assert type(locked) is LockedAzureChatOpenAI
    assert locked.deployment_name == "dep"


def test_azure_payload_is_locked() -> None:
    model = LockedAzureChatOpenAI(
        azure_deployment="dep",
        api_version="2024-10-21",
        azure_endpoint="http://127.0.0.1:9",
        api_key="k",
        lock=LOCK,
    )
    payload = model._get_request_payload("hi")
    assert payload["seed"] == 42
    assert payload["temperature"] == 0.3
    with pytest.raises(LockViolationError):
        model._get_request_payload("hi", seed=2)


@pytest.mark.filterwarnings("ignore:The function `loads` is in beta")
def test_serialization_round_trip(stub: StubOpenAI) -> None:
    model = make(stub)
    data = dumpd(model)
    assert data["id"] == ["langchain_seedlock", "LockedChatOpenAI"]
    assert "sk-test-key" not in json.dumps(data)
    restored = loads(
        json.dumps(data),
        secrets_map={"OPENAI_API_KEY": "sk-test-key"},
        valid_namespaces=["langchain_seedlock"],
        allowed_objects=[LockedChatOpenAI],
    )
    assert isinstance(restored, LockedChatOpenAI)
    assert restored.lock == LOCK
    restored.invoke("hi")
    assert_locked(stub.last_request)


def test_cache_key_includes_the_lock(stub: StubOpenAI) -> None:
    cache = InMemoryCache()
    set_llm_cache(cache)
    try:
        a = make(stub, cache=True)
        b = make(stub, lock=LOCK.replace(seed=43), cache=True)
        a.invoke("hi")
        a.invoke("hi")
        assert len(stub.requests) == 1  # second call was a cache hit
        b.invoke("hi")
        assert len(stub.requests) == 2  # another lock is another cache entry
    finally:
        set_llm_cache(None)
