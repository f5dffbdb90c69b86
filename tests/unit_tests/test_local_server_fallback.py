"""`LocalServer` restarts a llama-server that crashes at start-up with ``--no-repack``.

On cloud VMs whose CPU advertises AMX / AVX-512 that the hypervisor blocks, a
natively compiled llama-server dies with SIGSEGV (in ``ggml_backend_amx_mul_mat``)
or SIGILL while loading the model; without weight repacking it starts. The fake
``llama-server`` here crashes the same way unless ``--no-repack`` is on its
command line, and records each launch so the tests can count restarts.
"""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from langchain_seedlock import BackendUnavailableError, LocalServer, LocalServerCrashedError

FALLBACK_EVENT = "seedlock.local_server_fallback"

FAKE_SERVER = textwrap.dedent(
    """\
    import json, os, resource, signal, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    args = sys.argv[1:]
    with open(os.environ["FAKE_LAUNCHES"], "a") as f:
        f.write(json.dumps(args) + "\\n")
    mode = os.environ.get("FAKE_MODE", "amx")
    if mode == "exit":
        print("error: couldn't load model", file=sys.stderr, flush=True)
        sys.exit(3)
    if mode == "always" or "--no-repack" not in args:
        print("load_tensors:          AMX model buffer size =    52.00 MiB", flush=True)
        print("fake: crashing in ggml_backend_amx_mul_mat", file=sys.stderr, flush=True)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the test dir
        sig = getattr(signal, os.environ.get("FAKE_SIGNAL", "SIGSEGV"))
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    port = int(args[args.index("--port") + 1])
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            body = json.dumps({"build_info": "fake", "args": args}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body)))
            self.end_headers(); self.wfile.write(body)
    HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


class Fake:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.script = tmp_path / "llama-server"
        self.script.write_text(f"#!{sys.executable}\n{FAKE_SERVER}")
        self.script.chmod(0o755)
        self.model = tmp_path / "model.gguf"
        self.model.write_bytes(b"GGUF")
        self.launch_file = tmp_path / "launches"
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("SEEDLOCK_LLAMA_SERVER", str(self.script))
        monkeypatch.setenv("SEEDLOCK_MODEL_PATH", str(self.model))
        monkeypatch.setenv("FAKE_LAUNCHES", str(self.launch_file))
        monkeypatch.delenv("LLAMA_ARG_REPACK", raising=False)

    def wrap_in_shell(self) -> None:
        """Run the fake through ``sh`` (not exec): a crash shows as exit code 128+signal."""
        wrapper = self.script.parent / "llama-server.sh"
        wrapper.write_text(f'#!/bin/sh\n"{self.script}" "$@"\nexit $?\n')
        wrapper.chmod(0o755)
        self.monkeypatch.setenv("SEEDLOCK_LLAMA_SERVER", str(wrapper))

    def launches(self) -> list[list[str]]:
        if not self.launch_file.exists():
            return []
        return [json.loads(line) for line in self.launch_file.read_text().splitlines()]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    return Fake(tmp_path, monkeypatch)


def _fallbacks(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == FALLBACK_EVENT]


@pytest.mark.parametrize("sig", ["SIGSEGV", "SIGILL"])
def test_crash_at_startup_restarts_once_with_no_repack(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, sig: str
) -> None:
    monkeypatch.setenv("FAKE_SIGNAL", sig)
    with capture_logs() as logs, LocalServer(threads=1, startup_timeout=20) as server:
        assert server.running
        args = server.props()["args"]
    assert "--no-repack" in args
    launches = fake.launches()
    assert len(launches) == 2
    assert "--no-repack" not in launches[0]
    assert launches[1].count("--no-repack") == 1
    (event,) = _fallbacks(logs)
    assert event["log_level"] == "warning"
    assert event["seedlock.signal"] == sig
    assert event["seedlock.flag_added"] == "--no-repack"
    assert "AMX" in str(event["seedlock.reason"])
    assert not server.running


def test_fallback_is_remembered_for_later_starts(fake: Fake) -> None:
    with capture_logs() as logs:
        with LocalServer(threads=1, startup_timeout=20):
            pass
        with LocalServer(threads=1, startup_timeout=20) as second:
            assert "--no-repack" in second.command(8080)
    launches = fake.launches()
    # crash + restart for the first server; the second goes straight to --no-repack
    assert len(launches) == 3
    assert "--no-repack" in launches[2]
    assert len(_fallbacks(logs)) == 1


def test_crash_through_a_shell_wrapper_is_recognised(fake: Fake) -> None:
    fake.wrap_in_shell()  # the shell exits with 128 + 11
    with capture_logs() as logs, LocalServer(threads=1, startup_timeout=20) as server:
        assert "--no-repack" in server.props()["args"]
    (event,) = _fallbacks(logs)
    assert event["seedlock.signal"] == "SIGSEGV"


def test_crash_even_with_no_repack_raises_a_typed_error(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "always")
    server = LocalServer(threads=1, startup_timeout=20)
    with capture_logs() as logs, pytest.raises(LocalServerCrashedError) as caught:
        server.start()
    error = caught.value
    assert isinstance(error, BackendUnavailableError)
    message = str(error)
    assert "SIGSEGV" in message
    launches = fake.launches()
    assert len(launches) == 2  # tried once more, with --no-repack, then gave up
    assert shlex.join([str(fake.script), *launches[1]]) in message
    assert "fake: crashing in ggml_backend_amx_mul_mat" in message  # the stderr tail
    assert error.signal_name == "SIGSEGV"
    assert error.command == [str(fake.script), *launches[1]]
    assert "--no-repack" in error.command
    assert len(_fallbacks(logs)) == 1
    assert not server.running


def test_crash_with_no_repack_already_given_is_not_retried(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "always")
    monkeypatch.setenv("FAKE_SIGNAL", "SIGILL")
    server = LocalServer(threads=1, startup_timeout=20, extra_args=["--no-repack"])
    with capture_logs() as logs, pytest.raises(LocalServerCrashedError, match="SIGILL"):
        server.start()
    assert len(fake.launches()) == 1
    assert fake.launches()[0].count("--no-repack") == 1
    assert _fallbacks(logs) == []


def test_clean_nonzero_exit_does_not_trigger_the_fallback(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "exit")
    with capture_logs() as logs, pytest.raises(BackendUnavailableError) as caught:
        LocalServer(threads=1, startup_timeout=20).start()
    assert not isinstance(caught.value, LocalServerCrashedError)
    assert "exited with code 3" in str(caught.value)
    assert "couldn't load model" in str(caught.value)
    assert len(fake.launches()) == 1
    assert "--no-repack" not in fake.launches()[0]
    assert _fallbacks(logs) == []


def test_crash_error_and_event_mask_the_api_key(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "always")
    server = LocalServer(threads=1, startup_timeout=20, extra_args=["--api-key", "sk-secret-1"])
    with capture_logs() as logs, pytest.raises(LocalServerCrashedError) as caught:
        server.start()
    assert "sk-secret-1" in fake.launches()[0]  # the server itself got the key
    assert "--api-key REDACTED" in str(caught.value)
    assert "sk-secret-1" not in str(caught.value)
    assert "sk-secret-1" not in repr(logs)
