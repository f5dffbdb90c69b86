"""Shared fixtures. Server fixtures live in tests/_fixtures/ (one file per service)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

pytest_plugins = [
    "tests._fixtures.stub_openai",
    "tests._fixtures.stub_providers",
    "tests._fixtures.postgres",
    "tests._fixtures.llama",
    "tests._fixtures.otlp",
]


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    # Tests capture logs; never let one test's configuration leak into another.
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _raise_internal_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    # Instrumentation swallows its own bugs in production; in tests they must surface.
    monkeypatch.setenv("SEEDLOCK_RAISE_INTERNAL_ERRORS", "1")
