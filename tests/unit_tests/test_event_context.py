"""User metadata and tags in events: only what the user allowed.

``metadata_keys=`` / ``include_tags=`` on `SeedLockCallbackHandler` and
`SeedLockMiddleware` copy the chosen run metadata keys and the run's tags
into every event of a call, and into the drift events the store keeps.
Nothing beyond the pipeline keys by default: metadata may hold personal data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_openai import ChatOpenAI

from langchain_seedlock import (
    BaselineStore,
    InvalidArgumentError,
    SeedLock,
    SeedLockCallbackHandler,
    SeedLockMiddleware,
    open_store,
)
from langchain_seedlock.testing import FakeBackend, capture_seedlock_events, events_named

LOCK = SeedLock(seed=123, temperature=0.2, max_tokens=50)
RUN_CONFIG: dict[str, Any] = {
    "metadata": {"tenant": "acme", "user_id": "u-7", "email": "a@example.com"},
    "tags": ["beta", "eu"],
}
PRIVATE = ("user_id", "email", "tenant", "tags")


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[BaselineStore]:
    store = open_store(f"sqlite:///{tmp_path / 'baselines.db'}")
    yield store
    store.close()


def model(stub: FakeBackend) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", max_retries=0,
        seed=LOCK.seed, temperature=0.2, max_tokens=50,
    )  # fmt: skip


def drift_twice(stub: FakeBackend, invoke: Any) -> list[dict[str, Any]]:
    """Two runs of the same seeded request, the second answered differently."""
    with capture_seedlock_events() as events:
        stub.reply = "first answer"
        invoke()
        stub.reply = "another answer"
        invoke()
    return events


# -- the callback handler --------------------------------------------------------------
def test_handler_copies_the_chosen_keys_and_tags_into_every_event(
    stub: FakeBackend, sqlite_store: BaselineStore
) -> None:
    handler = SeedLockCallbackHandler(
        store=sqlite_store, metadata_keys=("tenant", "user_id"), include_tags=True
    )
    chat = model(stub)
    config = {**RUN_CONFIG, "callbacks": [handler]}
    events = drift_twice(stub, lambda: chat.invoke("hi", config=config))
    assert len(events_named(events, "seedlock.call")) == 2
    [drift] = events_named(events, "seedlock.output_drift")
    for event in events:
        assert event["tenant"] == "acme"
        assert event["user_id"] == "u-7"
        assert event["tags"] == ["beta", "eu"]
        assert "email" not in event  # not allowed
    assert drift["gen_ai.request.seed"] == 123  # a user key never replaces ours

    assert handler.flush(timeout=10)
    [stored] = sqlite_store.events(name="seedlock.output_drift")
    assert stored.fields["tenant"] == "acme"
    assert stored.fields["user_id"] == "u-7"
    assert stored.fields["tags"] == ["beta", "eu"]
    assert "email" not in stored.fields


def test_handler_keeps_user_metadata_out_by_default(
    stub: FakeBackend, sqlite_store: BaselineStore
) -> None:
    handler = SeedLockCallbackHandler(store=sqlite_store)
    chat = model(stub)
    config = {
        **RUN_CONFIG,
        "metadata": {**RUN_CONFIG["metadata"], "seedlock_label": "greeting"},
        "callbacks": [handler],
    }
    events = drift_twice(stub, lambda: chat.invoke("hi", config=config))
    assert events_named(events, "seedlock.output_drift")
    for event in events:
        assert event["seedlock_label"] == "greeting"  # the pipeline keys stay
        assert not set(PRIVATE) & set(event)
    assert handler.flush(timeout=10)
    [stored] = sqlite_store.events(name="seedlock.output_drift")
    assert stored.fields["seedlock_label"] == "greeting"
    assert not set(PRIVATE) & set(stored.fields)


def test_handler_tags_without_metadata_keys(stub: FakeBackend) -> None:
    handler = SeedLockCallbackHandler(include_tags=True)
    with capture_seedlock_events() as events:
        model(stub).invoke("hi", config={**RUN_CONFIG, "callbacks": [handler]})
        model(stub).invoke("hi", config={"callbacks": [handler]})  # no tags: no key
    first, second = events_named(events, "seedlock.call")
    assert first["tags"] == ["beta", "eu"]
    assert "tenant" not in first
    assert "tags" not in second


def test_a_missing_key_is_left_out(stub: FakeBackend) -> None:
    handler = SeedLockCallbackHandler(metadata_keys=["tenant", "plan"])
    with capture_seedlock_events() as events:
        model(stub).invoke("hi", config={**RUN_CONFIG, "callbacks": [handler]})
    [call] = events_named(events, "seedlock.call")
    assert call["tenant"] == "acme"
    assert "plan" not in call
    assert "tags" not in call


# -- the agent middleware --------------------------------------------------------------
def test_middleware_copies_the_chosen_keys_and_tags(
    stub: FakeBackend, sqlite_store: BaselineStore
) -> None:
    seedlock = SeedLockMiddleware(
        LOCK, store=sqlite_store, metadata_keys=("tenant",), include_tags=True
    )
    agent = create_agent(model(stub), [], middleware=[seedlock])
    question = {"messages": [{"role": "user", "content": "Hello?"}]}
    events = drift_twice(stub, lambda: agent.invoke(question, RUN_CONFIG))
    calls = events_named(events, "seedlock.call")
    assert len(calls) == 2
    [drift] = events_named(events, "seedlock.output_drift")
    for event in [*calls, drift]:
        assert event["tenant"] == "acme"
        assert "beta" in event["tags"]
        assert "eu" in event["tags"]
        assert "user_id" not in event
        assert "email" not in event
        assert event["agent_step"] == 1  # the agent's own context stays

    assert seedlock.flush(timeout=10)
    [stored] = sqlite_store.events(name="seedlock.output_drift")
    assert stored.fields["tenant"] == "acme"
    assert "eu" in stored.fields["tags"]
    assert "user_id" not in stored.fields
    seedlock.close()


def test_middleware_keeps_user_metadata_out_by_default(stub: FakeBackend) -> None:
    seedlock = SeedLockMiddleware(LOCK)
    agent = create_agent(model(stub), [], middleware=[seedlock])
    with capture_seedlock_events() as events:
        agent.invoke({"messages": [{"role": "user", "content": "Hello?"}]}, RUN_CONFIG)
    [call] = events_named(events, "seedlock.call")
    assert not set(PRIVATE) & set(call)
    assert call["langgraph_node"] == "model"
    seedlock.close()


# -- arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize("owner", [SeedLockCallbackHandler, SeedLockMiddleware])
@pytest.mark.parametrize(
    ("kwargs", "argument", "says"),
    [
        ({"metadata_keys": "tenant"}, "metadata_keys", "tuple or list of strings"),
        ({"metadata_keys": None}, "metadata_keys", "tuple or list of strings"),
        ({"metadata_keys": ("tenant", 3)}, "metadata_keys", "non-empty strings"),
        ({"metadata_keys": ("",)}, "metadata_keys", "non-empty strings"),
        ({"metadata_keys": ("event",)}, "metadata_keys", "events already use"),
        ({"metadata_keys": ("run_id",)}, "metadata_keys", "events already use"),
        ({"metadata_keys": ("tags",)}, "metadata_keys", "events already use"),
        ({"metadata_keys": ("gen_ai.request.seed",)}, "metadata_keys", "events already use"),
        ({"metadata_keys": ("seedlock.mine",)}, "metadata_keys", "events already use"),
        ({"include_tags": "yes"}, "include_tags", "True or False"),
        ({"include_tags": 1}, "include_tags", "True or False"),
    ],
)
def test_bad_context_options_are_refused(
    owner: Any, kwargs: dict[str, Any], argument: str, says: str
) -> None:
    args = (LOCK,) if owner is SeedLockMiddleware else ()
    with pytest.raises(InvalidArgumentError, match=says) as info:
        owner(*args, **kwargs)
    assert info.value.argument == argument
    assert owner.__name__ in str(info.value)


def test_keys_are_kept_once_in_order() -> None:
    handler = SeedLockCallbackHandler(metadata_keys=["user_id", "tenant", "user_id"])
    assert handler.metadata_keys == ("user_id", "tenant")
    assert handler.include_tags is False
