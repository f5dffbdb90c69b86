"""`SeedLockMiddleware` in real `create_agent` runs against the stub server.

The stub answers the first request with a call to ``get_weather``, the second
(after the tool result) with a call to ``get_time``, the third with text: a
three-step agent loop in which every request body is inspected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import (
    AgentMiddleware,
    ModelFallbackMiddleware,
    ModelRequest,
    ModelResponse,
    ModelRetryMiddleware,
    SummarizationMiddleware,
)
from langchain.agents.structured_output import ToolStrategy
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel

from langchain_seedlock import (
    LockedChatOpenAI,
    LockViolationError,
    SeedLock,
    SeedLockMiddleware,
    open_store,
)
from langchain_seedlock._errors import UnsupportedModelError
from langchain_seedlock._events import CALL, CALL_FAILED, LOCK_VIOLATION, OUTPUT_DRIFT
from langchain_seedlock._store import BaselineStore
from langchain_seedlock.testing import capture_seedlock_events
from tests._fixtures.stub_openai import StubOpenAI

step_seed = SeedLockMiddleware.step_seed  # public as the class attribute

LOCK = SeedLock(seed=123, temperature=0.2, max_tokens=50)
QUESTION = {"messages": [{"role": "user", "content": "Weather and time in Paris?"}]}


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


@tool
def get_time(city: str) -> str:
    """Local time in a city."""
    return f"12:00 in {city}"


def two_tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Call get_weather, then get_time, then answer with text."""
    done = sum(1 for m in body["messages"] if m.get("role") == "tool")
    if done == 0:
        return [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    if done == 1:
        return [{"name": "get_time", "arguments": {"city": "Paris"}}]
    return None


@pytest.fixture
def stub(stub: StubOpenAI) -> StubOpenAI:
    stub.tool_calls = two_tools
    return stub


@pytest.fixture
def store() -> Iterator[BaselineStore]:
    s = open_store("memory://")
    yield s
    s.close()


def make_model(stub: StubOpenAI, **kwargs: Any) -> ChatOpenAI:
    kwargs.setdefault("model", "gpt-4o-mini")
    return ChatOpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0, **kwargs)


def make_agent(
    stub: StubOpenAI,
    middleware: list[AgentMiddleware[Any, Any, Any]],
    *,
    model: BaseChatModel | None = None,
    **kwargs: Any,
) -> Any:
    return create_agent(
        model if model is not None else make_model(stub),
        [get_weather, get_time],
        middleware=middleware,
        checkpointer=InMemorySaver(),
        **kwargs,
    )


def config(thread: str = "t-1") -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def sent_max_tokens(body: dict[str, Any]) -> Any:
    return body.get("max_completion_tokens", body.get("max_tokens"))


def assert_locked(bodies: list[dict[str, Any]], lock: SeedLock = LOCK) -> None:
    assert bodies, "no request reached the server"
    for body in bodies:
        assert body["seed"] == lock.seed
        assert body["temperature"] == lock.params["temperature"]
        assert sent_max_tokens(body) == lock.params["max_tokens"]


def named(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == name]


# -- the lock on every step ------------------------------------------------------------
MODES = ["invoke", "updates", "messages", "values"]


def run_sync(agent: Any, mode: str, cfg: dict[str, Any]) -> list[Any]:
    if mode == "invoke":
        return [agent.invoke(QUESTION, cfg)]
    return list(agent.stream(QUESTION, cfg, stream_mode=mode))


async def run_async(agent: Any, mode: str, cfg: dict[str, Any]) -> list[Any]:
    if mode == "invoke":
        return [await agent.ainvoke(QUESTION, cfg)]
    return [part async for part in agent.astream(QUESTION, cfg, stream_mode=mode)]


@pytest.mark.parametrize("mode", MODES)
def test_every_step_is_sent_locked(stub: StubOpenAI, mode: str) -> None:
    agent = make_agent(stub, [SeedLockMiddleware(LOCK)])
    with capture_seedlock_events() as logs:
        out = run_sync(agent, mode, config())
    assert len(stub.requests) == 3  # tool call, tool call, answer
    assert_locked(stub.requests)
    assert [len(b.get("tools") or []) for b in stub.requests] == [2, 2, 2]
    assert [line["agent_step"] for line in named(logs, CALL)] == [1, 2, 3]
    assert out


