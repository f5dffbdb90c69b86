"""Backend identity (issue 15, part 1): plain data first, then through the stub server."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_openai import ChatOpenAI

from langchain_seedlock import SeedLock, SeedLockMiddleware, _identity
from langchain_seedlock._callbacks import SeedLockCallbackHandler
from langchain_seedlock._drift import DriftMonitor
from langchain_seedlock._errors import InvalidArgumentError
from langchain_seedlock._events import BACKEND_CHANGED, CALL, FINGERPRINT_CHANGED, OUTPUT_DRIFT
from langchain_seedlock._hashing import backend_id
from langchain_seedlock._identity import (
    SERVERS,
    BackendIdentity,
    ServerInfo,
    _Entry,
    changed_fields,
    check_declared,
    identity_for,
    inherit_server,
    llama_props_fields,
    note_failure,
    parse_env_backend,
    partial_id,
    track,
)
from langchain_seedlock._record import CallRecord
from langchain_seedlock._store import open_store
from langchain_seedlock.testing import (
    FakeBackend,
    capture_seedlock_events,
    events_named,
    forget_server_info,
    wait_for_server_info,
)
from tests._fixtures.stub_openai import StubOpenAI

LLAMA_PROPS: dict[str, Any] = {
    "build_info": "b11434-portable",
    "model_path": "/home/someone/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    "model_ftype": "Q4_1",
    "total_slots": 4,
    "chat_template": "{% for message in messages %}...",
    "default_generation_settings": {
        "n_ctx": 8192,
        "params": {"temperature": 0.800000011920929, "top_k": 40, "seed": 4294967295},
    },
}


# -- plain data -------------------------------------------------------------------------
def test_response_only_identity_keeps_the_stored_backend_id() -> None:
    ident = BackendIdentity("fp_1", "gpt-4o-mini", "default")
    assert ident.id == backend_id("fp_1", "gpt-4o-mini", "default")
    assert BackendIdentity("fp_1", "m", None, server=()).id == backend_id("fp_1", "m", None)
    declared = BackendIdentity("fp_1", "m", None, declared=(("kv_cache", "q8_0"),))
    assert declared.id != backend_id("fp_1", "m", None)
    assert BackendIdentity.from_json(declared.to_json()) == declared


def test_llama_props_become_named_fields() -> None:
    fields = llama_props_fields(LLAMA_PROPS)
    assert fields["server"] == "llama.cpp"
    assert fields["build_info"] == "b11434-portable"
    assert fields["model_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"  # not the user's path
    assert fields["model_type"] == "Q4_1"
    assert fields["total_slots"] == 4
    assert fields["n_ctx"] == 8192
    assert fields["default_temperature"] == 0.8
    assert fields["default_top_k"] == 40.0
    assert len(str(fields["chat_template_sha256"])) == 16
    assert "seed" not in str(fields)


def test_unknown_server_fields_are_not_a_change() -> None:
    server = tuple(sorted(llama_props_fields(LLAMA_PROPS).items()))
    before = BackendIdentity("b0", "m", None)  # server not fetched yet
    after = before.with_server(server)
    assert before.id != after.id
    assert changed_fields(before, after) == {}
    other = after.with_server((*server[:-1], (server[-1][0], "changed")))
    assert changed_fields(after, other) == {server[-1][0]: [server[-1][1], "changed"]}
    # A call made before the fetch inherits the last known server fields.
    assert inherit_server(before, after) == after
    # ... unless something it knows changed: then it stays what it is.
    moved = BackendIdentity("b1", "m", None)
    assert inherit_server(moved, after) == moved


def test_declared_fields_always_count() -> None:
    a = BackendIdentity("b0", "m", None, declared=(("kv_cache", "f16"),))
    b = BackendIdentity("b0", "m", None, declared=(("kv_cache", "q8_0"),))
    c = BackendIdentity("b0", "m", None)
    assert changed_fields(a, b) == {"kv_cache": ["f16", "q8_0"]}
    assert changed_fields(a, c) == {"kv_cache": ["f16", None]}


def test_track_reports_each_change_once() -> None:
    reported: set[tuple[str, str]] = set()
    a = BackendIdentity("b0", "m", None, declared=(("flash_attn", "on"),))
    b = BackendIdentity("b0", "m", None, declared=(("flash_attn", "off"),))
    assert track(None, a, reported) == (a, None)
    ident, change = track(a, b, reported)
    assert ident == b
    assert change == ({"flash_attn": ["on", "off"]}, a)
    assert track(a, b, reported)[1] is None  # a flapping backend: once per direction
    assert track(b, a, reported)[1] is not None
    # A fingerprint that went missing is the fingerprint events' business.
    assert track(BackendIdentity("fp", "m"), BackendIdentity(None, "m"), set())[1] is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("q8_0", "must be a mapping"),
        ({"kv_cache": ["q8_0"]}, "must be a string, number, bool or None"),
        ({"": 1}, "short non-empty string"),
        ({"x": float("nan")}, "not finite"),
        ({"x": "y" * 201}, "longer than 200"),
        ({f"k{i}": i for i in range(33)}, "more than 32"),
    ],
)
def test_bad_declared_backend_is_a_typed_error(value: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        SeedLock(seed=1, backend=value)


def test_declared_backend_is_not_part_of_the_lock_hash() -> None:
    plain = SeedLock(seed=1, temperature=0.0)
    declared = SeedLock(seed=1, temperature=0.0, backend={"kv_cache": "q8_0", "flash_attn": False})
    assert declared.lock_hash == plain.lock_hash
    assert declared != plain
    assert declared.backend == (("flash_attn", False), ("kv_cache", "q8_0"))
    assert SeedLock.from_dict(declared.to_dict()) == declared
    assert "backend={'flash_attn': False, 'kv_cache': 'q8_0'}" in repr(declared)
    assert check_declared("x", "y", None) == ()


def test_env_backend_json_or_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_env_backend('{"gpu": "A100", "batch_invariant": true}') == (
        ("batch_invariant", True),
        ("gpu", "A100"),
    )
    assert parse_env_backend("kv_cache=q8_0, gpu=A100") == (("gpu", "A100"), ("kv_cache", "q8_0"))
    for bad in ("kv_cache", "{not json", '["a"]', "=x"):
        with pytest.raises(InvalidArgumentError, match="SEEDLOCK_BACKEND"):
            parse_env_backend(bad)
    monkeypatch.setenv("SEEDLOCK_BACKEND", "kv_cache")
    with pytest.raises(InvalidArgumentError, match="SEEDLOCK_BACKEND"):
        SeedLockCallbackHandler()


# -- the monitor, plain records ---------------------------------------------------------
def rec(output: str, **kwargs: Any) -> CallRecord:
    kwargs.setdefault("system_fingerprint", "b0-unknown")
    return CallRecord(
        provider="openai", request_model="m", request_hash=kwargs.pop("request_hash", "r1"),
        output_hash=output, seed=1, output_text=output, **kwargs,
    )  # fmt: skip


def test_a_declared_change_explains_drift_with_one_warning() -> None:
    monitor = DriftMonitor(open_store("memory://"))
    f16, q8 = (("kv_cache", "f16"),), (("kv_cache", "q8_0"),)
    with capture_seedlock_events() as events:
        monitor.observe(rec("a", declared=f16))
        monitor.observe(rec("a", declared=f16))
        monitor.observe(rec("x", request_hash="r2", declared=f16))
        monitor.observe(rec("b", declared=q8))  # the restart with a q8_0 KV cache
        monitor.observe(rec("y", request_hash="r2", declared=q8))
    (changed,) = events_named(events, BACKEND_CHANGED)
    assert changed["log_level"] == "warning"
    assert changed["seedlock.changed_fields"] == {"kv_cache": ["f16", "q8_0"]}
    assert "kv_cache f16 -> q8_0" in changed["seedlock.summary"]
    assert changed["seedlock.backend"]["kv_cache"] == {"value": "q8_0", "source": "declared"}
    drifts = events_named(events, OUTPUT_DRIFT)
    assert [d["seedlock.explained"] for d in drifts] == [True, True]
    assert all(d["log_level"] == "info" for d in drifts)
    assert "same fingerprint" in drifts[0]["seedlock.summary"]
    assert not events_named(events, FINGERPRINT_CHANGED)
    assert monitor.flush(timeout=10)
    stored = monitor.store.events(name=BACKEND_CHANGED)  # type: ignore[union-attr]
    assert stored[0].fields["seedlock.changed_fields"] == {"kv_cache": ["f16", "q8_0"]}
    monitor.close()


def test_a_fingerprint_change_is_still_one_warning_naming_every_field() -> None:
    monitor = DriftMonitor()
    with capture_seedlock_events() as events:
        monitor.observe(rec("a", declared=(("gpu", "A100"),)))
        monitor.observe(rec("b", system_fingerprint="b1", declared=(("gpu", "H100"),)))
    assert not events_named(events, BACKEND_CHANGED)
    (changed,) = events_named(events, FINGERPRINT_CHANGED)
    assert changed["seedlock.changed_fields"] == {
        "system_fingerprint": ["b0-unknown", "b1"],
        "gpu": ["A100", "H100"],
    }


def test_the_identity_survives_the_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    with open_store(url) as store:
        first = DriftMonitor(store, buffer_size=0)
        first.observe(rec("a", declared=(("flash_attn", "on"),)))
        first.close()
    with open_store(url) as store:
        second = DriftMonitor(store, buffer_size=0)
        with capture_seedlock_events() as events:
            second.observe(rec("b", declared=(("flash_attn", "off"),)))
        second.close()
    (changed,) = events_named(events, BACKEND_CHANGED)
    assert changed["seedlock.changed_fields"] == {"flash_attn": ["on", "off"]}
    assert events_named(events, OUTPUT_DRIFT)[0]["seedlock.explained"] is True


# -- through the stub server: server fields fetched off the call path -------------------
@pytest.fixture
def llama_stub(stub: StubOpenAI) -> Iterator[StubOpenAI]:
    stub.props = dict(LLAMA_PROPS)
    stub.fingerprint = "b11434-portable"
    forget_server_info()
    yield stub
    forget_server_info()


def test_a_call_before_the_server_fields_is_the_same_backend(llama_stub: StubOpenAI) -> None:
    """A record that arrives before /props is known (the fetch starts with
    it) has no server fields; once they are known, its output is this
    backend's, and the fields joining is not a change."""
    monitor = DriftMonitor(open_store("memory://"))
    with capture_seedlock_events() as events:
        monitor.observe(rec("a", base_url=llama_stub.base_url))  # starts the fetch
        assert wait_for_server_info()
        monitor.observe(rec("a", base_url=llama_stub.base_url))
    calls = events_named(events, CALL)
    assert [c["seedlock.variant"] for c in calls] == ["first", "reproduced"]
    assert "seedlock.server_slots" not in calls[0]
    assert calls[1]["seedlock.server_slots"] == 4
    assert not events_named(events, BACKEND_CHANGED)
    monitor.close()


