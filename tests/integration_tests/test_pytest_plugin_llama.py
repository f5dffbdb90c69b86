"""The pytest plugin end to end on the real model: examples/pytest_project/.

Record against llama.cpp + SmolLM2, verify passes; restart the server with
flash attention off (measured to change seeded outputs under the same build
fingerprint) and verify fails on the new variants; replay passes with no
server at all. Each step is a real ``pytest`` process in a copy of the example.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from langchain_seedlock import LocalServer

pytestmark = [pytest.mark.llama, pytest.mark.timeout(900)]

EXAMPLE = Path(__file__).parents[2] / "examples" / "pytest_project"


def run_example(
    project: Path, base_url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIPELINE_BASE_URL": base_url, **(env or {})}
    env.pop("PYTEST_ADDOPTS", None)
    plugin = [] if _entry_point_installed() else ["-p", "langchain_seedlock.pytest_plugin"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *plugin, "-p", "no:cacheprovider", "-rs", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def _entry_point_installed() -> bool:
    from importlib import metadata

    return any(
        ep.value == "langchain_seedlock.pytest_plugin"
        for ep in metadata.entry_points(group="pytest11")
    )


def test_example_project_record_verify_drift_replay(
    tmp_path: Path,
    llama_server: LocalServer,
    llama_server_factory: Callable[..., LocalServer],
    llama_report: Callable[[str], None],
) -> None:
    project = tmp_path / "pytest_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__seedlock__", "__pycache__"))

    recorded = run_example(project, llama_server.base_url, "--seedlock=record")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    baseline = project / "tests" / "__seedlock__" / "test_pipeline.jsonl"
    lines = [json.loads(line) for line in baseline.read_text().splitlines()]
    assert [line["test"] for line in lines[1:]] == [
        "test_agent_answers", "test_chain_answers[Mars]", "test_chain_answers[the Moon]",
    ]  # fmt: skip
    assert all(line["outputs"][0]["text"] for line in lines[1:])

    verified = run_example(project, llama_server.base_url)  # a baseline exists: verify
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "3 locked calls in 3 tests: 3 reproduced" in verified.stdout

    # Same build (same fingerprint), flash attention off: other seeded outputs.
    no_fa = llama_server_factory(slots=1, cache_prompt=False, flash_attn="off")
    drifted = run_example(project, no_fa.base_url, "--seedlock=verify")
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    assert "new variant under the same backend" in drifted.stdout
    summary = next(line for line in drifted.stdout.splitlines() if "locked calls in" in line)
    llama_report(f"pytest plugin, flash attention off vs on: {summary}")
    # Declared (flash attention is a setting no server reports): the same
    # drift is explained by the backend change, skipped; failed when strict.
    declared = {"SEEDLOCK_BACKEND": "flash_attn=off"}
    explained = run_example(project, no_fa.base_url, "--seedlock=verify", env=declared)
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert "backend identity changed (same fingerprint" in explained.stdout
    assert "3 skipped" in explained.stdout
    strict = run_example(
        project, no_fa.base_url, "--seedlock=verify", "--seedlock-strict", env=declared
    )
    assert strict.returncode == 1, strict.stdout + strict.stderr
    no_fa.stop()

    # Replay: nothing listens on this port.
    replayed = run_example(project, "http://127.0.0.1:9/v1", "--seedlock=replay")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "3 passed" in replayed.stdout
    assert "answered from" in replayed.stdout
