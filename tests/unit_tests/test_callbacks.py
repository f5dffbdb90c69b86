"""SeedLockCallbackHandler: enforcing, failures, streaming, concurrency, failing stores."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from langchain_seedlock import DriftMonitor, LockViolationError, SeedLock, SeedLockCallbackHandler
from langchain_seedlock._events import (
    CALL,
    CALL_FAILED,
    INTERNAL_ERROR,
    LOCK_VIOLATION,
    OUTPUT_DRIFT,
    STORE_ERROR,
    STORE_OVERFLOW,
    UNSEEDED_CALL,
)
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store import BaselineStore, MemoryStore, StoredEvent, open_store
from langchain_seedlock.testing import capture_seedlock_events
from tests._fixtures.stub_openai import StubOpenAI


def make_model(stub: StubOpenAI, **kwargs: Any) -> ChatOpenAI:
    kwargs.setdefault("seed", 1)
    return ChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", max_retries=0, **kwargs
    )


def named(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == name]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'baselines.db'}"


# -- construction -------------------------------------------------------------------
def test_enforce_needs_a_lock() -> None:
    with pytest.raises(ValueError, match="needs a lock"):
        SeedLockCallbackHandler(enforce=True)


def test_store_and_monitor_are_exclusive() -> None:
    with pytest.raises(ValueError, match="either store= or monitor="):
        SeedLockCallbackHandler(store=MemoryStore(), monitor=DriftMonitor())


def test_raise_error_only_when_enforcing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEEDLOCK_RAISE_INTERNAL_ERRORS")
    assert SeedLockCallbackHandler().raise_error is False
    assert SeedLockCallbackHandler(lock=SeedLock(seed=1)).raise_error is False
    assert SeedLockCallbackHandler(lock=SeedLock(seed=1), enforce=True).raise_error is True


def test_store_url_is_opened(sqlite_url: str) -> None:
    handler = SeedLockCallbackHandler(store=sqlite_url)
    assert handler.monitor.store is not None
    assert handler.monitor.store.url == sqlite_url
    handler.close()
    handler.monitor.store.close()


# -- enforcing ----------------------------------------------------------------------
def test_enforce_refuses_unseeded_call_before_sending(stub: StubOpenAI) -> None:
    handler = SeedLockCallbackHandler(lock=SeedLock(seed=7), enforce=True)
    with pytest.raises(LockViolationError) as info:
        make_model(stub, seed=None).invoke("hi", config={"callbacks": [handler]})
    assert info.value.field == "seed"
    assert info.value.attempted is None
    assert stub.requests == []


async def test_enforce_refuses_async_and_stream(stub: StubOpenAI) -> None:
    handler = SeedLockCallbackHandler(lock=SeedLock(seed=7), enforce=True)
    model = make_model(stub, seed=None)
    with pytest.raises(LockViolationError):
        await model.ainvoke("hi", config={"callbacks": [handler]})
    with pytest.raises(LockViolationError):
        async for _ in model.astream("hi", config={"callbacks": [handler]}):
            pass
    with pytest.raises(LockViolationError):
        for _ in model.stream("hi", config={"callbacks": [handler]}):
            pass
    assert stub.requests == []


def test_enforce_on_the_outer_chain_covers_every_model(stub: StubOpenAI) -> None:
    handler = SeedLockCallbackHandler(lock=SeedLock(seed=7, temperature=0.2), enforce=True)
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    good = make_model(stub, seed=7, temperature=0.2)
    bad = make_model(stub, seed=7, temperature=0.9)
    chain = prompt | good | (lambda m: {"q": m.text}) | prompt | bad
    with pytest.raises(LockViolationError) as info:
        chain.invoke({"q": "hi"}, config={"callbacks": [handler]})
    assert (info.value.field, info.value.locked, info.value.attempted) == ("temperature", 0.2, 0.9)
    assert len(stub.requests) == 1  # the first model's call went out, the second did not
    assert stub.requests[0]["seed"] == 7


def test_enforce_lets_a_matching_call_through(stub: StubOpenAI) -> None:
    handler = SeedLockCallbackHandler(lock=SeedLock(seed=7, temperature=0.2), enforce=True)
    with capture_seedlock_events() as logs:
        make_model(stub, seed=7, temperature=0.2).invoke("hi", config={"callbacks": [handler]})
    assert [line["event"] for line in logs] == [CALL]
    assert logs[0]["seedlock.lock_hash"] == SeedLock(seed=7, temperature=0.2).lock_hash


def test_without_enforce_violations_are_logged_and_sent(stub: StubOpenAI) -> None:
    store = MemoryStore()
    lock = SeedLock(seed=7, temperature=0.2)
    handler = SeedLockCallbackHandler(store=store, lock=lock)
    with capture_seedlock_events() as logs:
        make_model(stub, seed=8, temperature=0.9).invoke("hi", config={"callbacks": [handler]})
        make_model(stub, seed=None, temperature=0.2).invoke("hi", config={"callbacks": [handler]})
    violations = named(logs, LOCK_VIOLATION)
    assert {(v["field"], v["locked"], v["attempted"]) for v in violations} == {
        ("seed", 7, 8),
        ("temperature", 0.2, 0.9),
    }
    assert all(v["action"] == "observed" and v["log_level"] == "warning" for v in violations)
    assert all(v["seedlock.lock_hash"] == lock.lock_hash for v in violations)
    (unseeded,) = named(logs, UNSEEDED_CALL)
    assert unseeded["locked"] == 7
    assert unseeded["gen_ai.request.seed"] is None
    assert len(stub.requests) == 2  # observed, not stopped
    handler.flush()
    assert len(store.events(name=LOCK_VIOLATION)) == 2
    assert len(store.events(name=UNSEEDED_CALL)) == 1


# -- failures -----------------------------------------------------------------------
def test_call_failed(stub: StubOpenAI) -> None:
    handler = SeedLockCallbackHandler()
    stub.status = 500
    with capture_seedlock_events() as logs, pytest.raises(Exception, match="stub error") as info:
        make_model(stub).invoke("hi", config={"callbacks": [handler]})
    (failed,) = named(logs, CALL_FAILED)
    assert failed["log_level"] == "warning"
    assert failed["error.type"] == type(info.value).__qualname__
    assert failed["gen_ai.request.model"] == "gpt-4o-mini"
    assert failed["gen_ai.request.seed"] == 1
    assert len(failed["seedlock.request_hash"]) == 64
    assert named(logs, CALL) == []
    assert len(handler._runs) == 0  # the run was forgotten


def test_internal_error_is_logged_and_swallowed(
    stub: StubOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEEDLOCK_RAISE_INTERNAL_ERRORS")
    handler = SeedLockCallbackHandler()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug in the monitor")

    monkeypatch.setattr(handler.monitor, "_decide", broken)
    with capture_seedlock_events() as logs:
        msg = make_model(stub).invoke("hi", config={"callbacks": [handler]})
    assert msg.text  # the call succeeded
    (err,) = named(logs, INTERNAL_ERROR)
    assert err["error.type"] == "RuntimeError"
    assert err["where"] == "DriftMonitor.observe"


def test_internal_error_raises_under_tests(
    stub: StubOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = SeedLockCallbackHandler()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug in the monitor")

    monkeypatch.setattr(handler.monitor, "_decide", broken)
    with pytest.raises(RuntimeError, match="bug in the monitor"):
        make_model(stub).invoke("hi", config={"callbacks": [handler]})


# -- streaming ----------------------------------------------------------------------
@pytest.mark.parametrize("where", ["last", "all"])
def test_stream_fingerprint_and_same_hashes_as_invoke(stub: StubOpenAI, where: str) -> None:
    handler = SeedLockCallbackHandler()
    stub.fingerprint_chunks = where
    model = make_model(stub)
    with capture_seedlock_events() as logs:
        model.invoke("hi", config={"callbacks": [handler]})
        "".join(str(c.content) for c in model.stream("hi", config={"callbacks": [handler]}))
    invoked, streamed = named(logs, CALL)
    assert streamed["openai.response.system_fingerprint"] == "fp_stub_1"
    assert streamed["seedlock.request_hash"] == invoked["seedlock.request_hash"]
    assert streamed["seedlock.output_hash"] == invoked["seedlock.output_hash"]
    assert named(logs, OUTPUT_DRIFT) == []


async def test_tool_calls_are_part_of_the_output(stub: StubOpenAI) -> None:
    handler = SeedLockCallbackHandler()
    model = make_model(stub).bind_tools(
        [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    )
    with capture_seedlock_events() as logs:
        stub.tool_calls = [{"name": "f", "arguments": {"x": 1}}]
        await model.ainvoke("hi", config={"callbacks": [handler]})
        await model.ainvoke("hi", config={"callbacks": [handler]})  # new ids: same output
        stub.tool_calls = [{"name": "f", "arguments": {"x": 2}}]
        await model.ainvoke("hi", config={"callbacks": [handler]})
    (drift,) = named(logs, OUTPUT_DRIFT)
    assert drift["seedlock.previous_output_count"] == 2


# -- concurrency --------------------------------------------------------------------
async def test_200_concurrent_ainvoke_one_handler_one_sqlite_store(
    stub: StubOpenAI, sqlite_url: str
) -> None:
    store = open_store(sqlite_url)
    handler = SeedLockCallbackHandler(store=store)
    # The stub's listen backlog is small: a refused connection is retried by the
    # client, inside the same run (the handler sees one run per ainvoke).
    model = ChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", seed=1, max_retries=20
    )
    prompts = [f"question {i}" for i in range(10)]
    with capture_seedlock_events() as logs:
        await asyncio.gather(
            *(model.ainvoke(prompts[i % 10], config={"callbacks": [handler]}) for i in range(200))
        )
    assert handler.flush(timeout=60)
    calls = named(logs, CALL)
    assert len(calls) == 200
    assert len({c["run_id"] for c in calls}) == 200
    assert named(logs, OUTPUT_DRIFT) == []
    summaries = store.requests(limit=1000)
    assert len(summaries) == 10
    assert sorted(s.calls for s in summaries) == [20] * 10
    assert all(s.distinct_outputs == 1 and s.distinct_backends == 1 for s in summaries)
    (fp,) = store.models()
    assert (fp.system_fingerprint, fp.count) == ("fp_stub_1", 200)
    assert handler.monitor.dropped == 0
    assert len(handler._runs) == 0
    handler.close()
    store.close()


def test_monitor_is_exact_under_threads(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    monitor = DriftMonitor(store)
    records = [
        CallRecord("openai", "m", f"req{i % 5}", f"out{i % 5}", seed=1, system_fingerprint="fp")
        for i in range(50)
    ]
    barrier = threading.Barrier(8)
    found: list[list[str]] = []
    lock = threading.Lock()

    def work() -> None:
        barrier.wait()
        for rec in records:
            names = monitor.observe(rec)
            with lock:
                found.append(names)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert monitor.flush(timeout=60)
    assert len(found) == 400
    assert all(names == [CALL] for names in found)
    assert sorted(s.calls for s in store.requests()) == [80] * 5
    monitor.close()
    store.close()


# -- failing stores -----------------------------------------------------------------
class GatedStore(MemoryStore):
    """A memory store whose writes wait for a gate (to fill the writer's buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def write(
        self,
        records: Sequence[CallRecord],
        events: Sequence[StoredEvent] = (),
        *,
        capture_content: bool = False,
    ) -> None:
        self.entered.set()
        self.gate.wait()
        super().write(records, events, capture_content=capture_content)