@pytest.mark.parametrize("mode", MODES)
async def test_every_step_is_sent_locked_async(stub: StubOpenAI, mode: str) -> None:
    agent = make_agent(stub, [SeedLockMiddleware(LOCK)])
    with capture_seedlock_events() as logs:
        out = await run_async(agent, mode, config())
    assert len(stub.requests) == 3
    assert_locked(stub.requests)
    assert [line["agent_step"] for line in named(logs, CALL)] == [1, 2, 3]
    assert out


def test_messages_mode_streams_tokens_with_the_record(stub: StubOpenAI) -> None:
    agent = make_agent(stub, [SeedLockMiddleware(LOCK)])
    parts = list(agent.stream(QUESTION, config(), stream_mode="messages"))
    assert all(b.get("stream") for b in stub.requests)  # really streamed
    text = "".join(
        chunk.content for chunk, meta in parts if meta["langgraph_node"] == "model" and chunk.text
    )
    assert "seed=123" in text
    last = agent.get_state(config())[0]["messages"][-1]
    assert last.response_metadata["seedlock_request_hash"]
    assert last.response_metadata["system_fingerprint"] == "fp_stub_1"


def test_the_agent_model_keeps_its_own_settings(stub: StubOpenAI) -> None:
    model = make_model(stub, model="gpt-4o", top_p=0.5)
    agent = make_agent(stub, [SeedLockMiddleware(LOCK)], model=model)
    agent.invoke(QUESTION, config())
    assert_locked(stub.requests)
    assert {b["model"] for b in stub.requests} == {"gpt-4o"}
    assert {b["top_p"] for b in stub.requests} == {0.5}  # not locked: untouched
    assert model.seed is None  # the user's model is not modified


# -- overrides ---------------------------------------------------------------------
class SetTemperature(AgentMiddleware[Any, Any, Any]):
    """Another middleware that tries to change the sampling temperature."""

    def __init__(self, temperature: float = 1.5) -> None:
        super().__init__()
        self.temperature = temperature

    def _request(self, request: ModelRequest[Any]) -> ModelRequest[Any]:
        settings = {**request.model_settings, "temperature": self.temperature}
        return request.override(model_settings=settings)

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        return handler(self._request(request))

    async def awrap_model_call(self, request: ModelRequest[Any], handler: Any) -> Any:
        return await handler(self._request(request))


@pytest.mark.parametrize("position", ["before", "after"])
def test_an_override_by_another_middleware_is_refused(stub: StubOpenAI, position: str) -> None:
    seedlock = SeedLockMiddleware(LOCK)
    order = [SetTemperature(), seedlock] if position == "before" else [seedlock, SetTemperature()]
    agent = make_agent(stub, order)
    with capture_seedlock_events() as logs, pytest.raises(LockViolationError) as err:
        agent.invoke(QUESTION, config())
    assert err.value.field == "temperature"
    assert err.value.attempted == 1.5
    assert stub.requests == []  # nothing was sent
    [failed] = named(logs, CALL_FAILED)  # refused calls are logged too
    assert failed["error.type"] == "LockViolationError"
    assert (failed["agent_step"], failed["thread_id"]) == (1, "t-1")


@pytest.mark.parametrize("position", ["before", "after"])
async def test_an_override_by_another_middleware_is_replaced_under_warn(
    stub: StubOpenAI, position: str
) -> None:
    lock = LOCK.replace(on_violation="warn")
    seedlock = SeedLockMiddleware(lock)
    order = [SetTemperature(), seedlock] if position == "before" else [seedlock, SetTemperature()]
    agent = make_agent(stub, order)
    with capture_seedlock_events() as logs:
        await agent.ainvoke(QUESTION, config("t-warn"))
    assert_locked(stub.requests, lock)  # the locked temperature was sent
    violations = named(logs, LOCK_VIOLATION)
    assert len(violations) == 3  # one per step
    for line in violations:
        assert (line["field"], line["locked"], line["attempted"]) == ("temperature", 0.2, 1.5)
        assert line["action"] == "sent_locked_value"
    if position == "before":  # seen in model_settings, with the agent's context
        assert [line["agent_step"] for line in violations] == [1, 2, 3]
        assert {line["thread_id"] for line in violations} == {"t-warn"}


