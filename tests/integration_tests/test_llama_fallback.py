"""The ``--no-repack`` fallback on the real llama-server.

The crash itself needs a CPU that advertises AMX it cannot run; here a shell
wrapper stands in for it (killed by SIGSEGV unless ``--no-repack`` is given)
and execs the real binary otherwise. What this proves on the real build: the
flag `LocalServer` adds is one this llama-server accepts, and the server it
starts serves the model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from langchain_seedlock import LocalServer
from langchain_seedlock.local import ENV_BINARY, find_llama_server, local_backend_installed
from tests._fixtures.llama import SKIP_REASON, THREADS

pytestmark = pytest.mark.llama


def test_real_server_restarts_with_no_repack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not local_backend_installed():
        pytest.skip(SKIP_REASON)
    real = find_llama_server()
    wrapper = tmp_path / "llama-server"
    wrapper.write_text(
        f'#!/bin/sh\ncase " $* " in *" --no-repack "*) exec "{real}" "$@" ;; esac\nkill -SEGV $$\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv(ENV_BINARY, str(wrapper))
    with capture_logs() as logs, LocalServer(slots=1, threads=THREADS) as server:
        props = server.props()
        assert server.command(server.port or 0)[-1] == "--no-repack"
    assert props["total_slots"] == 1
    fallbacks = [e for e in logs if e["event"] == "seedlock.local_server_fallback"]
    assert [e["seedlock.signal"] for e in fallbacks] == ["SIGSEGV"]