def make_model(stub: FakeBackend) -> ChatOpenAI:
    return ChatOpenAI(
        model="smollm2", base_url=stub.base_url, api_key="sk-test", max_retries=0, seed=1
    )


def test_server_fields_join_without_a_change_and_a_restart_is_named(
    llama_stub: StubOpenAI,
) -> None:
    handler = SeedLockCallbackHandler(store="memory://")
    model = make_model(llama_stub)
    cfg: Any = {"callbacks": [handler]}
    llama_stub.delay = 0.3  # an answer slower than /props, as a real generation is
    with capture_seedlock_events() as events:
        model.invoke("hi", config=cfg)  # /props fetched while the call runs
        model.invoke("hi", config=cfg)
        model.invoke("hello", config=cfg)
    llama_stub.delay = 0.0
    calls = events_named(events, CALL)
    assert [c["seedlock.variant"] for c in calls] == ["first", "reproduced", "first"]
    assert [c["seedlock.server_slots"] for c in calls] == [4, 4, 4]  # even the first call's
    assert len({c["seedlock.backend_id"] for c in calls}) == 1
    assert not events_named(events, BACKEND_CHANGED)
    # The server restarts on a new build: the first call after the cache
    # expires fetches /props again while it runs, so its new answer is
    # already explained by the named change.
    llama_stub.props = {**LLAMA_PROPS, "build_info": "b11500-portable"}
    llama_stub.reply = "a different answer"
    forget_server_info()
    llama_stub.delay = 0.3
    with capture_seedlock_events() as events:
        model.invoke("hi", config=cfg)
        model.invoke("hello", config=cfg)
    llama_stub.delay = 0.0
    (changed,) = events_named(events, BACKEND_CHANGED)
    assert changed["seedlock.changed_fields"] == {
        "build_info": ["b11434-portable", "b11500-portable"]
    }
    drift = events_named(events, OUTPUT_DRIFT)
    assert [d["seedlock.explained"] for d in drift] == [True, True]
    handler.close()