def test_an_agent_model_built_with_another_temperature(stub: StubOpenAI) -> None:
    model = make_model(stub, temperature=0.9)
    agent = make_agent(stub, [SeedLockMiddleware(LOCK)], model=model)
    with pytest.raises(LockViolationError, match="temperature"):
        agent.invoke(QUESTION, config())
    assert stub.requests == []

    warned = make_agent(stub, [SeedLockMiddleware(LOCK.replace(on_violation="warn"))], model=model)
    with capture_seedlock_events() as logs:
        warned.invoke(QUESTION, config())
    assert_locked(stub.requests)
    assert named(logs, LOCK_VIOLATION)[0]["source"] == "agent model constructor"


def test_a_model_locked_with_the_same_lock_is_kept(stub: StubOpenAI) -> None:
    model = LockedChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", lock=LOCK
    )
    make_agent(stub, [SeedLockMiddleware(LOCK)], model=model).invoke(QUESTION, config())
    assert_locked(stub.requests)

    per_step = make_agent(stub, [SeedLockMiddleware(LOCK, seed_per_step=True)], model=model)
    with pytest.raises(UnsupportedModelError, match="already locked"):
        per_step.invoke(QUESTION, config("t-2"))


# -- seeds per step ---------------------------------------------------------------------
def test_step_seed_is_stable_and_in_range() -> None:
    # Fixed values: a change here changes every per-step seed ever recorded.
    assert [step_seed(123, k) for k in (1, 2, 3)] == [1092949715, 589900883, 1198354011]
    seeds = {step_seed(123, k) for k in range(1, 200)}
    assert len(seeds) == 199
    assert all(0 <= s < 2**31 for s in seeds)
    assert step_seed(123, 1) != step_seed(124, 1)
    assert SeedLockMiddleware.step_seed(123, 1) == 1092949715


def test_seed_per_step_gives_distinct_reproducible_seeds(stub: StubOpenAI) -> None:
    seedlock = SeedLockMiddleware(LOCK, seed_per_step=True)
    agent = make_agent(stub, [seedlock])
    with capture_seedlock_events() as logs:
        agent.invoke(QUESTION, config("run-1"))
        agent.invoke(QUESTION, config("run-2"))
    first, second = stub.requests[:3], stub.requests[3:]
    expected = [step_seed(LOCK.seed, k) for k in (1, 2, 3)]
    assert [b["seed"] for b in first] == expected
    assert [b["seed"] for b in second] == expected  # reproducible
    assert len(set(expected)) == 3  # distinct
    assert all(b["temperature"] == 0.2 for b in stub.requests)
    calls = named(logs, CALL)
    assert [line["gen_ai.request.seed"] for line in calls] == expected * 2
    assert not named(logs, OUTPUT_DRIFT)


# -- context in events, the store ---------------------------------------------------
def test_events_carry_the_agent_context(stub: StubOpenAI, store: BaselineStore) -> None:
    seedlock = SeedLockMiddleware(LOCK, store=store)
    agent = make_agent(stub, [seedlock])
    with capture_seedlock_events() as logs:
        result = agent.invoke(QUESTION, config("thread-42"))
    calls = named(logs, CALL)
    assert len(calls) == 3
    assert [line["agent_step"] for line in calls] == [1, 2, 3]
    assert [line["langgraph_node"] for line in calls] == ["model"] * 3
    steps = [line["langgraph_step"] for line in calls]
    assert steps == sorted(set(steps))  # one graph step each, in order
    assert {line["thread_id"] for line in calls} == {"thread-42"}
    assert all(line["langgraph_checkpoint_ns"].startswith("model:") for line in calls)
    ai = [m for m in result["messages"] if isinstance(m, AIMessage)]
    assert [line["seedlock.request_hash"] for line in calls] == [
        m.response_metadata["seedlock_request_hash"] for m in ai
    ]
    assert [line["seedlock.output_hash"] for line in calls] == [
        m.response_metadata["seedlock_output_hash"] for m in ai
    ]
    for line in calls:
        assert line["openai.response.system_fingerprint"] == "fp_stub_1"
        assert line["gen_ai.request.seed"] == 123
        assert line["gen_ai.request.temperature"] == 0.2
        assert line["run_id"]

    assert seedlock.flush(timeout=10)
    known = store.requests(limit=10)
    assert len(known) == 3
    assert {r.model_key for r in known} == {"openai:gpt-4o-mini"}
    assert {r.calls for r in known} == {1}
    [fp] = store.fingerprints_for("openai:gpt-4o-mini")
    assert (fp.system_fingerprint, fp.count) == ("fp_stub_1", 3)


