"""A handler, a middleware's monitor, a writer and a store created before ``os.fork()``
work in the child: its calls are stored, once, and ``close()`` says so.

The child runs the test body after a real ``fork()`` and reports through a
pipe; it always leaves with ``os._exit`` (never through pytest's teardown).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_openai import ChatOpenAI

from langchain_seedlock import SeedLockCallbackHandler
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store import MemoryStore, open_store
from langchain_seedlock._store._base import StoredEvent
from langchain_seedlock._store._writer import BackgroundWriter
from tests._fixtures.stub_openai import StubOpenAI

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")


def in_child(body: Callable[[], Any]) -> Callable[[], Any]:
    """Fork; run ``body`` in the child. Returns, in the parent, a function that
    waits for the child and returns what ``body`` returned (through JSON)."""
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads may deadlock
        # in the child: what the code under test is made to survive.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        code = 1
        try:
            out: Any = {"ok": True, "value": body()}
            code = 0
        except BaseException:  # reported to the parent
            out = {"ok": False, "error": traceback.format_exc()}
        finally:
            with contextlib.suppress(BaseException), os.fdopen(write_fd, "w") as f:
                json.dump(out, f)
            os._exit(code)
    os.close(write_fd)

    def wait(timeout: float = 120.0) -> Any:
        ready, _, _ = select.select([read_fd], [], [], timeout)
        if not ready:  # a child stuck (a deadlock): end it, fail
            os.kill(pid, signal.SIGKILL)
        with os.fdopen(read_fd) as f:
            text = f.read() if ready else ""
        _, status = os.waitpid(pid, 0)
        result = json.loads(text) if text else {"ok": False, "error": f"no report ({status})"}
        assert result["ok"], result.get("error")
        return result["value"]

    return wait


def own_model(stub: StubOpenAI, seed: int | None = 1) -> ChatOpenAI:
    # The process's own HTTP client: a keep-alive connection pooled by the
    # parent's client must not be used from both processes either.
    return ChatOpenAI(
        model="gpt-4o-mini",
        base_url=stub.base_url,
        api_key="sk-test",
        seed=seed,
        max_retries=5,
        http_client=httpx.Client(),
    )


def calls(handler: SeedLockCallbackHandler, stub: StubOpenAI, who: str, n: int) -> None:
    model = own_model(stub)
    for i in range(n):
        model.invoke(f"{who} question {i % 7}", config={"callbacks": [handler]})


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fork.db'}"


def check_handler_across_fork(url: str, stub: StubOpenAI) -> None:
    handler = SeedLockCallbackHandler(store=url)
    # Used before the fork: the writer thread, the monitor's cache and the
    # store's connections (this thread's and the writer's) all exist.
    calls(handler, stub, "parent", 10)

    def child() -> bool:
        calls(handler, stub, "child", 50)
        return handler.close(timeout=30)

    wait = in_child(child)
    calls(handler, stub, "parent", 40)
    assert wait() is True  # the child's close() flushed its 50 calls
    assert handler.close(timeout=30)
    with open_store(url) as store:
        summaries = store.requests(limit=1000)
        assert sum(s.calls for s in summaries) == 100
        assert len(summaries) == 14  # 7 prompts each
        (fp,) = store.models()
        assert fp.count == 100


def test_handler_across_fork_sqlite(stub: StubOpenAI, sqlite_url: str) -> None:
    check_handler_across_fork(sqlite_url, stub)


@pytest.mark.postgres
def test_handler_across_fork_postgres(stub: StubOpenAI, fresh_postgres_url: str) -> None:
    check_handler_across_fork(fresh_postgres_url, stub)


class BlockingStore(MemoryStore):
    """Writes block in the parent until released (they do not in the child)."""

    def __init__(self) -> None:
        super().__init__()
        self.parent = os.getpid()
        self.release = threading.Event()

    def write(
        self,
        records: Any,
        events: Any = (),
        *,
        capture_content: bool = False,
    ) -> None:
        if os.getpid() == self.parent:
            self.release.wait(30)
        super().write(records, events, capture_content=capture_content)


def record(name: str) -> CallRecord:
    return CallRecord("openai", "m", name, "o", seed=1, system_fingerprint="fp")


@pytest.fixture
def blocking_store() -> Iterator[BlockingStore]:
    store = BlockingStore()
    yield store
    store.release.set()


def test_queued_records_stay_with_the_parent(blocking_store: BlockingStore) -> None:
    writer = BackgroundWriter(blocking_store, flush_interval=0.0)
    for name in ("p1", "p2", "p3"):
        assert writer.submit(record(name), [StoredEvent("seedlock.call", 0.0)])
    assert writer.pending == 3  # one batch in flight (blocked), or all queued

    def child() -> dict[str, Any]:
        pending_at_start = writer.pending
        assert writer.submit(record("c1"))
        closed = writer.close(timeout=10)
        return {
            "pending_at_start": pending_at_start,
            "closed": closed,
            "written": writer.written,
            "stored": sorted(r.request_hash for r in blocking_store.requests()),
        }

    wait = in_child(child)
    blocking_store.release.set()
    report = wait()
    # The child wrote its own record only: the parent's three are the parent's.
    assert report == {"pending_at_start": 0, "closed": True, "written": 1, "stored": ["c1"]}
    assert writer.close(timeout=10)
    assert sorted(r.request_hash for r in blocking_store.requests()) == ["p1", "p2", "p3"]


def test_a_lock_held_at_fork_is_free_in_the_child() -> None:
    # The monitor's lock held by another thread at the fork: the child must
    # not inherit it held (its holder does not exist there).
    handler = SeedLockCallbackHandler()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with handler.monitor._lock, handler._runs._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)

    def child() -> list[Any]:
        free = []
        for lock in (handler.monitor._lock, handler._runs._lock):
            free.append(lock.acquire(timeout=5))
            if free[-1]:
                lock.release()
        if not all(free):
            return free  # observe() would wait forever
        return [*free, handler.monitor.observe(record("in-child")), handler.close(timeout=5)]

    try:
        wait = in_child(child)
    finally:
        release.set()
        holder.join()
    assert wait() == [True, True, ["seedlock.call"], True]


def test_middleware_across_fork(stub: StubOpenAI, sqlite_url: str) -> None:
    pytest.importorskip("langchain.agents")
    from langchain.agents import create_agent
    from langgraph.checkpoint.memory import InMemorySaver

    from langchain_seedlock import SeedLock, SeedLockMiddleware
    from tests.unit_tests.test_middleware import QUESTION, get_time, get_weather, two_tools

    stub.tool_calls = two_tools  # three model calls per run: two tools, then text
    store = open_store(sqlite_url)
    middleware = SeedLockMiddleware(SeedLock(seed=5), store=store)

    def runs(n: int, who: str) -> None:
        agent = create_agent(
            own_model(stub, seed=None), [get_weather, get_time], middleware=[middleware],
            checkpointer=InMemorySaver(),
        )  # fmt: skip
        for i in range(n):
            agent.invoke(QUESTION, {"configurable": {"thread_id": f"{who}-{i}"}})

    runs(2, "parent")

    def child() -> bool:
        runs(5, "child")
        return middleware.close(timeout=30)

    wait = in_child(child)
    runs(3, "parent")
    assert wait() is True
    assert middleware.close(timeout=30)
    assert sum(s.calls for s in store.requests(limit=1000)) == 3 * (2 + 5 + 3)
    store.close()