def test_an_unknown_server_adds_nothing_quietly(stub: StubOpenAI) -> None:
    forget_server_info()
    handler = SeedLockCallbackHandler()
    model = make_model(stub)
    with capture_seedlock_events() as events:
        model.invoke("hi", config={"callbacks": [handler]})
        assert wait_for_server_info()
        model.invoke("hi", config={"callbacks": [handler]})
    assert [e["event"] for e in events] == [CALL, CALL]
    assert events[0]["seedlock.backend_id"] == backend_id("fp_stub_1", "smollm2", None)
    assert events[1]["seedlock.backend_id"] == events[0]["seedlock.backend_id"]
    handler.close()


def test_an_unreachable_server_is_logged_once_and_never_delays_a_call() -> None:
    servers = ServerInfo(ttl=0.0)  # every lookup starts a new fetch
    with capture_seedlock_events() as events:
        for _ in range(3):
            assert servers.get("http://127.0.0.1:9/v1", "m") is None  # never waits
            assert servers.wait()
    (failed,) = events_named(events, "seedlock.backend_info_unavailable")
    assert failed["log_level"] == "info"
    assert failed["server.address"] == "http://127.0.0.1:9/v1"
    assert failed["error.type"] == "URLError"


def test_an_unreachable_server_is_asked_again_soon_then_less_often() -> None:
    servers = ServerInfo(ttl=60.0)
    ages = []
    for _ in range(3):
        servers.invalidate("http://127.0.0.1:9/v1")  # as a failed call does
        servers.get("http://127.0.0.1:9/v1", "m")
        assert servers.wait()
        (entry,) = servers._entries.values()
        ages.append(round(60.0 - (time.monotonic() - entry.fetched_at)))  # seconds to the retry
    assert ages == [2, 4, 8]  # FETCH_RETRY, doubling: a restarting server is soon asked again