def test_a_second_run_is_compared_step_by_step(stub: StubOpenAI, store: BaselineStore) -> None:
    seedlock = SeedLockMiddleware(LOCK, store=store)
    agent = make_agent(stub, [seedlock])
    agent.invoke(QUESTION, config("a"))

    def other_city(body: dict[str, Any]) -> list[dict[str, Any]] | None:
        calls = two_tools(body)
        return [{**c, "arguments": {"city": "Lyon"}} for c in calls] if calls else None

    stub.tool_calls = other_city  # same request at step 1, another tool call: drift
    with capture_seedlock_events() as logs:
        agent.invoke(QUESTION, config("b"))
    [drift] = named(logs, OUTPUT_DRIFT)
    assert (drift["agent_step"], drift["langgraph_step"], drift["thread_id"]) == (1, 1, "b")
    assert drift["seedlock.explained"] is False  # same fingerprint: unexplained
    assert seedlock.flush(timeout=10)
    assert [e.fields["agent_step"] for e in store.events(name=OUTPUT_DRIFT)] == [1]


# -- structured output ----------------------------------------------------------------
class Forecast(BaseModel):
    city: str
    summary: str


def test_structured_response_format(stub: StubOpenAI) -> None:
    agent = make_agent(stub, [SeedLockMiddleware(LOCK)], response_format=Forecast)
    with capture_seedlock_events() as logs:
        out = agent.invoke(QUESTION, config())
    assert isinstance(out["structured_response"], Forecast)
    assert_locked(stub.requests)
    assert stub.requests[-1]["response_format"]["type"] == "json_schema"
    assert len(named(logs, CALL)) == 3


async def test_structured_response_with_tool_strategy(stub: StubOpenAI) -> None:
    stub.tool_calls = None  # the stub calls the only tool offered: the Forecast tool
    agent = create_agent(
        make_model(stub),
        [],
        middleware=[SeedLockMiddleware(LOCK)],
        response_format=ToolStrategy(Forecast),
    )
    out = await agent.ainvoke(QUESTION)
    assert isinstance(out["structured_response"], Forecast)
    assert_locked(stub.requests)


