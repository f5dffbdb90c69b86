"""Shared helpers for the benchmarks: stub backends, paired per-call timing,
percentiles, tables.

Every script compares against the bare ``ChatOpenAI`` call on the same stub,
in the same run. Two stubs:

- ``inproc``: an ``httpx2.MockTransport`` answering a canned completion
  inside the process (no sockets): the numbers isolate the package's overhead
  on top of LangChain + the OpenAI SDK;
- ``http``: the OpenAI-compatible loopback HTTP stub server the unit tests
  use (``tests/_fixtures/stub_openai.py``), in a thread of this process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests._fixtures (stub server, PostgreSQL helpers)
    sys.path.insert(0, str(ROOT))

import httpx2  # noqa: E402
import structlog  # noqa: E402

MODEL = "gpt-4o-mini"
FINGERPRINT = "fp_bench_1"
LOCK_ARGS: dict[str, Any] = {"seed": 123, "temperature": 0.7, "max_tokens": 200}


def configure_structlog(level: int = logging.INFO) -> None:
    """A typical production setup: INFO and above, JSON lines to stderr.

    ``seedlock.call`` is a debug line, so it is filtered; the benchmarks
    measure what an application that logs at INFO pays.
    """
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


# -- stub backends ----------------------------------------------------------------
def completion_body(content: str = "Mars is the fourth planet from the Sun.") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": MODEL,
            "system_fingerprint": FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
        }
    ).encode()


_BODY = completion_body()
_HEADERS = {"content-type": "application/json"}


def _answer(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, content=_BODY, headers=_HEADERS)


@dataclass
class Backend:
    """Where the models send their requests, and how (see the module docstring)."""

    kind: str  # "inproc" | "http"
    base_url: str
    stop: Callable[[], None]

    def model_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": MODEL,
            "api_key": "sk-bench",
            "base_url": self.base_url,
            "max_retries": 0,
        }
        if self.kind == "inproc":
            # One client pair per model, like an application that builds its models once.
            kwargs["http_client"] = httpx2.Client(transport=httpx2.MockTransport(_answer))
            kwargs["http_async_client"] = httpx2.AsyncClient(
                transport=httpx2.MockTransport(_answer)
            )
        return kwargs


@contextlib.contextmanager
def backend(kind: str, delay: float = 0.0) -> Iterator[Backend]:
    """``delay``: seconds the http stub waits before answering (a model's latency)."""
    if kind == "inproc":
        yield Backend("inproc", "http://stub.invalid/v1", lambda: None)
        return
    if kind != "http":
        raise ValueError(f"unknown backend {kind!r}; use inproc or http")
    from tests._fixtures.stub_openai import StubOpenAI

    stub = StubOpenAI()
    # The stub writes headers and body in separate sends: with Nagle's algorithm
    # on, the client's delayed ACK adds ~40 ms per call. Off, as in real servers.
    stub._server.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
    stub.delay = delay
    stub.start()
    stub.fingerprint = FINGERPRINT
    stub.reply = "Mars is the fourth planet from the Sun."
    stub.requests = _NoList()  # do not keep every request body
    try:
        yield Backend("http", stub.base_url, stub.stop)
    finally:
        stub.stop()


class _NoList(list[Any]):
    def append(self, item: Any) -> None:
        pass


def bare_model(b: Backend) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(**b.model_kwargs(), **{k: v for k, v in LOCK_ARGS.items()})


def locked_model(b: Backend) -> Any:
    from langchain_seedlock import LockedChatOpenAI, SeedLock

    return LockedChatOpenAI(**b.model_kwargs(), lock=SeedLock(**LOCK_ARGS))


def prompts(n: int, prefix: str = "Name planet") -> list[str]:
    return [f"{prefix} number {i} of the solar system, briefly." for i in range(n)]


# -- PostgreSQL -------------------------------------------------------------------
@contextlib.contextmanager
def postgres_url() -> Iterator[str | None]:
    """A throwaway PostgreSQL on 127.0.0.1 (the test fixture's logic); None if
    the server binaries or psycopg are missing."""
    from tests._fixtures import postgres as pg

    bindir = pg._bindir()
    if importlib.util.find_spec("psycopg") is None or bindir is None:
        yield None
        return
    # A benchmark stopped with SIGTERM still stops its server (the context exits).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Stock durability (fsync, synchronous_commit on): the numbers are a real server's.
    with pg.throwaway_cluster(bindir, durable=True, prefix="seedlock-bench-pg-") as server:
        yield server.url


# -- timing: paired, per-call interleaved -----------------------------------------
# On a shared VM the CPU speed drifts (up to ~1.6x, in phases lasting seconds):
# variants timed in separate blocks of calls land in different phases and their
# medians move by hundreds of µs from run to run. Here every call index i calls
# every variant once, back to back (in an order that changes with i, see
# `call_orders`), so the calls compared are milliseconds apart and see the same
# CPU speed; the statistics are taken over the per-index differences
# (``variant_i - bare_i``).
#
# Background work (a store writer's batches, a tracer's uploads) runs in the
# variant's own threads, as in an application: nothing is flushed per call
# (a flush per call would turn our writer's batches into one transaction per
# record, and the wait would slow the next call, see `call_orders`). It is
# attributed by thread instead: the threads a variant starts while it is built
# (`new_threads`) and during its solo warm-up calls are its own, and their CPU
# clocks (``pthread_getcpuclockid``) are read at the start and the end of the
# timed phase.
def _no_context() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def _nothing() -> None:
    return None


SOLO_WARMUP = 5
"""Warm-up calls each variant makes alone, first (its threads start then)."""


LOOP_EXECUTOR = "bench-loop-executor"
"""Thread name prefix of the event loop's default executor in `arun_paired`."""


def backend_thread(t: threading.Thread) -> bool:
    """A thread every variant uses, so never one variant's background thread:
    the http stub's (one per connection), or the event loop's executor (in
    `arun_paired` its CPU is counted in each call's call CPU instead)."""
    return "process_request_thread" in t.name or t.name.startswith(LOOP_EXECUTOR)


@contextlib.contextmanager
def new_threads() -> Iterator[list[threading.Thread]]:
    """The threads started inside the block and alive at its end (the http
    stub's excepted); the list is filled in when the block exits."""
    before = set(threading.enumerate())
    started: list[threading.Thread] = []
    try:
        yield started
    finally:
        started += [t for t in threading.enumerate() if t not in before and not backend_thread(t)]


def thread_cpu_ns(t: threading.Thread) -> int | None:
    """CPU time (ns) thread ``t`` has used so far; None if it has ended."""
    if t.ident is None or not t.is_alive():
        return None
    try:
        return time.clock_gettime_ns(time.pthread_getcpuclockid(t.ident))
    except OSError:
        return None


@dataclass
class Variant:
    """One way of making the call, timed call by call against the others.

    ``call(i)`` / ``acall(i)`` make call number ``i`` (sync / awaited);
    ``around()`` is entered around every call, untimed (e.g. instrumentation
    that patches the process and must be on only for this variant);
    ``drain()`` flushes the variant's background work (a store writer, a
    tracer's batch), untimed, at the phase boundaries only: after its solo
    warm-up, before the timed phase and after it (so the timed phase's
    background CPU is that of its own calls), never per call;
    ``threads``: its background threads, those started while it was built
    (see `new_threads`); the runners add those started during its solo
    warm-up; ``dropped()``: records its store writer dropped (None: no writer).
    """

    name: str
    call: Callable[[int], object]
    acall: Callable[[int], Awaitable[object]]
    around: Callable[[], contextlib.AbstractContextManager[object]] = _no_context
    drain: Callable[[], object] = _nothing
    threads: list[threading.Thread] = field(default_factory=list)
    dropped: Callable[[], int] | None = None


def model_variant(
    name: str,
    model: Any,
    texts: Sequence[str],
    *,
    callbacks: list[Any] | None = None,
    around: Callable[[], contextlib.AbstractContextManager[object]] = _no_context,
    drain: Callable[[], object] = _nothing,
    threads: Sequence[threading.Thread] = (),
    dropped: Callable[[], int] | None = None,
) -> Variant:
    """A `Variant` for ``model.invoke`` / ``ainvoke`` on ``texts[i % len(texts)]``."""
    config: dict[str, Any] = {"callbacks": callbacks} if callbacks else {}
    return Variant(
        name,
        call=lambda i: model.invoke(texts[i % len(texts)], config=config),
        acall=lambda i: model.ainvoke(texts[i % len(texts)], config=config),
        around=around,
        drain=drain,
        threads=list(threads),
        dropped=dropped,
    )


@dataclass
class Samples:
    """Per-call times (ns) of one variant; index i of every variant's lists is
    the same call index of the same run (the pairs of the paired statistics).

    - ``wall``: ``perf_counter_ns`` around the call;
    - ``cpu``: ``thread_time_ns`` of the calling thread around the call (the
      call path only; store writers, tracers' threads and the http stub run in
      other threads), plus, async, the loop's executor (see `arun_paired`);
    - ``bg_ns``: CPU of the variant's background threads over the whole timed
      phase, up to the end of the drain that follows it (``bg_threads``:
      their names);
    - ``dropped``: records its store writer dropped, checked after that drain.
    """

    wall: list[int] = field(default_factory=list)
    cpu: list[int] = field(default_factory=list)
    bg_ns: int = 0
    bg_threads: list[str] = field(default_factory=list)
    dropped: int | None = None

    @property
    def n(self) -> int:
        return len(self.wall)

    @property
    def bg_us_per_call(self) -> float:
        return self.bg_ns / self.n / 1000 if self.n else float("nan")


def call_orders(k: int) -> list[list[int]]:
    """The orders in which call indexes run ``k`` variants, cycled (index i
    uses ``orders[i % len(orders)]``): a Williams design, in which every
    variant runs in every position, and right after every other variant,
    equally often. Both matter: a call made right after the thread waited (a
    ``time.sleep``, a blocking flush) runs some 400-500 µs slower on the VM,
    and a variant's cost can spill into the next call (garbage, caches), so
    with a plain rotation, where each variant always follows the same one,
    the differences would be biased."""
    first = [0] + [(j + 1) // 2 if j % 2 else k - j // 2 for j in range(1, k)]
    orders = [[(x + r) % k for x in first] for r in range(k)]
    if k % 2:  # odd k: the mirrored orders complete the balance
        orders += [o[::-1] for o in orders]
    return orders


def _claim(v: Variant, started: list[threading.Thread]) -> None:
    v.threads += [t for t in started if t not in v.threads]


def _names(threads: Sequence[threading.Thread]) -> str:
    return ", ".join(t.name for t in threads)


def _begin_timed(
    variants: Sequence[Variant], existing: set[threading.Thread]
) -> tuple[list[dict[threading.Thread, int]], set[threading.Thread]]:
    """Drain, collect garbage, read every variant's thread CPU clocks."""
    for v in variants:
        v.drain()
    settle()
    owned = {t for v in variants for t in v.threads}
    now = set(threading.enumerate())
    stray = [t for t in now - existing - owned if not backend_thread(t)]
    if stray:
        print(
            f"note: {len(stray)} thread(s) started during the interleaved warm-up, "
            f"attributed to no variant (their CPU is not counted): {_names(stray)}\n"
        )
    clocks = [{t: c for t in v.threads if (c := thread_cpu_ns(t)) is not None} for v in variants]
    return clocks, now


def _end_timed(
    variants: Sequence[Variant],
    samples: Sequence[Samples],
    clocks: Sequence[dict[threading.Thread, int]],
    existing: set[threading.Thread],
) -> None:
    """Drain (untimed), then charge each variant its threads' CPU since
    `_begin_timed` and read its dropped count."""
    for v in variants:
        v.drain()
    for v, s, start in zip(variants, samples, clocks, strict=True):
        ended = []
        for t, c0 in start.items():
            c1 = thread_cpu_ns(t)
            if c1 is None:
                ended.append(t)
            else:
                s.bg_ns += c1 - c0
        s.bg_threads = [t.name for t in v.threads]
        s.dropped = v.dropped() if v.dropped is not None else None
        if ended:
            print(f"note: {v.name}: thread(s) ended during the timed phase "
                  f"(their CPU is not counted): {_names(ended)}\n")  # fmt: skip
    late = [t for t in set(threading.enumerate()) - existing if not backend_thread(t)]
    if late:
        print(
            f"note: {len(late)} thread(s) started during the timed phase, attributed "
            f"to no variant (their CPU is not counted): {_names(late)}\n"
        )


def run_paired(variants: Sequence[Variant], calls: int, warmup: int) -> list[Samples]:
    """Warm-up, then ``calls`` timed call indexes; at each timed index every
    variant is called once, in an order that changes with the index
    (`call_orders`). Warm-up: each variant alone for its first
    `SOLO_WARMUP` indexes, then drained (the threads started meanwhile are
    its own), then the rest of the ``warmup`` indexes interleaved. Returns
    one `Samples` per variant (same order), aligned by call index."""
    existing = set(threading.enumerate())
    solo = min(warmup, SOLO_WARMUP)
    for v in variants:
        with new_threads() as started:
            for i in range(solo):
                with v.around():
                    v.call(i)
            v.drain()
        _claim(v, started)
    orders = call_orders(len(variants))
    for i in range(solo, warmup):
        for j in orders[i % len(orders)]:
            with variants[j].around():
                variants[j].call(i)
    clocks, existing = _begin_timed(variants, existing)
    samples = [Samples() for _ in variants]
    pc, tt = time.perf_counter_ns, time.thread_time_ns
    for i in range(calls):
        for j in orders[i % len(orders)]:
            v, s = variants[j], samples[j]
            with v.around():
                w0, c0 = pc(), tt()
                v.call(i)
                c1, w1 = tt(), pc()
            s.wall.append(w1 - w0)
            s.cpu.append(c1 - c0)
    _end_timed(variants, samples, clocks, existing)
    return samples


async def arun_paired(variants: Sequence[Variant], calls: int, warmup: int) -> list[Samples]:
    """`run_paired` with ``await v.acall(i)``: one call at a time, awaited in
    this event loop. The call path is the loop's thread plus its default
    executor, which ``ainvoke`` awaits (``ChatOpenAI`` builds its result
    there, the OpenAI SDK reads the platform there once): "call CPU" is
    the CPU of both during the call. The executor is set to one worker
    thread (calls are awaited one at a time, so one is busy at most; with
    the stock pool, threads are added while the timed calls run)."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=LOOP_EXECUTOR)
    )
    existing = set(threading.enumerate())
    solo = min(warmup, SOLO_WARMUP)
    for v in variants:
        with new_threads() as started:
            for i in range(solo):
                with v.around():
                    await v.acall(i)
            v.drain()
        _claim(v, started)
    orders = call_orders(len(variants))
    for i in range(solo, warmup):
        for j in orders[i % len(orders)]:
            with variants[j].around():
                await variants[j].acall(i)
    clocks, existing = _begin_timed(variants, existing)
    helpers = [t for t in threading.enumerate() if t.name.startswith(LOOP_EXECUTOR)]

    def helper_cpu() -> int:
        return sum(thread_cpu_ns(t) or 0 for t in helpers)

    samples = [Samples() for _ in variants]
    pc, tt = time.perf_counter_ns, time.thread_time_ns
    for i in range(calls):
        for j in orders[i % len(orders)]:
            v, s = variants[j], samples[j]
            with v.around():
                h0 = helper_cpu()
                w0, c0 = pc(), tt()
                await v.acall(i)
                c1, w1 = tt(), pc()
                h1 = helper_cpu()
            s.wall.append(w1 - w0)
            s.cpu.append(c1 - c0 + h1 - h0)
    _end_timed(variants, samples, clocks, existing)
    return samples


@dataclass
class Paired:
    """A variant against the baseline, over the pairs (variant_i, base_i); µs."""

    cpu_med: float  # median of call-CPU differences
    cpu_trimmed: float  # their mean without the lowest and highest 10%
    wall_med: float  # median of wall differences
    wall_p99: float  # 99th percentile of wall differences
    wall_ratio: float  # median of wall ratios variant_i / base_i
    wall_ratio_of_medians: float  # median wall / the baseline's median wall
    bg: float  # the variant's background-thread CPU per timed call
    total: float  # cpu_med + bg - the baseline's bg: added CPU, all threads


def paired(s: Samples, base: Samples, trim: float = 0.1) -> Paired:
    """Paired statistics of ``s`` against ``base`` (same run, aligned by index)."""
    if s.n != base.n:
        raise ValueError(f"unaligned samples: {s.n} calls vs {base.n}")

    def diffs(a: list[int], b: list[int]) -> list[float]:
        return [(x - y) / 1000 for x, y in zip(a, b, strict=True)]

    cpu, wall = diffs(s.cpu, base.cpu), diffs(s.wall, base.wall)
    cpu_med = median(cpu)
    return Paired(
        cpu_med=cpu_med,
        cpu_trimmed=trimmed_mean(cpu, trim),
        wall_med=median(wall),
        wall_p99=percentile(wall, 99),
        wall_ratio=median([x / y for x, y in zip(s.wall, base.wall, strict=True)]),
        wall_ratio_of_medians=median(s.wall) / median(base.wall),
        bg=s.bg_us_per_call,
        total=cpu_med + s.bg_us_per_call - base.bg_us_per_call,
    )


PAIRED_HEADERS = (
    "variant",
    "calls",
    "wall med µs",
    "call CPU med µs",
    "+call CPU med µs",
    "+call CPU trimmed mean µs",
    "+wall med µs",
    "+wall p99 µs",
    "wall ratio (paired med)",
    "wall ratio (of medians)",
    "bg threads",
    "bg CPU µs/call",
    "+total CPU µs/call",
    "dropped",
)


def paired_table(names: Sequence[str], samples: Sequence[Samples]) -> str:
    """One row per variant; the ``+`` columns and the ratios are paired against
    the first variant (the baseline), call index by call index. "bg CPU" is
    the CPU of the variant's background threads over the timed phase, per
    call; "+total CPU" = "+call CPU med" + "bg CPU" (minus the baseline's bg
    CPU, normally 0): the CPU the variant adds per call, in every thread,
    which is what a CPU-bound process pays. "dropped": records the variant's
    store writer dropped ("-": no writer)."""
    base = samples[0]
    rows = []
    for name, s in zip(names, samples, strict=True):
        p = paired(s, base)
        rows.append(
            [
                name,
                s.n,
                median(s.wall) / 1000,
                median(s.cpu) / 1000,
                p.cpu_med,
                p.cpu_trimmed,
                p.wall_med,
                p.wall_p99,
                p.wall_ratio,
                p.wall_ratio_of_medians,
                len(s.bg_threads),
                p.bg,
                p.total,
                "-" if s.dropped is None else s.dropped,
            ]
        )
    return table(PAIRED_HEADERS, rows)


def thread_lines(names: Sequence[str], samples: Sequence[Samples]) -> str:
    """Which background threads each variant was charged for."""
    return "\n".join(
        f"- {name}: {', '.join(s.bg_threads)}"
        for name, s in zip(names, samples, strict=True)
        if s.bg_threads
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def trimmed_mean(values: Sequence[float], trim: float = 0.1) -> float:
    """Mean without the lowest and the highest ``trim`` fraction of the values."""
    if not values:
        return float("nan")
    s = sorted(values)
    cut = int(len(s) * trim)
    kept = s[cut : len(s) - cut]
    return sum(kept) / len(kept)


def settle() -> None:
    gc.collect()


def rss_mb() -> float:
    """Resident set size of this process, MB (from /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- output -----------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal and pasteable into docs)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def machine_info() -> str:
    """CPU, cores, memory, Python and package versions (printed by every script)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
                break
    virt = ""
    if shutil.which("lscpu"):
        with contextlib.suppress(Exception):
            out = subprocess.run(
                ["lscpu"], check=False, capture_output=True, text=True, timeout=5
            ).stdout
            for line in out.splitlines():
                if line.startswith("Hypervisor vendor:"):
                    virt = f", VM ({line.split(':', 1)[1].strip()})"
    versions = []
    for pkg in (
        "langchain-seedlock",
        "langchain-core",
        "langchain-openai",
        "openai",
        "httpx2",
        "structlog",
        "psycopg",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{pkg} {importlib.metadata.version(pkg)}")
    import sqlite3

    return (
        f"machine: {cpu}, {os.cpu_count()} CPUs{virt}, {mem}; {platform.system()} "
        f"{platform.release()}\n"
        f"python {platform.python_version()} ({platform.python_implementation()}); "
        f"SQLite {sqlite3.sqlite_version}\n" + "; ".join(versions)
    )


def header(title: str) -> None:
    print(f"## {title}\n")
    print(machine_info())
    print()