def wait_for(logs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The first line named ``name``, waiting for the writer thread to log it."""
    done = threading.Event()
    for _ in range(600):
        found = named(logs, name)
        if found:
            return found[0]
        done.wait(0.05)
    raise AssertionError(f"{name} was never logged")


def test_read_only_store_never_fails_the_call(stub: StubOpenAI, sqlite_url: str) -> None:
    open_store(sqlite_url).close()  # create the file
    store = open_store(sqlite_url, read_only=True)
    handler = SeedLockCallbackHandler(monitor=DriftMonitor(store, buffer_size=0))
    with capture_seedlock_events() as logs:
        first = make_model(stub).invoke("hi", config={"callbacks": [handler]})
        second = make_model(stub).invoke("hi", config={"callbacks": [handler]})
    assert first.text == second.text
    (err,) = named(logs, STORE_ERROR)  # the second failure is rate-limited
    assert err["log_level"] == "warning"
    assert err["seedlock.operation"] == "write"
    assert err["seedlock.store_url"] == sqlite_url
    assert err["error.type"] == "StoreError"
    assert "read-only" in err["error"]
    assert len(named(logs, CALL)) == 2
    store.close()


def test_read_only_store_background_writer(stub: StubOpenAI, sqlite_url: str) -> None:
    open_store(sqlite_url).close()
    store = open_store(sqlite_url, read_only=True)
    handler = SeedLockCallbackHandler(store=store)
    with capture_seedlock_events() as logs:
        make_model(stub).invoke("hi", config={"callbacks": [handler]})
        err = wait_for(logs, STORE_ERROR)
        assert handler.close(timeout=0.2) is False  # unwritten: dropped and reported
        overflow = wait_for(logs, STORE_OVERFLOW)
    assert err["seedlock.operation"] == "write"
    assert overflow["seedlock.dropped"] == 1
    store.close()


def test_deleted_store_never_fails_the_call(stub: StubOpenAI, sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    handler = SeedLockCallbackHandler(monitor=DriftMonitor(store, buffer_size=0))
    Path(sqlite_url.removeprefix("sqlite:///")).unlink()
    with capture_seedlock_events() as logs:
        msg = make_model(stub).invoke("hi", config={"callbacks": [handler]})
    assert msg.text
    errors = named(logs, STORE_ERROR)
    assert {e["seedlock.operation"] for e in errors} == {"read", "write"}
    assert all("deleted" in e["error"] for e in errors)
    store.close()


def test_locked_store_never_fails_the_call(stub: StubOpenAI, sqlite_url: str) -> None:
    open_store(sqlite_url).close()
    store = open_store(sqlite_url, busy_timeout=0.05)
    handler = SeedLockCallbackHandler(monitor=DriftMonitor(store, buffer_size=0))
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with capture_seedlock_events() as logs:
            msg = make_model(stub).invoke("hi", config={"callbacks": [handler]})
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert msg.text
    (err,) = named(logs, STORE_ERROR)
    assert err["seedlock.operation"] == "write"
    assert "locked" in err["error"]
    store.close()


def test_buffer_overflow_is_reported(stub: StubOpenAI) -> None:
    store = GatedStore()
    handler = SeedLockCallbackHandler(monitor=DriftMonitor(store, buffer_size=2))
    model = make_model(stub)
    with capture_seedlock_events() as logs:
        model.invoke("q0", config={"callbacks": [handler]})
        assert store.entered.wait(30)  # the writer holds the first record
        for i in range(1, 5):  # two fit in the buffer, two are dropped
            model.invoke(f"q{i}", config={"callbacks": [handler]})
        store.gate.set()
        assert handler.flush(timeout=30)
    (overflow,) = named(logs, STORE_OVERFLOW)
    assert overflow["seedlock.dropped"] == 2
    assert handler.monitor.dropped == 2
    assert sum(s.calls for s in store.requests()) == 3
    handler.close()


def test_store_error_on_read_then_call_still_recorded(
    stub: StubOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: BaselineStore = MemoryStore()

    def fail(*args: Any) -> Any:
        raise OSError("disk on fire")

    monkeypatch.setattr(store, "outputs_for", fail)
    handler = SeedLockCallbackHandler(monitor=DriftMonitor(store, buffer_size=0))
    with capture_seedlock_events() as logs:
        make_model(stub).invoke("hi", config={"callbacks": [handler]})
    (err,) = named(logs, STORE_ERROR)
    assert (err["seedlock.operation"], err["error.type"]) == ("read", "OSError")
    assert sum(s.calls for s in store.requests()) == 1


# -- locked models ------------------------------------------------------------------
def test_locked_model_hashes_are_preferred(stub: StubOpenAI) -> None:
    from langchain_seedlock import LockedChatOpenAI

    lock = SeedLock(seed=3, temperature=0.5)
    model = LockedChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", lock=lock
    )
    handler = SeedLockCallbackHandler(lock=lock, enforce=True)
    with capture_seedlock_events() as logs:
        msg = model.invoke("hi", config={"callbacks": [handler]})
        streamed = list(model.stream("hi", config={"callbacks": [handler]}))
    assert streamed
    invoked, stream_call = named(logs, CALL)
    meta = msg.response_metadata
    assert invoked["seedlock.request_hash"] == meta["seedlock_request_hash"]
    assert invoked["seedlock.output_hash"] == meta["seedlock_output_hash"]
    assert invoked["seedlock.lock_hash"] == lock.lock_hash
    assert stream_call["seedlock.request_hash"] == meta["seedlock_request_hash"]
    assert stream_call["openai.response.system_fingerprint"] == "fp_stub_1"
