"""Per-call overhead, sync and async: bare ChatOpenAI vs the locked model alone,
vs locked + SeedLockCallbackHandler with a SQLite store, vs with PostgreSQL.

Variants run interleaved in rounds (each round runs a block of every variant,
the order rotating) so that machine noise hits them alike. Budgets (issue 7),
on "locked + handler (SQLite)": added CPU per call at the median <= 150 us
(CPU of the calling thread: the call path; the background store writes show
in the process CPU mean); wall-time ratio (median call) <= 1.05. Reported,
never asserted.

    .venv/bin/python bench/overhead.py                 # both stubs, sync + async
    .venv/bin/python bench/overhead.py --calls 5000 --backend http
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    Backend,
    Samples,
    atime_calls,
    backend,
    bare_model,
    configure_structlog,
    header,
    locked_model,
    median,
    percentile,
    postgres_url,
    prompts,
    settle,
    table,
    time_calls,
    verdict,
)

from langchain_seedlock import SeedLockCallbackHandler, open_store

CPU_BUDGET_US = 150.0
WALL_RATIO_BUDGET = 1.05
BUDGET_VARIANT = "locked + handler (SQLite)"


class Variant:
    def __init__(self, name: str, model: Any, handler: SeedLockCallbackHandler | None) -> None:
        self.name = name
        self.model = model
        self.handler = handler
        self.config: dict[str, Any] = {"callbacks": [handler]} if handler else {}
        self.samples = Samples([], [])

    def call(self, text: str) -> Any:
        return self.model.invoke(text, config=self.config)

    async def acall(self, text: str) -> Any:
        return await self.model.ainvoke(text, config=self.config)


def build_variants(
    b: Backend, tmp: Path, pg_url: str | None, *, bare_handler: bool
) -> list[Variant]:
    variants = [
        Variant("bare ChatOpenAI", bare_model(b), None),
        Variant("locked model", locked_model(b), None),
        Variant(
            BUDGET_VARIANT,
            locked_model(b),
            SeedLockCallbackHandler(store=open_store(f"sqlite:///{tmp / 'sqlite.db'}")),
        ),
    ]
    if pg_url is not None:
        variants.append(
            Variant(
                "locked + handler (PostgreSQL)",
                locked_model(b),
                SeedLockCallbackHandler(store=open_store(pg_url)),
            )
        )
    if bare_handler:
        variants.append(
            Variant(
                "bare + handler (SQLite)",
                bare_model(b),
                SeedLockCallbackHandler(store=open_store(f"sqlite:///{tmp / 'bare.db'}")),
            )
        )
    return variants


def run_sync(
    variants: list[Variant], texts: list[str], calls: int, warmup: int, rounds: int
) -> None:
    for v in variants:
        for i in range(warmup):
            v.call(texts[i % len(texts)])
        if v.handler:
            v.handler.flush()
    block = max(1, calls // rounds)
    for r in range(rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            settle()
            v.samples.extend(time_calls(lambda i, v=v: v.call(texts[i % len(texts)]), block))
            if v.handler:
                v.handler.flush()


async def run_async(
    variants: list[Variant], texts: list[str], calls: int, warmup: int, rounds: int
) -> None:
    for v in variants:
        for i in range(warmup):
            await v.acall(texts[i % len(texts)])
        if v.handler:
            v.handler.flush()
    block = max(1, calls // rounds)
    for r in range(rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            settle()
            fn: Callable[[int], Any] = lambda i, v=v: v.acall(texts[i % len(texts)])  # noqa: E731
            v.samples.extend(await atime_calls(fn, block))
            if v.handler:
                v.handler.flush()


def report(title: str, variants: list[Variant]) -> list[tuple[str, str, bool]]:
    base = variants[0].samples
    b_wall, b_cpu = median(base.wall), median(base.cpu)
    b_p99 = percentile(base.wall, 99)
    rows = []
    for v in variants:
        s = v.samples
        wall, cpu, p99 = median(s.wall), median(s.cpu), percentile(s.wall, 99)
        rows.append(
            [
                v.name,
                s.n,
                wall / 1000,
                p99 / 1000,
                cpu / 1000,
                (wall - b_wall) / 1000,
                (p99 - b_p99) / 1000,
                (cpu - b_cpu) / 1000,
                (s.total_cpu - base.total_cpu * s.n / base.n) / s.n / 1000,
                wall / b_wall,
                s.total_wall / base.total_wall * base.n / s.n,
            ]
        )
    print(f"### {title}\n")
    print(
        table(
            [
                "variant",
                "calls",
                "wall med µs",
                "wall p99 µs",
                "call CPU med µs",
                "+wall med µs",
                "+wall p99 µs",
                "+call CPU med µs",
                "+process CPU mean µs",
                "wall ratio (med)",
                "wall ratio (total)",
            ],
            rows,
        )
    )
    print()
    results = []
    for v, row in zip(variants, rows, strict=True):
        if v.name != BUDGET_VARIANT:
            continue
        cpu_ok = row[7] <= CPU_BUDGET_US
        ratio_ok = row[9] <= WALL_RATIO_BUDGET
        print(
            f"{verdict(cpu_ok)}  {title}: added CPU per call (median) {row[7]:.1f} µs "
            f"<= {CPU_BUDGET_US:.0f} µs"
        )
        print(
            f"{verdict(ratio_ok)}  {title}: wall ratio (median call) {row[9]:.3f} "
            f"<= {WALL_RATIO_BUDGET}"
        )
        results += [(title, "cpu", cpu_ok), (title, "ratio", ratio_ok)]
    print()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per variant")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=100, help="distinct prompts cycled")
    parser.add_argument("--backend", choices=["inproc", "http", "both"], default="both")
    parser.add_argument("--mode", choices=["sync", "async", "both"], default="both")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="http stub: seconds before each answer"
    )
    parser.add_argument(
        "--bare-handler", action="store_true", help="also: the handler on an unlocked ChatOpenAI"
    )
    args = parser.parse_args()
    configure_structlog()
    header("Per-call overhead")
    texts = prompts(args.prompts)
    kinds = ["inproc", "http"] if args.backend == "both" else [args.backend]
    modes = ["sync", "async"] if args.mode == "both" else [args.mode]
    with (
        tempfile.TemporaryDirectory() as tmp_s,
        postgres_url() if not args.no_postgres else _Nothing() as pg_url,
    ):
        if pg_url is None and not args.no_postgres:
            print("(PostgreSQL not available: its variant is skipped)\n")
        for kind in kinds:
            for mode in modes:
                tmp = Path(tmp_s) / f"{kind}-{mode}"
                tmp.mkdir()
                with backend(kind, args.delay) as b:
                    variants = build_variants(b, tmp, pg_url, bare_handler=args.bare_handler)
                    if mode == "sync":
                        run_sync(variants, texts, args.calls, args.warmup, args.rounds)
                    else:
                        asyncio.run(
                            run_async(variants, texts, args.calls, args.warmup, args.rounds)
                        )
                    delay = f", {args.delay * 1000:g} ms latency" if args.delay else ""
                    report(f"{kind} stub{delay}, {mode}", variants)
                    for v in variants:
                        if v.handler:
                            v.handler.close()
                            v.handler.monitor.store.close()  # type: ignore[union-attr]
    return 0


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
