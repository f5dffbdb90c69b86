"""Every bad input and its outcome: parameters, server responses, store URLs, and (4) a
broken log sink, a closed handler, constructor arguments, SQLite options, CLI options,
secrets in URLs and errors, and model calls other agent middleware make.

Each row is an input a user (or a broken server) can give through the public
surface, and the one outcome it must have: a typed error that names the
problem, or a handled event, and never a half-written store. Deeper tests of
single behaviours live beside their module and are not repeated here:
test_lock.py (every `SeedLock` field), test_bad_responses.py (fingerprint
shapes through the locked model), test_store_memory_sqlite.py and
tests/integration_tests/test_store_postgres.py (corrupt, read-only, newer
schema, outage timing).
"""

# ruff: noqa: E501 - the tables keep one row per line, so a reader can scan them
from __future__ import annotations

import json
import math
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import structlog
from langchain_openai import ChatOpenAI
from pydantic import ValidationError

from langchain_seedlock import (
    DriftMonitor,
    InvalidArgumentError,
    InvalidLockError,
    LockedChatOpenAI,
    LockViolationError,
    MalformedResponseError,
    SeedLock,
    SeedLockCallbackHandler,
    SeedLockError,
    SeedLockMiddleware,
    StoreError,
    UnsupportedModelError,
    configure_logging,
    enable_auto_attach,
    lock_model,
    open_store,
)
from langchain_seedlock._record import MAX_FINGERPRINT_CHARS, clean_fingerprint
from langchain_seedlock._store._memory import MemoryStore
from langchain_seedlock.cli import main as cli_main
from langchain_seedlock.testing import capture_seedlock_events
from tests._fixtures.stub_openai import StubOpenAI, raw_completion

LOCK = SeedLock(seed=5, temperature=0.1)
SECRET = "pw-SEEDLOCK-SECRET-456"  # a store password: must never reach an error message


def locked(stub: StubOpenAI, **kwargs: Any) -> LockedChatOpenAI:
    kwargs = {"model": "m", "base_url": stub.base_url, **kwargs}
    return LockedChatOpenAI(api_key="sk-x", lock=LOCK, max_retries=0, **kwargs)


def plain(stub: StubOpenAI, **kwargs: Any) -> ChatOpenAI:
    kwargs = {"seed": 5, "model": "m", "base_url": stub.base_url, **kwargs}
    return ChatOpenAI(api_key="sk-x", max_retries=0, **kwargs)


def enforced(stub: StubOpenAI, **kwargs: Any) -> Any:
    """A plain ChatOpenAI call under an enforcing handler."""
    kwargs.setdefault("temperature", 0.1)
    handler = SeedLockCallbackHandler(lock=LOCK, enforce=True)
    return plain(stub, **kwargs).invoke("x", config={"callbacks": [handler]})


# ---------------------------------------------------------------------------
# 1. Seeds and parameters
# ---------------------------------------------------------------------------
# (id, action, expected error or None when the call is accepted, message regex)
# An action gets the stub; a refused call must send nothing to it.
Action = Callable[[StubOpenAI], Any]

