"""Store writers: `BackgroundWriter` (writes off the model call's path) and
`InlineWriter`, behind one `Writer` protocol; `StoreReports`, the
``seedlock.store_error`` / ``seedlock.store_overflow`` lines of a store.

The last step but one of a call's way to the store (door -> `DriftMonitor`
-> writer -> store): a writer reports its own failures, it never calls back
into the monitor.

`BackgroundWriter`:

A model call only appends to a bounded buffer; a daemon thread writes
batches. When the store is down the batch is kept and retried with a bounded
backoff, so nothing is lost until the buffer is full; what overflows is
dropped, counted and reported, never lost silently. Each record and event of
a batch gets an id, so a retry after a write that may have committed (the
connection died after COMMIT) counts nothing twice.

After ``os.fork()`` the child's copy works on its own: its locks are new, its
thread starts with its first record, and the records the parent had queued
are dropped from the child's copy (the parent writes them: writing them from
both would count them twice). The counters (``written``, ``dropped``,
``errors``) then count the child's records only.
"""

from __future__ import annotations

import atexit
import contextlib
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from typing import Any, Final, Protocol

from langchain_seedlock import _events as ev
from langchain_seedlock import _fork
from langchain_seedlock._errors import StoreError
from langchain_seedlock._record import CallRecord, new_id
from langchain_seedlock._redact import redact_optional_url
from langchain_seedlock._store._base import BaselineStore, StoredEvent

_Item = tuple[CallRecord | None, Sequence[StoredEvent]]

# One store_error line per operation per this many seconds; repeats are counted.
STORE_ERROR_INTERVAL: Final = 60.0
# The error of a record submitted after close (seedlock.store_error).
CLOSED_MESSAGE: Final = (
    "closed: close() was called on this DriftMonitor, or on the SeedLockCallbackHandler "
    "or SeedLockMiddleware using it; calls observed since are compared and logged but "
    "not stored (create a new handler, or close it only at shutdown)"
)


