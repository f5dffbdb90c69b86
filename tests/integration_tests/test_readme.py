"""The README's quickstart runs as written, on the real local model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_seedlock.local import local_backend_installed
from tests._fixtures.llama import SKIP_REASON

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run a documented script as a user would: its own process, in an empty folder."""
    if not local_backend_installed():
        pytest.skip(SKIP_REASON)
    script = tmp_path / "script.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.llama
def test_readme_quickstart_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks, "README.md has no python block"
    result = _run(tmp_path, blocks[0])
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "True"  # same seed, same backend: the same answer twice
    assert lines[1]  # the fingerprint llama.cpp reports
    assert re.fullmatch(r"[0-9a-f]{64}", lines[2])
    assert (tmp_path / "baselines.db").exists()


@pytest.mark.llama
def test_getting_started_script_reaches_a_drift_event(tmp_path: Path) -> None:
    """docs/getting-started.md's whole script, as written: the same answer twice,
    then flash attention off changes it and the handler names the change."""
    page = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    whole = page.split("## The whole script", 1)[1]
    (block,) = re.findall(r"```python\n(.*?)```", whole, flags=re.DOTALL)
    result = _run(tmp_path, block)
    assert result.stdout.split() == ["True", "False"]
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    (changed,) = [e for e in events if e["event"] == "seedlock.backend_changed"]
    assert changed["seedlock.changed_fields"] == {"flash_attn": [None, "off"]}
    assert changed["level"] == "warning"
    (drift,) = [e for e in events if e["event"] == "seedlock.output_drift"]
    assert (drift["seedlock.variant"], drift["seedlock.explained"]) == ("new", True)
    assert drift["level"] == "info"
