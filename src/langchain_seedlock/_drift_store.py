"""The drift monitor's store gateway: reads (paused for a while after a
failure), writes (through a `Writer`), and the ``seedlock.store_error`` /
``seedlock.store_overflow`` reports. A store failure never fails the call."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

from langchain_seedlock import _events as ev
from langchain_seedlock import _fork
from langchain_seedlock._drift_events import iso
from langchain_seedlock._errors import StoreError
from langchain_seedlock._record import CallRecord
from langchain_seedlock._redact import redact_optional_url
from langchain_seedlock._sketch import Sketcher
from langchain_seedlock._store._base import BaselineStore, OutputSeen, StoredEvent
from langchain_seedlock._store._writer import Writer, open_writer

_T = TypeVar("_T")

# One store_error line per operation per this many seconds; repeats are counted.
STORE_ERROR_INTERVAL: Final = 60.0
# After a failed read, calls stop waiting on the store for this many seconds
# (they compare with what this process knows) instead of each paying the
# store's connect timeout while it is down.
READ_RETRY_INTERVAL: Final = 5.0
# A reproducibility change of a model and backend that any process of the
# fleet stored this many seconds ago or less is logged again at info only:
# one warning per fleet (the rate is shared, each process watches its own calls).
RATE_CHANGE_QUIET: Final = 3600.0
_WHERE_RATE: Final = "StoreGateway.report_rate_change"
# The error of a record observed after `DriftMonitor.close` (seedlock.store_error).
CLOSED_MESSAGE: Final = (
    "closed: close() was called on this DriftMonitor, or on the SeedLockCallbackHandler "
    "or SeedLockMiddleware using it; calls observed since are compared and logged but "
    "not stored (create a new handler, or close it only at shutdown)"
)


class StoreGateway:
    """Everything the monitor does with its store (None: memory only)."""

    def __init__(
        self, store: BaselineStore | None, *, buffer_size: int, capture_content: bool
    ) -> None:
        self.store = store
        self.closed = False
        # Made with the store's sketch key, read once when the first stored
        # sketch is loaded (by a store read, so never on an event loop).
        self.sketcher: Sketcher | None = None
        self._lock = threading.Lock()
        self._errors: dict[str, tuple[float, int]] = {}  # op -> (last logged, suppressed)
        self._reads_paused_until = 0.0  # monotonic; see READ_RETRY_INTERVAL
        self._dropped_after_close = 0
        self._reports: list[threading.Thread] = []  # rate-change checks made off the loop
        self._writer: Writer | None = None
        if store is not None:
            self._writer = open_writer(
                store,
                buffer_size=buffer_size,
                on_error=self._on_write_error,
                on_overflow=self._on_overflow,
                capture_content=capture_content,
            )
        _fork.register(self, after_in_child=StoreGateway._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it

    @property
    def dropped(self) -> int:
        """Records the writer dropped, or observed after close."""
        written_off = self._writer.dropped if self._writer is not None else 0
        return written_off + self._dropped_after_close

    # -- reads -----------------------------------------------------------------------
    def reads_paused(self) -> bool:
        return time.monotonic() < self._reads_paused_until

    def read(self, fn: Callable[[str], list[_T]], key: str) -> list[_T] | None:
        """``fn(key)`` (a store read), or None when reads are paused or it failed."""
        if self.reads_paused():
            return None
        try:
            return fn(key)
        except Exception as exc:  # noqa: BLE001 - a store failure never fails the call
            self._reads_paused_until = time.monotonic() + READ_RETRY_INTERVAL
            self.store_error("read", exc)
            return None

    def load_sketcher(self, outputs: list[OutputSeen] | None) -> None:
        """Read the store's sketch key the first time stored sketches are loaded."""
        store = self.store
        if self.sketcher is not None or store is None or not outputs:
            return
        if all(o.sketch is None for o in outputs):
            return
        try:
            key = store.sketch_key()
        except Exception as exc:  # noqa: BLE001 - a store failure never fails the call
            self.store_error("read", exc)
            return
        if key is not None:
            self.sketcher = Sketcher(key)

    # -- writes ----------------------------------------------------------------------
    def submit(self, record: CallRecord | None, events: Sequence[StoredEvent]) -> None:
        if self._writer is None or (record is None and not events):
            return
        if self.closed:
            # Never silently: the call was logged, its record goes nowhere.
            with self._lock:
                self._dropped_after_close += 1
            self.store_error("write", StoreError(CLOSED_MESSAGE))
            return
        self._writer.submit(record, events)

    def flush(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            reports, self._reports = self._reports, []
        for thread in reports:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._writer is None or self._writer.flush(left)

    # -- one warning per fleet ---------------------------------------------------------
    def report_rate_change(self, fields: Mapping[str, Any], at: float, *, on_loop: bool) -> None:
        """Log (and store) ``seedlock.reproducibility_changed`` as a warning,
        unless a process already stored the same change of this model and
        backend in the last `RATE_CHANGE_QUIET` seconds: then at info, with
        ``seedlock.reported_at``. On an event loop the store is read on a
        short-lived thread (rate changes are rare); `flush` waits for it."""
        if not on_loop:
            self._report_rate_change(fields, at)
            return
        ctx = contextvars.copy_context()
        thread = threading.Thread(
            target=ctx.run, args=(self._report_rate_change, fields, at),
            name="seedlock-rate-change", daemon=True,
        )  # fmt: skip
        with self._lock:
            self._reports.append(thread)
        thread.start()

    def _report_rate_change(self, fields: Mapping[str, Any], at: float) -> None:
        earlier = self._rate_change_stored(fields, at)
        if earlier is not None:
            ev.emit(
                _WHERE_RATE, "info", ev.REPRODUCIBILITY_CHANGED,
                **{**fields, ev.K_REPORTED_AT: iso(earlier)},
            )  # fmt: skip
            return
        ev.emit(_WHERE_RATE, "warning", ev.REPRODUCIBILITY_CHANGED, **fields)
        self.submit(None, [StoredEvent(ev.REPRODUCIBILITY_CHANGED, at, dict(fields))])

    def _rate_change_stored(self, fields: Mapping[str, Any], at: float) -> float | None:
        """When the same model and backend's change was stored within the quiet period."""
        store = self.store
        if store is None:
            return None
        since = at - RATE_CHANGE_QUIET
        rows = self.read(
            lambda name: store.events(name=name, since=since, limit=10_000),
            ev.REPRODUCIBILITY_CHANGED,
        )  # fmt: skip
        keys = (ev.K_MODEL_KEY, ev.K_BACKEND_ID)
        for row in rows or ():
            if all(row.fields.get(k) == fields.get(k) for k in keys):
                return row.at
        return None

    def close(self, timeout: float | None) -> bool:
        self.closed = True
        return self._writer is None or self._writer.close(timeout)

    # -- reports ---------------------------------------------------------------------
    def _on_write_error(self, exc: BaseException) -> None:
        self.store_error("write", exc)

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

    def store_error(self, op: str, exc: BaseException) -> None:
        """Log ``seedlock.store_error``, at most once per operation per
        `STORE_ERROR_INTERVAL`; the next line counts the repeats suppressed."""
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._errors.get(op, (None, 0))
            if last is not None and now - last < STORE_ERROR_INTERVAL:
                self._errors[op] = (last, suppressed + 1)
                return
            self._errors[op] = (now, 0)
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


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
