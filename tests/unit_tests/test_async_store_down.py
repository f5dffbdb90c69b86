"""``ainvoke`` with the PostgreSQL store down: every call succeeds and the
handler never holds the event loop for a store read.

Two kinds of "down": nothing listens on the port (connection refused, the
client learns it at once), and a socket that accepts and never answers (the
client waits for its connect timeout: a read made on the loop's thread stalls
the loop for seconds).

What is measured, over 200 concurrent ``ainvoke``:

- the loop's lag, by a ticker task (sleep 1 ms, record how late it wakes);
- how long each of the handler's callbacks holds the loop (wall clock).

The ticker's lag is printed, not asserted: on a loaded 2-core machine one
turn of the loop runs the ready steps of up to 200 LangChain calls (a few ms
of CPU each), so it is late by hundreds of milliseconds with no store at all
(measured: 0.4 s to 3 s, store or not). What the design guarantees, and what
is asserted, is that no store read or write runs on the loop's thread and
that no callback of the handler holds the loop anywhere near a connect
timeout (before the fix, one callback held it for the whole timeout).

The stub OpenAI server runs in its own process here: in this process its
threads (one per request) would contend with the loop for the GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

from langchain_seedlock import DriftMonitor, SeedLockCallbackHandler
from langchain_seedlock._events import CALL, FINGERPRINT_CHANGED, OUTPUT_DRIFT, STORE_ERROR
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store import MemoryStore, open_store
from langchain_seedlock.testing import capture_seedlock_events

CALLS = 200
CONNECT_TIMEOUT = 2  # seconds; libpq's minimum
# Half of CONNECT_TIMEOUT (a read on the loop's thread with the server silent
# holds it that long), far above a callback's own work (~0.1 ms) and the
# preemption a loaded machine adds to it (0.27 s seen with 8 test processes
# on 2 cores): it separates "blocked on the store" from "slow machine".
CALLBACK_BOUND = 1.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stub_process() -> Iterator[str]:
    """The stub OpenAI server (tests/_fixtures/stub_openai.py) in a process of
    its own; yields its base URL."""
    code = (
        "import sys\n"
        "from tests._fixtures.stub_openai import StubOpenAI\n"
        "stub = StubOpenAI().start()\n"
        "print(stub.base_url, flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://"), base_url
        yield base_url
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the stub exits at end of input
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def down_server(kind: str) -> Iterator[int]:
    """A port on 127.0.0.1 where PostgreSQL is "down" in the way ``kind`` says."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    if kind == "refused":
        sock.close()  # nothing listens: connect() is refused at once
        yield port
        return
    # Listening, never accepting: the kernel completes the handshakes (up to
    # the backlog), the client sends its startup packet and waits for an
    # answer that never comes, until its connect timeout.
    sock.listen(1024)
    try:
        yield port
    finally:
        sock.close()


class LoopLag:
    """Ticks every millisecond on the running loop; ``max`` is the worst lateness."""

    def __init__(self) -> None:
        self.max = 0.0
        self.ticks = 0
        self._stop = False

    async def run(self) -> None:
        while not self._stop:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            self.max = max(self.max, time.perf_counter() - start - 0.001)
            self.ticks += 1

    def stop(self) -> None:
        self._stop = True


