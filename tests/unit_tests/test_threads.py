"""Shared caches under threads: the request-hash memo, the handler, the locked models.

Each test shrinks the interpreter's switch interval so that threads are
preempted every few bytecodes: a cache that mutates without a lock fails here
within a few hundred calls.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from langchain_seedlock import LockedChatOpenAI, SeedLock, SeedLockCallbackHandler, _hashing
from langchain_seedlock._events import CALL
from langchain_seedlock._hashing import request_hash
from langchain_seedlock._store import open_store
from langchain_seedlock.testing import capture_seedlock_events
from tests._fixtures.stub_openai import StubOpenAI

THREADS = 8
LOCK = SeedLock(seed=11, temperature=0.0)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def tool_schema(i: int) -> dict[str, Any]:
    """A tool definition large enough for the memo (>= 256 bytes of JSON), distinct per ``i``."""
    return {
        "type": "function",
        "function": {
            "name": f"tool_{i}",
            "description": f"Tool number {i}. " + "It looks things up. " * 20,
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["query"],
            },
        },
    }


def run_threads(work: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def target(t: int) -> None:
        try:
            work(t)
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def test_request_hash_memo_under_threads(fast_switching: None) -> None:
    # Three times more distinct schemas than the memo holds, visited in a
    # cycle: every call misses and evicts, and the threads race to evict the
    # same oldest key. Small schemas (a long description, little structure)
    # keep each call cheap, so the evictions are most of the work.
    n = _hashing._MEMO_SIZE * 3
    payloads = [
        {
            "model": "m",
            "tools": [
                {
                    "type": "function",
                    "function": {"name": f"tool_{i}", "description": "Looks things up. " * 16},
                }
            ],
        }
        for i in range(n)
    ]
    expected = [request_hash("openai", p) for p in payloads]

    def work(t: int) -> None:
        for _ in range(10):
            for k in range(n):
                i = (k * 7 + t * 131) % n
                assert request_hash("openai", payloads[i]) == expected[i]

    assert run_threads(work) == []
    assert len(_hashing._MEMO) <= _hashing._MEMO_SIZE


def test_threads_call_models_with_their_own_tools(stub: StubOpenAI, fast_switching: None) -> None:
    # Half the threads use a locked model, half a plain one: both hash the
    # request with its tool schemas (the locked model on the wire payload,
    # the handler on the invocation params). Per thread 40 schemas: 320
    # distinct schemas, more than the memo holds.
    per_thread = 40
    assert THREADS * per_thread > _hashing._MEMO_SIZE
    store = open_store("memory://")
    handler = SeedLockCallbackHandler(store=store)
    stub.auto_tools = False  # plain text answers: the tools are only in the request
    done = [0] * THREADS

    def work(t: int) -> None:
        model: Any
        if t % 2:
            model = LockedChatOpenAI(
                model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", lock=LOCK
            )
        else:
            model = ChatOpenAI(
                model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", seed=11
            )
        for k in range(per_thread):
            bound = model.bind_tools([tool_schema(t * per_thread + k)])
            bound.invoke(f"thread {t} call {k}", config={"callbacks": [handler]})
            done[t] += 1

    with capture_seedlock_events() as logs:
        errors = run_threads(work)
    assert errors == []
    assert done == [per_thread] * THREADS
    calls = [line for line in logs if line["event"] == CALL]
    assert len(calls) == THREADS * per_thread
    assert handler.close(timeout=30)
    assert sum(s.calls for s in store.requests(limit=10_000)) == THREADS * per_thread
