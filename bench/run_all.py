"""Run every benchmark with its default (small) settings, one after the other.

    .venv/bin/python bench/run_all.py [--out bench-results.md] [--only overhead,hashing]

Each script prints its own tables and PASS/MISS lines and exits 0; budgets
are reported, never asserted. Extra arguments after ``--`` go to every script.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("ratios", "overhead", "fanout", "stores", "memory", "hashing", "peer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write everything printed to this file")
    parser.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated scripts")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    out = args.out.open("w", encoding="utf-8") if args.out else None
    started = time.perf_counter()
    failed = []
    for name in args.only.split(","):
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / f"{name}.py"), *extra],
            capture_output=True,
            text=True,
            check=False,
        )
        text = proc.stdout + f"\n_({name}.py: {time.perf_counter() - t0:.0f} s)_\n\n"
        sys.stdout.write(text)
        sys.stdout.flush()
        if out:
            out.write(text)
        if proc.returncode:
            failed.append(name)
            sys.stderr.write(proc.stderr)
    print(f"all benchmarks: {time.perf_counter() - started:.0f} s")
    if failed:
        print(f"scripts that failed: {', '.join(failed)}")
    if out:
        out.close()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