# fmt: off
PARAMS: list[Any] = [
    # SeedLock itself (every field: test_lock.py; these are the extremes)
    pytest.param(lambda s: SeedLock(seed=10**30), InvalidLockError, r"'seed'.*64-bit", id="lock-seed-10**30"),
    pytest.param(lambda s: SeedLock(seed=-(10**30)), InvalidLockError, r"'seed'.*64-bit", id="lock-seed--10**30"),
    pytest.param(lambda s: SeedLock(seed=math.nan), InvalidLockError, r"'seed'.*integer", id="lock-seed-nan"),
    pytest.param(lambda s: SeedLock(seed=math.inf), InvalidLockError, r"'seed'.*integer", id="lock-seed-inf"),
    pytest.param(lambda s: SeedLock(seed=False), InvalidLockError, r"'seed'.*not bool", id="lock-seed-False"),
    pytest.param(lambda s: SeedLock(seed=b"1"), InvalidLockError, r"'seed'.*integer", id="lock-seed-bytes"),
    pytest.param(lambda s: SeedLock.from_dict({}), InvalidLockError, r"'seed'.*required", id="lock-no-seed"),
    pytest.param(lambda s: SeedLock(seed=1, temperature=math.inf), InvalidLockError, r"'temperature'.*between", id="lock-temperature-inf"),
    pytest.param(lambda s: SeedLock(seed=1, temperature=-math.inf), InvalidLockError, r"'temperature'.*between", id="lock-temperature--inf"),
    pytest.param(lambda s: SeedLock(seed=1, temperature=10**30), InvalidLockError, r"'temperature'.*between", id="lock-temperature-10**30"),
    pytest.param(lambda s: SeedLock(seed=1, temperature=True), InvalidLockError, r"'temperature'.*number", id="lock-temperature-bool"),
    pytest.param(lambda s: SeedLock(seed=1, top_p=math.nan), InvalidLockError, r"'top_p'.*between", id="lock-top_p-nan"),
    pytest.param(lambda s: SeedLock(seed=1, max_tokens=10**30), InvalidLockError, r"'max_tokens'.*between", id="lock-max_tokens-10**30"),
    pytest.param(lambda s: SeedLock(seed=1, max_tokens="200"), InvalidLockError, r"'max_tokens'.*integer", id="lock-max_tokens-str"),
    pytest.param(lambda s: SeedLock(seed=1, n=True), InvalidLockError, r"'n'.*integer", id="lock-n-bool"),
    pytest.param(lambda s: SeedLock(seed=1, logit_bias={"7": math.nan}), InvalidLockError, r"logit_bias\['7'\]", id="lock-logit_bias-nan"),
    # LockedChatOpenAI constructor: the lock itself, and arguments that contradict it
    pytest.param(lambda s: LockedChatOpenAI(model="m", api_key="sk-x"), ValidationError, r"lock", id="model-no-lock"),
    pytest.param(lambda s: LockedChatOpenAI(model="m", api_key="sk-x", lock="5"), UnsupportedModelError, r"lock must be a SeedLock, got str", id="model-lock-str"),
    pytest.param(lambda s: LockedChatOpenAI(model="m", api_key="sk-x", lock=5), UnsupportedModelError, r"lock must be a SeedLock, got int", id="model-lock-int"),
    pytest.param(lambda s: LockedChatOpenAI(model="m", api_key="sk-x", lock={"seed": 10**30}), InvalidLockError, r"'seed'.*64-bit", id="model-lock-dict-seed-10**30"),
    pytest.param(lambda s: LockedChatOpenAI(model="m", api_key="sk-x", lock={"seed": "5"}), InvalidLockError, r"'seed'.*integer", id="model-lock-dict-seed-str"),
    pytest.param(lambda s: locked(s, seed="5"), LockViolationError, r"constructor argument sets seed='5'", id="model-seed-str"),
    pytest.param(lambda s: locked(s, seed=True), LockViolationError, r"constructor argument sets seed=True", id="model-seed-bool"),
    pytest.param(lambda s: locked(s, seed=10**30), LockViolationError, r"constructor argument sets seed=1000", id="model-seed-10**30"),
    pytest.param(lambda s: locked(s, seed=math.nan), LockViolationError, r"constructor argument sets seed=nan", id="model-seed-nan"),
    pytest.param(lambda s: locked(s, temperature=math.nan), LockViolationError, r"sets temperature=nan", id="model-temperature-nan"),
    pytest.param(lambda s: locked(s, temperature=math.inf), LockViolationError, r"sets temperature=inf", id="model-temperature-inf"),
    pytest.param(lambda s: locked(s, temperature="0.1"), LockViolationError, r"sets temperature='0.1'", id="model-temperature-str"),
    pytest.param(lambda s: locked(s, use_responses_api=True), UnsupportedModelError, r"Responses API", id="model-responses-api"),
    pytest.param(lambda s: lock_model(plain(s), "5"), UnsupportedModelError, r"lock must be a SeedLock", id="lock_model-lock-str"),
    pytest.param(lambda s: lock_model(plain(s, seed=6), LOCK), LockViolationError, r"sets seed=6", id="lock_model-other-seed"),
    # call-time kwargs: refused before anything is sent
    pytest.param(lambda s: locked(s).invoke("x", seed="1"), LockViolationError, r"call argument sets seed='1'", id="invoke-seed-str"),
    pytest.param(lambda s: locked(s).invoke("x", seed="5"), LockViolationError, r"call argument sets seed='5'", id="invoke-seed-str-equal"),
    pytest.param(lambda s: locked(s).invoke("x", seed=True), LockViolationError, r"call argument sets seed=True", id="invoke-seed-bool"),
    pytest.param(lambda s: locked(s).invoke("x", seed=10**30), LockViolationError, r"call argument sets seed=1000", id="invoke-seed-10**30"),
    pytest.param(lambda s: locked(s).invoke("x", seed=None), LockViolationError, r"call argument sets seed=None", id="invoke-seed-None"),
    pytest.param(lambda s: locked(s).invoke("x", temperature=math.nan), LockViolationError, r"call argument sets temperature=nan", id="invoke-temperature-nan"),
    pytest.param(lambda s: locked(s).invoke("x", temperature=math.inf), LockViolationError, r"call argument sets temperature=inf", id="invoke-temperature-inf"),
    pytest.param(lambda s: locked(s).invoke("x", temperature="0.1"), LockViolationError, r"call argument sets temperature='0.1'", id="invoke-temperature-str"),
    pytest.param(lambda s: locked(s).bind(seed=1.5).invoke("x"), LockViolationError, r"call argument sets seed=1.5", id="bind-seed-float"),
    # accepted: equal values of another type are sent as the locked integer
    pytest.param(lambda s: locked(s).invoke("x", seed=5.0), None, "", id="invoke-seed-5.0-sent-as-5"),
    # the handler and the middleware take a SeedLock, nothing else
    pytest.param(lambda s: SeedLockCallbackHandler(lock="5"), TypeError, r"lock must be a SeedLock, got str", id="handler-lock-str"),
    pytest.param(lambda s: SeedLockCallbackHandler(lock={"seed": 5}), TypeError, r"lock must be a SeedLock, got dict", id="handler-lock-dict"),
    pytest.param(lambda s: SeedLockCallbackHandler(lock=5, enforce=True), TypeError, r"lock must be a SeedLock, got int", id="handler-lock-int-enforce"),
    pytest.param(lambda s: SeedLockCallbackHandler(store="ftp://x/y"), StoreError, r"unknown store URL scheme 'ftp'", id="handler-store-bad-url"),
    pytest.param(lambda s: enforced(s, seed="5"), None, "", id="handler-enforce-seed-str-coerced-by-ChatOpenAI"),
    pytest.param(lambda s: enforced(s, seed=6), LockViolationError, r"SeedLockCallbackHandler sets seed=6", id="handler-enforce-other-seed"),
    pytest.param(lambda s: enforced(s, seed=None), LockViolationError, r"SeedLockCallbackHandler sets seed=None", id="handler-enforce-no-seed"),
    pytest.param(lambda s: enforced(s, temperature=math.nan), LockViolationError, r"SeedLockCallbackHandler sets temperature=nan", id="handler-enforce-temperature-nan"),
    pytest.param(lambda s: enforced(s, temperature=math.inf), LockViolationError, r"SeedLockCallbackHandler sets temperature=inf", id="handler-enforce-temperature-inf"),
    pytest.param(lambda s: SeedLockMiddleware("5"), TypeError, r"lock must be a SeedLock, got str", id="middleware-lock-str"),
    pytest.param(lambda s: SeedLockMiddleware({"seed": 5}), TypeError, r"lock must be a SeedLock, got dict", id="middleware-lock-dict"),
    pytest.param(lambda s: SeedLockMiddleware(None), TypeError, r"lock must be a SeedLock, got NoneType", id="middleware-lock-None"),
    pytest.param(lambda s: SeedLockMiddleware(LOCK, store="nope://"), StoreError, r"unknown store URL scheme 'nope'", id="middleware-store-bad-url"),
]
# fmt: on