class StoreReports:
    """The ``seedlock.store_error`` and ``seedlock.store_overflow`` lines of
    one store (its URL redacted). A failure is logged at most once per
    operation per `STORE_ERROR_INTERVAL`; the next line counts the repeats."""

    def __init__(self, store: BaselineStore) -> None:
        self.url = redact_optional_url(getattr(store, "url", None))
        self.dropped_total = 0
        self._lock = threading.Lock()
        self._errors: dict[str, tuple[float, int]] = {}  # op -> (last logged, suppressed)
        _fork.register(self, after_in_child=StoreReports._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it

    def write_error(self, exc: BaseException) -> None:
        self.error("write", exc)

    def error(self, op: str, exc: BaseException) -> None:
        """Log ``seedlock.store_error`` for operation ``op`` (rate-limited)."""
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._errors.get(op, (None, 0))
            if last is not None and now - last < STORE_ERROR_INTERVAL:
                self._errors[op] = (last, suppressed + 1)
                return
            self._errors[op] = (now, 0)
        text = str(exc)
        ev.emit("StoreReports.error", "warning", ev.STORE_ERROR, **{
            ev.K_OPERATION: op,
            ev.K_STORE_URL: self.url,
            ev.K_ERROR_TYPE: type(exc).__qualname__,
            "error": text if len(text) <= 300 else text[:297] + "...",
            ev.K_SUPPRESSED: suppressed,
        })  # fmt: skip

    def overflow(self, count: int) -> None:
        """Log ``seedlock.store_overflow``: ``count`` records dropped since the last line."""
        with self._lock:
            self.dropped_total += count
            total = self.dropped_total
        ev.emit("StoreReports.overflow", "warning", ev.STORE_OVERFLOW, **{
            ev.K_DROPPED: count, "seedlock.dropped_total": total, ev.K_STORE_URL: self.url,
        })  # fmt: skip


class Writer(Protocol):
    """How the drift monitor writes to its store: `BackgroundWriter` (a thread)
    or `InlineWriter` (in the call). Neither raises into the call."""

    dropped: int
    """Records not written (failed inline, or dropped by a full buffer)."""

    def submit(self, record: CallRecord | None, events: Sequence[StoredEvent] = ()) -> bool: ...
    def flush(self, timeout: float | None = None) -> bool: ...
    def close(self, timeout: float | None = None) -> bool: ...


def open_writer(
    store: BaselineStore, *, buffer_size: int, reports: StoreReports, capture_content: bool
) -> Writer:
    """A `BackgroundWriter` holding up to ``buffer_size`` records, or with
    ``buffer_size=0`` an `InlineWriter`; either logs its failures through ``reports``."""
    if buffer_size <= 0:
        return InlineWriter(store, on_error=reports.write_error, capture_content=capture_content)
    return BackgroundWriter(
        store,
        buffer_size=buffer_size,
        on_error=reports.write_error,
        on_overflow=reports.overflow,
        capture_content=capture_content,
    )


class InlineWriter:
    """Writes in the call, before it returns (``buffer_size=0``: no thread, for
    scripts that must see their rows at once); a failure (or a record
    submitted after `close`) is reported to ``on_error`` and counted, never raised."""

    def __init__(
        self,
        store: BaselineStore,
        *,
        on_error: Callable[[BaseException], None],
        capture_content: bool,
    ) -> None:
        self.store = store
        self.dropped = 0
        self._on_error = on_error
        self._capture = capture_content
        self._closed = False

    def submit(self, record: CallRecord | None, events: Sequence[StoredEvent] = ()) -> bool:
        if self._closed:
            self.dropped += 1
            self._on_error(StoreError(CLOSED_MESSAGE))
            return False
        try:
            self.store.write(
                [record] if record is not None else [], events, capture_content=self._capture
            )
        except Exception as exc:  # noqa: BLE001 - reported, never raised into the call
            self.dropped += 1
            self._on_error(exc)
            return False
        return True

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> bool:
        self._closed = True
        return True


def _ignore_error(exc: BaseException) -> None:
    pass


def _ignore_overflow(count: int) -> None:
    pass


class BackgroundWriter:
    """Write records to ``store`` from a daemon thread, in batches.

    ``submit()`` never blocks on the store and never raises. ``on_error(exc)``
    is called on every failed write attempt (from the writer thread) and for
    a record submitted after `close` (from the caller's), ``on_overflow(n)``
    with the number of records the full buffer dropped since the last report
    (from the writer thread); exceptions they raise are swallowed.
    """

    def __init__(
        self,
        store: BaselineStore,
        *,
        buffer_size: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        on_error: Callable[[BaseException], None] | None = None,
        on_overflow: Callable[[int], None] | None = None,
        capture_content: bool = False,
        max_backoff: float = 5.0,
        name: str = "seedlock-store-writer",
    ) -> None:
        if buffer_size < 1 or batch_size < 1:
            raise ValueError("buffer_size and batch_size must be at least 1")
        self.store = store
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.capture_content = capture_content
        self.max_backoff = max_backoff
        self._on_error = on_error or _ignore_error
        self._on_overflow = on_overflow or _ignore_overflow
        self._buffer: deque[_Item] = deque()
        self._mutex = threading.Lock()  # taken directly by submit (on every call)
        self._cond = threading.Condition(self._mutex)
        self.dropped = 0
        """Records dropped because the buffer was full (total since creation)."""
        self.errors = 0
        """Failed write attempts (total since creation)."""
        self.written = 0
        """Records written to the store."""
        self._reported_dropped = 0
        self._accepted = 0  # sequence number of the last accepted item
        self._done = 0  # items written (or abandoned at close)
        self._flush_waiters = 0
        self._closing = False
        self._abandon = False
        self._name = name
        self._thread: threading.Thread | None = None
        self._start_locked()
        _fork.register(self, after_in_child=BackgroundWriter._after_fork_in_child)
        # A process that exits without close() still gets a bounded last flush.
        ref = weakref.ref(self)
        self._atexit = lambda: _close_ref(ref)
        atexit.register(self._atexit)

    def __repr__(self) -> str:
        return (
            f"BackgroundWriter({self.store!r}, pending={self.pending}, "
            f"dropped={self.dropped}, errors={self.errors})"
        )

    @property
    def pending(self) -> int:
        """Items accepted and not written yet."""
        return self._accepted - self._done

    def submit(self, record: CallRecord | None, events: Sequence[StoredEvent] = ()) -> bool:
        """Queue a record (and events) for writing; False if it was dropped."""
        try:
            with self._mutex:  # the Condition's lock, without its Python-level wrapper
                if self._closing:
                    self.dropped += 1
                    self._reported_dropped += 1  # reported below, not as an overflow
                elif len(self._buffer) >= self.buffer_size:
                    self.dropped += 1
                    self._cond.notify()
                    return False
                else:
                    if self._thread is None:  # in a forked child, the first record
                        self._start_locked()
                    self._buffer.append((record, tuple(events)))
                    self._accepted += 1
                    if len(self._buffer) >= self.batch_size:
                        self._cond.notify()
                    return True
            self._call(self._on_error, StoreError(CLOSED_MESSAGE))
            return False
        except Exception:  # noqa: BLE001  # pragma: no cover - must never fail the model call
            return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._accepted
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                while self._done < target:
                    if self._thread is None or not self._thread.is_alive():
                        return False
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining if remaining is not None else 0.5)
                return True
            finally:
                self._flush_waiters -= 1

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush (up to ``timeout`` seconds), then stop the thread. Idempotent.

        Returns False if records were still unwritten at the deadline; they
        are then counted in ``dropped`` and reported through ``on_overflow``.
        """
        flushed = self.flush(timeout)
        with self._cond:
            self._closing = True
            if not flushed:
                self._abandon = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=max(self.max_backoff, 1.0) + 5.0)
        atexit.unregister(self._atexit)
        return flushed

    def _start_locked(self) -> None:
        """Start the writer thread (caller holds the mutex, or is ``__init__``)."""
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        # See the module docstring. The parent's thread may have held the
        # mutex at the fork: the child gets new ones.
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._thread = None
        self._buffer = deque()
        self.dropped = self.errors = self.written = 0
        self._reported_dropped = self._accepted = self._done = 0
        self._flush_waiters = 0
        self._abandon = False

    # -- writer thread ---------------------------------------------------------
    def _take(self) -> list[_Item] | None:
        """The next batch, waiting for one; None when closing and empty."""
        with self._cond:
            while True:
                self._report_overflow_locked()
                if self._buffer:
                    enough = len(self._buffer) >= self.batch_size
                    if enough or self._flush_waiters or self._closing:
                        break
                    # Linger a little so a burst becomes one batch.
                    self._cond.wait(self.flush_interval)
                    break
                if self._closing:
                    return None
                self._cond.wait(1.0)
            n = min(len(self._buffer), self.batch_size)
            return [self._buffer.popleft() for _ in range(n)]

    def _report_overflow_locked(self) -> None:
        new = self.dropped - self._reported_dropped
        if new:
            self._reported_dropped = self.dropped
            self._call(self._on_overflow, new)

    @staticmethod
    def _call(fn: Callable[[Any], None], arg: object) -> None:
        # A reporting hook that raises must not stop the writer.
        with contextlib.suppress(Exception):
            fn(arg)

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            records, events = _with_ids(batch)
            attempt = 0
            while True:
                try:
                    self.store.write(records, events, capture_content=self.capture_content)
                except Exception as exc:  # noqa: BLE001 - any store failure is retried
                    self.errors += 1
                    attempt += 1
                    self._call(self._on_error, exc)
                    with self._cond:
                        self._report_overflow_locked()
                        if self._abandon:
                            self._abandon_locked(len(batch))
                            break
                        # Exponential backoff with jitter, capped: a store that
                        # comes back is used again within max_backoff seconds.
                        delay = min(self.max_backoff, 0.05 * 2 ** min(attempt, 10))
                        self._cond.wait(delay * (0.5 + random.random() / 2))  # noqa: S311
                        if self._abandon:
                            self._abandon_locked(len(batch))
                            break
                    continue
                # Written and seen to be: the store may forget the records' ids.
                with contextlib.suppress(Exception):
                    self.store.acknowledge(records)
                with self._cond:
                    self.written += len(records)
                    self._done += len(batch)
                    self._cond.notify_all()
                break

    def _abandon_locked(self, in_flight: int) -> None:
        lost = in_flight + len(self._buffer)
        self._buffer.clear()
        self.dropped += lost
        self._done += lost
        self._report_overflow_locked()
        self._cond.notify_all()


def _with_ids(batch: list[_Item]) -> tuple[list[CallRecord], list[StoredEvent]]:
    """The batch's records and events, each a copy with a new random id (unless
    it has one): retrying the batch after a write whose outcome is unknown
    then counts nothing twice, and a record object submitted twice still
    counts twice. Copies, not the submitted objects: those are shared with
    the caller. Done here, in the writer thread, off the model call's path."""
    records = [
        r if r.record_id is not None else _record_with_id(r) for r, _ in batch if r is not None
    ]
    events = [
        e if e.event_id is not None else replace(e, event_id=new_id())
        for _, evs in batch
        for e in evs
    ]
    return records, events


_RECORD_FIELDS = tuple(f.name for f in fields(CallRecord))
_ID_INDEX = _RECORD_FIELDS.index("record_id")


def _record_with_id(record: CallRecord) -> CallRecord:
    """A copy of ``record`` with a new id: what ``dataclasses.replace`` does,
    4x faster (no per-call field introspection); one per record written."""
    values = [getattr(record, name) for name in _RECORD_FIELDS]
    values[_ID_INDEX] = new_id()
    return CallRecord(*values)


def _close_ref(ref: weakref.ref[BackgroundWriter]) -> None:
    writer = ref()
    if writer is not None:
        writer.close(timeout=5.0)