def test_only_a_connection_failure_has_the_server_described_again(stub: StubOpenAI) -> None:
    forget_server_info()
    stub.props = dict(LLAMA_PROPS)
    SERVERS.get(stub.base_url, "m")
    assert wait_for_server_info()
    (entry,) = SERVERS._entries.values()
    fetched = entry.fetched_at
    note_failure(stub.base_url, ValueError("a bad answer"))
    assert entry.fetched_at == fetched  # the server answered: nothing to refetch
    note_failure(stub.base_url, ConnectionRefusedError())
    assert entry.fetched_at == 0.0  # the next call fetches /props again
    forget_server_info()


def test_a_restart_seen_as_a_failed_call_explains_the_changed_answers() -> None:
    # The server goes down (a call fails to connect) and comes back on the
    # same URL with other settings: the next call describes it again while
    # it runs, so its changed answer is explained by the named change, not a
    # new variant for up to SERVER_INFO_TTL.
    forget_server_info()
    first = FakeBackend().start()
    first.props, first.fingerprint, first.delay = dict(LLAMA_PROPS), "b11434-portable", 0.3
    port = int(first.base_url.rsplit(":", 1)[1].removesuffix("/v1"))
    handler = SeedLockCallbackHandler(store="memory://")
    model = make_model(first)
    cfg: Any = {"callbacks": [handler]}
    with capture_seedlock_events() as events:
        model.invoke("hi", config=cfg)
        model.invoke("hi", config=cfg)
        first.stop()
        with pytest.raises(openai.APIConnectionError):
            model.invoke("hi", config=cfg)
        second = FakeBackend(port=port).start()  # restarted with one slot
        second.props = {**LLAMA_PROPS, "total_slots": 1}
        second.fingerprint, second.delay, second.reply = "b11434-portable", 0.3, "another answer"
        model.invoke("hi", config=cfg)
    second.stop()
    handler.close()
    forget_server_info()
    (changed,) = events_named(events, BACKEND_CHANGED)
    assert changed["seedlock.changed_fields"] == {"total_slots": [4, 1]}
    drift = events_named(events, OUTPUT_DRIFT)
    assert [d["seedlock.explained"] for d in drift] == [True]


