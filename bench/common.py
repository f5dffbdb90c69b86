"""Shared helpers for the benchmarks: stub backends, timing, percentiles, tables.

Every script compares against the bare ``ChatOpenAI`` call on the same stub,
in the same run. Two stubs:

- ``inproc``: an ``httpx2.MockTransport`` answering a canned completion
  inside the process (no sockets): the numbers isolate the package's overhead
  on top of LangChain + the OpenAI SDK;
- ``http``: the OpenAI-compatible loopback HTTP stub server the unit tests
  use (``tests/_fixtures/stub_openai.py``), in a thread of this process.
"""

from __future__ import annotations

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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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


# -- timing -----------------------------------------------------------------------
@dataclass
class Samples:
    """Per-call wall and CPU times (ns) of one variant, plus totals."""

    wall: list[int]
    cpu: list[int]
    total_wall: int = 0
    total_cpu: int = 0

    def extend(self, other: Samples) -> None:
        self.wall += other.wall
        self.cpu += other.cpu
        self.total_wall += other.total_wall
        self.total_cpu += other.total_cpu

    @property
    def n(self) -> int:
        return len(self.wall)


def time_calls(fn: Callable[[int], Any], n: int) -> Samples:
    """Call ``fn(i)`` n times. Per call: wall (perf_counter_ns) and the CPU of
    the calling thread (thread_time_ns: the call path only; the store writer
    and the http stub run in other threads). Totals: wall, and process CPU
    (process_time_ns: every thread, background store writes included)."""
    wall: list[int] = []
    cpu: list[int] = []
    pc, tt, pt = time.perf_counter_ns, time.thread_time_ns, time.process_time_ns
    w_start, c_start = pc(), pt()
    for i in range(n):
        w0, c0 = pc(), tt()
        fn(i)
        c1, w1 = tt(), pc()
        wall.append(w1 - w0)
        cpu.append(c1 - c0)
    return Samples(wall, cpu, pc() - w_start, pt() - c_start)


async def atime_calls(fn: Callable[[int], Any], n: int) -> Samples:
    """`time_calls` for coroutines (the event loop's thread is the call path)."""
    wall: list[int] = []
    cpu: list[int] = []
    pc, tt, pt = time.perf_counter_ns, time.thread_time_ns, time.process_time_ns
    w_start, c_start = pc(), pt()
    for i in range(n):
        w0, c0 = pc(), tt()
        await fn(i)
        c1, w1 = tt(), pc()
        wall.append(w1 - w0)
        cpu.append(c1 - c0)
    return Samples(wall, cpu, pc() - w_start, pt() - c_start)


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
