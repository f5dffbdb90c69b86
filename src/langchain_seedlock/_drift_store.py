"""What the drift monitor reads from its store: a request's and a model's
history on a cache miss (paused for a while after a failure), the sketch
key, and whether another process already reported a reproducibility change.
Off the write path (door -> `DriftMonitor` -> writer -> store); a store
failure is logged (``seedlock.store_error``) and never fails the call."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from langchain_seedlock import _events as ev
from langchain_seedlock import _fork
from langchain_seedlock._drift_events import iso
from langchain_seedlock._sketch import Sketcher
from langchain_seedlock._store._base import BaselineStore, OutputSeen, StoredEvent
from langchain_seedlock._store._writer import StoreReports, Writer

_T = TypeVar("_T")

# After a failed read, calls stop waiting on the store for this many seconds
# (they compare with what this process knows) instead of each paying the
# store's connect timeout while it is down.
READ_RETRY_INTERVAL: Final = 5.0
# A reproducibility change of a model and backend that any process of the
# fleet stored this many seconds ago or less is logged again at info only:
# one warning per fleet (the rate is shared, each process watches its own calls).
RATE_CHANGE_QUIET: Final = 3600.0
_WHERE_RATE: Final = "StoreReads.report_rate_change"


class StoreReads:
    """Everything the monitor reads from its store."""

    def __init__(self, store: BaselineStore, writer: Writer, reports: StoreReports) -> None:
        self.store = store
        self.reports = reports
        self._writer = writer  # the rate-change warning is stored through it
        # Made with the store's sketch key, read once when the first stored
        # sketch is loaded (by a store read, so never on an event loop).
        self.sketcher: Sketcher | None = None
        self._lock = threading.Lock()
        self._reads_paused_until = 0.0  # monotonic; see READ_RETRY_INTERVAL
        self._reports: list[threading.Thread] = []  # rate-change checks made off the loop
        _fork.register(self, after_in_child=StoreReads._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it

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
            self.reports.error("read", exc)
            return None

    def load_sketcher(self, outputs: list[OutputSeen] | None) -> None:
        """Read the store's sketch key the first time stored sketches are loaded."""
        if self.sketcher is not None or not outputs:
            return
        if all(o.sketch is None for o in outputs):
            return
        try:
            key = self.store.sketch_key()
        except Exception as exc:  # noqa: BLE001 - a store failure never fails the call
            self.reports.error("read", exc)
            return
        if key is not None:
            self.sketcher = Sketcher(key)

    def join_reports(self, deadline: float | None) -> None:
        """Wait for the rate-change checks started on an event loop."""
        with self._lock:
            reports, self._reports = self._reports, []
        for thread in reports:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

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
        self._writer.submit(None, [StoredEvent(ev.REPRODUCIBILITY_CHANGED, at, dict(fields))])

    def _rate_change_stored(self, fields: Mapping[str, Any], at: float) -> float | None:
        """When the same model and backend's change was stored within the quiet period."""
        store = self.store
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
