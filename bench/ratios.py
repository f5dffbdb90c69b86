"""The overhead budgets of issue 13, as ratios measured side by side in one run.

Absolute microseconds do not hold on a shared VM (its CPU speed drifts by up
to 1.6x in phases of seconds), so every budget divides what we add by what
something else costs in the same run, in the same CPU phases:

1. **per call**: the client CPU that locked model + ``SeedLockCallbackHandler``
   + SQLite store add to the bare ``ChatOpenAI`` call, over what a do-nothing
   ``BaseCallbackHandler`` adds (<= 1.5x), what OpenInference's LangChain
   instrumentation with the OTel SDK's ``InMemorySpanExporter`` adds
   (<= 0.2x) and what LangSmith's ``LangChainTracer`` adds with a client
   whose HTTP session answers locally (<= 0.2x);
2. **hashing**: on an unlocked model, the handler hashing a ~100,000-token
   conversation with tool calls costs <= 0.5x the bare call's own client CPU
   for the same request;
3. **writer**: at 20 calls/s, the background store writer's CPU per call is
   <= 0.1x the bare call's client CPU.

Method (see ``common.py``): paired and interleaved per call index, in an
order that changes with the index (Williams design), repeated in blocks;
each ratio is computed per block from medians, and the line shows the
median over blocks and their range. "Client CPU" is CPU time, never wall
time: ``thread_time_ns`` of the calling thread for the call path, plus the
CPU clocks of each variant's own background threads (our store writer,
LangSmith's batching thread) over the timed phase, per call. The added CPU
of a variant is the paired median of its call-path CPU minus the bare
call's, plus its background CPU per call. The http stub and the stdlib
are the same for every variant, so they cancel in the differences.

    .venv/bin/python bench/ratios.py                       # ~2 min
    .venv/bin/python bench/ratios.py --blocks 8 --calls 400   # tighter
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    Backend,
    Samples,
    Variant,
    backend,
    bare_model,
    configure_structlog,
    header,
    locked_model,
    median,
    model_variant,
    new_threads,
    paired,
    paired_table,
    prompts,
    run_paired,
    settle,
    thread_cpu_ns,
)
from hashing import conversation, tools
from langchain_core.callbacks import BaseCallbackHandler
from peer import langsmith_tracer, openinference

from langchain_seedlock import SeedLockCallbackHandler, open_store
from langchain_seedlock._hashing import request_hash_from_messages

BARE = "bare ChatOpenAI"
NOOP = "bare + no-op handler"
OPENINFERENCE = "bare + OpenInference (in-memory OTel)"
LANGSMITH = "bare + LangSmith tracer (local session)"
OURS = "locked + handler (SQLite)"
LOCKED = "locked model (no handler)"
HANDLER = "bare + handler (SQLite)"

PER_CALL_BUDGETS = ((NOOP, 1.5), (OPENINFERENCE, 0.2), (LANGSMITH, 0.2))
HASH_BUDGET = 0.5
WRITER_BUDGET = 0.1
WRITER_RATE = 20.0  # calls/s


class NoopHandler(BaseCallbackHandler):
    """Handles nothing: what LangChain's callback plumbing costs any handler."""

    run_inline = True


@dataclass
class Ratio:
    """One budget: per-block values, the median of them, the budget."""

    name: str
    values: list[float]
    budget: float | None  # None: an info line

    @property
    def med(self) -> float:
        return median(self.values)

    def line(self) -> str:
        spread = f"blocks {min(self.values):.3f}..{max(self.values):.3f}, n={len(self.values)}"
        if self.budget is None:
            return f"info  {self.name} = {self.med:.3f} ({spread})"
        verdict = "PASS" if self.med <= self.budget else "MISS"
        return f"{verdict}  {self.name} = {self.med:.3f} <= {self.budget:g} ({spread})"


def handler_variant(
    name: str, model: Any, texts: Sequence[Any], db: Path
) -> tuple[Variant, SeedLockCallbackHandler]:
    with new_threads() as started:  # the handler's store writer thread
        h = SeedLockCallbackHandler(store=open_store(f"sqlite:///{db}"))
    v = model_variant(name, model, texts, callbacks=[h], drain=h.flush, threads=started,
                      dropped=lambda: h.monitor.dropped)  # fmt: skip
    return v, h


