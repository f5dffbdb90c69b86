"""`DriftMonitor`: the one place where calls are compared with their baseline.

The callback handler, the agent middleware and the probe each build a
`CallRecord` and hand it to `DriftMonitor.observe` (or `aobserve`); the
monitor decides which events fire, logs them, and queues the record and the
events for the store. Nothing here may fail a model call: a store failure is
logged as ``seedlock.store_error``, any other exception as
``seedlock.internal_error`` (re-raised when ``SEEDLOCK_RAISE_INTERNAL_ERRORS=1``).

Speed: the per-call path is a dict lookup and a few comparisons under a lock.
Per request hash the monitor keeps the outputs it knows (count, first/last
seen, backend, fingerprint, and the text in memory only, to locate the first
difference) in a bounded LRU; per model, the fingerprints seen. The store is
read only on a cache miss, and written by a `BackgroundWriter` thread.

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
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from langchain_seedlock import _drift_events as dev
from langchain_seedlock import _events as ev
from langchain_seedlock import _fork
from langchain_seedlock._args import check_bool, check_int, check_number, check_store
from langchain_seedlock._decide import (
    Decision,
    RateChange,
    RateCusum,
    Variant,
    Verdict,
    classify,
    is_noisy,
)
from langchain_seedlock._errors import InvalidArgumentError, StoreError
from langchain_seedlock._identity import (
    BackendIdentity,
    check_env_backend,
    identity_for,
    partial_id,
    server_slots,
    track,
)
from langchain_seedlock._record import CallRecord
from langchain_seedlock._redact import redact_optional_url
from langchain_seedlock._sketch import Sketcher
from langchain_seedlock._store._base import (
    BaselineStore,
    FingerprintSeen,
    OutputSeen,
    StoredEvent,
)
from langchain_seedlock._store._writer import BackgroundWriter

_T = TypeVar("_T")

# One store_error line per operation per this many seconds; repeats are counted.
STORE_ERROR_INTERVAL: Final = 60.0
# After a failed read, calls stop waiting on the store for this many seconds
# (they compare with what this process knows) instead of each paying the
# store's connect timeout while it is down.
READ_RETRY_INTERVAL: Final = 5.0
# The error of a record observed after `DriftMonitor.close` (seedlock.store_error).
CLOSED_MESSAGE: Final = (
    "closed: close() was called on this DriftMonitor, or on the SeedLockCallbackHandler "
    "or SeedLockMiddleware using it; calls observed since are compared and logged but "
    "not stored (create a new handler, or close it only at shutdown)"
)
_WHERE_VIOLATIONS: Final = "DriftMonitor.report_violations"
_WHERE_EMIT: Final = "DriftMonitor.emit"
# Seconds `observe` on an event loop's thread waits for the reader thread to
# decide a cache miss (only when the reader is idle: a busy reader means the
# store is slow, and the call returns at once). A read from a healthy store
# takes well under a millisecond.
LOOP_READ_WAIT: Final = 0.002
_SAMPLING_KEYS: Final = (
    ("temperature", ev.K_TEMPERATURE),
    ("top_p", ev.K_TOP_P),
    ("max_tokens", ev.K_MAX_TOKENS),
)


@dataclass(slots=True)
class _Output:
    """One distinct output of one request, as known to this monitor."""

    count: int
    first_seen: float
    last_seen: float
    backend_id: str
    fingerprint: str | None
    text: str | None = None  # memory only; never logged without capture_content
    tokens: tuple[str, ...] | None = None
    # Output length in tokens as seen (usage), for "3x longer than usual".
    length: tuple[int, int] | None = None  # (min, max)
    # Its sketch as stored (`_sketch`), to size a change when the text is
    # not in memory (another process saw it).
    sketch: bytes | None = None

    def copy(self) -> _Output:
        return _Output(
            self.count, self.first_seen, self.last_seen, self.backend_id,
            self.fingerprint, self.text, self.tokens, self.length, self.sketch,
        )  # fmt: skip


@dataclass(slots=True)
class _Request:
    # Per backend identity, the distinct outputs by output hash.
    by_backend: dict[str, dict[str, _Output]] = field(default_factory=dict)


@dataclass(slots=True)
class _Model:
    last_fingerprint: str | None = None
    seen: dict[str | None, tuple[float, float]] = field(default_factory=dict)  # first, last
    identity: BackendIdentity | None = None  # the last complete call's (`_identity`)
    reported: set[tuple[str, str]] = field(default_factory=set)  # backend changes logged


@dataclass(slots=True)
class _BackendRate:
    """Repeat calls of one model under one backend identity, and the detector
    watching their reproducibility rate (this process's calls)."""

    repeats: int = 0
    known: int = 0
    cusum: RateCusum = field(default_factory=RateCusum)


@dataclass(slots=True)
class _Decision:
    """What `_decide` found, copied out of the lock for logging."""

    fingerprint_changed: tuple[str | None, float | None, float | None, float] | None = None
    # The identity's changed fields {name: [old, new]} and the previous identity.
    backend_changed: tuple[dict[str, list[Any]], BackendIdentity] | None = None
    fingerprint_missing: bool = False
    verdict: Decision | None = None
    # The request's usual output (copy), its hash, and this call's output (copy).
    compared: tuple[_Output, str, _Output] | None = None
    rate: tuple[int, int] = (0, 0)  # the backend's (known, repeats) after this call
    rate_change: RateChange | None = None
    explanation: str | None = None  # the variant event's summary, for OpenTelemetry


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


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


class _SyncWriter:
    """Stand-in for `BackgroundWriter` with the same surface: writes inline.

    Used with ``buffer_size=0`` (no background thread: each call writes
    before returning, for scripts that must see their rows at once)."""

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

    def submit(self, record: CallRecord | None, events: Sequence[StoredEvent] = ()) -> bool:
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
        self._requests: OrderedDict[str, _Request] = OrderedDict()
        self._models: OrderedDict[str, _Model] = OrderedDict()
        self._rates: OrderedDict[tuple[str, str], _BackendRate] = OrderedDict()
        self._missing_reported: set[str] = set()
        self._store_errors: dict[str, tuple[float, int]] = {}  # op -> (last logged, suppressed)
        self._reads_paused_until = 0.0  # monotonic; see READ_RETRY_INTERVAL
        self._closed = False
        self._dropped_after_close = 0
        # Made with the store's sketch key, read once when the first stored
        # sketch is loaded (by a store read, so never on an event loop).
        self._sketcher: Sketcher | None = None
        self._writer: Any = None
        # The reader thread (see the module docstring), started on first use;
        # its queue and the keys of the calls in it share the monitor's lock.
        self._reader: threading.Thread | None = None
        self._reader_cond = threading.Condition(self._lock)
        self._deferred: deque[_Deferred] = deque()
        self._reading = False  # the reader is working on a call
        self._pending_requests: dict[str, int] = {}  # request hash -> deferred calls
        self._pending_models: dict[str, int] = {}  # model key -> deferred calls
        _fork.register(self, after_in_child=DriftMonitor._after_fork_in_child)
        if store is not None:
            if buffer_size <= 0:
                self._writer = _SyncWriter(
                    store, on_error=self._on_write_error, capture_content=capture_content
                )
            else:
                self._writer = BackgroundWriter(
                    store,
                    buffer_size=buffer_size,
                    on_error=self._on_write_error,
                    on_overflow=self._on_overflow,
                    capture_content=capture_content,
                )

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
            store = self.store
            if store is not None and _on_event_loop():
                deferred = self._defer(record, model_key)
                if isinstance(deferred, list):
                    return deferred
                return self._wait_on_loop(*deferred)
            need_request, need_model = self._misses(record, model_key)
            outputs = (
                self._read("read", store.outputs_for, record.request_hash)
                if (need_request and store is not None)
                else None
            )
            if store is not None:
                self._load_sketcher(store, outputs)
            fingerprints = (
                self._read("read", store.fingerprints_for, model_key)
                if (need_model and store is not None)
                else None
            )
            return self._decide(record, model_key, outputs, fingerprints) or []
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
            names: list[str] = []
            stored: list[StoredEvent] = []
            now = time.time()
            for v in violations:
                if v.field == "seed" and v.attempted is None:
                    fields = {**record_fields, ev.K_LOCK_HASH: lock_hash, "source": source}
                    fields["locked"] = v.locked
                    ev.emit(_WHERE_VIOLATIONS, "warning", ev.UNSEEDED_CALL, **fields)
                    name = ev.UNSEEDED_CALL
                else:
                    fields = {
                        **record_fields,
                        "field": v.field,
                        "locked": v.locked,
                        "attempted": v.attempted,
                        "source": source,
                        "action": "observed",
                        ev.K_LOCK_HASH: lock_hash,
                    }
                    ev.emit(_WHERE_VIOLATIONS, "warning", ev.LOCK_VIOLATION, **fields)
                    name = ev.LOCK_VIOLATION
                names.append(name)
                stored.append(StoredEvent(name, now, fields))
            self._submit(None, stored)
            return names
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("DriftMonitor.report_violations", exc)
            return []

    def report_unseeded(self, record_fields: Mapping[str, Any], *, source: str) -> list[str]:
        """Log (and store) ``seedlock.unseeded_call`` for a call sent without a seed
        when no lock is configured."""
        try:
            fields = {**record_fields, "source": source}
            ev.emit("DriftMonitor.report_unseeded", "warning", ev.UNSEEDED_CALL, **fields)
            self._submit(None, [StoredEvent(ev.UNSEEDED_CALL, time.time(), fields)])
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("DriftMonitor.report_unseeded", exc)
            return []
        return [ev.UNSEEDED_CALL]

    def report_failure(self, fields: Mapping[str, Any], error: BaseException) -> list[str]:
        """Log (and store) ``seedlock.call_failed`` for a call that raised."""
        try:
            out = {**fields, ev.K_ERROR_TYPE: type(error).__qualname__}
            ev.emit("DriftMonitor.report_failure", "warning", ev.CALL_FAILED, **out)
            self._submit(None, [StoredEvent(ev.CALL_FAILED, time.time(), out)])
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("DriftMonitor.report_failure", exc)
            return []
        return [ev.CALL_FAILED]

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record observed so far is in the store (False on timeout).

        Calls still waiting for the reader thread are decided (and logged) first.
        """
        check_number("DriftMonitor.flush", "timeout", timeout, minimum=0, allow_none=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._wait_for_reader(deadline):
            return False
        if self._writer is None:
            return True
        return bool(self._writer.flush(_remaining(deadline)))

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
        if self._writer is None:
            return read
        return bool(self._writer.close(_remaining(deadline))) and read

    @property
    def dropped(self) -> int:
        """Records the writer dropped (buffer full, unwritten at close, or
        observed after close)."""
        return int(getattr(self._writer, "dropped", 0)) + self._dropped_after_close

    # -- the comparison ------------------------------------------------------------
    def _misses(self, record: CallRecord, model_key: str) -> tuple[bool, bool]:
        with self._lock:
            return record.request_hash not in self._requests, model_key not in self._models

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
        """Compare under the lock, then log and queue; the event names.

        ``only_cached``: return None, deciding nothing, unless the request and
        the model are both in memory and no earlier call of either waits for
        the reader (else the store is read first, outside the lock). The
        common case so takes the lock once. ``deferred``: the reader's call,
        no longer pending once decided.
        """
        # Before the lock: the server's fields are a cache lookup (`_identity`).
        identity = identity_for(
            fingerprint=record.system_fingerprint, model=record.response_model,
            service_tier=record.service_tier, base_url=record.base_url,
            request_model=record.request_model, declared=record.declared,
        )  # fmt: skip
        d = _Decision()
        names = [ev.CALL]
        with self._lock:
            if only_cached and (
                record.request_hash not in self._requests
                or model_key not in self._models
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
            # A cut stream says nothing about the backend: no change detected.
            identity = self._decide_model(
                record, model_key, fingerprints, identity, d=d, names=names
            )
            record.identity = identity  # before the record is shared (events, writer)
            backend = identity.id
            self._decide_request(record, model_key, backend, outputs=outputs, d=d, names=names)
        stored = self._emit(record, backend, d, names)
        if record.otel is not None:  # OpenTelemetry export (_otel.py): the verdict, once known
            record.otel.decided(record, d.verdict, d.rate, d.explanation)
        # An incomplete output is not a variant: only its event is stored.
        incomplete = d.verdict is not None and d.verdict.verdict is Verdict.INCOMPLETE
        self._submit(None if incomplete else record, stored)
        return names

    def _decide_model(
        self,
        record: CallRecord,
        model_key: str,
        fingerprints: list[FingerprintSeen] | None,
        identity: BackendIdentity,
        *,
        d: _Decision,
        names: list[str],
    ) -> BackendIdentity:
        """Fingerprint and identity bookkeeping for the call's model (caller
        holds the lock); the call's effective identity (`_identity.track`)."""
        fp = record.system_fingerprint
        now = record.at
        model = self._models.get(model_key)
        if model is None:
            model = _Model()
            for row in fingerprints or ():  # most recently seen last
                model.seen[row.system_fingerprint] = (row.first_seen, row.last_seen)
                if row.system_fingerprint is not None:
                    model.last_fingerprint = row.system_fingerprint
                if row.identity is not None:
                    model.identity = BackendIdentity.from_json(row.identity)
            self._models[model_key] = model
            if len(self._models) > self.cache_size:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(model_key)
        identity, changes = track(model.identity, identity, model.reported)
        if not record.complete:
            return identity
        model.identity = identity
        if fp is None:
            if model_key not in self._missing_reported:
                self._missing_reported.add(model_key)
                d.fingerprint_missing = True
                names.append(ev.FINGERPRINT_MISSING)
        else:
            previous = model.last_fingerprint
            if previous is not None and previous != fp:
                prev_first, prev_last = model.seen.get(previous, (None, None))
                cur_first = model.seen.get(fp, (now, now))[0]
                d.fingerprint_changed = (previous, prev_first, prev_last, cur_first)
                names.append(ev.FINGERPRINT_CHANGED)
            model.last_fingerprint = fp
        first, _ = model.seen.get(fp, (now, now))
        model.seen[fp] = (min(first, now), now)
        if changes is not None:
            d.backend_changed = changes
            if d.fingerprint_changed is None:  # else that event is the one warning
                names.append(ev.BACKEND_CHANGED)
        return identity

    def _load_request(self, outputs: list[OutputSeen] | None) -> _Request:
        req = _Request()
        for o in outputs or ():
            req.by_backend.setdefault(o.backend_id, {})[o.output_hash] = _Output(
                o.count, o.first_seen, o.last_seen, o.backend_id,
                o.system_fingerprint, o.output_text, sketch=o.sketch,
            )  # fmt: skip
        return req

    def _load_sketcher(self, store: BaselineStore, outputs: list[OutputSeen] | None) -> None:
        """Read the store's sketch key the first time stored sketches are loaded."""
        if self._sketcher is not None or not outputs or all(o.sketch is None for o in outputs):
            return
        try:
            key = store.sketch_key()
        except Exception as exc:  # noqa: BLE001 - a store failure never fails the call
            self._store_error("read", exc)
            return
        if key is not None:
            self._sketcher = Sketcher(key)

    def _rate(self, model_key: str, backend: str) -> _BackendRate:
        key = (model_key, backend)
        rate = self._rates.get(key)
        if rate is None:
            rate = self._rates[key] = _BackendRate()
            if len(self._rates) > self.cache_size:
                self._rates.popitem(last=False)
        return rate

    def _decide_request(
        self,
        record: CallRecord,
        model_key: str,
        backend: str,
        *,
        outputs: list[OutputSeen] | None,
        d: _Decision,
        names: list[str],
    ) -> None:
        """Classify the call against its request's variants and update them and
        the backend's rate (caller holds the lock). See `_decide.classify`."""
        now = record.at
        identity = record.identity
        req = self._requests.get(record.request_hash)
        if req is None:
            req = self._load_request(outputs)
            self._requests[record.request_hash] = req
            if len(self._requests) > self.cache_size:
                self._requests.popitem(last=False)
        else:
            self._requests.move_to_end(record.request_hash)
        # Drift is defined for seeded requests: an unseeded one varies by design.
        rate = self._rate(model_key, backend) if record.seed is not None else None
        if rate is not None:
            decision = d.verdict = classify(
                record.output_hash,
                backend,
                _with_partial(req.by_backend, backend, identity),
                complete=record.complete,
                backend_noisy=is_noisy(rate.known, rate.repeats),
            )
            if decision.verdict is Verdict.INCOMPLETE:
                names.append(ev.INCOMPLETE_OUTPUT)
                return  # never a variant, never a baseline
            record.known = decision.known if decision.repeat else None
        here = req.by_backend.setdefault(backend, {})
        current = here.get(record.output_hash)
        if current is None:
            current = here[record.output_hash] = _Output(
                0, now, now, backend, record.system_fingerprint
            )
        current.count += 1
        current.last_seen = max(current.last_seen, now)
        current.fingerprint = record.system_fingerprint
        if current.text is None and record.output_text is not None:
            current.text = record.output_text
        if current.tokens is None and record.output_token_list is not None:
            current.tokens = record.output_token_list
        if record.output_tokens is not None:
            n = record.output_tokens
            low, high = current.length or (n, n)
            current.length = (min(low, n), max(high, n))
        if d.verdict is None or rate is None:
            return
        decision = d.verdict
        if decision.repeat:
            rate.repeats += 1
            rate.known += decision.known
            d.rate_change = rate.cusum.update(decision.known)
            if d.rate_change is not None:
                names.append(ev.REPRODUCIBILITY_CHANGED)
        d.rate = (rate.known, rate.repeats)
        if decision.verdict in (Verdict.NEW_VARIANT, Verdict.EXPLAINED, Verdict.KNOWN_VARIANT):
            usual_hash = decision.usual_output
            assert usual_hash is not None
            # Under this backend, else before its server fields were known,
            # else (explained) under the backend it was seen with.
            partial = req.by_backend.get(partial_id(identity) or "", {}) if identity else {}
            usual = (
                here.get(usual_hash)
                or partial.get(usual_hash)
                or next(outs[usual_hash] for outs in req.by_backend.values() if usual_hash in outs)
            )
            # Copies: the logging happens outside the lock.
            d.compared = (usual.copy(), usual_hash, current.copy())
            names.append(
                ev.OUTPUT_VARIANT if decision.verdict is Verdict.KNOWN_VARIANT else ev.OUTPUT_DRIFT
            )

    # -- events --------------------------------------------------------------------
    def base_fields(self, record: CallRecord, backend: str | None = None) -> dict[str, Any]:
        """The keys every event about ``record`` carries (see docs/events.md)."""
        fields: dict[str, Any] = {
            ev.K_PROVIDER: record.provider,
            ev.K_REQUEST_MODEL: record.request_model,
            ev.K_RESPONSE_MODEL: record.response_model,
            ev.K_SEED: record.seed,
            ev.K_FINGERPRINT: record.system_fingerprint,
            ev.K_REQUEST_HASH: record.request_hash,
            ev.K_OUTPUT_HASH: record.output_hash,
            ev.K_BACKEND_ID: backend if backend is not None else record.backend_id,
            ev.K_LOCK_HASH: record.lock_hash,
            "run_id": record.run_id,
            "parent_run_id": record.parent_run_id,
        }
        if record.in_flight is not None:
            fields[ev.K_IN_FLIGHT] = record.in_flight
        slots = server_slots(record.identity)
        if slots is not None:
            fields[ev.K_SERVER_SLOTS] = slots
        if record.context:
            fields.update(record.context)
        return fields

    def _emit(
        self, record: CallRecord, backend: str, d: _Decision, names: list[str]
    ) -> list[StoredEvent]:
        log = ev.get_logger().bind()  # resolve the lazy proxy once
        stored: list[StoredEvent] = []
        base: dict[str, Any] | None = None
        if ev.is_enabled(log, self._call_level_number):
            base = self.base_fields(record, backend)
            call = dict(base)
            for name, key in _SAMPLING_KEYS:
                if name in record.params:
                    call[key] = record.params[name]
            call[ev.K_SERVICE_TIER] = record.service_tier
            call[ev.K_INPUT_TOKENS] = record.input_tokens
            call[ev.K_OUTPUT_TOKENS] = record.output_tokens
            if d.verdict is not None:
                call[ev.K_VARIANT] = dev.VARIANT_LABELS[d.verdict.verdict]
            if self.capture_content:
                call[ev.K_PROMPT_TEXT] = record.prompt_text
                call[ev.K_OUTPUT_TEXT] = record.output_text
            ev.emit_on(log, _WHERE_EMIT, self.call_level, ev.CALL, call)
        if len(names) == 1:
            return stored  # the common case: nothing needs attention
        if base is None:
            base = self.base_fields(record, backend)
        if d.fingerprint_missing:
            fields = {
                ev.K_PROVIDER: record.provider,
                ev.K_REQUEST_MODEL: record.request_model,
                ev.K_RESPONSE_MODEL: record.response_model,
                ev.K_MODEL_KEY: record.model_key,
                "run_id": record.run_id,
                **record.context,
            }
            ev.emit_on(log, _WHERE_EMIT, "info", ev.FINGERPRINT_MISSING, fields)
            stored.append(StoredEvent(ev.FINGERPRINT_MISSING, record.at, fields))
        if d.fingerprint_changed is not None:
            previous, prev_first, prev_last, cur_first = d.fingerprint_changed
            fields = {
                **base,
                ev.K_MODEL_KEY: record.model_key,
                ev.K_PREVIOUS_FINGERPRINT: previous,
                ev.K_PREVIOUS_FINGERPRINT_FIRST_SEEN: _iso(prev_first),
                ev.K_PREVIOUS_FINGERPRINT_LAST_SEEN: _iso(prev_last),
                ev.K_FINGERPRINT_FIRST_SEEN: _iso(cur_first),
            }
            if d.backend_changed is not None:
                fields.update(dev.backend_change_fields(record, d.backend_changed))
            ev.emit_on(log, _WHERE_EMIT, "warning", ev.FINGERPRINT_CHANGED, fields)
            stored.append(StoredEvent(ev.FINGERPRINT_CHANGED, record.at, fields))
        elif d.backend_changed is not None:
            fields = {
                **dev.backend_change_fields(record, d.backend_changed),
                **base,
                ev.K_MODEL_KEY: record.model_key,
            }
            ev.emit_on(log, _WHERE_EMIT, "warning", ev.BACKEND_CHANGED, fields)
            stored.append(StoredEvent(ev.BACKEND_CHANGED, record.at, fields))
        if d.verdict is not None and d.verdict.verdict is Verdict.INCOMPLETE:
            fields = {ev.K_SUMMARY: dev.incomplete_summary(record), **base}
            ev.emit_on(log, _WHERE_EMIT, "info", ev.INCOMPLETE_OUTPUT, fields)
            stored.append(StoredEvent(ev.INCOMPLETE_OUTPUT, record.at, fields))
        if d.compared is not None and d.verdict is not None:
            usual, usual_hash, current = d.compared
            level, name, fields = dev.variant_event(
                record, base, d.verdict, usual=usual, usual_hash=usual_hash,
                current=current, rate=d.rate, capture_content=self.capture_content,
                sketcher=self._sketcher,
            )  # fmt: skip
            ev.emit_on(log, _WHERE_EMIT, level, name, fields)
            d.explanation = fields[ev.K_SUMMARY]
            if name == ev.OUTPUT_DRIFT:  # known variants are counted in the store already
                stored.append(StoredEvent(name, record.at, {**fields, "level": level}))
        if d.rate_change is not None:
            fields = dev.rate_change_fields(record, base, d.rate_change)
            ev.emit_on(log, _WHERE_EMIT, "warning", ev.REPRODUCIBILITY_CHANGED, fields)
            stored.append(StoredEvent(ev.REPRODUCIBILITY_CHANGED, record.at, fields))
        return stored

    # -- the reader thread ----------------------------------------------------------
    def _defer(self, record: CallRecord, model_key: str) -> tuple[_Deferred, bool] | list[str]:
        """Queue a cache miss for the reader thread (the call, and whether the
        reader was idle); or decide it now (the event names) when reads are
        paused and no earlier call of its keys waits."""
        with self._lock:
            paused = time.monotonic() < self._reads_paused_until
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
            need_request, need_model = self._misses(record, model_key)
            store = self.store
            assert store is not None
            outputs = (
                self._read("read", store.outputs_for, record.request_hash) if need_request else None
            )
            self._load_sketcher(store, outputs)
            fingerprints = (
                self._read("read", store.fingerprints_for, model_key) if need_model else None
            )
            return self._decide(record, model_key, outputs, fingerprints, deferred=item) or []
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

    # -- the store -----------------------------------------------------------------
    def _submit(self, record: CallRecord | None, events: Sequence[StoredEvent]) -> None:
        if self._writer is None or (record is None and not events):
            return
        if self._closed:
            # Never silently: the call was logged, its record goes nowhere.
            with self._lock:
                self._dropped_after_close += 1
            self._store_error("write", StoreError(CLOSED_MESSAGE))
            return
        self._writer.submit(record, events)

    def _read(self, op: str, fn: Callable[[str], list[_T]], key: str) -> list[_T] | None:
        if time.monotonic() < self._reads_paused_until:
            return None
        try:
            return fn(key)
        except Exception as exc:  # noqa: BLE001 - a store failure never fails the call
            self._reads_paused_until = time.monotonic() + READ_RETRY_INTERVAL
            self._store_error(op, exc)
            return None

    def _on_write_error(self, exc: BaseException) -> None:
        self._store_error("write", exc)

    def _on_overflow(self, count: int) -> None:
        try:
            ev.get_logger().warning(
                ev.STORE_OVERFLOW,
                **{
                    ev.K_DROPPED: count,
                    "seedlock.dropped_total": self.dropped,
                    ev.K_STORE_URL: redact_optional_url(getattr(self.store, "url", None)),
                },
            )
        except Exception as exc:  # noqa: BLE001 - reported from the writer thread
            ev.log_internal_error("DriftMonitor.on_overflow", exc)

    def _store_error(self, op: str, exc: BaseException) -> None:
        """Log ``seedlock.store_error``, at most once per operation per
        `STORE_ERROR_INTERVAL`; the next line counts the repeats suppressed."""
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._store_errors.get(op, (None, 0))
            if last is not None and now - last < STORE_ERROR_INTERVAL:
                self._store_errors[op] = (last, suppressed + 1)
                return
            self._store_errors[op] = (now, 0)
        ev.emit(
            "DriftMonitor.store_error",
            "warning",
            ev.STORE_ERROR,
            **{
                ev.K_OPERATION: op,
                ev.K_STORE_URL: redact_optional_url(getattr(self.store, "url", None)),
                ev.K_ERROR_TYPE: type(exc).__qualname__,
                "error": _short(str(exc)),
                ev.K_SUPPRESSED: suppressed,
            },
        )


def _with_partial(
    history: dict[str, dict[str, _Output]], backend: str, identity: BackendIdentity | None
) -> Mapping[str, Mapping[str, Any]]:
    """``history`` with the outputs seen before this backend's server fields
    were known (`_identity.partial_id`) counted as this backend's: the server
    fields joining the identity is not a backend change."""
    if identity is None or (backend in history and len(history) == 1):
        return history
    partial = partial_id(identity)
    if partial is None or partial not in history:
        return history
    merged: dict[str, Any] = dict(history.get(backend, {}))
    for h, o in history[partial].items():
        mine = merged.get(h)
        merged[h] = (
            o if mine is None
            else Variant(mine.count + o.count, min(mine.first_seen, o.first_seen))
        )  # fmt: skip
    view: dict[str, Mapping[str, Any]] = {k: v for k, v in history.items() if k != partial}
    view[backend] = merged
    return view


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
