"""The lock holds on what reaches the wire, whatever route a parameter takes (issue 13).

``extra_body`` (merged over the JSON body by the openai SDK), ``model_kwargs``,
``extra_query`` and Ollama-style ``options`` carry parameters too: each door
(locked models, `lock_model`, the handler, the middleware) applies the one
policy to them, and the record describes the body that was really sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from langchain_seedlock import (
    LockedChatOpenAI,
    LockViolationError,
    ParamDroppedError,
    SeedLock,
    SeedLockCallbackHandler,
    SeedLockMiddleware,
    lock_model,
)
from langchain_seedlock._enforce import SPELLINGS
from langchain_seedlock._hashing import PARAM_ALIASES
from langchain_seedlock.testing import capture_seedlock_events
from tests._fixtures.stub_openai import StubOpenAI, raw_completion

LOCK = SeedLock(seed=5, temperature=0.2)
WARN = LOCK.replace(on_violation="warn")
IGNORE = LOCK.replace(on_violation="ignore")


def make(stub: StubOpenAI, lock: SeedLock = LOCK, **kwargs: Any) -> LockedChatOpenAI:
    return LockedChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", lock=lock, **kwargs
    )


def named(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == name]


@tool
def lookup(term: str) -> str:
    """Look a term up."""
    return term


class Answer(BaseModel):
    """An answer."""

    text: str


# -- the issue, as reported ----------------------------------------------------------


OVERRIDES: dict[str, Callable[[LockedChatOpenAI], Any]] = {
    "call extra_body": lambda m: m.invoke("x", extra_body={"seed": 999, "temperature": 1.9}),
    "bind extra_body": lambda m: m.bind(extra_body={"seed": 999}).invoke("x"),
    "stream extra_body": lambda m: list(m.stream("x", extra_body={"temperature": 1.9})),
    "batch extra_body": lambda m: m.batch(["x"], extra_body={"seed": 999}),
    "bind_tools extra_body": lambda m: m.bind_tools([lookup], extra_body={"seed": 999}).invoke("x"),
    "structured extra_body": lambda m: m.with_structured_output(
        Answer, extra_body={"temperature": 1.9}
    ).invoke("x"),
    "extra_body alias": lambda m: m.invoke("x", extra_body={"max_tokens": 999}),
    "extra_body omit": lambda m: m.invoke("x", extra_body={"seed": openai.omit}),
    "extra_body null": lambda m: m.invoke("x", extra_body={"seed": None}),
    "call omit": lambda m: m.invoke("x", seed=openai.omit),
    "call null": lambda m: m.invoke("x", seed=None),
}


@pytest.mark.parametrize("call", OVERRIDES.values(), ids=OVERRIDES.keys())
def test_override_through_any_route_raises_and_sends_nothing(
    stub: StubOpenAI, call: Callable[[LockedChatOpenAI], Any]
) -> None:
    lock = LOCK.replace(max_tokens=64)
    with pytest.raises(LockViolationError) as info:
        call(make(stub, lock))
    assert stub.requests == []
    assert type(info.value) is LockViolationError  # an override, not a dropped parameter
    assert info.value.field in {"seed", "temperature", "max_tokens"}


async def test_async_override_in_extra_body_raises(stub: StubOpenAI) -> None:
    with pytest.raises(LockViolationError, match="seed=999"):
        await make(stub).ainvoke("x", extra_body={"seed": 999})
    with pytest.raises(LockViolationError):
        _ = [c async for c in make(stub).astream("x", extra_body={"temperature": 1.9})]
    assert stub.requests == []


@pytest.mark.parametrize("call", OVERRIDES.values(), ids=OVERRIDES.keys())
def test_warn_sends_the_locked_value_in_extra_body_too(
    stub: StubOpenAI, call: Callable[[LockedChatOpenAI], Any]
) -> None:
    stub.tool_calls = None
    lock = WARN.replace(max_tokens=64)
    with capture_seedlock_events() as logs:
        call(make(stub, lock))
    body = stub.last_request
    assert body["seed"] == 5
    assert body["temperature"] == 0.2
    assert body["max_completion_tokens"] == 64
    assert body.get("max_tokens", 64) == 64  # a second spelling, if sent, is locked too
    violations = named(logs, "seedlock.lock_violation")
    assert violations
    assert {v["action"] for v in violations} == {"sent_locked_value"}
    assert named(logs, "seedlock.param_dropped") == []


def test_the_record_describes_what_was_sent(stub: StubOpenAI) -> None:
    """The issue: the wire had seed 999 while the metadata said 5."""
    user_extra = {"seed": 999, "temperature": 1.9, "ttl": 300}
    with capture_seedlock_events() as logs:
        msg = make(stub, WARN).invoke("x", extra_body=user_extra)
    body = stub.last_request
    assert (body["seed"], body["temperature"], body["ttl"]) == (5, 0.2, 300)
    assert msg.response_metadata["seed"] == 5
    assert user_extra == {"seed": 999, "temperature": 1.9, "ttl": 300}  # not mutated
    events = {e["field"]: e for e in named(logs, "seedlock.lock_violation")}
    assert events["seed"]["attempted"] == 999
    assert events["temperature"]["attempted"] == 1.9
    assert events["seed"]["source"] == "call argument"

    # The request hash covers the effective body: equal to the same request
    # sent without the refused overrides, and changed by what extra_body adds.
    plain = make(stub, WARN).invoke("x", extra_body={"ttl": 300})
    other = make(stub, WARN).invoke("x", extra_body={"ttl": 301})
    none = make(stub, WARN).invoke("x")
    h = msg.response_metadata["seedlock_request_hash"]
    assert h == plain.response_metadata["seedlock_request_hash"]
    assert h != other.response_metadata["seedlock_request_hash"]
    assert h != none.response_metadata["seedlock_request_hash"]


def test_request_hash_is_the_same_whichever_route_a_parameter_took(stub: StubOpenAI) -> None:
    model = make(stub)
    top = model.invoke("x", frequency_penalty=0.5)
    nested = model.invoke("x", extra_body={"frequency_penalty": 0.5})
    assert stub.requests[0]["frequency_penalty"] == stub.requests[1]["frequency_penalty"] == 0.5
    assert (
        top.response_metadata["seedlock_request_hash"]
        == nested.response_metadata["seedlock_request_hash"]
    )


def test_ignore_sends_the_locked_value_silently(stub: StubOpenAI) -> None:
    with capture_seedlock_events() as logs:
        make(stub, IGNORE).bind(extra_body={"seed": 999}).invoke("x", temperature=1.0)
    assert (stub.last_request["seed"], stub.last_request["temperature"]) == (5, 0.2)
    assert [e for e in logs if e["event"].startswith("seedlock.")] == []


def test_equal_values_in_extra_body_pass_and_are_sent_as_the_locked_type(
    stub: StubOpenAI,
) -> None:
    make(stub).invoke("x", extra_body={"seed": 5.0, "temperature": 0.2})
    assert stub.last_request["seed"] == 5
    assert type(stub.last_request["seed"]) is int


# -- construction ----------------------------------------------------------------------


@pytest.mark.parametrize("lock", [LOCK, WARN], ids=["raise", "warn"])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"extra_body": {"seed": 999}},
        {"extra_body": {"max_completion_tokens": 7}},
        {"model_kwargs": {"max_completion_tokens": 7}},
    ],
)
def test_constructor_extra_body_is_refused(
    stub: StubOpenAI, lock: SeedLock, kwargs: dict[str, Any]
) -> None:
    # Like every constructor argument: refused whatever the policy (nothing is
    # being sent yet; the model would send it on every call).
    with pytest.raises(LockViolationError) as info:
        make(stub, lock.replace(max_tokens=64), **kwargs)
    assert info.value.source == "constructor argument"


def test_equal_constructor_model_kwargs_are_accepted(stub: StubOpenAI) -> None:
    # langchain-openai refuses a field given twice: the equal entry is the field's.
    with pytest.warns(UserWarning, match="model_kwargs"):  # langchain-openai's own warning
        model = make(stub, model_kwargs={"seed": 5.0, "temperature": None, "logprobs": True})
    model.invoke("x")
    body = stub.last_request
    assert (body["seed"], body["temperature"], body["logprobs"]) == (5, 0.2, True)


def test_constructor_extra_body_with_other_keys_is_kept(stub: StubOpenAI) -> None:
    make(stub, extra_body={"ttl": 300, "seed": 5}).invoke("x")
    assert (stub.last_request["ttl"], stub.last_request["seed"]) == (300, 5)


def test_extra_body_changed_after_construction_is_caught(stub: StubOpenAI) -> None:
    model = make(stub)
    model.extra_body = {"seed": 999}
    with pytest.raises(LockViolationError) as info:
        model.invoke("x")
    assert info.value.source == "request payload"
    assert stub.requests == []
    model = make(stub, WARN)
    model.extra_body = {"seed": 999}
    model.invoke("x")
    assert stub.last_request["seed"] == 5


def test_a_dropped_parameter_is_still_reported_as_dropped(stub: StubOpenAI) -> None:
    model = LockedChatOpenAI(model="gpt-5-mini", base_url=stub.base_url, api_key="sk-x", lock=LOCK)
    with pytest.raises(ParamDroppedError, match="temperature"):
        model.invoke("x")
    # ... unless the caller sends it itself, in extra_body, with the locked value.
    model.invoke("x", extra_body={"temperature": 0.2})
    assert stub.last_request["temperature"] == 0.2


# -- extra_query: parameters in the URL ----------------------------------------------------


def test_extra_query_is_checked_and_rewritten() -> None:
    urls: list[httpx2.URL] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        urls.append(request.url)
        return httpx2.Response(200, content=raw_completion())

    def model(lock: SeedLock) -> LockedChatOpenAI:
        return LockedChatOpenAI(
            model="gpt-4o-mini",
            api_key="sk-test",
            lock=lock,
            http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
        )

    with pytest.raises(LockViolationError, match="seed='999'"):
        model(LOCK).invoke("x", extra_query={"seed": "999"})
    assert urls == []
    model(LOCK).invoke("x", extra_query={"seed": "5", "api-version": "1"})  # text of 5: equal
    assert urls[-1].params["seed"] == "5"
    model(WARN).invoke("x", extra_query={"temperature": 1.9, "api-version": "1"})
    assert urls[-1].params["temperature"] == "0.2"
    assert urls[-1].params["api-version"] == "1"


# -- lock_model on other models -----------------------------------------------------------


class OtherOpenAICompatible(ChatOpenAI):
    """A ChatOpenAI subclass (like ChatDeepSeek): goes through the generic wrapper."""


def other(stub: StubOpenAI, **kwargs: Any) -> OtherOpenAICompatible:
    return OtherOpenAICompatible(model="m", base_url=stub.base_url, api_key="sk-x", **kwargs)


def test_wrapped_model_call_extra_body(stub: StubOpenAI) -> None:
    with pytest.raises(LockViolationError, match="seed=999"):
        lock_model(other(stub), LOCK).invoke("x", extra_body={"seed": 999})
    assert stub.requests == []
    with capture_seedlock_events() as logs:
        msg = lock_model(other(stub), WARN).bind(extra_body={"seed": 999, "ttl": 1}).invoke("x")
    assert (stub.last_request["seed"], stub.last_request["ttl"]) == (5, 1)
    assert msg.response_metadata["seed"] == 5
    assert named(logs, "seedlock.lock_violation")[0]["attempted"] == 999


@pytest.mark.parametrize(
    "kwargs", [{"extra_body": {"seed": 999}}, {"extra_body": {"max_completion_tokens": 7}}]
)
def test_wrapped_model_constructor_extra_body(stub: StubOpenAI, kwargs: dict[str, Any]) -> None:
    with pytest.raises(LockViolationError) as info:
        lock_model(other(stub, **kwargs), LOCK.replace(max_tokens=64))
    assert info.value.source == "constructor argument"


def test_wrapped_model_constructor_model_kwargs() -> None:
    with pytest.raises(LockViolationError) as info:
        lock_model(OllamaLike(model_kwargs={"num_predict": 7}), LOCK.replace(max_tokens=64))
    assert info.value.source == "constructor argument"
    locked = lock_model(OllamaLike(model_kwargs={"seed": 5.0, "x": 1}), LOCK)
    assert locked.model.model_kwargs == {"seed": 5, "x": 1}  # type: ignore[attr-defined]


def test_wrapped_model_equal_nested_values_are_sent_locked(stub: StubOpenAI) -> None:
    lock_model(other(stub, extra_body={"seed": 5.0}), LOCK).invoke("x", extra_body={"seed": 5.0})
    assert stub.last_request["seed"] == 5
    assert type(stub.last_request["seed"]) is int


class OllamaLike(BaseChatModel):
    """Sends a call-time ``options`` mapping instead of the options built from its
    fields, as ``ChatOllama._chat_params`` does; records the options sent."""

    seed: int | None = None
    temperature: float | None = None
    num_predict: int | None = None
    model_kwargs: dict[str, Any] = {}  # noqa: RUF012 - a pydantic field: copied per instance
    sent: list[dict[str, Any]] = []  # noqa: RUF012 - a pydantic field: copied per instance

    @property
    def _llm_type(self) -> str:
        return "ollama-like"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        options = kwargs.pop("options", None)
        if options is None:
            fields = {"seed": self.seed, "temperature": self.temperature}
            options = {k: v for k, v in {**fields, "num_predict": self.num_predict}.items() if v}
        self.sent.append(dict(options))
        return ChatResult(generations=[ChatGeneration(message=AIMessage("ok"))])


def test_ollama_options_get_the_locked_values() -> None:
    lock = LOCK.replace(max_tokens=64)
    model = OllamaLike(sent=[])
    locked = lock_model(model, lock)
    locked.invoke("x")
    locked.invoke("x", options={"num_ctx": 4096})  # would send no seed at all
    sent = locked.model.sent  # type: ignore[attr-defined]
    expected = {"seed": 5, "temperature": 0.2, "num_predict": 64}
    assert sent[0] == expected
    assert sent[1] == {"num_ctx": 4096, **expected}
    for options in ({"seed": 999}, {"num_predict": 999}, {"temperature": 1.9}):
        with pytest.raises(LockViolationError):
            locked.invoke("x", options=options)
    assert len(sent) == 2
    lock_model(model, lock.replace(on_violation="warn")).invoke("x", options={"seed": 999})
    assert sent[-1] == expected


# -- the callback handler reads invocation params as the server receives them -----------


def test_handler_enforces_the_lock_in_extra_body(stub: StubOpenAI) -> None:
    handler = SeedLockCallbackHandler(lock=LOCK, enforce=True)
    model = ChatOpenAI(model="m", base_url=stub.base_url, api_key="sk-x", seed=5, temperature=0.2)
    with pytest.raises(LockViolationError, match="seed=999"):
        model.invoke("x", extra_body={"seed": 999}, config={"callbacks": [handler]})
    assert stub.requests == []
    # The seed only in extra_body is a seed: enforced calls pass.
    bare = ChatOpenAI(model="m", base_url=stub.base_url, api_key="sk-x")
    bare.invoke("x", extra_body={"seed": 5, "temperature": 0.2}, config={"callbacks": [handler]})
    assert stub.last_request["seed"] == 5


def test_handler_records_the_seed_that_was_sent(stub: StubOpenAI) -> None:
    handler = SeedLockCallbackHandler()
    model = ChatOpenAI(model="m", base_url=stub.base_url, api_key="sk-x", seed=5)
    with capture_seedlock_events() as logs:
        model.invoke("x", extra_body={"seed": 999}, config={"callbacks": [handler]})
    handler.close()
    assert stub.last_request["seed"] == 999
    [call] = named(logs, "seedlock.call")
    assert call["gen_ai.request.seed"] == 999
    assert named(logs, "seedlock.unseeded_call") == []
    with capture_seedlock_events() as logs:
        ChatOpenAI(model="m", base_url=stub.base_url, api_key="sk-x").invoke(
            "x", extra_body={"seed": 3}, config={"callbacks": [SeedLockCallbackHandler()]}
        )
    assert named(logs, "seedlock.unseeded_call") == []


def test_handler_observes_a_violation_in_extra_body(stub: StubOpenAI) -> None:
    handler = SeedLockCallbackHandler(lock=LOCK)
    model = ChatOpenAI(model="m", base_url=stub.base_url, api_key="sk-x", seed=5, temperature=0.2)
    with capture_seedlock_events() as logs:
        model.invoke("x", extra_body={"temperature": 1.9}, config={"callbacks": [handler]})
    handler.close()
    [violation] = named(logs, "seedlock.lock_violation")
    assert (violation["field"], violation["attempted"]) == ("temperature", 1.9)


# -- the middleware ------------------------------------------------------------------------


class SetExtraBody(AgentMiddleware[Any, Any, Any]):
    """Another middleware that sends a seed through extra_body."""

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        settings = {**request.model_settings, "extra_body": {"seed": 7, "ttl": 1}}
        return handler(request.override(model_settings=settings))


class Scripted(BaseChatModel):
    calls: list[dict[str, Any]] = []  # noqa: RUF012 - a pydantic field: copied per instance

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(**kwargs)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls.append(kw)
        return ChatResult(generations=[ChatGeneration(message=AIMessage("done"))])


def test_middleware_locks_extra_body_in_model_settings() -> None:
    question = {"messages": [{"role": "user", "content": "hi"}]}
    model = Scripted(calls=[])
    agent = create_agent(model, [], middleware=[SetExtraBody(), SeedLockMiddleware(LOCK)])
    with pytest.raises(LockViolationError, match="seed=7"):
        agent.invoke(question)
    assert model.calls == []
    agent = create_agent(model, [], middleware=[SetExtraBody(), SeedLockMiddleware(WARN)])
    with capture_seedlock_events() as logs:
        agent.invoke(question)
    assert model.calls[-1]["extra_body"] == {"seed": 5, "ttl": 1}
    assert named(logs, "seedlock.lock_violation")[0]["source"] == "agent model_settings"


def test_middleware_agent_model_with_extra_body(stub: StubOpenAI) -> None:
    question = {"messages": [{"role": "user", "content": "hi"}]}
    model = ChatOpenAI(model="m", base_url=stub.base_url, api_key="sk-x", extra_body={"seed": 9})
    with pytest.raises(LockViolationError, match="seed=9"):
        create_agent(model, [], middleware=[SeedLockMiddleware(LOCK)]).invoke(question)
    assert stub.requests == []
    with capture_seedlock_events() as logs:
        create_agent(model, [], middleware=[SeedLockMiddleware(WARN)]).invoke(question)
    assert stub.last_request["seed"] == 5
    assert named(logs, "seedlock.lock_violation")[0]["source"] == "agent model constructor"


def test_spellings_cover_the_hash_aliases() -> None:
    for alias, name in PARAM_ALIASES.items():
        assert alias in SPELLINGS[name]