@pytest.mark.parametrize(("action", "error", "match"), PARAMS)
def test_bad_seeds_and_parameters(
    stub: StubOpenAI, action: Action, error: type[Exception] | None, match: str
) -> None:
    if error is None:
        action(stub)
        sent = stub.last_request
        assert sent["seed"] == LOCK.seed
        assert type(sent["seed"]) is int
        assert sent["temperature"] == 0.1
        return
    with pytest.raises(error, match=match) as info:
        action(stub)
    assert stub.requests == [], "a refused call must send nothing"
    if error is not TypeError and error is not ValidationError:
        assert isinstance(info.value, SeedLockError)


def test_float_seed_equal_to_the_lock_hashes_like_the_lock(stub: StubOpenAI) -> None:
    # seed=5.0 is accepted as the locked 5: the same request, the same hash.
    a = locked(stub).invoke("x").response_metadata["seedlock_request_hash"]
    b = locked(stub).invoke("x", seed=5.0).response_metadata["seedlock_request_hash"]
    assert a == b
    assert [r["seed"] for r in stub.requests] == [5, 5]


# ---------------------------------------------------------------------------
# 2. Malformed server responses
# ---------------------------------------------------------------------------
def completion(**overrides: Any) -> bytes:
    """A valid chat completion with ``system_fingerprint="fp_ok"``; ``...`` removes a key."""
    return raw_completion(**{"system_fingerprint": "fp_ok", **overrides})


def sse(*chunks: dict[str, Any] | str, done: bool = True) -> bytes:
    lines = [c if isinstance(c, str) else json.dumps(c) for c in chunks]
    text = "".join(f"data: {line}\n\n" for line in lines)
    return (text + ("data: [DONE]\n\n" if done else "")).encode()


def chunk(content: str | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "s",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


HUGE = "f" * 100_000


@dataclass(frozen=True)
class Response:
    """How the stub answers, and what each door must make of it.

    ``fingerprint`` is the recorded value when the call succeeds; ``locked_error``
    / ``plain_error`` the exception a locked model / a plain ChatOpenAI raises
    (the handler never adds or changes one); ``event`` the handled event.
    """

    stub: dict[str, Any]
    stream: bool = False
    fingerprint: str | None = "fp_ok"
    locked_error: type[BaseException] | None = None
    plain_error: type[BaseException] | None = None
    event: str = "seedlock.call"
    error_type: str | None = None  # the event's error.type


# fmt: off
RESPONSES = [
    pytest.param(Response({"raw_response": completion(system_fingerprint=...)}, fingerprint=None, event="seedlock.fingerprint_missing"), id="fingerprint-missing"),
    pytest.param(Response({"raw_response": completion(system_fingerprint=None)}, fingerprint=None, event="seedlock.fingerprint_missing"), id="fingerprint-null"),
    pytest.param(Response({"raw_response": completion(system_fingerprint="")}, fingerprint=None, event="seedlock.fingerprint_missing"), id="fingerprint-empty"),
    pytest.param(Response({"raw_response": completion(system_fingerprint=123)}, fingerprint="123"), id="fingerprint-int"),
    pytest.param(Response({"raw_response": completion(system_fingerprint=["a", 1])}, fingerprint='["a",1]'), id="fingerprint-list"),
    pytest.param(Response({"raw_response": completion(system_fingerprint=HUGE)}, fingerprint=clean_fingerprint(HUGE)), id="fingerprint-huge"),
    pytest.param(Response({"raw_response": completion(usage=...)}), id="usage-missing"),
    pytest.param(Response({"raw_response": completion(usage=None)}), id="usage-null"),
    pytest.param(Response({"raw_response": completion(choices=[])}, locked_error=MalformedResponseError, plain_error=IndexError, event="seedlock.call_failed", error_type="MalformedResponseError"), id="choices-empty"),
    pytest.param(Response({"raw_response": b"<html>bad gateway</html>"}, locked_error=json.JSONDecodeError, plain_error=json.JSONDecodeError, event="seedlock.call_failed", error_type="JSONDecodeError"), id="body-not-json"),
    pytest.param(Response({"status": 500}, locked_error=openai.InternalServerError, plain_error=openai.InternalServerError, event="seedlock.call_failed", error_type="OpenAIAPIError"), id="http-500"),
    pytest.param(Response({"raw_sse": sse(chunk("hel"), "{not json")}, stream=True, locked_error=json.JSONDecodeError, plain_error=json.JSONDecodeError, event="seedlock.call_failed", error_type="JSONDecodeError"), id="sse-broken-json"),
    pytest.param(Response({"raw_sse": sse(chunk("hel"), chunk("lo", "stop", system_fingerprint=HUGE))}, stream=True, fingerprint=clean_fingerprint(HUGE)), id="sse-huge-fingerprint"),
    pytest.param(Response({"raw_sse": sse(chunk("hel"), chunk("lo", "stop", system_fingerprint=None))}, stream=True, fingerprint=None, event="seedlock.fingerprint_missing"), id="sse-null-fingerprint"),
    # A stream cut before its finish chunk: never a variant, never a baseline (#14).
    pytest.param(Response({"raw_sse": sse(chunk("hel"), done=False)}, stream=True, fingerprint=None, event="seedlock.incomplete_output"), id="sse-truncated-no-finish"),
]
# fmt: on


@pytest.fixture
def observed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SeedLockCallbackHandler]:
    """A handler on a SQLite store, in production mode: its own failures are swallowed."""
    monkeypatch.delenv("SEEDLOCK_RAISE_INTERNAL_ERRORS")
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    handler = SeedLockCallbackHandler(store=store)
    yield handler
    handler.close()
    store.close()


