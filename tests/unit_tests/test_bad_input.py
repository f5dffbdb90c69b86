"""Every bad input and its outcome, in three tables: parameters, server responses, store URLs.

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
from langchain_openai import ChatOpenAI
from pydantic import ValidationError
from structlog.testing import capture_logs

from langchain_seedlock import (
    InvalidLockError,
    LockedChatOpenAI,
    LockViolationError,
    MalformedResponseError,
    ParamDroppedError,
    SeedLock,
    SeedLockCallbackHandler,
    SeedLockError,
    SeedLockMiddleware,
    StoreError,
    UnsupportedModelError,
    lock_model,
    open_store,
)
from langchain_seedlock._record import MAX_FINGERPRINT_CHARS, clean_fingerprint
from tests._fixtures.stub_openai import StubOpenAI, raw_completion

LOCK = SeedLock(seed=5, temperature=0.1)
SECRET = "pw-SEEDLOCK-SECRET-456"  # a store password: must never reach an error message


def locked(stub: StubOpenAI, **kwargs: Any) -> LockedChatOpenAI:
    return LockedChatOpenAI(
        model="m", base_url=stub.base_url, api_key="sk-x", lock=LOCK, max_retries=0, **kwargs
    )


def plain(stub: StubOpenAI, **kwargs: Any) -> ChatOpenAI:
    kwargs.setdefault("seed", 5)
    return ChatOpenAI(model="m", base_url=stub.base_url, api_key="sk-x", max_retries=0, **kwargs)


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
    pytest.param(lambda s: locked(s).invoke("x", seed=None), ParamDroppedError, r"seed=5 was dropped", id="invoke-seed-None"),
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
    pytest.param(Response({"raw_sse": sse(chunk("hel"), done=False)}, stream=True, fingerprint=None, event="seedlock.fingerprint_missing"), id="sse-truncated-no-finish"),
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

    with capture_logs() as logs:
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
    if error is None:
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
