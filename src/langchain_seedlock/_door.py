"""What the observing doors (`SeedLockCallbackHandler`, `SeedLockMiddleware`)
share: their monitor and store arguments, their context options, and their
lifecycle (``flush``, ``close``, ``with``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from langchain_seedlock import _events as ev
from langchain_seedlock import _otel
from langchain_seedlock._args import check_bool, check_instance, check_number, check_store
from langchain_seedlock._drift import DriftMonitor
from langchain_seedlock._errors import InvalidArgumentError
from langchain_seedlock._store._base import BaselineStore


def door_monitor(
    owner: str, store: Any, monitor: Any, capture_content: bool
) -> tuple[DriftMonitor, BaselineStore | None]:
    """The `DriftMonitor` of a door from its ``store=`` / ``monitor=`` arguments,
    checked here, and the store the door opened from a URL (the door closes
    it), if any. Call it after the door's other checks: it opens the store."""
    check_store(owner, "store", store, urls=True)
    if monitor is not None:
        check_instance(owner, "monitor", monitor, DriftMonitor, "a DriftMonitor")
        if store is not None:
            raise InvalidArgumentError(
                owner, "store", store,
                "cannot be given with monitor=: pass either store= or monitor= "
                "(the monitor owns its store)",
            )  # fmt: skip
        return monitor, None
    owned: BaselineStore | None = None
    if isinstance(store, str):
        from langchain_seedlock._store import open_store  # SQLite code on demand

        store = owned = open_store(store)
    return DriftMonitor(store, capture_content=capture_content), owned


class ObservingDoor:
    """The monitor, the context options and the lifecycle of a door."""

    monitor: DriftMonitor
    capture_content: bool
    metadata_keys: tuple[str, ...]
    include_tags: bool
    _owned_store: BaselineStore | None
    _otel: Any  # the door's OpenTelemetry exporter (`_otel`), or None when off

    def _open(
        self,
        owner: str,
        *,
        store: Any,
        monitor: Any,
        capture_content: Any,
        metadata_keys: Sequence[str],
        include_tags: Any,
        otel: Any,
    ) -> None:
        """Check the shared arguments and open the monitor (call it last in
        ``__init__``: it may open a store)."""
        check_bool(owner, "capture_content", capture_content)
        self.metadata_keys, self.include_tags = ev.check_context_options(
            owner, metadata_keys, include_tags
        )
        otel_options = _otel.door_options(owner, otel)
        self.monitor, self._owned_store = door_monitor(owner, store, monitor, capture_content)
        self.capture_content = self.monitor.capture_content
        self._otel = _otel.door_exporter(otel_options, self.capture_content)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every observed call is in the store."""
        check_number(f"{type(self).__name__}.flush", "timeout", timeout, minimum=0, allow_none=True)
        return self.monitor.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush and stop the monitor's writer thread; close the store if the
        door opened it from a URL. Returns False if records were left unwritten.

        Final (a closed door is not reopened): a call it sees afterwards is
        still compared and logged, and reported as ``seedlock.store_error``
        instead of being stored. Close it at shutdown, or use it as a context
        manager (``with SeedLockCallbackHandler(store=url) as handler:``).
        """
        check_number(f"{type(self).__name__}.close", "timeout", timeout, minimum=0, allow_none=True)
        done = self.monitor.close(timeout)
        if self._owned_store is not None:
            self._owned_store.close()
        return done

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