@pytest.mark.parametrize("door", ["locked", "plain"])
@pytest.mark.parametrize("case", RESPONSES)
def test_malformed_responses(
    stub: StubOpenAI, observed: SeedLockCallbackHandler, case: Response, door: str
) -> None:
    for key, value in case.stub.items():
        setattr(stub, key, value)
    model = locked(stub) if door == "locked" else plain(stub)
    error = case.locked_error if door == "locked" else case.plain_error
    config: Any = {"callbacks": [observed]}

    def call() -> Any:
        if case.stream:
            full = None
            for part in model.stream("hi", config=config):
                full = part if full is None else full + part
            return full
        return model.invoke("hi", config=config)

    with capture_seedlock_events() as logs:
        if error is None:
            message = call()
        else:
            with pytest.raises(error):
                call()
    assert observed.flush(30)
    names = [line["event"] for line in logs]
    assert "seedlock.internal_error" not in names, logs
    assert case.event in names
    store = observed.monitor.store
    assert store is not None
    requests, models = store.requests(), store.models()
    stored = store.events()
    if case.event == "seedlock.incomplete_output":
        assert (requests, models) == ([], [])
        assert "seedlock.incomplete_output" in [e.name for e in stored]
    elif error is None:
        # One call, written whole: one output row, one fingerprint row, same values.
        assert [r.calls for r in requests] == [1]
        assert [(m.system_fingerprint, m.count) for m in models] == [(case.fingerprint, 1)]
        (row,) = store.outputs_for(requests[0].request_hash)
        assert row.system_fingerprint == case.fingerprint
        assert row.count == 1
        (line,) = [x for x in logs if x["event"] == "seedlock.call"]
        assert line["openai.response.system_fingerprint"] == case.fingerprint
        fp = case.fingerprint
        assert fp is None or len(fp) <= MAX_FINGERPRINT_CHARS
        if door == "locked":
            assert message.response_metadata["system_fingerprint"] == case.fingerprint
    else:
        # Nothing recorded but the failure itself.
        assert requests == []
        assert models == []
        assert [e.name for e in stored] == ["seedlock.call_failed"]
        assert stored[0].fields["error.type"] == case.error_type


# ---------------------------------------------------------------------------
# 3. Store URLs
# ---------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens on it once the socket is closed


def _pg(request: pytest.FixtureRequest, user: str, password: str, db: str) -> str:
    port = request.getfixturevalue("postgres_server").port
    return f"postgresql://{user}:{password}@127.0.0.1:{port}/{db}"


# (url builder, message regex); every row raises StoreError and hides the password.
StoreUrl = Callable[[pytest.FixtureRequest], Any]
PG = pytest.mark.postgres
# fmt: off
STORE_URLS = [
    pytest.param(lambda r: "ftp://x/y.db", r"unknown store URL scheme 'ftp'.*supported: memory://", id="scheme-unknown"),
    pytest.param(lambda r: f"mysql://u:{SECRET}@h/db", r"unknown store URL scheme 'mysql' in 'mysql://u:\*\*\*@h/db'", id="scheme-unknown-with-password"),
    pytest.param(lambda r: "", r"unknown store URL scheme '\(none\)'", id="empty"),
    pytest.param(lambda r: "baselines.db", r"unknown store URL scheme '\(none\)'", id="bare-path"),
    pytest.param(lambda r: 42, r"store URL must be a string, got int", id="not-a-string"),
    pytest.param(lambda r: "memory://?x=1", None, id="memory-ok-control"),
    pytest.param(lambda r: "sqlite://baselines.db", r"must look like sqlite:///relative.db", id="sqlite-two-slashes"),
    pytest.param(lambda r: "sqlite:///", r"SQLite store URL has no path", id="sqlite-no-path"),
    pytest.param(lambda r: "sqlite:////proc/seedlock/b.db", r"SQLite store.*creating its directory", id="sqlite-uncreatable-dir"),
    pytest.param(lambda r: f"postgresql://u:{SECRET}@[::1/db", r"PostgreSQL store .*connecting failed: .*IPv6", id="pg-malformed-url"),
    pytest.param(lambda r: f"postgresql://u:{SECRET}@127.0.0.1:notaport/db", r"PostgreSQL store .*connecting failed", id="pg-bad-port"),
    # A server that is down is no error at open (the store connects on first use):
    # tests/integration_tests/test_store_postgres.py::test_unreachable_host_opens_then_fails_on_use...
    pytest.param(lambda r: _pg(r, "seedlock", SECRET, "seedlock"), r"wrong user or password", id="pg-wrong-password", marks=PG),
    pytest.param(lambda r: _pg(r, "nobody", SECRET, "seedlock"), r"wrong user or password", id="pg-unknown-user", marks=PG),
]
# fmt: on


@pytest.mark.parametrize(("url", "match"), STORE_URLS)
def test_bad_store_urls(request: pytest.FixtureRequest, url: StoreUrl, match: str | None) -> None:
    target = url(request)
    if match is None:
        open_store(target).close()
        return
    if isinstance(target, str) and target.startswith("postgres"):
        pytest.importorskip("psycopg")
    with pytest.raises(StoreError, match=match) as info:
        open_store(target, **({"connect_timeout": 2} if "postgres" in str(target) else {}))
    text = str(info.value) + repr(info.value)
    assert SECRET not in text
    if isinstance(target, str) and SECRET in target:
        assert "***" in text  # the URL is named, redacted