# -- alongside other middleware -------------------------------------------------------
class FailOnce(AgentMiddleware[Any, Any, Any]):
    """Fails the first model call, as a flaky provider would."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def wrap_model_call(self, request: ModelRequest[Any], handler: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise RuntimeError("provider hiccup")
        return handler(request)

    async def awrap_model_call(self, request: ModelRequest[Any], handler: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise RuntimeError("provider hiccup")
        return await handler(request)


def retry() -> ModelRetryMiddleware:
    return ModelRetryMiddleware(max_retries=2, initial_delay=0, jitter=False, on_failure="error")


@pytest.mark.parametrize("position", ["before", "after"])
def test_with_retry_middleware(stub: StubOpenAI, position: str) -> None:
    seedlock = SeedLockMiddleware(LOCK)
    order: list[AgentMiddleware[Any, Any, Any]] = (
        [retry(), seedlock, FailOnce()] if position == "after" else [seedlock, retry(), FailOnce()]
    )
    agent = make_agent(stub, order)
    with capture_seedlock_events() as logs:
        agent.invoke(QUESTION, config())
    assert len(stub.requests) == 3
    assert_locked(stub.requests)
    assert [line["agent_step"] for line in named(logs, CALL)] == [1, 2, 3]
    # Inside the retry loop the middleware sees the failed attempt too.
    assert len(named(logs, CALL_FAILED)) == (1 if position == "after" else 0)


@pytest.mark.parametrize("position", ["before", "after"])
async def test_with_fallback_middleware(stub: StubOpenAI, position: str) -> None:
    broken = ChatOpenAI(
        model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key="sk-test", max_retries=0
    )
    fallback = ModelFallbackMiddleware(make_model(stub, model="gpt-4o-fallback"))
    seedlock = SeedLockMiddleware(LOCK)
    order: list[AgentMiddleware[Any, Any, Any]] = (
        [fallback, seedlock] if position == "before" else [seedlock, fallback]
    )
    agent = make_agent(stub, order, model=broken)
    with capture_seedlock_events() as logs:
        await agent.ainvoke(QUESTION, config())
    assert {b["model"] for b in stub.requests} == {"gpt-4o-fallback"}
    assert_locked(stub.requests)  # the fallback model is sent the lock too
    calls = named(logs, CALL)
    assert [line["agent_step"] for line in calls] == [1, 2, 3]
    # Outside the fallback, the middleware records the model the agent was given.
    expected = "gpt-4o-fallback" if position == "before" else "gpt-4o-mini"
    assert {line["gen_ai.request.model"] for line in calls} == {expected}


@pytest.mark.parametrize("position", ["before", "after"])
def test_with_summarization_middleware(stub: StubOpenAI, position: str) -> None:
    summarizer = make_model(stub, model="gpt-4o-summarizer")
    summary = SummarizationMiddleware(summarizer, trigger=("messages", 4), keep=("messages", 2))
    seedlock = SeedLockMiddleware(LOCK)
    order: list[AgentMiddleware[Any, Any, Any]] = (
        [summary, seedlock] if position == "before" else [seedlock, summary]
    )
    plan = iter([[{"name": "get_weather", "arguments": {"city": "Oslo"}}]] * 2)
    # The summary removes tool results from the request: script by call count instead.
    stub.tool_calls = lambda body: next(plan, None) if body["model"] == "gpt-4o-mini" else None
    agent = make_agent(stub, order)
    with capture_seedlock_events() as logs:
        agent.invoke(QUESTION, {**config(), "recursion_limit": 20})
    by_model: dict[str, list[dict[str, Any]]] = {}
    for body in stub.requests:
        by_model.setdefault(body["model"], []).append(body)
    assert len(by_model["gpt-4o-summarizer"]) >= 1  # the summary really happened
    assert_locked(by_model["gpt-4o-mini"])  # every agent step, summarized or not
    # The summary call is made outside the agent's model node: not ours to lock.
    assert all("seed" not in b for b in by_model["gpt-4o-summarizer"])
    assert len(named(logs, CALL)) == len(by_model["gpt-4o-mini"])


# -- any chat model ------------------------------------------------------------------
class ScriptedChatModel(BaseChatModel):
    """A chat model that answers from a script and remembers the call arguments."""

    script: list[AIMessage]
    random_seed: int | None = None
    calls: list[dict[str, Any]]

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=tools, **kwargs)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls.append(kw)
        message = self.script[len(self.calls) - 1]
        return ChatResult(generations=[ChatGeneration(message=message)])


def test_any_chat_model_gets_the_lock_through_model_settings() -> None:
    script = [
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "1"}]),
        AIMessage("", tool_calls=[{"name": "get_time", "args": {"city": "Oslo"}, "id": "2"}]),
        AIMessage("Snowy, noon."),
    ]
    model = ScriptedChatModel(script=script, calls=[])
    agent = create_agent(model, [get_weather, get_time], middleware=[SeedLockMiddleware(LOCK)])
    with capture_seedlock_events() as logs:
        agent.invoke(QUESTION)
    assert len(model.calls) == 3
    for kw in model.calls:  # random_seed: the model's own name for the seed
        assert (kw["random_seed"], kw["temperature"], kw["max_tokens"]) == (123, 0.2, 50)
        assert "seed" not in kw
    calls = named(logs, CALL)
    assert [line["agent_step"] for line in calls] == [1, 2, 3]
    assert len({line["seedlock.request_hash"] for line in calls}) == 3  # hashed here
    # The provider name LangChain reports for the model (its ls_provider), as the handler does.
    assert {line["gen_ai.provider.name"] for line in calls} == {"scriptedchatmodel"}


# -- construction ----------------------------------------------------------------------
def test_store_url_and_content_capture(stub: StubOpenAI, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/agent.db"
    seedlock = SeedLockMiddleware(LOCK, store=url, capture_content=True)
    with capture_seedlock_events() as logs:
        make_agent(stub, [seedlock]).invoke(QUESTION, config())
    assert seedlock.close(timeout=10)
    last = named(logs, CALL)[-1]
    assert "Weather and time in Paris?" in last["seedlock.prompt_text"]
    assert last["seedlock.output_text"].startswith("seed=123")
    with open_store(url) as reopened:
        assert len(reopened.requests()) == 3


def test_content_is_not_logged_by_default(stub: StubOpenAI) -> None:
    with capture_seedlock_events() as logs:
        make_agent(stub, [SeedLockMiddleware(LOCK)]).invoke(QUESTION, config())
    assert all("seedlock.prompt_text" not in line for line in logs)
    assert all("Paris" not in repr(line) for line in named(logs, CALL))


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="either store= or monitor="):
        SeedLockMiddleware(LOCK, store="memory://", monitor=SeedLockMiddleware(LOCK).monitor)
    with pytest.raises(TypeError, match="SeedLock"):
        SeedLockMiddleware({"seed": 1})  # type: ignore[arg-type]