def run_blocks(
    variants: list[Variant], blocks: int, calls: int, warmup: int
) -> list[dict[str, Samples]]:
    out = []
    for k in range(blocks):
        samples = run_paired(variants, calls, warmup if k == 0 else max(10, warmup // 5))
        out.append({v.name: s for v, s in zip(variants, samples, strict=True)})
    return out


def added(s: Samples, base: Samples) -> float:
    """Added client CPU per call (µs): paired median call path + background."""
    return paired(s, base).total


# -- 1. per call ----------------------------------------------------------------------
def per_call(b: Backend, tmp: Path, blocks: int, calls: int, warmup: int) -> list[Ratio]:
    texts = prompts(100)
    variants = [
        model_variant(BARE, bare_model(b), texts),
        model_variant(NOOP, bare_model(b), texts, callbacks=[NoopHandler()]),
    ]
    oi = openinference()
    if oi is None:
        print("(openinference-instrumentation-langchain missing: pip install -e '.[bench]')\n")
    else:
        variants.append(model_variant(OPENINFERENCE, bare_model(b), texts, around=oi))
    with new_threads() as ls_threads:  # the LangSmith client's batching thread
        ls = langsmith_tracer()
    if ls is not None:
        tracer, client, session = ls

        def drain() -> None:
            tracer.wait_for_futures()
            client.flush()

        variants.append(model_variant(LANGSMITH, bare_model(b), texts, callbacks=[tracer],
                                      drain=drain, threads=ls_threads))  # fmt: skip
    ours, h = handler_variant(OURS, locked_model(b), texts, tmp / "per-call.db")
    # Where ours goes: the locked model alone, the handler alone (on the bare model).
    locked = model_variant(LOCKED, locked_model(b), texts)
    alone, h2 = handler_variant(HANDLER, bare_model(b), texts, tmp / "handler.db")
    variants += [ours, locked, alone]
    runs = run_blocks(variants, blocks, calls, warmup)
    names = [v.name for v in variants]
    print(f"### 1. Per call ({b.kind} stub, sync), last block of {blocks}\n")
    print(paired_table(names, [runs[-1][n] for n in names]))
    if ls is not None:
        print(f"\nLangSmith: {session.sent} batched requests answered locally, "
              f"{session.bytes:,} bytes (not sent)")  # fmt: skip
    print(f"{OURS}: records dropped by its writer: {h.monitor.dropped}")
    h.close()
    h2.close()
    print()
    ratios = []
    for peer_name, budget in PER_CALL_BUDGETS:
        if peer_name not in names:
            continue
        ratios.append(
            Ratio(
                f"added client CPU per call, {OURS} / {peer_name}",
                [added(r[OURS], r[BARE]) / added(r[peer_name], r[BARE]) for r in runs],
                budget,
            )
        )
    for peer_name, _ in PER_CALL_BUDGETS:  # the same without background threads
        if peer_name in names:
            ratios.append(
                Ratio(
                    f"call path only (no background threads), {OURS} / {peer_name}",
                    [
                        paired(r[OURS], r[BARE]).cpu_med / paired(r[peer_name], r[BARE]).cpu_med
                        for r in runs
                    ],
                    None,
                )
            )
    for r in ratios:
        print(r.line())
    print(
        "info  added client CPU per call, µs, median over blocks: "
        + ", ".join(f"{n} {median([added(r[n], r[BARE]) for r in runs]):.0f}" for n in names[1:])
        + f"; bare call {median([median(r[BARE].cpu) / 1000 for r in runs]):.0f}"
    )
    print()
    return ratios


# -- 2. hashing a large request ------------------------------------------------------
class TimedHandler(SeedLockCallbackHandler):
    """The handler, timing its own callbacks (thread CPU, start + end per call):
    what it costs inside a ~150 ms call, without that call's noise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cpu: list[int] = []
        self._start_ns = 0

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        t0 = time.thread_time_ns()
        super().on_chat_model_start(*args, **kwargs)
        self._start_ns = time.thread_time_ns() - t0

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        t0 = time.thread_time_ns()
        super().on_llm_end(*args, **kwargs)
        self.cpu.append(self._start_ns + time.thread_time_ns() - t0)


def hashing(b: Backend, tmp: Path, blocks: int, calls: int, warmup: int) -> list[Ratio]:
    """The bare call, the bare call with a no-op handler and with ours (its
    callbacks timed), and the hash function alone, paired on one request."""
    messages = conversation(100_000)
    tool_list = tools()
    convo = [messages]

    def bound() -> Any:
        return bare_model(b).bind_tools(tool_list)

    probe = bound()
    params = probe.bound._get_invocation_params(**probe.kwargs)
    with new_threads() as started:
        h = TimedHandler(store=open_store(f"sqlite:///{tmp / 'hashing.db'}"))
    ours = model_variant("bare + handler (SQLite)", bound(), convo, callbacks=[h],
                         drain=h.flush, threads=started)  # fmt: skip

    def hash_only(i: int) -> object:
        return request_hash_from_messages("openai", messages, params)

    async def ahash_only(i: int) -> object:  # for the Variant type: sync only here
        return hash_only(i)

    alone = Variant("request_hash_from_messages alone", hash_only, ahash_only)
    variants = [
        model_variant(BARE, bound(), convo),
        model_variant(NOOP, bound(), convo, callbacks=[NoopHandler()]),
        ours,
        alone,
    ]
    runs = []
    handler_cpu = []
    for k in range(blocks):
        h.cpu.clear()
        samples = run_paired(variants, calls, warmup if k == 0 else 2)
        runs.append({v.name: s for v, s in zip(variants, samples, strict=True)})
        handler_cpu.append(median(h.cpu[-calls:]) / 1000)
    names = [v.name for v in variants]
    wire = json_size(probe.bound._get_request_payload(messages, **probe.kwargs))
    print(f"### 2. Hashing a ~100k-token conversation, unlocked model ({b.kind} stub, sync)\n")
    print(f"{len(messages)} messages with tool calls, {len(tool_list)} tools, {wire:,} "
          f"characters of request JSON; last block of {blocks}:\n")  # fmt: skip
    print(paired_table(names, [runs[-1][n] for n in names]))
    h.close()
    print()
    bare_us = [median(r[BARE].cpu) / 1000 for r in runs]
    ratios = [
        Ratio(
            "handler's own CPU (start + end callbacks), 100k-token request / bare call CPU",
            [c / bare for c, bare in zip(handler_cpu, bare_us, strict=True)],
            HASH_BUDGET,
        ),
        Ratio(
            "request_hash_from_messages alone, 100k-token request / bare call CPU",
            [
                median(r[alone.name].cpu) / 1000 / bare
                for r, bare in zip(runs, bare_us, strict=True)
            ],
            None,
        ),
        Ratio(
            "handler's added call CPU over a no-op handler (paired, noisy) / bare call CPU",
            [
                paired(r[ours.name], r[NOOP]).cpu_med / bare
                for r, bare in zip(runs, bare_us, strict=True)
            ],
            None,
        ),
    ]
    for r in ratios:
        print(r.line())
    print(
        f"info  µs, median over blocks: bare call {median(bare_us):.0f}, handler's callbacks "
        f"{median(handler_cpu):.0f}, hash alone "
        f"{median([median(r[alone.name].cpu) / 1000 for r in runs]):.0f}"
    )
    print()
    return ratios


def json_size(payload: Any) -> int:
    return len(json.dumps(payload, default=str))


# -- 3. the background writer at 20 calls/s -----------------------------------------
def writer(b: Backend, tmp: Path, blocks: int, ticks: int) -> list[Ratio]:
    """One ``ours`` and one bare call per 1/20 s tick (alternating which goes
    first), sleeping out the rest of the tick: the writer wakes for every
    record, its costliest regime (no batching)."""
    texts = prompts(100)
    bare = bare_model(b)
    ours, h = handler_variant(OURS, locked_model(b), texts, tmp / "writer.db")
    thread = getattr(h.monitor._writer, "_thread", None)
    if not isinstance(thread, threading.Thread):
        raise RuntimeError("the handler's store writer thread was not found")
    for i in range(20):  # warm-up
        ours.call(i)
        bare.invoke(texts[i % len(texts)])
    h.flush()
    tt = time.thread_time_ns
    per_call: list[float] = []
    bare_cpu: list[float] = []
    for _ in range(blocks):
        settle()
        h.flush()
        w0 = thread_cpu_ns(thread) or 0
        cpus: list[int] = []
        start = time.perf_counter()
        for i in range(ticks):
            calls: list[Callable[[], object]] = [
                lambda i=i: ours.call(i),
                lambda i=i: bare.invoke(texts[i % len(texts)]),
            ]
            for k, call in enumerate(calls if i % 2 else calls[::-1]):
                c0 = tt()
                call()
                c1 = tt()
                if (k == 1) == bool(i % 2):
                    cpus.append(c1 - c0)
            delay = start + (i + 1) / WRITER_RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        h.flush()
        per_call.append(((thread_cpu_ns(thread) or 0) - w0) / ticks / 1000)
        bare_cpu.append(median(cpus) / 1000)
    h.close()
    ratio = Ratio(
        f"store writer CPU per call at {WRITER_RATE:g} calls/s / bare call CPU",
        [w / c for w, c in zip(per_call, bare_cpu, strict=True)],
        WRITER_BUDGET,
    )
    print(f"### 3. The store writer at {WRITER_RATE:g} calls/s ({b.kind} stub, SQLite)\n")
    print(ratio.line())
    print(f"info  µs, median over blocks: writer per call {median(per_call):.0f}, "
          f"bare call {median(bare_cpu):.0f}; records dropped {h.monitor.dropped}")  # fmt: skip
    print()
    return [ratio]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=5, help="paired blocks per budget")
    parser.add_argument("--calls", type=int, default=300, help="timed call indexes per block")
    parser.add_argument("--warmup", type=int, default=60, help="untimed indexes, first block")
    parser.add_argument("--hash-calls", type=int, default=40, help="per block, 100k-token request")
    parser.add_argument("--ticks", type=int, default=100, help="writer: calls per block")
    parser.add_argument("--backend", choices=["inproc", "http"], default="inproc")
    parser.add_argument("--only", default="per-call,hashing,writer")
    args = parser.parse_args()
    configure_structlog()
    header("Overhead budgets as same-run ratios (issue 13)")
    only = set(args.only.split(","))
    ratios: list[Ratio] = []
    with tempfile.TemporaryDirectory() as tmp_s, backend(args.backend) as b:
        tmp = Path(tmp_s)
        if "per-call" in only:
            ratios += per_call(b, tmp, args.blocks, args.calls, args.warmup)
        if "hashing" in only:
            ratios += hashing(b, tmp, args.blocks, args.hash_calls, 5)
        if "writer" in only:
            ratios += writer(b, tmp, args.blocks, args.ticks)
    print("### All ratios\n")
    print("\n".join(r.line() for r in ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