# ---------------------------------------------------------------------------
# 4. A broken log sink, a closed handler, every constructor argument, the CLI
# ---------------------------------------------------------------------------
def _disk_full(logger: Any, method: str, event: dict[str, Any]) -> Any:
    raise OSError(28, "No space left on device")


@pytest.fixture
def broken_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every log line fails, as with a full disk; production mode (nothing re-raised)."""
    monkeypatch.delenv("SEEDLOCK_RAISE_INTERNAL_ERRORS")
    structlog.configure(processors=[_disk_full])


WARN = LOCK.replace(on_violation="warn")


def _warned(stub: StubOpenAI) -> LockedChatOpenAI:
    return LockedChatOpenAI(
        model="m", base_url=stub.base_url, api_key="sk-x", lock=WARN, max_retries=0
    )


# (id, call): each one logs under on_violation="warn" on its way to the server.
# fmt: off
SINK_CALLS: list[Any] = [
    pytest.param(lambda s: _warned(s).invoke("x", temperature=0.9), id="invoke-override"),
    pytest.param(lambda s: list(_warned(s).stream("x", temperature=0.9)), id="stream-override"),
    pytest.param(lambda s: _warned(s).invoke("x", seed=None), id="invoke-dropped-seed"),  # param_dropped
    pytest.param(lambda s: lock_model(plain(s), WARN).invoke("x", temperature=0.9), id="lock_model-override"),
]
# fmt: on


@pytest.mark.usefixtures("broken_sink")
@pytest.mark.parametrize("call", SINK_CALLS)
def test_a_failing_log_sink_never_fails_the_call(stub: StubOpenAI, call: Action) -> None:
    call(stub)
    assert stub.last_request["temperature"] == 0.1  # sent, with the locked value


@pytest.mark.usefixtures("broken_sink")
async def test_a_failing_log_sink_never_fails_an_async_call(stub: StubOpenAI) -> None:
    await _warned(stub).ainvoke("x", temperature=0.9)
    assert [chunk async for chunk in _warned(stub).astream("x", temperature=0.9)]
    assert [b["temperature"] for b in stub.requests] == [0.1, 0.1]


@pytest.mark.usefixtures("broken_sink")
def test_a_failing_log_sink_still_stores_the_call(stub: StubOpenAI) -> None:
    # The handler logs unseeded_call, call and fingerprint lines: all fail; the
    # record and the event still reach the store.
    store = open_store("memory://")
    handler = SeedLockCallbackHandler(store=store, lock=LOCK)
    plain(stub, seed=None, temperature=0.1).invoke("x", config={"callbacks": [handler]})
    assert handler.flush(10)
    assert [r.calls for r in store.requests()] == [1]
    assert [e.name for e in store.events()] == ["seedlock.unseeded_call"]


@pytest.mark.usefixtures("broken_sink")
def test_a_failing_log_sink_never_fails_an_agent(stub: StubOpenAI) -> None:
    from langchain.agents import create_agent

    agent = create_agent(
        plain(stub, seed=None, temperature=0.9), [], middleware=[SeedLockMiddleware(WARN)]
    )
    agent.invoke({"messages": [{"role": "user", "content": "hi"}]})
    assert (stub.last_request["seed"], stub.last_request["temperature"]) == (5, 0.1)


@pytest.mark.parametrize("buffer_size", [10_000, 0], ids=["background", "inline"])
def test_a_closed_handler_says_so_instead_of_dropping_silently(
    stub: StubOpenAI, tmp_path: Path, buffer_size: int
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    handler = SeedLockCallbackHandler(monitor=DriftMonitor(store, buffer_size=buffer_size))
    model = plain(stub)
    model.invoke("one", config={"callbacks": [handler]})
    assert handler.close(10)
    with capture_seedlock_events() as logs:
        model.invoke("two", config={"callbacks": [handler]})
    assert [r.calls for r in store.requests()] == [1]  # the second call is not stored...
    (error,) = [line for line in logs if line["event"] == "seedlock.store_error"]
    assert "closed" in error["error"]  # ...and the log says why
    assert error["seedlock.operation"] == "write"
    assert handler.monitor.dropped == 1
    store.close()


class _DownStore(MemoryStore):
    """Every write fails, as a store whose disk is gone."""

    def write(self, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk I/O error")


@pytest.mark.usefixtures("broken_sink")
@pytest.mark.parametrize("buffer_size", [10_000, 0], ids=["background", "inline"])
def test_a_store_down_a_closed_monitor_and_a_failing_sink_still_never_fail_the_call(
    stub: StubOpenAI, buffer_size: int
) -> None:
    # The writer reports its own failures (seedlock.store_error): with the
    # sink failing too, the report is lost, never the call.
    monitor = DriftMonitor(_DownStore(), buffer_size=buffer_size)
    handler = SeedLockCallbackHandler(monitor=monitor)
    model = plain(stub)
    assert model.invoke("one", config={"callbacks": [handler]}).content
    handler.close(1)
    assert model.invoke("two", config={"callbacks": [handler]}).content
    assert monitor.dropped == 2  # the failed write and the one refused after close
    assert len(stub.requests) == 2


# Constructors and functions: every argument of the wrong type or out of range
# raises InvalidArgumentError (a TypeError and a ValueError) naming it.
def _handler(**kw: Any) -> Any:
    return SeedLockCallbackHandler(**kw)


def _middleware(**kw: Any) -> Any:
    return SeedLockMiddleware(LOCK, **kw)


# fmt: off
ARGUMENTS: list[Any] = [
    pytest.param(lambda: _handler(max_runs=0), r"max_runs must be >= 1", id="handler-max_runs-0"),
    pytest.param(lambda: _handler(max_runs=-1), r"max_runs must be >= 1", id="handler-max_runs--1"),
    pytest.param(lambda: _handler(max_runs=True), r"max_runs must be an integer", id="handler-max_runs-bool"),
    pytest.param(lambda: _handler(max_runs=10.0), r"max_runs must be an integer", id="handler-max_runs-float"),
    pytest.param(lambda: _handler(store=123), r"store must be a BaselineStore, a store URL", id="handler-store-int"),
    pytest.param(lambda: _handler(store=Path("b.db")), r"store must be a BaselineStore, a store URL", id="handler-store-path"),
    pytest.param(lambda: _handler(enforce="yes", lock=LOCK), r"enforce must be True or False", id="handler-enforce-str"),
    pytest.param(lambda: _handler(capture_content=1), r"capture_content must be True or False", id="handler-capture-int"),
    pytest.param(lambda: _handler(monitor="m"), r"monitor must be a DriftMonitor", id="handler-monitor-str"),
    pytest.param(lambda: _handler(enforce=True), r"enforce .*needs a lock", id="handler-enforce-no-lock"),
    pytest.param(lambda: _middleware(store=123), r"store must be a BaselineStore, a store URL", id="middleware-store-int"),
    pytest.param(lambda: _middleware(monitor=5), r"monitor must be a DriftMonitor", id="middleware-monitor-int"),
    pytest.param(lambda: _middleware(capture_content="no"), r"capture_content must be True or False", id="middleware-capture-str"),
    pytest.param(lambda: _middleware(seed_per_step=1), r"seed_per_step must be True or False", id="middleware-seed_per_step-int"),
    pytest.param(lambda: _middleware(lock_models=None), r"lock_models must be True or False", id="middleware-lock_models-None"),
    pytest.param(lambda: DriftMonitor(buffer_size=-1), r"buffer_size must be >= 0", id="monitor-buffer-negative"),
    pytest.param(lambda: DriftMonitor(cache_size=True), r"cache_size must be an integer", id="monitor-cache-bool"),
    pytest.param(lambda: DriftMonitor(cache_size=0), r"cache_size must be >= 1", id="monitor-cache-0"),
    pytest.param(lambda: DriftMonitor(call_level=10), r"call_level is an unknown log level", id="monitor-level-int"),
    pytest.param(lambda: DriftMonitor(store="sqlite:///b.db"), r"store must be a BaselineStore \(open one", id="monitor-store-url"),
    pytest.param(lambda: DriftMonitor(capture_content="yes"), r"capture_content must be True or False", id="monitor-capture-str"),
    pytest.param(lambda: configure_logging(level=True), r"level must be an integer", id="logging-level-bool"),
    pytest.param(lambda: configure_logging(level="chatty"), r"level is an unknown log level", id="logging-level-unknown"),
    pytest.param(lambda: configure_logging(file=123), r"file must be a path, an open text stream", id="logging-file-int"),
    pytest.param(lambda: configure_logging(json="yes"), r"json must be True or False", id="logging-json-str"),
    pytest.param(lambda: enable_auto_attach(5), r"handler must be a SeedLockCallbackHandler", id="auto_attach-int"),
    pytest.param(lambda: _handler().flush("1"), r"flush: timeout must be a number", id="handler-flush-str"),
    pytest.param(lambda: _handler().flush(math.nan), r"flush: timeout must be a finite number", id="handler-flush-nan"),
    pytest.param(lambda: _handler().close(-1), r"close: timeout must be >= 0", id="handler-close-negative"),
    pytest.param(lambda: _middleware().close(True), r"close: timeout must be a number", id="middleware-close-bool"),
    pytest.param(lambda: DriftMonitor().flush(math.inf), r"flush: timeout must be a finite number", id="monitor-flush-inf"),
    pytest.param(lambda: SeedLock.from_dict(123), r"data must be a mapping", id="lock-from_dict-int"),
    pytest.param(lambda: open_store("memory://").prune(keep_last=-1), r"keep_last must be >= 0", id="prune-keep_last--1-would-delete-all"),
    pytest.param(lambda: open_store("memory://").prune(keep_last=True), r"keep_last must be an integer", id="prune-keep_last-bool"),
    pytest.param(lambda: open_store("memory://").prune(older_than=math.nan), r"older_than must be a finite number", id="prune-older_than-nan"),
]
LOCK_FIELDS: list[Any] = [
    pytest.param(lambda: SeedLock(seed=1, stop=[""]), r"'stop'.*empty stop sequence", id="lock-stop-empty"),
    pytest.param(lambda: SeedLock(seed=1, logit_bias={"abc": 1}), r"'logit_bias'.*token ids", id="lock-logit_bias-key-word"),
    pytest.param(lambda: SeedLock(seed=1, logit_bias={True: 1}), r"'logit_bias'.*token ids", id="lock-logit_bias-key-bool"),
    pytest.param(lambda: SeedLock(seed=1, response_format={"type": object()}), r"'response_format'.*'type' must be a string", id="lock-response_format-object"),
    pytest.param(lambda: SeedLock(seed=1, response_format={"type": "json_object", "x": math.nan}), r"'response_format'.*plain JSON", id="lock-response_format-nan"),
    pytest.param(lambda: SeedLock(seed=1, response_format={"type": "json_schema", "s": {1, 2}}), r"'response_format'.*plain JSON", id="lock-response_format-set"),
]
# fmt: on


@pytest.mark.parametrize(("action", "match"), ARGUMENTS)
def test_bad_arguments_are_named(action: Callable[[], Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match) as info:
        action()
    assert isinstance(info.value, TypeError | ValueError)
    assert isinstance(info.value, SeedLockError)


@pytest.mark.parametrize(("action", "match"), LOCK_FIELDS)
def test_bad_lock_fields_are_named(action: Callable[[], Any], match: str) -> None:
    with pytest.raises(InvalidLockError, match=match):
        action()


def test_a_bad_argument_opens_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    with pytest.raises(InvalidArgumentError, match="max_runs"):
        SeedLockCallbackHandler(store=url, max_runs=0)
    with pytest.raises(InvalidArgumentError, match="seed_per_step"):
        SeedLockMiddleware(LOCK, store=url, seed_per_step="yes")  # type: ignore[arg-type]
    assert not (tmp_path / "b.db").exists()


# SQLite URLs and options: (url under tmp_path, options, message regex).
# fmt: off
SQLITE_URLS: list[Any] = [
    pytest.param("new.db?mode=ro", {}, r"does not exist \(opened read-only\)", id="mode-ro-missing"),
    pytest.param("new.db?mode=rw", {}, r"does not exist \(opened without creating it", id="mode-rw-missing"),
    pytest.param("new.db?mode=bogus", {}, r"unknown option mode='bogus'.*mode=ro", id="mode-unknown"),
    pytest.param("new.db?cache=shared", {}, r"unknown option 'cache' in its query string", id="query-unknown"),
    pytest.param(f"new.db?password={SECRET}", {}, r"new.db\?password=\*\*\*'.*unknown option 'password'", id="query-secret-redacted"),
    pytest.param("new.db?mode=ro", {"read_only": False}, r"query string sets read_only=True but the option read_only=False", id="mode-ro-vs-option"),
    pytest.param("new.db", {"foo": 1}, r"unknown option 'foo'; supported: busy_timeout, create, read_only", id="option-unknown"),
    pytest.param("new.db", {"busy_timeout": math.nan}, r"busy_timeout must be a finite number", id="option-busy-nan"),
    pytest.param("new.db", {"busy_timeout": -1}, r"busy_timeout must be a finite number of seconds >= 0", id="option-busy-negative"),
    pytest.param("new.db", {"read_only": "yes"}, r"read_only must be True or False", id="option-read_only-str"),
    pytest.param("new.db", {"busy_timeout": True}, r"busy_timeout must be", id="option-busy-bool"),
    pytest.param("", {}, r"is a directory; name a file in it", id="a-directory"),
]
# fmt: on


@pytest.mark.parametrize(("tail", "options", "match"), SQLITE_URLS)
def test_bad_sqlite_urls_and_options(
    tmp_path: Path, tail: str, options: dict[str, Any], match: str
) -> None:
    url = f"sqlite:///{tmp_path}/{tail}"
    with pytest.raises(StoreError, match=match) as info:
        open_store(url, **options)
    assert SECRET not in str(info.value)
    assert not (tmp_path / "new.db").exists(), "a refused URL must create nothing"


def test_sqlite_in_memory_is_refused_with_the_right_hint() -> None:
    with pytest.raises(
        StoreError, match=r"use memory:// for a store in this process's memory"
    ) as info:
        open_store("sqlite:///:memory:")
    assert "network filesystem" not in str(info.value)


def test_sqlite_mode_ro_opens_read_only(tmp_path: Path) -> None:
    open_store(f"sqlite:///{tmp_path}/b.db").close()
    with open_store(f"sqlite:///{tmp_path}/b.db?mode=ro") as store:
        assert store.read_only  # type: ignore[attr-defined]
        with pytest.raises(StoreError, match="read-only"):
            store.prune(keep_last=0)


def test_an_unknown_postgres_option_is_a_store_error() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError, match=r"unknown option 'pool'.*connect_timeout") as info:
        open_store(f"postgresql://u:{SECRET}@127.0.0.1:1/db", pool=3)
    assert SECRET not in str(info.value)


# The commands that look at (or prune) a store never create one: a mistyped
# path is an error, not a new empty store and a false "all clear".
@pytest.mark.parametrize(
    "argv",
    [
        ["prune", "--keep-last", "10"],
        ["prune", "--older-than", "30d"],
        ["drift"],
        ["drift", "--json"],
        ["verify", "--base-url", "http://127.0.0.1:9/v1"],
    ],
    ids=["prune-keep-last", "prune-older-than", "drift", "drift-json", "verify"],
)
def test_read_only_commands_never_create_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    mistyped = tmp_path / "baselnes.db"
    assert cli_main([*argv, "--store", f"sqlite:///{mistyped}"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not mistyped.exists()


# `seedlock verify` that would verify nothing must not pass (exit 2, like probe).
@pytest.mark.parametrize(
    "extra",
    [["--runs", "0"], ["--runs", "-1"], ["--runs", "x"], ["--max-tokens", "0"], ["--temperature", "nan"],
     ["--temperature", "3"], ["--seed", str(2**64)], ["--prompt", "  "]],
    ids=["runs-0", "runs--1", "runs-x", "max-tokens-0", "temperature-nan", "temperature-3", "seed-2**64", "prompt-blank"],
)  # fmt: skip
def test_verify_rejects_arguments_that_verify_nothing(extra: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["verify", "--store", "memory://", *extra])
    assert info.value.code == 2


def test_verify_with_an_empty_prompt_file_fails(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'b.db'}"
    assert (
        cli_main(["probe", "--base-url", stub.base_url, "--store", store, "--runs", "1", "-q"]) == 0
    )
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n   \n")
    argv = ["verify", "--base-url", stub.base_url, "--store", store, "--prompt-file", str(empty)]
    assert cli_main(argv) == 2
    assert "holds no prompt" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [["--temperature", "nan"], ["--seed", "1e3"], ["--prompt", ""], ["--threads", "0"], ["--startup-timeout", "-1"], ["--slots", "x"]],
    ids=["temperature-nan", "seed-float", "prompt-empty", "threads-0", "startup-timeout--1", "slots-x"],
)  # fmt: skip
def test_probe_rejects_bad_arguments_before_starting_anything(extra: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["probe", "--store", "memory://", *extra])
    assert info.value.code == 2


@pytest.mark.parametrize("extra", [["--port", "0"], ["--port", "70000"], ["--threads", "-2"]])
def test_serve_rejects_bad_arguments(extra: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["serve", *extra])
    assert info.value.code == 2


# Secrets: credentials in a URL never reach a file, a line printed, or an error.
def test_probe_json_masks_the_base_url_password(
    stub: StubOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    base = stub.base_url.replace("http://", f"http://user:{SECRET}@") + f"?api_key={SECRET}"
    out = tmp_path / "probe.json"
    argv = [
        "probe",
        "--base-url",
        base,
        "--store",
        "memory://",
        "--runs",
        "1",
        "-q",
        "--json",
        str(out),
    ]
    assert cli_main(argv) == 0
    text = out.read_text()
    assert SECRET not in text
    assert (
        json.loads(text)["base_url"]
        == stub.base_url.replace("http://", "http://user:***@") + "?api_key=***"
    )


def test_a_base_url_password_is_masked_in_reprs(stub: StubOpenAI) -> None:
    base = f"http://user:{SECRET}@127.0.0.1:1/v1"
    for model in (locked(stub, base_url=base), lock_model(plain(stub, base_url=base), LOCK)):
        assert SECRET not in repr(model)
        assert SECRET not in str(model)
        assert "user:***@" in repr(model)


def test_store_urls_are_redacted_everywhere(tmp_path: Path) -> None:
    assert open_store(f"memory://u:{SECRET}@x").url == "memory://u:***@x"
    url = f"sqlite:///{tmp_path}/b.db"
    assert open_store(url).url == url  # nothing to hide: as given


def test_an_invalid_lock_in_model_validate_does_not_quote_the_api_key() -> None:
    key = "sk-SEEDLOCK-SECRET-789"
    for data in (
        {"model": "x", "lock": {"seed": True}, "api_key": key},
        {"model": "x", "lock": {"seed": 1, "temperature": 9}, "api_key": key},
        {"model": "x", "lock": {"seed": 1}, "api_key": key, "n": 0},  # the integration's own check
    ):
        with pytest.raises(ValueError, match=r"seed|temperature|n must be") as info:
            LockedChatOpenAI.model_validate(data)
        assert key not in str(info.value)
        assert key not in repr(info.value)


# The middleware: closes what it opened; says when another middleware's model
# call (a summary) was sent without the lock.
def test_the_middleware_closes_the_store_it_opened(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agent.db'}"
    with SeedLockMiddleware(LOCK, store=url) as seedlock:
        store = seedlock.monitor.store
        assert store is not None
        store.requests()  # open
    with pytest.raises(StoreError, match="is closed"):
        store.requests()
    given = open_store(url)
    SeedLockMiddleware(LOCK, store=given).close()
    assert given.requests() == []  # a store passed in stays open: the caller owns it
    given.close()


def _summarizing_agent(stub: StubOpenAI, summary_model: Any, lock: SeedLock = LOCK) -> Any:
    from langchain.agents import create_agent
    from langchain.agents.middleware import SummarizationMiddleware
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return f"sunny in {city}"

    plan = iter([[{"name": "get_weather", "arguments": {"city": "Oslo"}}]] * 2)
    stub.tool_calls = lambda body: next(plan, None) if body["model"] == "agent" else None
    summary = SummarizationMiddleware(summary_model, trigger=("messages", 4), keep=("messages", 2))
    return create_agent(
        plain(stub, model="agent", seed=None),
        [get_weather],
        middleware=[summary, SeedLockMiddleware(lock)],
    )


QUESTION = {"messages": [{"role": "user", "content": "Weather in Oslo?"}]}


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_an_unlocked_summary_call_is_reported(stub: StubOpenAI, mode: str) -> None:
    agent = _summarizing_agent(stub, plain(stub, model="summarizer", seed=None))
    with capture_seedlock_events() as logs:
        if mode == "invoke":
            agent.invoke(QUESTION)
        else:
            await agent.ainvoke(QUESTION)
    summaries = [b for b in stub.requests if b["model"] == "summarizer"]
    assert summaries, "the summary really happened"
    assert all("seed" not in b for b in summaries)  # sent as the user built it...
    unseeded = [line for line in logs if line["event"] == "seedlock.unseeded_call"]
    assert len(unseeded) == len(summaries)  # ...and reported, once per summary call
    for line in unseeded:
        assert line["lc_source"] == "summarization"
        assert line["gen_ai.request.model"] == "summarizer"
        assert line["langgraph_node"] == "SummarizationMiddleware.before_model"
        assert line["source"] == "middleware internal call"
        assert "lock_model" in line["seedlock.hint"]
    assert all(b["seed"] == LOCK.seed for b in stub.requests if b["model"] == "agent")


def test_a_locked_summary_model_is_not_reported(stub: StubOpenAI) -> None:
    agent = _summarizing_agent(stub, locked(stub, model="summarizer"))
    with capture_seedlock_events() as logs:
        agent.invoke(QUESTION)
    summaries = [b for b in stub.requests if b["model"] == "summarizer"]
    assert summaries
    assert all(b["seed"] == LOCK.seed for b in summaries)
    assert not [
        line
        for line in logs
        if line["event"] in ("seedlock.unseeded_call", "seedlock.lock_violation")
    ]
