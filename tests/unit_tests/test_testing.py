"""`langchain_seedlock.testing`: the helpers users get for their own tests."""

from __future__ import annotations

import socket

import pytest
import structlog

from langchain_seedlock import LockedChatOpenAI, SeedLock, SeedLockCallbackHandler, open_store
from langchain_seedlock.testing import (
    FakeBackend,
    assert_drift,
    assert_reproduced,
    capture_seedlock_events,
    events_named,
)


def _model(backend: FakeBackend) -> LockedChatOpenAI:
    return LockedChatOpenAI(
        model="m", base_url=backend.base_url, api_key="none", lock=SeedLock(seed=7)
    )


def test_capture_sees_debug_events_live_and_only_ours() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # error+
    with capture_seedlock_events() as events:
        structlog.get_logger().info("someone.else")
        structlog.get_logger("langchain_seedlock").debug("seedlock.call", x=1)
        assert [e["event"] for e in events] == ["seedlock.call"]  # filled while running
    assert events[0]["log_level"] == "debug"
    assert events[0]["x"] == 1
    # The application's configuration is back.
    assert structlog.get_config()["wrapper_class"] is structlog.make_filtering_bound_logger(40)


def test_reproduced_then_scripted_drift(stub: FakeBackend) -> None:
    handler = SeedLockCallbackHandler(store=open_store("memory://"))
    model = _model(stub)
    with capture_seedlock_events() as events:
        model.invoke("q", config={"callbacks": [handler]})
        model.invoke("q", config={"callbacks": [handler]})
    assert_reproduced(events, min_calls=2)
    with pytest.raises(AssertionError, match=r"seedlock\.output_drift"):
        assert_drift(events)

    stub.reply = "something new"  # same fingerprint: unexplained
    with capture_seedlock_events() as events:
        model.invoke("q", config={"callbacks": [handler]})
    assert_drift(events, explained=False, count=1)
    with pytest.raises(AssertionError, match="reproduce"):
        assert_reproduced(events)

    stub.fingerprint, stub.reply = "fp_new", "newer still"
    with capture_seedlock_events() as events:
        model.invoke("q", config={"callbacks": [handler]})
    assert_drift(events, explained=True)
    assert len(events_named(events, "fingerprint_changed")) == 1
    handler.close()


def test_assert_reproduced_needs_calls() -> None:
    with pytest.raises(AssertionError, match="at least 1"):
        assert_reproduced([])


def test_variants_are_drawn_by_weight_and_repeat_after_reset(stub: FakeBackend) -> None:
    stub.variants = [("a", 6), ("b", 3), ("c", 1)]
    model = _model(stub)
    first = [model.invoke("q").content for _ in range(40)]
    assert set(first) == {"a", "b", "c"}
    assert first.count("a") > first.count("c")
    stub.reset()
    stub.variants = [("a", 6), ("b", 3), ("c", 1)]
    assert [model.invoke("q").content for _ in range(40)] == first


def test_context_manager_serves_and_stops() -> None:
    with FakeBackend() as backend:
        assert _model(backend).invoke("hi").response_metadata["system_fingerprint"] == "fp_stub_1"
        assert backend.last_request["seed"] == 7
    host, port = backend.base_url.split("//")[1].split("/")[0].split(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2)