def test_a_restart_no_call_saw_costs_one_warning_not_one_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server restarts between two calls with other settings: the first
    # changed answer is a new variant (nothing said the server changed), and
    # has the server described again; the next calls' changed answers are
    # explained by the named change.
    monkeypatch.setattr(_identity, "NEW_VARIANT_REFETCH", 0.0)  # the test's calls are fast
    forget_server_info()
    backend = FakeBackend().start()
    backend.props, backend.fingerprint, backend.delay = dict(LLAMA_PROPS), "b11434-portable", 0.3
    handler = SeedLockCallbackHandler(store="memory://")
    model = make_model(backend)
    cfg: Any = {"callbacks": [handler]}
    prompts = ["one", "two", "three", "four"]
    with capture_seedlock_events() as events:
        for prompt in prompts:
            model.invoke(prompt, config=cfg)
        backend.props = {**LLAMA_PROPS, "total_slots": 1}  # restarted, one slot
        backend.reply = lambda body: "changed: " + str(body["messages"][-1]["content"])
        for prompt in prompts:
            model.invoke(prompt, config=cfg)
    backend.stop()
    handler.close()
    forget_server_info()
    drift = events_named(events, OUTPUT_DRIFT)
    assert [d["seedlock.explained"] for d in drift] == [False, True, True, True]
    assert drift[0]["log_level"] == "warning"  # the one warning: nothing said it changed
    (changed,) = events_named(events, BACKEND_CHANGED)
    assert changed["seedlock.changed_fields"] == {"total_slots": [4, 1]}


def test_an_agent_call_that_cannot_connect_has_the_server_described_again() -> None:
    from langchain.agents import create_agent

    forget_server_info()
    backend = FakeBackend().start()
    backend.props = dict(LLAMA_PROPS)
    agent = create_agent(make_model(backend), [], middleware=[SeedLockMiddleware(SeedLock(seed=1))])
    question = {"messages": [{"role": "user", "content": "hi"}]}
    agent.invoke(question)
    assert wait_for_server_info()
    backend.stop()
    with pytest.raises(openai.APIConnectionError):
        agent.invoke(question)
    entries = [e for (url, _), e in SERVERS._entries.items() if url == backend.base_url]
    assert entries
    assert all(e.fetched_at == 0.0 for e in entries)
    forget_server_info()


