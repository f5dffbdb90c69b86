"""Per-call overhead, sync and async: bare ChatOpenAI vs bare + a no-op
callback handler, vs the locked model alone, vs locked +
SeedLockCallbackHandler with a SQLite store, vs with PostgreSQL.

Method: paired, interleaved per call. On a shared VM the CPU speed drifts
(up to ~1.6x, in phases lasting seconds), so variants timed in separate
blocks of calls land in different phases and their medians move by
±100-800 µs from run to run, more than the ~150 µs to resolve. Here every
call index i calls every variant once, back to back, so the calls compared
are milliseconds apart and see the same CPU speed. The order changes with i
(each variant runs in each position, and right after each other variant,
equally often: a call made right after a wait is slower). The "+" columns
are statistics over i of the paired differences ``variant_i - bare_i``
(median; trimmed mean without the lowest and highest 10%; p99); the wall
ratio is the median over i of ``variant_i / bare_i`` (the ratio of the
medians is shown too). A first experiment repeated to about ±10 µs.

"call CPU" is ``thread_time_ns`` of the calling thread (the call path).
Background work runs as in an application: the handler's store writer
batches records in its own thread, never flushed per call. Its CPU is
attributed by thread: the threads a variant starts while it is built and
during its first warm-up calls (made alone) are its own; "bg CPU" is their
CPU clock over the timed phase (up to an untimed flush after it), per call;
"+total CPU" = "+call CPU med" + "bg CPU": the CPU the variant adds per
call in every thread, which is what a CPU-bound process pays. "dropped"
(checked after that flush) shows whether the store kept up. "bare + no-op
handler" (a handler with no methods) shows what LangChain's callback
machinery costs any handler.

Budgets, as ratios in the same run (issue 13; all of them, peers included,
in ``bench/ratios.py``), on "locked + handler (SQLite)": added client CPU
per call (paired median call path + background) <= 1.5x what "bare + no-op
handler" adds; wall ratio (paired median) <= 1.05. Reported, never
asserted.

    .venv/bin/python bench/overhead.py                 # both stubs, sync + async
    .venv/bin/python bench/overhead.py --calls 5000 --backend http
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from pathlib import Path

from common import (
    Backend,
    Samples,
    Variant,
    arun_paired,
    backend,
    bare_model,
    configure_structlog,
    header,
    locked_model,
    model_variant,
    new_threads,
    paired,
    paired_table,
    postgres_url,
    prompts,
    run_paired,
    thread_lines,
    verdict,
)
from langchain_core.callbacks import BaseCallbackHandler

from langchain_seedlock import SeedLockCallbackHandler, open_store

NOOP_RATIO_BUDGET = 1.5
WALL_RATIO_BUDGET = 1.05
BASELINE = "bare ChatOpenAI"
NOOP_VARIANT = "bare + no-op handler"
BUDGET_VARIANT = "locked + handler (SQLite)"


class NoopHandler(BaseCallbackHandler):
    """Handles nothing: what LangChain's callback plumbing costs any handler."""

    run_inline = True


def build_variants(
    b: Backend, texts: list[str], tmp: Path, pg_url: str | None, *, bare_handler: bool
) -> tuple[list[Variant], list[SeedLockCallbackHandler]]:
    handlers: list[SeedLockCallbackHandler] = []

    def with_handler(name: str, model: object, store_url: str) -> Variant:
        with new_threads() as started:  # the handler's store writer thread
            h = SeedLockCallbackHandler(store=open_store(store_url))
        handlers.append(h)
        writer = getattr(h.monitor._store._writer, "_thread", None)
        if writer not in started:
            print(f"note: {name}: its store writer thread was not seen starting\n")
        return model_variant(name, model, texts, callbacks=[h], drain=h.flush,
                             threads=started, dropped=lambda: h.monitor.dropped)  # fmt: skip

    variants = [
        model_variant(BASELINE, bare_model(b), texts),
        model_variant(NOOP_VARIANT, bare_model(b), texts, callbacks=[NoopHandler()]),
        model_variant("locked model", locked_model(b), texts),
        with_handler(BUDGET_VARIANT, locked_model(b), f"sqlite:///{tmp / 'sqlite.db'}"),
    ]
    if pg_url is not None:
        variants.append(with_handler("locked + handler (PostgreSQL)", locked_model(b), pg_url))
    if bare_handler:
        variants.append(
            with_handler("bare + handler (SQLite)", bare_model(b), f"sqlite:///{tmp / 'bare.db'}")
        )
    return variants, handlers


def report(title: str, variants: list[Variant], samples: list[Samples]) -> None:
    names = [v.name for v in variants]
    print(f"### {title}\n")
    print(paired_table(names, samples))
    print(f"\n(+ columns and ratios: paired per call index against {BASELINE})\n")
    print(f"background threads charged:\n{thread_lines(names, samples)}\n")
    by_name = dict(zip(names, samples, strict=True))
    ours = by_name[BUDGET_VARIANT]
    p = paired(ours, by_name[BASELINE])
    noop = paired(by_name[NOOP_VARIANT], by_name[BASELINE])
    ratio = p.total / noop.total
    print(
        f"{verdict(ratio <= NOOP_RATIO_BUDGET)}  {title}: added client CPU per call, "
        f"{BUDGET_VARIANT} / {NOOP_VARIANT} = {ratio:.3f} <= {NOOP_RATIO_BUDGET} "
        f"({p.total:.1f} µs / {noop.total:.1f} µs)"
    )
    print(
        f"{verdict(p.wall_ratio <= WALL_RATIO_BUDGET)}  {title}: wall ratio "
        f"(paired median) {p.wall_ratio:.3f} <= {WALL_RATIO_BUDGET}"
    )
    print(
        f"info  {title}: total added CPU per call of {BUDGET_VARIANT}, incl. its "
        f"store writer thread: {p.total:.1f} µs (call path {p.cpu_med:.1f} µs paired "
        f"median + background {p.bg:.1f} µs/call)"
    )
    q = paired(ours, by_name[NOOP_VARIANT])
    print(
        f"info  {title}: added CPU per call of {BUDGET_VARIANT} over {NOOP_VARIANT} "
        f"(ours alone, without LangChain's callback plumbing): paired median "
        f"{q.cpu_med:.1f} µs, trimmed mean {q.cpu_trimmed:.1f} µs; incl. background "
        f"{q.total:.1f} µs"
    )
    dropped = {n: s.dropped for n, s in by_name.items() if s.dropped is not None}
    print(
        f"{'ok' if not any(dropped.values()) else 'LOST'}  {title}: records dropped by the store "
        "writers (after the final flush): " + ", ".join(f"{n} {d}" for n, d in dropped.items())
    )
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per variant")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls per variant")
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
        postgres_url() if not args.no_postgres else contextlib.nullcontext() as pg_url,
    ):
        if pg_url is None and not args.no_postgres:
            print("(PostgreSQL not available: its variant is skipped)\n")
        for kind in kinds:
            for mode in modes:
                tmp = Path(tmp_s) / f"{kind}-{mode}"
                tmp.mkdir()
                with backend(kind, args.delay) as b:
                    variants, handlers = build_variants(
                        b, texts, tmp, pg_url, bare_handler=args.bare_handler
                    )
                    if mode == "sync":
                        samples = run_paired(variants, args.calls, args.warmup)
                    else:
                        samples = asyncio.run(arun_paired(variants, args.calls, args.warmup))
                    delay = f", {args.delay * 1000:g} ms latency" if args.delay else ""
                    report(f"{kind} stub{delay}, {mode}", variants, samples)
                    for h in handlers:
                        h.close()
                        h.monitor.store.close()  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
