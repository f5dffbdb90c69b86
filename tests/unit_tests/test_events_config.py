"""configure_logging and the level check: JSON lines for apps without structlog setup."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from langchain_openai import ChatOpenAI

from langchain_seedlock import DriftMonitor, SeedLockCallbackHandler, _drift_events
from langchain_seedlock import _events as ev
from langchain_seedlock._record import CallRecord
from tests._fixtures.stub_openai import StubOpenAI


def make_model(stub: StubOpenAI) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", seed=1)


def test_importing_does_not_configure() -> None:
    code = (
        "import structlog, langchain_seedlock, langchain_seedlock._callbacks, "
        "langchain_seedlock._autoattach, langchain_seedlock._drift; "
        "assert not structlog.is_configured()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_json_lines_to_a_file(stub: StubOpenAI, tmp_path: Path) -> None:
    path = tmp_path / "seedlock.jsonl"
    assert ev.configure_logging(file=path, level="debug") is True
    handler = SeedLockCallbackHandler()
    make_model(stub).invoke("hi", config={"callbacks": [handler]})
    stub.reply = "different"
    make_model(stub).invoke("hi", config={"callbacks": [handler]})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == [ev.CALL, ev.CALL, ev.OUTPUT_DRIFT]
    assert lines[0]["level"] == "debug"
    assert lines[2]["level"] == "warning"
    assert lines[0]["timestamp"].endswith("Z")
    assert lines[0]["gen_ai.request.seed"] == 1


def test_level_filters_the_call_line(stub: StubOpenAI) -> None:
    out = io.StringIO()
    ev.configure_logging(file=out, level="info")  # the default level
    make_model(stub).invoke("hi", config={"callbacks": [SeedLockCallbackHandler()]})
    assert out.getvalue() == ""


def test_an_app_configuration_is_left_alone() -> None:
    out = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
    before = structlog.get_config()
    assert ev.configure_logging() is False
    assert structlog.get_config() == before
    assert ev.configure_logging(force=True, json=False, file=out) is True
    assert structlog.get_config() != before


def test_console_renderer(stub: StubOpenAI) -> None:
    out = io.StringIO()
    ev.configure_logging(json=False, file=out, level="debug")
    make_model(stub).invoke("hi", config={"callbacks": [SeedLockCallbackHandler()]})
    assert "seedlock.call" in out.getvalue()
    assert not out.getvalue().lstrip().startswith("{")


def test_unknown_level() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        ev.configure_logging(level="loud")


def test_fields_are_not_built_when_the_call_line_is_discarded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ev.configure_logging(file=io.StringIO(), level="info")
    monitor = DriftMonitor()
    built: list[Any] = []
    original = _drift_events.base_fields

    def spy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        built.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(_drift_events, "base_fields", spy)
    record = CallRecord("openai", "m", "req", "out", seed=1, system_fingerprint="fp")
    assert monitor.observe(record) == [ev.CALL]
    assert built == []
    assert ev.is_enabled(ev.get_logger().bind(), "info") is True
    assert ev.is_enabled(ev.get_logger().bind(), "debug") is False
    ev.configure_logging(file=io.StringIO(), level="debug", force=True)
    monitor.observe(record)
    assert len(built) == 1  # the spy sees the fields built once the line is kept


def test_internal_error_traceback_has_no_locals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEEDLOCK_RAISE_INTERNAL_ERRORS")
    out = io.StringIO()
    ev.configure_logging(file=out)
    monitor = DriftMonitor()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(monitor, "_decide", broken)
    secret = "the secret output text"
    monitor.observe(CallRecord("openai", "m", "r", "o", seed=1, output_text=secret))
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["event"] == ev.INTERNAL_ERROR
    assert line["exception"][0]["exc_type"] == "RuntimeError"
    assert secret not in out.getvalue()


def test_console_drift_line_reads_summary_first(stub: StubOpenAI) -> None:
    """A person reading the console sees what happened before the hashes."""
    out = io.StringIO()
    ev.configure_logging(json=False, file=out, level="warning")
    handler = SeedLockCallbackHandler()
    model = make_model(stub)
    model.invoke("hi", config={"callbacks": [handler]})
    stub.reply = "something else"
    model.invoke("hi", config={"callbacks": [handler]})
    (line,) = [x for x in out.getvalue().splitlines() if "seedlock.output_drift" in x]
    after_event = line.split("seedlock.output_drift", 1)[1].split()
    assert after_event[0].startswith("seedlock.summary=")
    assert line.index("seedlock.variant=") < line.index("seedlock.request_hash=")