def test_sqlite_version_3_file_is_migrated_to_4(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    with open_store(f"sqlite:///{path}") as s:
        s.write([rec("a")])
    conn = sqlite3.connect(path, isolation_level=None)  # back to the version 3 layout
    conn.execute("ALTER TABLE fingerprints DROP COLUMN identity")
    conn.execute("DROP TABLE inflight")
    conn.execute("DELETE FROM schema_version")
    conn.execute("INSERT INTO schema_version VALUES (3)")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    with open_store(f"sqlite:///{path}", read_only=True) as s:  # read-only: stays 3
        assert s.in_flight() == []
        assert [f.identity for f in s.fingerprints_for("openai:m")] == [None]
    with open_store(f"sqlite:///{path}") as s:
        assert [o.count for o in s.outputs_for("r1")] == [1]
        monitor = DriftMonitor(s, buffer_size=0)
        monitor.observe(rec("a", in_flight=2))
        monitor.close()
        (fp,) = s.fingerprints_for("openai:m")
        assert fp.count == 2
        assert fp.identity is not None
        assert BackendIdentity.from_json(fp.identity).system_fingerprint == "b0-unknown"
        (load,) = s.in_flight()
        assert (load.bucket, load.calls, load.repeat_calls, load.known_repeats) == ("2-4", 1, 1, 1)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 5  # and on to version 5 (payloads)
    conn.close()


# -- the doors carry the declared backend and the in-flight count -----------------------
def test_a_locked_models_declared_backend_reaches_the_handler(stub: StubOpenAI) -> None:
    from langchain_seedlock import LockedChatOpenAI

    handler = SeedLockCallbackHandler()

    def model(kv: str) -> LockedChatOpenAI:
        lock = SeedLock(seed=1, backend={"kv_cache": kv})
        return LockedChatOpenAI(
            model="m", base_url=stub.base_url, api_key="sk-test", max_retries=0, lock=lock
        )

    with capture_seedlock_events() as events:
        model("f16").invoke("hi", config={"callbacks": [handler]})
        model("q8_0").invoke("hi", config={"callbacks": [handler]})
    (changed,) = events_named(events, BACKEND_CHANGED)
    assert changed["seedlock.changed_fields"] == {"kv_cache": ["f16", "q8_0"]}
    assert [c["seedlock.in_flight"] for c in events_named(events, CALL)] == [1, 1]
    handler.close()


def test_the_middleware_records_in_flight_and_its_locks_backend(stub: StubOpenAI) -> None:
    from langchain.agents import create_agent

    from langchain_seedlock import SeedLockMiddleware

    def run(kv: str) -> list[dict[str, Any]]:
        middleware = SeedLockMiddleware(SeedLock(seed=3, backend={"kv_cache": kv}), monitor=mon)
        model = ChatOpenAI(model="m", base_url=stub.base_url, api_key="sk-test", max_retries=0)
        agent = create_agent(model, [], middleware=[middleware])
        handler = SeedLockCallbackHandler(monitor=mon)  # inside the middleware: counted once
        with capture_seedlock_events() as events:
            agent.invoke({"messages": [("user", "hi")]}, config={"callbacks": [handler]})
        return events

    mon = DriftMonitor()
    first = run("f16")
    calls = events_named(first, CALL)
    assert calls
    assert {c["seedlock.in_flight"] for c in calls} == {1}
    second = run("q8_0")
    changed = events_named(second, BACKEND_CHANGED)
    assert [c["seedlock.changed_fields"] for c in changed] == [{"kv_cache": ["f16", "q8_0"]}]
    mon.close()


def test_a_remembered_identity_is_always_the_one_its_fields_make() -> None:
    # identity_for reuses the identity of a call with the same fields: it must
    # never hand one backend's identity to another (1 and True differ in JSON,
    # a refetched server description is new fields).
    server_a = (("n_ctx", 8192), ("server", "llama.cpp"))
    server_b = (("n_ctx", 4096), ("server", "llama.cpp"))
    cases = [
        (fp, model, server, declared)
        for fp in (None, "fp_1", "fp_2")
        for model in ("m", "other")
        for server in (None, server_a, server_b)
        for declared in ((), (("slots", 1),), (("slots", True),), (("slots", "1"),))
    ]
    for _ in range(2):  # the second round is served from memory
        for fp, model, server, declared in cases:
            SERVERS._entries[("http://memo.invalid/v1", "m")] = _fresh_entry(server)
            got = identity_for(
                fingerprint=fp, model=model, service_tier=None,
                base_url="http://memo.invalid/v1", request_model="m", declared=declared,
            )  # fmt: skip
            assert got == BackendIdentity(fp, model, None, server, declared)
            assert got.id == BackendIdentity(fp, model, None, server, declared).id
            without_server = BackendIdentity(fp, model, None, None, declared).id
            assert partial_id(got) == (without_server if server else None)
    SERVERS.clear()


def _fresh_entry(server: Any) -> _Entry:
    entry = _Entry()
    entry.fields = server
    entry.fetched_at = time.monotonic()
    return entry
