"""API keys and database passwords never appear in anything the package produces.

Every path is driven with a recognizable OpenAI key and a recognizable
PostgreSQL password, then everything produced is searched for them: reprs,
serialized models, message and run metadata, every structlog event (captured
and written as JSON by `configure_logging`), every row of every table of the
SQLite and PostgreSQL stores, error messages, and the CLI's outputs.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from langchain.agents import create_agent
from langchain_core.load import dumpd, dumps
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from langchain_seedlock import (
    DriftMonitor,
    LockedAzureChatOpenAI,
    LockedChatModel,
    LockedChatOpenAI,
    LockViolationError,
    SeedLock,
    SeedLockCallbackHandler,
    SeedLockMiddleware,
    StoreError,
    configure_logging,
    lock_model,
    open_store,
)
from langchain_seedlock._store._writer import BackgroundWriter
from langchain_seedlock.cli import main
from langchain_seedlock.testing import capture_seedlock_events
from tests._fixtures.postgres import PostgresServer
from tests._fixtures.stub_openai import StubOpenAI

API_KEY = "sk-SEEDLOCK-SECRET-123"
PG_PASSWORD = "pw-SEEDLOCK-SECRET-456"
PG_ROLE = "seedlock_secret"
# Fragments too: a secret cut by a length limit or split by a renderer still leaks.
NEEDLES = (API_KEY, PG_PASSWORD, "SEEDLOCK-SECRET")
LOCK = SeedLock(seed=7, temperature=0.2)


def text_of(value: Any) -> str:
    """Everything a value can show: repr, str and a JSON dump of its parts."""
    parts = [repr(value), str(value)]
    with contextlib.suppress(TypeError, ValueError):
        parts.append(json.dumps(value, default=repr))
    return "\n".join(parts)


def assert_clean(value: Any, where: str) -> None:
    text = value if isinstance(value, str) else text_of(value)
    for needle in NEEDLES:
        assert needle not in text, f"secret found in {where}: ...{_around(text, needle)}..."


def _around(text: str, needle: str) -> str:
    i = text.index(needle)
    return text[max(0, i - 120) : i + len(needle) + 40]


# -- stores ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def secret_pg_url(postgres_server: PostgresServer) -> str:
    """A database owned by a role whose password is `PG_PASSWORD`."""
    import psycopg

    with psycopg.connect(postgres_server.admin_url(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PG_ROLE,)).fetchone()
        if not exists:
            conn.execute(f"CREATE ROLE {PG_ROLE} LOGIN PASSWORD '{PG_PASSWORD}'")
            conn.execute(f"CREATE DATABASE {PG_ROLE} OWNER {PG_ROLE}")
    return f"postgresql://{PG_ROLE}:{PG_PASSWORD}@127.0.0.1:{postgres_server.port}/{PG_ROLE}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'b.db'}"
        return
    url: str = request.getfixturevalue("secret_pg_url")
    yield url
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:  # the next test starts empty
        for table in ("seedlock_outputs", "seedlock_fingerprints", "seedlock_events"):
            conn.execute(f"DELETE FROM {table}")


def dump_tables(url: str) -> str:
    """Every row of every table of the store, as text."""
    rows: list[Any] = []
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            for t in tables:
                rows += [(t, *r) for r in conn.execute(f'SELECT * FROM "{t}"')]
    else:
        import psycopg

        with psycopg.connect(url) as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                ).fetchall()
            ]
            for t in tables:
                rows += [(t, *r) for r in conn.execute(f'SELECT * FROM "{t}"').fetchall()]
    assert rows, f"no rows in {tables}: the test wrote nothing"
    return "\n".join(map(repr, rows))


# -- models -----------------------------------------------------------------------
def models(stub: StubOpenAI) -> dict[str, Any]:
    common: dict[str, Any] = {"base_url": stub.base_url, "api_key": API_KEY, "max_retries": 0}
    plain = ChatOpenAI(model="gpt-4o-mini", seed=7, **common)
    return {
        "LockedChatOpenAI": LockedChatOpenAI(model="gpt-4o-mini", lock=LOCK, **common),
        "lock_model(ChatOpenAI)": lock_model(ChatOpenAI(model="gpt-4o-mini", **common), LOCK),
        "LockedChatModel": LockedChatModel(
            model=ChatOpenAI(model="gpt-4o-mini", **common), lock=LOCK
        ),
        "plain ChatOpenAI": plain,
    }


def azure() -> LockedAzureChatOpenAI:
    return LockedAzureChatOpenAI(
        azure_endpoint="https://example.invalid",
        azure_deployment="gpt-4o-mini",
        api_version="2024-10-21",
        api_key=SecretStr(API_KEY),
        azure_ad_token=SecretStr(API_KEY),
        lock=LOCK,
    )


def test_model_reprs_and_serialization(stub: StubOpenAI) -> None:
    every = {**models(stub), "LockedAzureChatOpenAI": azure()}
    for name, model in every.items():
        assert_clean(model, f"repr/str of {name}")
        assert_clean(dumps(model), f"dumps({name})")
        assert_clean(json.dumps(dumpd(model), default=repr), f"dumpd({name})")
        assert_clean(model.model_dump(), f"model_dump of {name}")
        assert_clean(model._identifying_params, f"identifying params of {name}")
        bound = model.bind_tools([get_weather]).with_config(tags=["x"])
        assert_clean(bound, f"repr of {name}.bind_tools")


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


# -- every runtime path --------------------------------------------------------------
def drive(stub: StubOpenAI, store: str) -> list[Any]:
    """Invoke, stream, violate, fail and run an agent; return everything produced."""
    produced: list[Any] = []
    handler = SeedLockCallbackHandler(store=store, lock=LOCK)
    collector = RunCollectorCallbackHandler()
    config: Any = {"callbacks": [handler, collector]}
    produced += [handler, handler.monitor, handler.monitor.store]
    for model in models(stub).values():
        msg = model.invoke("hello", config=config)
        produced += [msg.response_metadata, msg.model_dump(), dumps(msg)]
        full = None
        for part in model.stream("hello", config=config):
            full = part if full is None else full + part
        produced += [full.response_metadata if full is not None else None]
        result = model.generate([[HumanMessage("hi")]], callbacks=[handler, collector])
        produced += [result.llm_output, result.model_dump()]
    # Lock violations: raised (error message), warned (event), observed (handler event).
    locked = models(stub)["LockedChatOpenAI"]
    with pytest.raises(LockViolationError) as info:
        locked.invoke("hi", temperature=1.5, config=config)
    produced += [str(info.value), repr(info.value)]
    warn = LockedChatOpenAI(
        model="gpt-4o-mini", base_url=stub.base_url, api_key=API_KEY,
        lock=LOCK.replace(on_violation="warn"), max_retries=0,
    )  # fmt: skip
    produced.append(warn.invoke("hi", temperature=1.5, config=config).response_metadata)
    ChatOpenAI(model="gpt-4o-mini", base_url=stub.base_url, api_key=API_KEY).invoke(
        "unseeded", config=config
    )
    # Server errors (401 and 500): call_failed events.
    for status in (401, 500):
        stub.status = status
        with pytest.raises(Exception) as failed:  # noqa: PT011 - the provider's own errors
            locked.invoke("fails", config=config)
        produced += [str(failed.value), repr(failed.value)]
    stub.status = 200
    # An agent with the middleware on the same store.
    middleware = SeedLockMiddleware(LOCK, store=store)
    produced += [middleware, middleware.monitor]
    agent = create_agent(
        ChatOpenAI(model="gpt-4o-mini", base_url=stub.base_url, api_key=API_KEY, max_retries=0),
        [get_weather],
        middleware=[middleware],
    )
    state = agent.invoke({"messages": [("user", "weather in Paris?")]}, config=config)
    produced += [m.model_dump() for m in state["messages"]]
    assert handler.close(30)
    assert middleware.close(30)
    # What a tracer (LangSmith included) is sent: every run, metadata and all.
    assert collector.traced_runs
    produced += [run.model_dump() for run in collector.traced_runs]
    return produced


def test_every_path_captured_logs_and_rows(stub: StubOpenAI, store_url: str) -> None:
    with capture_seedlock_events() as logs:
        produced = drive(stub, store_url)
    names = {line["event"] for line in logs}
    # The paths really ran: each of these events was produced and searched.
    for name in ("seedlock.call_failed", "seedlock.lock_violation", "seedlock.unseeded_call"):
        assert name in names, sorted(names)
    for i, item in enumerate(produced):
        assert_clean(item, f"produced[{i}] ({type(item).__name__})")
    assert_clean(json.dumps(logs, default=repr), "captured structlog events")
    assert_clean(dump_tables(store_url), f"rows of {store_url.split(':', maxsplit=1)[0]}")


def test_every_path_json_log_file(stub: StubOpenAI, store_url: str, tmp_path: Path) -> None:
    log_file = tmp_path / "seedlock.jsonl"
    assert configure_logging(file=log_file, level="debug", force=True)
    try:
        drive(stub, store_url)
    finally:
        structlog.reset_defaults()
    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert {"seedlock.call", "seedlock.call_failed", "seedlock.lock_violation"} <= {
        line["event"] for line in lines
    }
    assert_clean(text, "the configure_logging JSON file")


def test_internal_error_traceback_has_no_secrets(
    stub: StubOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Production mode: the bug is swallowed and logged with its traceback.
    monkeypatch.delenv("SEEDLOCK_RAISE_INTERNAL_ERRORS")
    handler = SeedLockCallbackHandler()
    api_key = API_KEY  # a local in the failing frame's caller  # noqa: F841

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug in the monitor")

    monkeypatch.setattr(handler.monitor, "_decide", broken)
    log_file = tmp_path / "errors.jsonl"
    assert configure_logging(file=log_file, force=True)
    try:
        models(stub)["plain ChatOpenAI"].invoke("hi", config={"callbacks": [handler]})
    finally:
        structlog.reset_defaults()
    text = log_file.read_text()
    assert "seedlock.internal_error" in text
    assert "RuntimeError" in text
    assert_clean(text, "an internal_error traceback")


# -- store errors -------------------------------------------------------------------
@pytest.mark.postgres
def test_store_errors_and_events_hide_the_password(
    stub: StubOpenAI, postgres_server: PostgresServer, secret_pg_url: str
) -> None:
    wrong = secret_pg_url.replace(PG_PASSWORD, PG_PASSWORD + "-wrong")
    with pytest.raises(StoreError, match="wrong user or password") as info:
        open_store(wrong)
    assert_clean(str(info.value) + repr(info.value), "wrong-credentials StoreError")
    assert info.value.__cause__ is None
    # A store that fails after opening: store_error events name it, redacted.
    bad = open_store(wrong, connect=False)
    assert_clean(bad, "repr of an unopened PostgreSQL store")
    handler = SeedLockCallbackHandler(store=bad)
    with capture_seedlock_events() as logs:
        models(stub)["plain ChatOpenAI"].invoke("hi", config={"callbacks": [handler]})
        handler.close(timeout=1)
    errors = [line for line in logs if line["event"] == "seedlock.store_error"]
    assert errors
    assert errors[0]["seedlock.store_url"].startswith(f"postgresql://{PG_ROLE}:***@")
    assert_clean(json.dumps(logs, default=repr), "store_error events")
    writer = BackgroundWriter(open_store(secret_pg_url))
    assert_clean(writer, "repr of a BackgroundWriter")
    writer.close()
    monitor = DriftMonitor(open_store(secret_pg_url), buffer_size=0)
    assert_clean(monitor, "repr of a DriftMonitor")


# -- the command line -----------------------------------------------------------------
def test_probe_and_drift_outputs(
    stub: StubOpenAI,
    store_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "SEEDLOCK_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    json_file, html_file = tmp_path / "probe.json", tmp_path / "probe.html"
    code = main(
        ["probe", "--base-url", stub.base_url, "--runs", "2", "--store", store_url,
         "--json", str(json_file), "--html", str(html_file)]
    )  # fmt: skip
    assert code == 0
    probe_out = capsys.readouterr()
    structlog.reset_defaults()  # the CLI configured logging for itself
    assert len(json.loads(json_file.read_text())["arms"]["seeded"]["runs"]) == 2
    assert main(["drift", "--store", store_url, "--json"]) == 0
    drift_out = capsys.readouterr()
    structlog.reset_defaults()
    assert json.loads(drift_out.out)
    for name, text in {
        "probe JSON": json_file.read_text(),
        "probe HTML": html_file.read_text(),
        "probe stdout/stderr": probe_out.out + probe_out.err,
        "drift --json stdout/stderr": drift_out.out + drift_out.err,
        "store rows after probe": dump_tables(store_url),
    }.items():
        assert_clean(text, name)


def test_the_search_finds_a_planted_secret() -> None:
    # The checks above can fail: a secret anywhere in a value is found.
    for planted in ({"k": [API_KEY]}, f"x {PG_PASSWORD} y", ValueError(f"token {API_KEY}")):
        with pytest.raises(AssertionError, match="secret found"):
            assert_clean(planted, "a planted value")


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u@127.0.0.1:1/db?password={PG_PASSWORD}",
        "postgresql://u:pw%2DSEEDLOCK%2DSECRET%2D456@127.0.0.1:1/db",
        f"postgresql://u:{PG_PASSWORD}@127.0.0.1:1/db?sslmode=bogus",
        f"postgresql://u:{PG_PASSWORD}@127.0.0.1:1/db?bogus=1",
        f"postgres://u:{PG_PASSWORD}@[::1/db",
        f"mysql://u:{PG_PASSWORD}@h/db",
    ],
    ids=["query-password", "percent-encoded", "bad-sslmode", "bad-param", "bad-ipv6", "scheme"],
)
def test_store_url_forms_never_echo_the_password(url: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError) as info:
        # A server that is down (port 1) is an error on first use, not at open.
        open_store(url, connect_timeout=1).outputs_for("r1")
    assert_clean(str(info.value) + repr(info.value), "the StoreError")
    if url.startswith("postgres"):
        try:
            unopened: object = open_store(url, connect=False)
        except StoreError as exc:  # a malformed URL fails even without connecting
            unopened = exc
        assert_clean(unopened, "repr of the unopened store")
