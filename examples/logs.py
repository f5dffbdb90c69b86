"""Read the JSON logs of agent runs and summarize drift per agent step.

Without arguments it runs ``examples/agent.py`` twice into a temporary
directory (a second run after a simulated backend upgrade, both recording to
one SQLite store), then prints, per call, the thread, the agent step, the
seed, the fingerprint and what needed attention; then what the store knows,
as ``seedlock drift --store URL`` prints it. Given a log file, it summarizes
that file only.

    python examples/logs.py [agent.log]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from langchain_seedlock.cli import main as seedlock

AGENT = Path(__file__).with_name("agent.py")
ATTENTION = {
    "seedlock.fingerprint_changed": lambda e: (
        f"fingerprint {e['seedlock.previous_fingerprint']} -> "
        f"{e['openai.response.system_fingerprint']}"
    ),
    "seedlock.output_drift": lambda e: (
        "output drift, "
        + ("explained by the backend" if e["seedlock.explained"] else "UNEXPLAINED")
    ),
    "seedlock.lock_violation": lambda e: f"lock violation on {e['field']}",
    "seedlock.unseeded_call": lambda e: "unseeded call",
    "seedlock.call_failed": lambda e: f"call failed: {e['error.type']}",
}


def read_events(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, filter(None, lines)) if e["event"].startswith("seedlock.")]


def summarize(events: list[dict[str, Any]]) -> None:
    notes: dict[tuple[Any, Any], list[str]] = defaultdict(list)
    for e in events:
        if e["event"] in ATTENTION:
            notes[e.get("thread_id"), e.get("agent_step")].append(ATTENTION[e["event"]](e))
    print(
        f"{'thread':<8} {'step':>4} {'graph':>5} {'seed':>5}  {'fingerprint':<14} output    notes"
    )
    for e in (e for e in events if e["event"] == "seedlock.call"):
        key = (e.get("thread_id"), e.get("agent_step"))
        print(
            f"{e.get('thread_id')!s:<8} {e.get('agent_step')!s:>4} {e.get('langgraph_step')!s:>5} "
            f"{e['gen_ai.request.seed']!s:>5}  {e['openai.response.system_fingerprint']!s:<14} "
            f"{e['seedlock.output_hash'][:8]}  {'; '.join(notes[key]) or '-'}"
        )


def main() -> None:
    if len(sys.argv) > 1:
        summarize(read_events(Path(sys.argv[1])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        log, store = Path(tmp, "agent.log"), f"sqlite:///{tmp}/baselines.db"
        with log.open("w") as stderr:
            for thread, extra in (("run-1", []), ("run-2", ["--upgrade"])):
                command = [sys.executable, str(AGENT), "--store", store, "--thread", thread]
                subprocess.run(
                    [*command, *extra], stderr=stderr, stdout=subprocess.DEVNULL, check=True
                )
        summarize(read_events(log))
        print("\n$ seedlock drift --store sqlite:///.../baselines.db")
        seedlock(["drift", "--store", store])


if __name__ == "__main__":
    main()
