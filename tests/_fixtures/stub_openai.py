"""The fake OpenAI-compatible server as pytest fixtures.

The server itself is public API: `langchain_seedlock.testing.FakeBackend`
(documented in docs/testing.md). ``stub`` is one shared server, reset to its
defaults for each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from langchain_seedlock.testing import FakeBackend, raw_completion, sample_from_schema

# The suite's historical name for the fake backend.
StubOpenAI = FakeBackend

__all__ = ["FakeBackend", "StubOpenAI", "raw_completion", "sample_from_schema"]


@pytest.fixture(scope="session")
def _stub_server() -> Iterator[FakeBackend]:
    stub = FakeBackend().start()
    yield stub
    stub.stop()


@pytest.fixture
def stub(_stub_server: FakeBackend) -> FakeBackend:
    """The fake server, reset to its defaults for this test."""
    _stub_server.reset()
    return _stub_server
