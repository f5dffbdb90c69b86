"""A hand-built LangGraph `StateGraph` whose nodes call a locked model.

`SeedLockCallbackHandler` in the run's config must put the node, the step and
the thread of each call into its events (LangGraph passes them to the model
run as metadata).
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from langchain_seedlock import LockedChatOpenAI, SeedLock, SeedLockCallbackHandler, open_store
from langchain_seedlock._events import CALL
from langchain_seedlock.testing import capture_seedlock_events
from tests._fixtures.stub_openai import StubOpenAI

LOCK = SeedLock(seed=7, temperature=0.3)


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def build_graph(stub: StubOpenAI) -> Any:
    model = LockedChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", lock=LOCK
    )

    def draft(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def review(state: State) -> dict[str, Any]:
        ask = HumanMessage("Review the draft above in one sentence.")
        return {"messages": [ask, model.invoke([*state["messages"], ask])]}

    graph = StateGraph(State)
    graph.add_node("draft", draft)
    graph.add_node("review", review)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "review")
    graph.add_edge("review", END)
    return graph.compile(checkpointer=InMemorySaver())


def check_calls(logs: list[dict[str, Any]], thread: str) -> None:
    calls = [line for line in logs if line["event"] == CALL]
    assert [line["langgraph_node"] for line in calls] == ["draft", "review"]
    assert [line["langgraph_step"] for line in calls] == [1, 2]
    assert {line["thread_id"] for line in calls} == {thread}
    assert [line["langgraph_checkpoint_ns"].split(":")[0] for line in calls] == [
        "draft",
        "review",
    ]
    for line in calls:
        assert line["gen_ai.request.seed"] == 7
        assert line["seedlock.lock_hash"] == LOCK.lock_hash
        assert line["openai.response.system_fingerprint"] == "fp_stub_1"


def test_handler_events_carry_node_step_and_thread(stub: StubOpenAI) -> None:
    graph = build_graph(stub)
    handler = SeedLockCallbackHandler(store=open_store("memory://"))
    cfg = {"callbacks": [handler], "configurable": {"thread_id": "graph-1"}}
    with capture_seedlock_events() as logs:
        graph.invoke({"messages": [HumanMessage("Write a haiku about Mars.")]}, cfg)
    check_calls(logs, "graph-1")
    assert [b["seed"] for b in stub.requests] == [7, 7]
    assert handler.flush(timeout=10)
    assert len(handler.monitor.store.requests()) == 2  # type: ignore[union-attr]
    handler.close()


@pytest.mark.parametrize("mode", ["updates", "messages"])
async def test_handler_events_in_async_streams(stub: StubOpenAI, mode: str) -> None:
    graph = build_graph(stub)
    handler = SeedLockCallbackHandler()
    cfg = {"callbacks": [handler], "configurable": {"thread_id": f"graph-{mode}"}}
    with capture_seedlock_events() as logs:
        parts = [
            p
            async for p in graph.astream(
                {"messages": [HumanMessage("Write a haiku about Mars.")]}, cfg, stream_mode=mode
            )
        ]
    assert parts
    check_calls(logs, f"graph-{mode}")
