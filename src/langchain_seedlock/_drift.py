"""`DriftMonitor`: the one place where calls are compared with their baseline.

A call's way to the store is four files, each handing it on: a door
(`_callbacks.py`, `_middleware.py`) builds its `CallRecord` with the pure
`_observe.record_from_result` and hands it to `DriftMonitor.observe` (or
`aobserve`) here; the monitor decides (the pure `_decide.decide` on the
history this process knows, `_baselines.BaselineCache`), logs (the pure
builders of `_drift_events`) and hands the record to its `Writer`
(`_store/_writer.py`), which writes it to the store (`_store/_sql.py` for
SQLite and PostgreSQL, `_store/_memory.py`). Nothing calls back up that
way; what the monitor reads from the store on a cache miss is
`_drift_store.StoreReads`. Nothing here may fail a model call: a store
failure is logged as ``seedlock.store_error``, any other exception as
``seedlock.internal_error`` (re-raised when ``SEEDLOCK_RAISE_INTERNAL_ERRORS=1``).

Speed: the per-call path is a dict lookup and a few comparisons under a lock.
The store is read only on a cache miss, and written by a `BackgroundWriter`
thread (or inline with ``buffer_size=0``).

Never on an event loop's thread: a cache miss seen there (the callback
handler runs inline in ``ainvoke``) or in `DriftMonitor.aobserve` is read
and decided by the monitor's reader thread, in the caller's context, so a
store that is slow or down (a connect timeout is seconds) never stalls the
loop. `observe` on a loop waits at most `LOOP_READ_WAIT` for that decision
(a healthy store answers well within it: the events are logged before the
call returns, as in a thread); a slower one is logged when it is done, and
`flush()` waits for it. Calls are still compared in order: while a call of a
request (or model) waits for the reader, later calls of the same request or
model queue behind it instead of being decided from memory first.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Final

from langchain_seedlock import _drift_events as dev
from langchain_seedlock import _events as ev
from langchain_seedlock import _fork
from langchain_seedlock._args import check_bool, check_int, check_number, check_store
from langchain_seedlock._baselines import BaselineCache
from langchain_seedlock._decide import CallDecision, Verdict, decide
from langchain_seedlock._drift_store import StoreReads
from langchain_seedlock._errors import InvalidArgumentError
from langchain_seedlock._identity import (
    check_env_backend,
    identity_of,
    note_new_variant,
    partial_id,
    track,
)
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store._base import BaselineStore, FingerprintSeen, OutputSeen, StoredEvent
from langchain_seedlock._store._writer import StoreReports, Writer, open_writer

_WHERE_EMIT: Final = "DriftMonitor.emit"
# Seconds `observe` on an event loop's thread waits for the reader thread to
# decide a cache miss (only when the reader is idle: a busy reader means the
# store is slow, and the call returns at once). A read from a healthy store
# takes well under a millisecond.
LOOP_READ_WAIT: Final = 0.002


@dataclass(slots=True)
class _Deferred:
    """A call whose decision waits for a store read by the reader thread."""

    record: CallRecord
    model_key: str
    context: contextvars.Context  # the caller's: log lines keep its bound context
    future: Future[list[str]] = field(default_factory=Future)
    unqueued: bool = False  # no longer counted in the monitor's pending keys


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class DriftMonitor:
    """Compare each call with what the same request produced before, and log events.

    One monitor is shared by every door (callback handler, agent middleware,
    probe) that should see the same baseline; it is safe to use from many
    threads and asyncio tasks at once.

    Args:
        store: where baselines persist (``None``: this process's memory only).
        capture_content: put prompt and output text in events and the store.
        call_level: the level of the per-call ``seedlock.call`` line.
        buffer_size: records the background writer holds while the store is
            slow or down; beyond, records are dropped and reported
            (``seedlock.store_overflow``). ``0`` writes inline, no thread.
        cache_size: request hashes (and models) kept in memory; older ones are
            read back from the store when seen again.

    Example:
        ```python
        monitor = DriftMonitor(open_store("sqlite:///baselines.db"))
        names = monitor.observe(record)  # e.g. ["seedlock.call", "seedlock.output_drift"]
        monitor.close()
        ```
    """

    def __init__(
        self,
        store: BaselineStore | None = None,
        *,
        capture_content: bool = False,
        call_level: str = "debug",
        buffer_size: int = 10_000,
        cache_size: int = 4096,
    ) -> None:
        owner = "DriftMonitor"
        check_store(owner, "store", store, urls=False)
        check_bool(owner, "capture_content", capture_content)
        if not isinstance(call_level, str) or call_level.lower() not in ev.LEVEL_NAMES:
            raise InvalidArgumentError(
                owner, "call_level", call_level,
                f"is an unknown log level; use one of {list(ev.LEVEL_NAMES)}",
            )  # fmt: skip
        self._call_level_number = ev.level_number(call_level)
        check_int(owner, "buffer_size", buffer_size, minimum=0)
        check_int(owner, "cache_size", cache_size, minimum=1)
        check_env_backend()  # a malformed SEEDLOCK_BACKEND fails here, never in a call
        self.store = store
        self.capture_content = capture_content
        self.call_level = call_level.lower()
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self._cache = BaselineCache(cache_size)  # used under self._lock
        self._writer: Writer | None = None
        self._reads: StoreReads | None = None
        if store is not None:
            reports = StoreReports(store)
            self._writer = open_writer(
                store, buffer_size=buffer_size, reports=reports, capture_content=capture_content
            )
            self._reads = StoreReads(store, self._writer, reports)
        self._closed = False
        # The reader thread (see the module docstring), started on first use;
        # its queue and the keys of the calls in it share the monitor's lock.
        self._reader: threading.Thread | None = None
        self._reader_cond = threading.Condition(self._lock)
        self._deferred: deque[_Deferred] = deque()
        self._reading = False  # the reader is working on a call
        self._pending_requests: dict[str, int] = {}  # request hash -> deferred calls
        self._pending_models: dict[str, int] = {}  # model key -> deferred calls
        _fork.register(self, after_in_child=DriftMonitor._after_fork_in_child)

    def __repr__(self) -> str:
        return f"DriftMonitor(store={self.store!r}, capture_content={self.capture_content})"

    # -- public ------------------------------------------------------------------
    def observe(self, record: CallRecord) -> list[str]:
        """Compare ``record`` with its baseline, log the events, queue the writes.

        Returns the names of the events emitted (``seedlock.call`` first).
        Never raises (but see ``SEEDLOCK_RAISE_INTERNAL_ERRORS``).
        """
        try:
            model_key = record.model_key
            names = self._decide(record, model_key, only_cached=True)
            if names is not None:
                return names
            if self.store is not None and _on_event_loop():
                deferred = self._defer(record, model_key)
                if isinstance(deferred, list):
                    return deferred
                return self._wait_on_loop(*deferred)
            return self._decide(record, model_key, *self._read_history(record, model_key)) or []
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("DriftMonitor.observe", exc)
            return []

    async def aobserve(self, record: CallRecord) -> list[str]:
        """`observe` for asyncio code: a store read on a cache miss is made by
        the reader thread and awaited (the loop keeps running meanwhile)."""
        try:
            model_key = record.model_key
            names = self._decide(record, model_key, only_cached=True)
            if names is not None:
                return names
            if self.store is None:
                return self._decide(record, model_key) or []
            deferred = self._defer(record, model_key)
            if isinstance(deferred, list):
                return deferred
            # Shielded: a cancelled caller must not cancel the decision.
            return await asyncio.shield(asyncio.wrap_future(deferred[0].future))
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("DriftMonitor.aobserve", exc)
            return []

    def report_violations(
        self,
        record_fields: Mapping[str, Any],
        violations: Sequence[Any],
        *,
        lock_hash: str | None,
        source: str,
    ) -> list[str]:
        """Log (and store) ``seedlock.unseeded_call`` / ``seedlock.lock_violation``
        for a call that was observed, not stopped: a missing seed is an unseeded
        call, any other difference from the lock a violation (one line per field).

        ``violations`` are `_enforce.Violation` objects (field, locked,
        attempted, kind); ``record_fields`` the call's event fields.
        """
        try:
            now = time.time()
            found = dev.violation_events(
                record_fields, violations, lock_hash=lock_hash, source=source
            )
            for name, fields in found:
                ev.emit("DriftMonitor.report_violations", "warning", name, **fields)
            self._submit(None, [StoredEvent(name, now, fields) for name, fields in found])
            return [name for name, _ in found]
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("DriftMonitor.report_violations", exc)
            return []

    def report_unseeded(self, record_fields: Mapping[str, Any], *, source: str) -> list[str]:
        """Log (and store) ``seedlock.unseeded_call`` for a call sent without a seed
        when no lock is configured."""
        return self._report("DriftMonitor.report_unseeded", ev.UNSEEDED_CALL, {
            **record_fields, "source": source,
        })  # fmt: skip

    def report_failure(self, fields: Mapping[str, Any], error: BaseException) -> list[str]:
        """Log (and store) ``seedlock.call_failed`` for a call that raised."""
        return self._report("DriftMonitor.report_failure", ev.CALL_FAILED, {
            **fields, ev.K_ERROR_TYPE: type(error).__qualname__,
        })  # fmt: skip

    def _report(self, where: str, name: str, fields: dict[str, Any]) -> list[str]:
        try:
            ev.emit(where, "warning", name, **fields)
            self._submit(None, [StoredEvent(name, time.time(), fields)])
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error(where, exc)
            return []
        return [name]

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record observed so far is in the store (False on timeout).

        Calls still waiting for the reader thread are decided (and logged) first.
        """
        check_number("DriftMonitor.flush", "timeout", timeout, minimum=0, allow_none=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._wait_for_reader(deadline):
            return False
        if self._reads is not None:
            self._reads.join_reports(deadline)
        return self._writer is None or self._writer.flush(_remaining(deadline))

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush and stop the reader and writer threads (the store stays open). Idempotent.

        Final: a call observed afterwards is still compared and logged, but
        not stored; it is reported as ``seedlock.store_error`` (operation
        ``write``, rate-limited) and counted in `dropped`.
        """
        check_number("DriftMonitor.close", "timeout", timeout, minimum=0, allow_none=True)
        if self._closed:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        read = self._wait_for_reader(deadline)
        with self._lock:
            self._closed = True
            self._reader_cond.notify_all()  # an idle reader exits
        closed = self._writer is None or self._writer.close(_remaining(deadline))
        return closed and read

    @property
    def dropped(self) -> int:
        """Records the writer dropped (buffer full, unwritten at close, or
        observed after close)."""
        return self._writer.dropped if self._writer is not None else 0

    def _submit(self, record: CallRecord | None, events: Sequence[StoredEvent]) -> None:
        """Hand a record and its events to the writer (the step to the store)."""
        if self._writer is not None and (record is not None or events):
            self._writer.submit(record, events)

    # -- the comparison ------------------------------------------------------------
    def _read_history(
        self, record: CallRecord, model_key: str
    ) -> tuple[list[OutputSeen] | None, list[FingerprintSeen] | None]:
        """What the store knows of the request and the model this process does not."""
        reads = self._reads
        if reads is None:
            return None, None
        with self._lock:
            need_request, need_model = self._cache.misses(record.request_hash, model_key)
        store = reads.store
        outputs = reads.read(store.outputs_for, record.request_hash) if need_request else None
        reads.load_sketcher(outputs)
        fingerprints = reads.read(store.fingerprints_for, model_key) if need_model else None
        return outputs, fingerprints

    def _decide(
        self,
        record: CallRecord,
        model_key: str,
        outputs: list[OutputSeen] | None = None,
        fingerprints: list[FingerprintSeen] | None = None,
        *,
        only_cached: bool = False,
        deferred: _Deferred | None = None,
    ) -> list[str] | None:
        """Decide under the lock (`_decide.decide` on the cached history), then
        log and queue; the event names.

        ``only_cached``: return None, deciding nothing, unless the request and
        the model are both in memory and no earlier call of either waits for
        the reader (else the store is read first, outside the lock). The
        common case so takes the lock once. ``deferred``: the reader's call,
        no longer pending once decided.
        """
        # Before the lock: the server's fields are a cache lookup (`_identity`).
        identity = identity_of(record)
        cache = self._cache
        with self._lock:
            if only_cached and (
                record.request_hash not in cache.requests
                or model_key not in cache.models
                or (
                    self._pending_requests
                    and (
                        record.request_hash in self._pending_requests
                        or model_key in self._pending_models
                    )
                )
            ):
                return None
            if deferred is not None:
                self._unqueue_locked(deferred)
            model = cache.model(model_key, fingerprints)
            identity, changes = track(model.identity, identity, model.reported)
            record.identity = identity  # before the record is shared (events, writer)
            backend = identity.id
            if record.complete:  # a cut stream says nothing about the backend
                model.identity = identity
            rate = cache.rate(model_key, backend) if record.seed is not None else None
            d = decide(
                record, backend, cache.request(record.request_hash, outputs),
                model if record.complete else None, rate,  # no drift for an unseeded call
                report_missing=model_key not in cache.missing_reported,
                backend_changed=changes, partial=partial_id(identity),
            )  # fmt: skip
            if d.fingerprint_missing:
                cache.missing_reported.add(model_key)
            if d.verdict is not None and not d.incomplete:
                record.known = d.verdict.known if d.verdict.repeat else None
        if d.verdict is not None and d.verdict.verdict is Verdict.NEW_VARIANT:
            note_new_variant(record.base_url)  # a restart no call saw? (`_identity`)
        names = dev.event_names(d)
        stored = self._emit(record, backend, d, len(names) > 1)
        if record.otel is not None:  # OpenTelemetry export (_otel.py): the verdict, once known
            record.otel.decided(record, d.verdict, d.rate, d.explanation)
        # An incomplete output is not a variant: only its event is stored.
        self._submit(None if d.incomplete else record, stored)
        return names

    def _emit(
        self, record: CallRecord, backend: str, d: CallDecision, findings: bool
    ) -> list[StoredEvent]:
        """Log the call line (its fields built only when it is logged) and the
        findings; the events to store."""
        log = ev.get_logger().bind()  # resolve the lazy proxy once
        base: dict[str, Any] | None = None
        if ev.is_enabled(log, self._call_level_number):
            base = dev.base_fields(record, backend)
            call = dev.call_fields(record, base, d, capture_content=self.capture_content)
            ev.emit_on(log, _WHERE_EMIT, self.call_level, ev.CALL, call)
        if not findings:
            return []  # the common case: nothing needs attention
        if base is None:
            base = dev.base_fields(record, backend)
        stored: list[StoredEvent] = []
        for level, name, fields, keep in dev.findings(
            record, base, d, capture_content=self.capture_content,
            sketcher=self._reads.sketcher if self._reads is not None else None,
        ):  # fmt: skip
            if name == ev.REPRODUCIBILITY_CHANGED and self._reads is not None:
                # Once per fleet: checked against what other processes stored.
                self._reads.report_rate_change(fields, record.at, on_loop=_on_event_loop())
                continue
            ev.emit_on(log, _WHERE_EMIT, level, name, fields)
            if name in (ev.OUTPUT_DRIFT, ev.OUTPUT_VARIANT):
                d.explanation = fields[ev.K_SUMMARY]
            if keep:
                extra = {"level": level} if name == ev.OUTPUT_DRIFT else {}
                stored.append(StoredEvent(name, record.at, {**fields, **extra}))
        return stored

    # -- the reader thread ----------------------------------------------------------
    def _defer(self, record: CallRecord, model_key: str) -> tuple[_Deferred, bool] | list[str]:
        """Queue a cache miss for the reader thread (the call, and whether the
        reader was idle); or decide it now (the event names) when reads are
        paused and no earlier call of its keys waits."""
        with self._lock:
            paused = self._reads is not None and self._reads.reads_paused()
            if not (
                paused
                and record.request_hash not in self._pending_requests
                and model_key not in self._pending_models
            ):
                item = _Deferred(record, model_key, contextvars.copy_context())
                idle = not self._deferred and not self._reading
                self._deferred.append(item)
                pr, pm = self._pending_requests, self._pending_models
                pr[record.request_hash] = pr.get(record.request_hash, 0) + 1
                pm[model_key] = pm.get(model_key, 0) + 1
                if self._reader is None:
                    self._reader = threading.Thread(
                        target=self._read_loop, name="seedlock-store-reader", daemon=True
                    )
                    self._reader.start()
                self._reader_cond.notify_all()
                return item, idle
        # The store is down: compare with what this process knows, as `observe` does.
        return self._decide(record, model_key) or []

    @staticmethod
    def _wait_on_loop(item: _Deferred, idle: bool) -> list[str]:
        """The names of a deferred call if the reader decides it within
        `LOOP_READ_WAIT` (waited for only when the reader was idle: else the
        store is slow), else ``[]`` (it is logged when decided)."""
        if not idle:
            return []
        try:
            return item.future.result(LOOP_READ_WAIT)
        except TimeoutError:
            return []

    def _unqueue_locked(self, item: _Deferred) -> None:
        if item.unqueued:
            return
        item.unqueued = True
        for pending, key in (
            (self._pending_requests, item.record.request_hash),
            (self._pending_models, item.model_key),
        ):
            left = pending[key] - 1
            if left:
                pending[key] = left
            else:
                del pending[key]

    def _read_loop(self) -> None:
        while True:
            with self._lock:
                while not self._deferred:
                    if self._closed:
                        self._reader = None
                        return
                    self._reader_cond.wait()
                item = self._deferred.popleft()
                self._reading = True
            names: list[str] = []
            try:
                names = item.context.run(self._decide_deferred, item)
            except Exception as exc:  # noqa: BLE001 - only under SEEDLOCK_RAISE_INTERNAL_ERRORS
                # Surfaced as any thread's uncaught exception (pytest reports
                # it); the reader goes on with the next call.
                threading.excepthook(
                    threading.ExceptHookArgs(
                        (type(exc), exc, exc.__traceback__, threading.current_thread())
                    )
                )
            finally:
                with self._lock:
                    self._unqueue_locked(item)
                    self._reading = False
                    self._reader_cond.notify_all()  # flush() may wait
            if not item.future.done():
                item.future.set_result(names)

    def _decide_deferred(self, item: _Deferred) -> list[str]:
        record, model_key = item.record, item.model_key
        try:
            history = self._read_history(record, model_key)
            return self._decide(record, model_key, *history, deferred=item) or []
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("DriftMonitor.observe", exc)
            return []

    def _wait_for_reader(self, deadline: float | None) -> bool:
        """Wait until no call waits for the reader thread; False at the deadline."""
        with self._lock:
            while self._deferred or self._reading:
                if self._reader is None or not self._reader.is_alive():
                    return False
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    return False
                self._reader_cond.wait(remaining)
        return True

    def _after_fork_in_child(self) -> None:
        # The parent's threads may have held the lock, the reader thread is
        # gone, and the calls waiting for it are the parent's (it decides and
        # stores them): the child starts with an empty queue. What the cache
        # knew at the fork stays (it is this process's knowledge too).
        self._lock = threading.Lock()
        self._reader_cond = threading.Condition(self._lock)
        self._reader = None
        self._deferred = deque()
        self._reading = False
        self._pending_requests = {}
        self._pending_models = {}


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)
