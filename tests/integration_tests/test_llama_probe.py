"""The probe and ``seedlock serve`` on the real llama.cpp server with SmolLM2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from langchain_seedlock.cli import main
from langchain_seedlock.local import LocalServer
from langchain_seedlock.probe import run_probe

pytestmark = pytest.mark.llama

MAX_TOKENS = 32
SEEDLOCK = (
    "import sys; from langchain_seedlock.cli import main; "
    "sys.argv[0] = 'seedlock'; sys.exit(main())"
)


@pytest.fixture(autouse=True)
def _no_ambient_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "SEEDLOCK_STORE"):
        monkeypatch.delenv(name, raising=False)


def test_seeded_runs_reproduce_and_unseeded_differ(
    llama_server: LocalServer, llama_report: Callable[[str], None]
) -> None:
    result = run_probe(
        model="SmolLM2-135M-Instruct",
        base_url=llama_server.base_url,
        runs=4,
        max_tokens=MAX_TOKENS,
        store="memory://",
    )
    seeded, unseeded = result.seeded, result.unseeded
    assert seeded.exact_match_rate == 1.0
    assert seeded.distinct_outputs == 1
    assert seeded.first_divergence is None
    assert unseeded.distinct_outputs > 1
    assert unseeded.mean_pairwise_distance > 0.0
    build = llama_server.props()["build_info"]
    assert seeded.fingerprints == unseeded.fingerprints == (build,)
    for run in (*seeded.runs, *unseeded.runs):
        assert (run.prompt_tokens or 0) > 10
        assert 0 < (run.completion_tokens or 0) <= MAX_TOKENS
    assert len({r.request_hash for r in seeded.runs}) == 1
    assert len({r.output_hash for r in seeded.runs}) == 1
    llama_report(
        f"server start {llama_server.startup_seconds:.2f} s (threads={llama_server.threads}); "
        f"probe 4 runs x {MAX_TOKENS} tokens: seeded exact-match {seeded.exact_match_rate:.0%} "
        f"({seeded.distinct_outputs} distinct), unseeded {unseeded.exact_match_rate:.0%} "
        f"({unseeded.distinct_outputs} distinct, distance {unseeded.mean_pairwise_distance:.3f}, "
        f"diverge at char {unseeded.first_divergence}); "
        f"{seeded.tokens_per_second or 0:.0f} tokens/s per request"
    )


def test_probe_command_json_html_and_exit_codes(
    llama_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    json_file, html_file = tmp_path / "p.json", tmp_path / "p.html"
    store = f"sqlite:///{tmp_path / 'baselines.db'}"
    args = [
        "probe", "--base-url", llama_server.base_url, "--model", "SmolLM2-135M-Instruct",
        "--runs", "3", "--max-tokens", str(MAX_TOKENS), "--store", store,
        "--json", str(json_file), "--html", str(html_file), "--fail-under", "1.0",
    ]  # fmt: skip
    assert main(args) == 0
    data = json.loads(json_file.read_text())
    assert data["arms"]["seeded"]["exact_match_rate"] == 1.0
    assert data["arms"]["seeded"]["fingerprints"] == [llama_server.props()["build_info"]]
    assert data["settings"]["max_tokens"] == MAX_TOKENS
    page = html_file.read_text()
    assert "<svg" in page
    assert "seeded" in page
    assert "exact-match rate" in capsys.readouterr().out
    # the seeded arm wrote its baselines: a second probe finds them and no drift
    from langchain_seedlock._store import open_store

    with open_store(store) as opened:
        summaries = opened.requests()
    assert len(summaries) == 1
    assert summaries[0].calls == 3
    assert summaries[0].distinct_outputs == 1


def test_probe_command_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    server = LocalServer(slots=1, threads=1).start()
    url = server.base_url
    server.stop()  # a real address where nothing listens any more
    assert main(["probe", "--base-url", url, "--runs", "1", "--store", "memory://"]) == 4
    err = capsys.readouterr().err.strip()
    assert err.startswith("seedlock probe: error:")
    assert "\n" not in err


def test_probe_command_starts_and_stops_the_embedded_server(
    llama_server: LocalServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # llama_server only ensures the package is installed; the command starts its own.
    started: list[int] = []
    real_start = LocalServer.start

    def recording_start(self: LocalServer) -> LocalServer:
        server = real_start(self)
        assert server.pid is not None
        started.append(server.pid)
        return server

    monkeypatch.setattr(LocalServer, "start", recording_start)
    code = main([
        "probe", "--runs", "2", "--max-tokens", "16", "--store", "memory://",
        "--no-cache-prompt", "--threads", "1", "--json", "-",
    ])  # fmt: skip
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backend"]["kind"] == "local llama-server"
    assert data["model"] == "SmolLM2-135M-Instruct"
    assert data["arms"]["seeded"]["exact_match_rate"] == 1.0
    assert len(started) == 1
    assert _wait(lambda: not _alive(started[0])), "llama-server left behind"


# -- presets (small N: the three together stay well under a minute on 2 cores) ------------
MODEL = "SmolLM2-135M-Instruct"


def _preset(preset: str, tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """Run a preset through the command; its JSON document and last stdout line."""
    json_file = tmp_path / f"{preset}.json"
    code = main(["probe", "--preset", preset, "--model", MODEL, "--json", str(json_file), *args])
    assert code == 0
    data: dict[str, Any] = json.loads(json_file.read_text())
    return data, data["verdict"]


def test_preset_cookbook(
    llama_server: LocalServer, tmp_path: Path, llama_report: Callable[[str], None]
) -> None:
    data, verdict = _preset(
        "cookbook", tmp_path, "--base-url", llama_server.base_url, "--runs", "3",
        "--max-tokens", "24", "--store", "memory://",
    )  # fmt: skip
    unseeded, seeded = data["groups"]
    assert (unseeded["seed"], unseeded["temperature"]) == (None, 0.7)
    assert (seeded["seed"], seeded["temperature"]) == (123, 0.0)
    assert seeded["distinct"] == 1
    assert unseeded["distinct"] > 1
    assert seeded["fingerprints"] == [llama_server.props()["build_info"]]
    assert verdict.startswith("seed honoured: 3/3 identical with seed 123 at temperature 0")
    llama_report(f"cookbook (3 runs x 24 tokens): {verdict}")


def test_preset_seed_honored(
    llama_server: LocalServer, tmp_path: Path, llama_report: Callable[[str], None]
) -> None:
    data, verdict = _preset(
        "seed-honored", tmp_path, "--base-url", llama_server.base_url, "--max-tokens", "24"
    )
    assert [g["seed"] for g in data["groups"]] == [123, 124]
    assert verdict.startswith("seed honoured: seed 123: 2/2 identical; seed 124: 2/2 identical")
    assert "the two seeds differ" in verdict
    llama_report(f"seed-honored (2 runs x 24 tokens per seed): {verdict}")


def test_preset_batch_invariance_starts_both_setups(
    llama_server: LocalServer, tmp_path: Path, llama_report: Callable[[str], None]
) -> None:
    # llama_server only ensures the package is installed; the preset starts
    # llama-server's default setup, then -np 1 --no-cache-prompt.
    data, verdict = _preset(
        "batch-invariance", tmp_path, "--local", "--threads", "1", "--runs", "8",
        "--levels", "1,4", "--max-tokens", "24",
    )  # fmt: skip
    default, reproducible = data["servers"].values()
    assert default["total_slots"] == 4
    assert default["cache_prompt"] is True
    assert (reproducible["total_slots"], reproducible["cache_prompt"]) == (1, False)
    distinct = {(g["section"], g["concurrency"]): g["distinct"] for g in data["groups"]}
    first, second = data["servers"]
    assert distinct[(first, 1)] == 1  # alone, even the default setup reproduces
    assert distinct[(first, 4)] > 1  # the same requests batched four at a time do not
    assert distinct[(second, 1)] == distinct[(second, 4)] == 1
    assert verdict.startswith(f"{first}: NOT batch-invariant")
    assert f"{second}: batch-invariant" in verdict
    llama_report(f"batch-invariance (8 requests x 24 tokens): {verdict}")


# -- seedlock serve -------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has exited


def _children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (other tests may run servers too)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def _wait(condition: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_starts_and_stops_cleanly(llama_server: LocalServer, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SEEDLOCK, "serve", "--threads", "1", "--no-cache-prompt"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        started = _children(proc.pid)
        assert len(started) == 1
        root = base_url.removesuffix("/v1")
        with urllib.request.urlopen(f"{root}/health", timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"{root}/props", timeout=5) as resp:
            props = json.loads(resp.read())
        assert props["total_slots"] == 1
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in err
    assert _wait(lambda: not any(_alive(p) for p in started)), "llama-server left behind"


def test_verify_passes_on_the_same_setup_and_fails_after_drift(
    llama_server: LocalServer,
    llama_server_factory: Callable[..., LocalServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = f"sqlite:///{tmp_path / 'baselines.db'}"
    common = ["--model", "SmolLM2-135M-Instruct", "--max-tokens", str(MAX_TOKENS), "--store", store]
    probe = ["probe", "--base-url", llama_server.base_url, "--runs", "2", "-q", *common]
    assert main(probe) == 0
    capsys.readouterr()  # -q still prints the files written and the verdict
    assert main(["verify", "--base-url", llama_server.base_url, *common]) == 0
    assert capsys.readouterr().out.startswith("OK")
    # same build, same fingerprint, other numerics: verify catches it
    drifted = llama_server_factory(slots=1, cache_prompt=False, flash_attn="off")
    assert main(["verify", "--base-url", drifted.base_url, *common]) == 3
    out = capsys.readouterr().out
    assert out.startswith("DRIFT")
    build = llama_server.props()["build_info"]
    assert f"fingerprint then {build}, now {build}" in out
