"""lock_model on models other than ChatOpenAI: the same guarantees through a wrapper."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from langchain_seedlock import (
    LockedChatModel,
    LockViolationError,
    SeedLock,
    UnsupportedModelError,
    lock_model,
)
from tests._fixtures.stub_openai import StubOpenAI

LOCK = SeedLock(seed=11, temperature=0.4)


class OtherOpenAICompatible(ChatOpenAI):
    """A ChatOpenAI subclass (like ChatDeepSeek): goes through the generic wrapper."""


class MistralLike(BaseChatModel):
    """A model whose seed is called random_seed; records what it was called with."""

    random_seed: int | None = None
    temperature: float | None = None
    calls: list[dict[str, Any]] = []  # noqa: RUF012 - a pydantic field: copied per instance

    @property
    def _llm_type(self) -> str:
        return "mistral-like"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.calls.append(
            {"random_seed": self.random_seed, "temperature": self.temperature, **kwargs}
        )
        text = f"seed {self.random_seed}"
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(content=text))],
            llm_output={"system_fingerprint": "fp_mistral"},
        )


class NoSeed(BaseChatModel):
    temperature: float | None = None

    @property
    def _llm_type(self) -> str:
        return "no-seed"

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise AssertionError("never called")


@tool
def lookup(term: str) -> str:
    """Look a term up."""
    return term


class Answer(BaseModel):
    """An answer."""

    text: str


def other(stub: StubOpenAI, **kwargs: Any) -> OtherOpenAICompatible:
    return OtherOpenAICompatible(
        model="other-model", base_url=stub.base_url, api_key="sk-x", **kwargs
    )


def test_subclass_is_wrapped_and_sends_the_lock(stub: StubOpenAI) -> None:
    locked = lock_model(other(stub), LOCK)
    assert isinstance(locked, LockedChatModel)
    msg = locked.invoke("hi")
    assert stub.last_request["seed"] == 11
    assert stub.last_request["temperature"] == 0.4
    meta = msg.response_metadata
    assert meta["seed"] == 11
    assert meta["system_fingerprint"] == "fp_stub_1"
    assert len(meta["seedlock_request_hash"]) == 64


async def test_async_and_stream_paths(stub: StubOpenAI) -> None:
    locked = lock_model(other(stub), LOCK)
    await locked.ainvoke("a")
    assert stub.last_request["seed"] == 11
    full: Any = None
    async for chunk in locked.astream("b"):
        full = chunk if full is None else full + chunk
    assert stub.last_request["seed"] == 11
    assert full.response_metadata["seedlock_output_hash"]
    assert full.response_metadata["system_fingerprint"] == "fp_stub_1"
    full = None
    for chunk in locked.stream("b"):
        full = chunk if full is None else full + chunk
    assert full.response_metadata["seed"] == 11
    await locked.abatch(["x", "y"])
    assert [r["seed"] for r in stub.requests[-2:]] == [11, 11]


def test_bind_tools_keeps_the_lock(stub: StubOpenAI) -> None:
    stub.tool_calls = [{"name": "lookup", "arguments": {"term": "x"}}]
    locked = lock_model(other(stub), LOCK)
    msg = locked.bind_tools([lookup]).invoke("hi")
    assert stub.last_request["seed"] == 11
    assert stub.last_request["tools"][0]["function"]["name"] == "lookup"
    assert isinstance(msg, AIMessage)
    assert msg.response_metadata["seed"] == 11
    with pytest.raises(LockViolationError):
        locked.bind_tools([lookup]).invoke("hi", seed=5)


@pytest.mark.parametrize("include_raw", [False, True])
def test_with_structured_output_keeps_the_lock(stub: StubOpenAI, include_raw: bool) -> None:
    stub.tool_calls = [{"name": "Answer", "arguments": {"text": "ok"}}]
    locked = lock_model(other(stub), LOCK)
    out = locked.with_structured_output(
        Answer, method="function_calling", include_raw=include_raw
    ).invoke("q")
    assert stub.last_request["seed"] == 11
    assert (out["parsed"] if include_raw else out) == Answer(text="ok")


def test_call_time_override_raises_before_sending(stub: StubOpenAI) -> None:
    locked = lock_model(other(stub), LOCK)
    with pytest.raises(LockViolationError):
        locked.invoke("hi", temperature=1.0)
    with pytest.raises(LockViolationError):
        locked.bind(seed=3).invoke("hi")
    assert stub.requests == []


def test_warn_sends_the_locked_value(stub: StubOpenAI) -> None:
    locked = lock_model(other(stub), LOCK.replace(on_violation="warn"))
    locked.invoke("hi", temperature=1.0)
    assert stub.last_request["temperature"] == 0.4


def test_random_seed_models() -> None:
    MistralLike.model_fields  # noqa: B018 - make sure pydantic built it
    inner = MistralLike(calls=[])
    locked = lock_model(inner, SeedLock(seed=5, temperature=0.1))
    msg = locked.invoke("hi")
    assert msg.content == "seed 5"
    assert msg.response_metadata["system_fingerprint"] == "fp_mistral"
    assert inner.random_seed is None  # the user's model is untouched; the lock is on a copy
    assert locked.model.calls[-1]["random_seed"] == 5  # type: ignore[attr-defined]
    assert locked.model.calls[-1]["temperature"] == 0.1  # type: ignore[attr-defined]
    chunks = list(locked.stream("hi"))  # no native streaming: one chunk
    assert chunks[0].content == "seed 5"


def test_constructor_conflict_is_refused() -> None:
    with pytest.raises(LockViolationError):
        lock_model(MistralLike(random_seed=1, calls=[]), SeedLock(seed=5))


def test_model_without_a_seed_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="no field for a seed"):
        lock_model(NoSeed(), SeedLock(seed=1))


def test_binding_is_refused(stub: StubOpenAI) -> None:
    with pytest.raises(UnsupportedModelError, match="not a binding"):
        lock_model(other(stub).bind(x=1), LOCK)  # type: ignore[arg-type]


def test_request_hash_matches_for_equal_requests(stub: StubOpenAI) -> None:
    locked = lock_model(other(stub), LOCK)
    a, b, c = locked.invoke("hi"), locked.invoke("hi"), locked.invoke("bye")
    assert (
        a.response_metadata["seedlock_request_hash"] == b.response_metadata["seedlock_request_hash"]
    )
    assert (
        a.response_metadata["seedlock_request_hash"] != c.response_metadata["seedlock_request_hash"]
    )
