"""Property: whatever route a parameter takes, the body on the wire matches the lock.

For a locked model (`LockedChatOpenAI`, or `lock_model` on a ChatOpenAI
subclass, which takes the generic wrapper), a parameter passed as a
constructor field, in ``model_kwargs``, in the constructor's ``extra_body``,
through ``.bind``, ``.bind(extra_body=...)``, as a call argument, in the
call's ``extra_body``, through ``with_structured_output`` or ``bind_tools``,
with a generated value (equal to the locked one, equal in another type, other
values, ``None``): the JSON body the stub server received carries the locked
value under every spelling it sent, or nothing was sent and
`LockViolationError` was raised, which is what must happen for a different
value under ``on_violation="raise"`` (and, as for every constructor argument,
for a different value given at construction whatever the policy).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from langchain_seedlock import LockedChatOpenAI, LockViolationError, SeedLock, lock_model
from langchain_seedlock.testing import capture_seedlock_events
from tests._fixtures.stub_openai import StubOpenAI

BASE = SeedLock(seed=5, temperature=0.2, top_p=0.9, max_tokens=64)
# Where each locked parameter may travel in a Chat Completions body.
WIRE_NAMES = {
    "seed": ("seed",),
    "temperature": ("temperature",),
    "top_p": ("top_p",),
    "max_tokens": ("max_tokens", "max_completion_tokens"),
}
CONSTRUCTOR_ROUTES = ("field", "model_kwargs", "extra_body")
CALL_ROUTES = (
    "bind",
    "bind_extra_body",
    "call",
    "call_extra_body",
    "structured",
    "structured_extra_body",
    "bind_tools",
    "bind_tools_extra_body",
)


class OtherOpenAICompatible(ChatOpenAI):
    """A ChatOpenAI subclass (like ChatDeepSeek): `lock_model` wraps it generically."""


class Answer(BaseModel):
    """An answer."""

    text: str


@tool
def lookup(term: str) -> str:
    """Look a term up."""
    return term


def values_for(name: str) -> st.SearchStrategy[Any]:
    """The locked value, the same in another type, other valid values, None."""
    if name == "seed":
        return st.sampled_from([5, 5.0, None, 0, 999, -1, 2**31 - 1])
    if name == "max_tokens":
        return st.sampled_from([64, 64.0, None, 1, 65, 4096])
    if name == "temperature":
        return st.one_of(
            st.sampled_from([0.2, None, 0, 1]),
            st.floats(0.0, 2.0, allow_nan=False).filter(lambda t: t != 0.2),
        )
    return st.one_of(  # top_p
        st.sampled_from([0.9, None, 1]),
        st.floats(0.0, 1.0, allow_nan=False).filter(lambda t: t != 0.9),
    )


@st.composite
def overrides(draw: st.DrawFn) -> dict[str, Any]:
    """1-2 locked parameters, each under one of its spellings, with a value."""
    names = draw(st.lists(st.sampled_from(sorted(WIRE_NAMES)), min_size=1, max_size=2, unique=True))
    given: dict[str, Any] = {}
    for name in names:
        key = name
        if name == "max_tokens":
            key = draw(st.sampled_from(["max_tokens", "max_completion_tokens"]))
        given[key] = draw(values_for(name))
    return given


def canonical(key: str) -> str:
    return "max_tokens" if key == "max_completion_tokens" else key


def build(door: str, lock: SeedLock, stub: StubOpenAI, route: str, given: dict[str, Any]) -> Any:
    ctor: dict[str, Any] = {}
    if route == "field":
        ctor = dict(given)
    elif route == "model_kwargs":
        ctor = {"model_kwargs": dict(given)}
    elif route == "extra_body":
        ctor = {"extra_body": dict(given)}
    common = {"base_url": stub.base_url, "api_key": "sk-test", "max_retries": 0}
    with warnings.catch_warnings():
        # langchain-openai warns about a field given in model_kwargs (then sends it).
        warnings.simplefilter("ignore", UserWarning)
        if door == "locked":
            return LockedChatOpenAI(model="gpt-4o-mini", lock=lock, **common, **ctor)
        return lock_model(OtherOpenAICompatible(model="other", **common, **ctor), lock)


def call(model: BaseChatModel, route: str, given: dict[str, Any], stream: bool) -> None:
    kwargs: dict[str, Any] = {}
    if route.endswith("extra_body"):
        kwargs = {"extra_body": dict(given)}
    elif route in CALL_ROUTES:
        kwargs = dict(given)
    runnable: Any = model
    if route.startswith("bind_tools"):
        runnable = model.bind_tools([lookup], **kwargs)
    elif route.startswith("structured"):
        runnable = model.with_structured_output(Answer, **kwargs)
    elif route.startswith("bind"):
        runnable = model.bind(**kwargs)
    elif route.startswith("call"):
        if stream:
            list(model.stream("hi", **kwargs))
        else:
            model.invoke("hi", **kwargs)
        return
    if stream and not route.startswith("structured"):
        list(runnable.stream("hi"))
    else:
        runnable.invoke("hi")


def assert_body_locked(body: dict[str, Any], lock: SeedLock) -> None:
    for name, locked in lock.canonical().items():
        sent = [body[key] for key in WIRE_NAMES[name] if key in body]
        assert sent, f"{name} was not sent: {body}"
        for value in sent:
            assert value == locked, (name, value, body)
            assert type(value) is type(locked) or name in ("temperature", "top_p"), (name, body)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    door=st.sampled_from(["locked", "wrapped"]),
    policy=st.sampled_from(["raise", "warn", "ignore"]),
    route=st.sampled_from(CONSTRUCTOR_ROUTES + CALL_ROUTES),
    given=overrides(),
    stream=st.booleans(),
)
def test_the_wire_matches_the_lock(
    stub: StubOpenAI,
    door: str,
    policy: str,
    route: str,
    given: dict[str, Any],
    stream: bool,
) -> None:
    stub.reset()
    lock = BASE.replace(on_violation=policy)
    differs = any(
        v is not None and not lock.equals_locked(canonical(k), v) for k, v in given.items()
    )
    # A different value is refused under "raise", and at construction whatever
    # the policy; None (sent as a null, or meaning "unset") may be refused under "raise".
    must_refuse = differs and (policy == "raise" or route in CONSTRUCTOR_ROUTES)
    may_refuse = must_refuse or (policy == "raise" and None in given.values())
    with capture_seedlock_events() as logs:
        try:
            call(build(door, lock, stub, route, given), route, given, stream)
        except LockViolationError:
            assert stub.requests == [], "refused, yet something was sent"
            assert may_refuse, f"{given} via {route} was refused under {policy!r}"
            return
    assert not must_refuse, f"{given} via {route} was accepted under {policy!r}"
    assert stub.requests, "nothing was sent and nothing was raised"
    for body in stub.requests:
        assert_body_locked(body, lock)
    events = [line["event"] for line in logs if line["event"].startswith("seedlock.")]
    if policy == "ignore":
        assert events == []
    elif differs:
        assert "seedlock.lock_violation" in events


@pytest.mark.parametrize("door", ["locked", "wrapped"])
def test_the_reported_case(stub: StubOpenAI, door: str) -> None:
    """The issue's example, on both doors, under each policy."""
    lock = SeedLock(seed=5, temperature=0.2)
    for policy in ("raise", "warn", "ignore"):
        stub.reset()
        model = build(door, lock.replace(on_violation=policy), stub, "call", {})
        if policy == "raise":
            with pytest.raises(LockViolationError):
                model.invoke("x", extra_body={"seed": 999, "temperature": 1.9})
            assert stub.requests == []
            continue
        msg = model.invoke("x", extra_body={"seed": 999, "temperature": 1.9})
        assert (stub.last_request["seed"], stub.last_request["temperature"]) == (5, 0.2)
        assert msg.response_metadata["seed"] == 5
