"""``seedlock.reproducibility_changed`` once per fleet: each process watches
its own calls (the CUSUM is per process), but a change another process stored
within the quiet period is logged at info, not as a second warning."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from langchain_openai import ChatOpenAI

from langchain_seedlock import SeedLockCallbackHandler
from langchain_seedlock.testing import capture_seedlock_events, events_named
from tests._fixtures.stub_openai import StubOpenAI

CHANGED = "seedlock.reproducibility_changed"


def drop_rate(stub: StubOpenAI, handler: SeedLockCallbackHandler, rng: random.Random) -> None:
    """70 reproducing calls, then 20 that never reproduce: enough for the CUSUM."""
    model = ChatOpenAI(model="m", base_url=stub.base_url, api_key="sk-test", seed=1)
    config: Any = {"callbacks": [handler]}
    stub.reply = lambda body: "stable " + str(body["messages"][-1]["content"])
    for _ in range(7):
        for i in range(10):
            model.invoke(f"q{i}", config=config)
    stub.reply = lambda body: f"noisy {rng.random()}"
    for _ in range(2):
        for i in range(10):
            model.invoke(f"q{i}", config=config)


def test_a_second_process_logs_the_same_change_at_info(stub: StubOpenAI, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    with capture_seedlock_events() as first_events, SeedLockCallbackHandler(store=url) as first:
        drop_rate(stub, first, random.Random(1))
    (warned,) = events_named(first_events, CHANGED)
    assert warned["log_level"] == "warning"
    assert "seedlock.reported_at" not in warned
    # Another worker of the fleet (its own monitor and CUSUM, the same store)
    # sees the same drop on its own calls.
    with capture_seedlock_events() as second_events, SeedLockCallbackHandler(store=url) as second:
        drop_rate(stub, second, random.Random(2))
    (again,) = events_named(second_events, CHANGED)
    assert again["log_level"] == "info"
    assert again["seedlock.reported_at"].startswith("20")
    assert again["seedlock.backend_id"] == warned["seedlock.backend_id"]


async def test_on_an_event_loop_the_store_is_read_off_the_loop(
    stub: StubOpenAI, tmp_path: Path
) -> None:
    """Async calls: the check runs on its own thread; flush() waits for it."""
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    with SeedLockCallbackHandler(store=url) as first:
        drop_rate(stub, first, random.Random(1))
    rng = random.Random(2)
    model = ChatOpenAI(model="m", base_url=stub.base_url, api_key="sk-test", seed=1)

    async def calls(handler: SeedLockCallbackHandler) -> None:
        config: Any = {"callbacks": [handler]}
        stub.reply = lambda body: "stable " + str(body["messages"][-1]["content"])
        for _ in range(7):
            for i in range(10):
                await model.ainvoke(f"q{i}", config=config)
        stub.reply = lambda body: f"noisy {rng.random()}"
        for _ in range(2):
            for i in range(10):
                await model.ainvoke(f"q{i}", config=config)

    with capture_seedlock_events() as events:
        second = SeedLockCallbackHandler(store=url)
        await calls(second)
        assert await asyncio.to_thread(second.flush, 30)
        second.close()
    (again,) = events_named(events, CHANGED)
    assert again["log_level"] == "info"
    assert "seedlock.reported_at" in again
