"""The process-wide switch: every run gets the handler without touching the chain."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from langchain_seedlock import SeedLockCallbackHandler, _autoattach
from langchain_seedlock._autoattach import (
    auto_attached_handler,
    disable_auto_attach,
    enable_auto_attach,
)
from langchain_seedlock._events import CALL
from langchain_seedlock._store import MemoryStore
from langchain_seedlock.testing import capture_seedlock_events
from tests._fixtures.stub_openai import StubOpenAI


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SEEDLOCK_RAISE_INTERNAL_ERRORS", "1")
    monkeypatch.delenv("SEEDLOCK_AUTO_ATTACH", raising=False)
    _autoattach._HOLDER._reset()
    yield
    _autoattach._HOLDER._reset()


def make_model(stub: StubOpenAI) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", seed=1, max_retries=0
    )


def calls(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == CALL]


def test_off_by_default(stub: StubOpenAI) -> None:
    with capture_seedlock_events() as logs:
        make_model(stub).invoke("hi")
    assert calls(logs) == []
    assert auto_attached_handler() is None


def test_enable_attaches_to_every_run(stub: StubOpenAI) -> None:
    store = MemoryStore()
    handler = enable_auto_attach(SeedLockCallbackHandler(store=store))
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | make_model(stub)
    with capture_seedlock_events() as logs:
        make_model(stub).invoke("hi")
        chain.invoke({"q": "hi"})
    assert len(calls(logs)) == 2
    assert auto_attached_handler() is handler
    handler.flush()
    assert sum(s.calls for s in store.requests()) == 2


async def test_enable_covers_threads_and_tasks(stub: StubOpenAI) -> None:
    enable_auto_attach(SeedLockCallbackHandler())
    model = make_model(stub)
    with capture_seedlock_events() as logs:
        thread = threading.Thread(target=lambda: model.invoke("from a thread"))
        thread.start()
        thread.join()
        await model.ainvoke("from a task")
    assert len(calls(logs)) == 2


def test_an_explicit_handler_is_not_doubled(stub: StubOpenAI) -> None:
    enable_auto_attach(SeedLockCallbackHandler())
    explicit = SeedLockCallbackHandler()
    with capture_seedlock_events() as logs:
        make_model(stub).invoke("hi", config={"callbacks": [explicit]})
    assert len(calls(logs)) == 1


def test_disable_stops_attaching(stub: StubOpenAI) -> None:
    handler = SeedLockCallbackHandler()
    enable_auto_attach(handler)
    assert disable_auto_attach() is handler
    with capture_seedlock_events() as logs:
        make_model(stub).invoke("hi")
    assert calls(logs) == []


def test_env_var_is_read_at_the_first_run(
    stub: StubOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEDLOCK_AUTO_ATTACH", "1")
    monkeypatch.setenv("SEEDLOCK_STORE", "memory://")
    with capture_seedlock_events() as logs:
        make_model(stub).invoke("hi")
    assert len(calls(logs)) == 1
    handler = auto_attached_handler()
    assert handler is not None
    assert handler.monitor.store is not None
    assert handler.monitor.store.url == "memory://"
    # decided once: unsetting the variable later does not switch it off...
    monkeypatch.delenv("SEEDLOCK_AUTO_ATTACH")
    assert auto_attached_handler() is handler
    # ...disable_auto_attach does
    disable_auto_attach()
    assert auto_attached_handler() is None


def test_env_var_with_a_bad_store_still_observes(
    stub: StubOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEEDLOCK_RAISE_INTERNAL_ERRORS")
    monkeypatch.setenv("SEEDLOCK_AUTO_ATTACH", "1")
    monkeypatch.setenv("SEEDLOCK_STORE", "nosuch://x")
    with capture_seedlock_events() as logs:
        msg = make_model(stub).invoke("hi")
    assert msg.text
    assert [line["event"] for line in logs] == ["seedlock.internal_error", CALL]
    handler = auto_attached_handler()
    assert handler is not None
    assert handler.monitor.store is None


def test_env_var_other_values_leave_it_off(
    stub: StubOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEDLOCK_AUTO_ATTACH", "0")
    with capture_seedlock_events() as logs:
        make_model(stub).invoke("hi")
    assert calls(logs) == []
