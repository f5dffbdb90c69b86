"""While the store is down, calls stop waiting on it for reads, and resume later."""

from __future__ import annotations

import pytest

from langchain_seedlock import DriftMonitor, StoreError, _drift_store
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store import open_store
from langchain_seedlock.testing import capture_seedlock_events


class FailingReads:
    """A memory store whose reads fail while ``down`` is set; counts read attempts."""

    def __init__(self) -> None:
        self.inner = open_store("memory://")
        self.down = True
        self.reads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def outputs_for(self, request_hash: str) -> list[object]:
        self.reads += 1
        if self.down:
            raise StoreError("store is down")
        return list(self.inner.outputs_for(request_hash))

    def fingerprints_for(self, model_key: str) -> list[object]:
        self.reads += 1
        if self.down:
            raise StoreError("store is down")
        return list(self.inner.fingerprints_for(model_key))


def record(i: int) -> CallRecord:
    return CallRecord(
        provider="openai", request_model="m", request_hash=f"r{i}", output_hash="o", seed=1,
        system_fingerprint="fp",
    )  # fmt: skip


def test_reads_pause_after_a_failure_then_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEEDLOCK_RAISE_INTERNAL_ERRORS")
    now = [1000.0]
    monkeypatch.setattr(_drift_store.time, "monotonic", lambda: now[0])
    store = FailingReads()
    monitor = DriftMonitor(store, buffer_size=0)  # type: ignore[arg-type]
    with capture_seedlock_events() as logs:
        monitor.observe(record(1))
        assert store.reads == 1  # the first read failed; the second was not tried
        for i in range(2, 50):
            monitor.observe(record(i))
        assert store.reads == 1  # nobody waited on the dead store
        now[0] += _drift_store.READ_RETRY_INTERVAL + 0.1
        store.down = False
        monitor.observe(record(99))
        assert store.reads >= 2  # reads resumed for the new request
    assert [e["event"] for e in logs].count("seedlock.store_error") == 1