class TimedHandler(SeedLockCallbackHandler):
    """Records how long each callback on the loop's thread takes (wall clock)."""

    def __init__(self, *args: Any, loop_thread: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loop_thread = loop_thread
        self.longest = 0.0

    def _timed(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            if threading.get_ident() == self.loop_thread:
                self.longest = max(self.longest, time.perf_counter() - start)

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(super().on_chat_model_start, *args, **kwargs)

    def on_llm_end(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(super().on_llm_end, *args, **kwargs)


def spy_threads(store: Any, names: tuple[str, ...]) -> list[tuple[str, int]]:
    """Record (method, thread id) for every call of ``names`` on ``store``."""
    seen: list[tuple[str, int]] = []
    for name in names:
        method = getattr(store, name)

        def spy(*args: Any, __name: str = name, __method: Any = method, **kwargs: Any) -> Any:
            seen.append((__name, threading.get_ident()))
            return __method(*args, **kwargs)

        setattr(store, name, spy)
    return seen


@pytest.mark.parametrize("kind", ["refused", "timeout"])
async def test_200_ainvoke_with_the_postgres_store_down(
    stub_process: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("psycopg")
    loop_thread = threading.get_ident()
    with down_server(kind) as port:
        store = open_store(
            f"postgresql://u:pw@127.0.0.1:{port}/db",
            connect=False,
            connect_timeout=CONNECT_TIMEOUT,
        )
        operations = ("outputs_for", "fingerprints_for", "write")
        seen = spy_threads(store, operations)
        handler = TimedHandler(store=store, loop_thread=loop_thread)
        # The stub's listen backlog is small: a refused connection is retried
        # by the client, inside the same run.
        model = ChatOpenAI(
            model="gpt-4o-mini", base_url=stub_process, api_key="sk-test", seed=1, max_retries=20
        )
        lag = LoopLag()
        ticker = asyncio.create_task(lag.run())
        try:
            with capture_seedlock_events() as logs:
                await asyncio.sleep(0.05)  # the ticker is running
                # Distinct prompts: every call is a cache miss, each one a read.
                results = await asyncio.gather(
                    *(
                        model.ainvoke(f"question {i}", config={"callbacks": [handler]})
                        for i in range(CALLS)
                    )
                )
                await asyncio.sleep(0.05)
                lag.stop()
                await ticker
                # Off the loop: waits for the reader to decide every call (the
                # writer cannot flush, the store being down).
                await asyncio.to_thread(handler.flush, CONNECT_TIMEOUT * 3)
        finally:
            lag.stop()
            await asyncio.to_thread(handler.close, 0.5)
            store.close()

    with capsys.disabled():
        print(
            f"\n[{kind}] loop lag over {lag.ticks} ticks: max {lag.max * 1000:.1f} ms; "
            f"longest handler callback on the loop: {handler.longest * 1000:.1f} ms"
        )
    assert len(results) == CALLS
    assert all(isinstance(r, AIMessage) for r in results)
    assert len([line for line in logs if line["event"] == CALL]) == CALLS
    assert any(line["event"] == STORE_ERROR for line in logs)
    assert {name for name, _ in seen} >= {"outputs_for"}  # the store was tried
    assert [name for name, thread in seen if thread == loop_thread] == []
    assert lag.ticks > 0
    assert handler.longest < CALLBACK_BOUND, f"a callback held the loop {handler.longest:.3f}s"


class SlowReads(MemoryStore):
    """A memory store whose reads take ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def outputs_for(self, request_hash: str) -> list[Any]:
        time.sleep(self.delay)
        return super().outputs_for(request_hash)

    def fingerprints_for(self, model_key: str) -> list[Any]:
        time.sleep(self.delay)
        return super().fingerprints_for(model_key)


def call(request_hash: str, fingerprint: str, run_id: str) -> CallRecord:
    return CallRecord(
        "openai", "m", request_hash, "out", seed=1, system_fingerprint=fingerprint, run_id=run_id
    )


async def test_calls_are_compared_in_order_while_a_read_waits() -> None:
    # r1 and the model are in memory; r2 is not (its read is slow). A call of
    # r1 that ends after r2's must still be compared after it: the model's
    # fingerprint changes with r2's call (fp1 -> fp2), not with r1's.
    monitor = DriftMonitor(SlowReads(delay=0.2))
    try:
        with capture_seedlock_events() as logs:
            assert await monitor.aobserve(call("r1", "fp1", "first")) == [CALL]
            monitor.observe(call("r2", "fp2", "second"))  # a miss: waits for the reader
            monitor.observe(call("r1", "fp2", "third"))  # in memory, but behind "second"
            assert await asyncio.to_thread(monitor.flush, 10)
        changed = [line for line in logs if line["event"] == FINGERPRINT_CHANGED]
        assert [line["run_id"] for line in changed] == ["second"]
        assert [line["run_id"] for line in logs if line["event"] == CALL] == [
            "first",
            "second",
            "third",
        ]
    finally:
        monitor.close()


async def test_aobserve_awaits_a_slow_read_without_holding_the_loop() -> None:
    store = SlowReads(delay=1.5)  # above CALLBACK_BOUND: a blocked loop would show
    first = DriftMonitor(store)
    assert await first.aobserve(call("r", "fp", "a")) == [CALL]
    assert first.close()
    lag = LoopLag()
    ticker = asyncio.create_task(lag.run())
    second = DriftMonitor(store)
    drifted = replace(call("r", "fp", "b"), output_hash="other")
    names = await second.aobserve(drifted)  # reads the baseline: 2 x 1.5 s
    lag.stop()
    await ticker
    assert names == [CALL, OUTPUT_DRIFT]
    assert lag.ticks > 10  # the loop ran meanwhile
    assert lag.max < CALLBACK_BOUND
    assert second.close()
