"""Calls in flight per base URL (issue 15, part 2): counts, events, store, report."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from langchain_seedlock import _inflight
from langchain_seedlock._callbacks import SeedLockCallbackHandler
from langchain_seedlock._events import CALL
from langchain_seedlock._store import open_store
from langchain_seedlock.cli import main
from langchain_seedlock.testing import capture_seedlock_events, events_named
from tests._fixtures.stub_openai import StubOpenAI


@pytest.mark.parametrize(
    ("count", "label"),
    [(None, None), (1, "1"), (2, "2-4"), (4, "2-4"), (5, "5-16"), (16, "5-16"), (17, ">16")],
)
def test_buckets(count: int | None, label: str | None) -> None:
    assert _inflight.bucket(count) == label


def test_a_nested_door_counts_the_call_once() -> None:
    def nested() -> tuple[int, int, int]:
        outer = _inflight.enter("http://x/v1")
        inner = _inflight.enter("http://x/v1")  # e.g. the handler inside the middleware
        counted = _inflight.now("http://x/v1")
        _inflight.leave(inner)
        _inflight.leave(outer)
        _inflight.leave(outer)  # idempotent
        return outer.count, inner.count, counted

    assert nested() == (1, 1, 1)
    assert _inflight.now("http://x/v1") == 0
    # A later call in the same context is not mistaken for a nested one.
    first = _inflight.enter("http://x/v1")
    _inflight.leave(first)
    second = _inflight.enter("http://x/v1")
    assert second.owner
    _inflight.leave(second)


def test_base_url_of_a_model_and_of_its_serialized_form() -> None:
    model = ChatOpenAI(model="m", base_url="http://127.0.0.1:8080/v1/", api_key="sk-test")
    assert _inflight.base_url_of(model) == "http://127.0.0.1:8080/v1"
    assert _inflight.base_url_of(model.to_json()) == "http://127.0.0.1:8080/v1"
    assert _inflight.base_url_of(ChatOpenAI(model="m", api_key="sk-test")) is None
    assert _inflight.key_for(None, "openai") == "provider:openai"


def test_concurrent_calls_record_how_many_were_in_flight(stub: StubOpenAI, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'load.db'}"
    handler = SeedLockCallbackHandler(store=url)
    model = ChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", max_retries=0, seed=1
    )
    cfg: Any = {"callbacks": [handler]}
    with capture_seedlock_events() as events:
        for _ in range(3):
            model.invoke("hi", config=cfg)  # alone: 1 in flight
        # Four calls held together by the server: all four are in flight at once.
        barrier = threading.Barrier(4, timeout=30)
        answers = iter(["a", "b", "b", "c"])
        lock = threading.Lock()

        def reply(body: dict[str, Any]) -> str:
            barrier.wait()
            with lock:
                return next(answers)

        stub.reply = reply
        threads = [
            threading.Thread(target=model.invoke, args=("hi",), kwargs={"config": cfg})
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    calls = events_named(events, CALL)
    assert [c["seedlock.in_flight"] for c in calls[:3]] == [1, 1, 1]
    assert sorted(c["seedlock.in_flight"] for c in calls[3:]) == [1, 2, 3, 4]
    assert _inflight.now(stub.base_url) == 0  # every call left
    assert handler.close()
    with open_store(url) as store:
        rows = {r.bucket: r for r in store.in_flight()}
    assert set(rows) == {"1", "2-4"}
    # Alone: 3 + 1 calls, every repeat known until the concurrent answers came.
    assert rows["1"].calls + rows["2-4"].calls == 7
    assert rows["2-4"].calls == 3
    total_known = rows["1"].known_repeats + rows["2-4"].known_repeats
    assert total_known == 2 + 1  # two sequential repeats, then one "b" seen again


def test_drift_report_shows_the_rate_by_in_flight_bucket(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from langchain_seedlock._record import CallRecord

    url = f"sqlite:///{tmp_path / 'report.db'}"
    with open_store(url) as store:
        from langchain_seedlock._drift import DriftMonitor

        monitor = DriftMonitor(store, buffer_size=0)
        for i, (in_flight, out) in enumerate(
            [(1, "a"), (1, "a"), (1, "a"), (8, "b"), (8, "c"), (20, "a")]
        ):
            monitor.observe(
                CallRecord(
                    provider="openai",
                    request_model="m",
                    request_hash="r",
                    output_hash=out,
                    seed=1,
                    system_fingerprint="fp",
                    in_flight=in_flight,
                    at=1000.0 + i,
                )
            )
        monitor.close()
    assert main(["drift", "--store", url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["in_flight"], r["calls"], r["repeat_calls"], r["reproducibility_rate"])
            for r in report["in_flight"]] == [
        ("1", 3, 2, 1.0), ("5-16", 2, 2, 0.0), (">16", 1, 1, 1.0),
    ]  # fmt: skip
    assert main(["drift", "--store", url]) == 0
    text = capsys.readouterr().out
    assert "Reproducibility by calls in flight" in text
    assert "5-16" in text
