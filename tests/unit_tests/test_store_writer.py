"""`BackgroundWriter`: batching, outage without loss, bounded buffer, prune CLI."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from langchain_seedlock._errors import StoreError
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store import StoredEvent, open_store
from langchain_seedlock._store._memory import MemoryStore
from langchain_seedlock._store._writer import BackgroundWriter
from langchain_seedlock.cli import main


def rec(i: int, at: float | None = None) -> CallRecord:
    return CallRecord(
        provider="openai", request_model="m", request_hash=f"r{i % 10}",
        output_hash="o", seed=1, system_fingerprint="fp",
        at=time.time() if at is None else at,
    )  # fmt: skip


class FlakyStore(MemoryStore):
    """A memory store that fails while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()
        self.attempts = 0

    def write(
        self,
        records: Sequence[CallRecord],
        events: Sequence[StoredEvent] = (),
        *,
        capture_content: bool = False,
    ) -> None:
        self.attempts += 1
        if self.down.is_set():
            raise StoreError("store is down")
        super().write(records, events, capture_content=capture_content)


def wait_for(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def total(store: MemoryStore) -> int:
    return sum(r.calls for r in store.requests(limit=1000))


def test_writes_everything_in_batches() -> None:
    store = FlakyStore()
    w = BackgroundWriter(store, batch_size=100)
    for i in range(1000):
        assert w.submit(rec(i), [StoredEvent("e", float(i))] if i % 10 == 0 else ())
    assert w.flush(timeout=30)
    assert total(store) == 1000
    assert w.written == 1000
    assert w.pending == 0
    assert len(store.events(limit=10_000)) == 100
    assert store.attempts <= 1000  # batched: far fewer writes than records
    w.close()


def test_store_down_then_back_loses_nothing() -> None:
    store = FlakyStore()
    errors: list[BaseException] = []
    w = BackgroundWriter(store, batch_size=50, max_backoff=0.05, on_error=errors.append)
    for i in range(300):
        w.submit(rec(i))
    assert w.flush(timeout=30)
    store.down.set()
    for i in range(300, 1000):
        w.submit(rec(i))
    wait_for(lambda: len(errors) >= 3)
    assert not w.flush(timeout=0.05)  # cannot finish while the store is down
    store.down.clear()
    assert w.flush(timeout=30)
    assert total(store) == 1000
    assert w.dropped == 0
    assert all(isinstance(e, StoreError) for e in errors)
    assert w.errors == len(errors)
    w.close()


def test_overflow_is_dropped_counted_and_reported() -> None:
    store = FlakyStore()
    store.down.set()
    overflow: list[int] = []
    errors: list[BaseException] = []
    w = BackgroundWriter(
        store, buffer_size=10, batch_size=5, max_backoff=0.05,
        on_error=errors.append, on_overflow=overflow.append,
    )  # fmt: skip
    for i in range(5):
        assert w.submit(rec(i))
    wait_for(lambda: errors)  # the first 5 are now the batch being retried
    accepted = [w.submit(rec(i)) for i in range(5, 50)]
    assert accepted.count(True) == 10
    assert accepted.count(False) == 35
    assert w.dropped == 35
    wait_for(lambda: sum(overflow) == 35)
    store.down.clear()
    assert w.flush(timeout=30)
    assert total(store) == 15
    assert w.close()


def test_close_flushes_and_submit_after_close_is_dropped() -> None:
    store = FlakyStore()
    w = BackgroundWriter(store, flush_interval=10.0)  # only a flush makes it write
    for i in range(7):
        w.submit(rec(i))
    assert w.close(timeout=30)
    assert total(store) == 7
    assert w.submit(rec(0)) is False
    assert w.close() is True  # idempotent


def test_close_gives_up_on_a_dead_store_and_counts() -> None:
    store = FlakyStore()
    store.down.set()
    overflow: list[int] = []
    w = BackgroundWriter(store, max_backoff=0.05, on_overflow=overflow.append)
    for i in range(20):
        w.submit(rec(i))
    assert w.close(timeout=0.3) is False
    assert w.dropped == 20
    assert sum(overflow) == 20


def test_hooks_that_raise_do_not_stop_the_writer() -> None:
    store = FlakyStore()
    store.down.set()

    def boom(_: object) -> None:
        raise RuntimeError("hook bug")

    w = BackgroundWriter(store, max_backoff=0.02, on_error=boom, on_overflow=boom)
    w.submit(rec(0))
    wait_for(lambda: store.attempts >= 2)
    store.down.clear()
    assert w.flush(timeout=30)
    assert total(store) == 1
    w.close()


async def test_submit_from_asyncio_tasks() -> None:
    store = FlakyStore()
    w = BackgroundWriter(store)

    async def call(i: int) -> None:
        await asyncio.sleep(0)
        w.submit(rec(i))

    await asyncio.gather(*(call(i) for i in range(200)))
    assert await asyncio.to_thread(w.flush, 30)
    assert total(store) == 200
    w.close()


def test_writer_with_sqlite_and_threads(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    w = BackgroundWriter(store, batch_size=64)
    threads = [
        threading.Thread(target=lambda: [w.submit(rec(i)) for i in range(500)]) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.close(timeout=60)
    assert sum(r.calls for r in store.requests()) == 4000
    store.close()


def test_prune_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    now = time.time()
    with open_store(url) as s:
        s.write([rec(1, at=now - 40 * 86400), rec(2, at=now - 86400), rec(3, at=now)])
    assert main(["prune", "--store", url, "--older-than", "30d"]) == 0
    assert "pruned 1 rows" in capsys.readouterr().out
    assert main(["prune", "--store", url, "--keep-last", "1"]) == 0
    with open_store(url) as s:
        assert [r.request_hash for r in s.requests()] == ["r3"]
    assert main(["prune", "--store", url]) == 2
    assert main(["prune", "--store", "nope://x", "--keep-last", "1"]) == 1
    assert "unknown store URL scheme" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune", "--older-than", "soon"])


class KeepingStore(MemoryStore):
    """A memory store that keeps the record objects it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[CallRecord] = []

    def write(
        self,
        records: Sequence[CallRecord],
        events: Sequence[StoredEvent] = (),
        *,
        capture_content: bool = False,
    ) -> None:
        self.seen += records
        super().write(records, events, capture_content=capture_content)


def test_written_copy_keeps_every_field_and_gets_an_id() -> None:
    store = KeepingStore()
    writer = BackgroundWriter(store)
    submitted = CallRecord(
        provider="azure_openai", request_model="m", request_hash="r", output_hash="o",
        seed=7, system_fingerprint="fp", response_model="m-2024", service_tier="default",
        lock_hash="l", params={"temperature": 0.2}, input_tokens=3, output_tokens=4,
        run_id="run", parent_run_id="parent", context={"thread_id": "t"}, output_text="hi",
        output_token_list=("h", "i"), prompt_text="p", complete=False, at=12.5,
    )  # fmt: skip
    try:
        assert writer.submit(submitted)
        assert writer.flush(timeout=10)
    finally:
        writer.close()
    (written,) = store.seen
    assert written is not submitted
    assert submitted.record_id is None
    assert written.record_id is not None
    assert len(written.record_id) == 32
    written.record_id = None
    assert written == submitted
