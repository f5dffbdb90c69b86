"""Placing ours: the same per-call overhead for established LangChain
instrumentation running in-process, in the same run, on the same stub.

- OpenInference's ``LangChainInstrumentor`` (OpenTelemetry spans for every
  run) with an in-memory exporter and a ``SimpleSpanProcessor``;
- LangSmith's ``LangChainTracer`` with a ``Client`` whose HTTP session
  records the requests instead of sending them (batching thread included);
- ours: ``SeedLockCallbackHandler`` with a SQLite store, on the bare model
  and on the locked model.

All variants are sync ``invoke`` (``--mode async`` for ``ainvoke``), run
interleaved in rounds. "call CPU" is the calling thread's; "process CPU"
adds every other thread (the tracers' batching threads, our store writer).

    .venv/bin/python bench/peer.py [--calls 1000] [--backend http] [--mode async]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from common import (
    Samples,
    atime_calls,
    backend,
    bare_model,
    configure_structlog,
    header,
    locked_model,
    median,
    percentile,
    prompts,
    settle,
    table,
    time_calls,
)

from langchain_seedlock import SeedLockCallbackHandler, open_store


class RecordingSession(requests.Session):
    """A requests session that answers 200 to everything and keeps a count."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.bytes = 0

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        self.sent += 1
        data = kwargs.get("data")
        if isinstance(data, bytes | str):
            self.bytes += len(data)
        response = requests.Response()
        response.status_code = 200
        response._content = b"{}"
        response.headers["content-type"] = "application/json"
        response.url = str(url)
        return response


class Variant:
    def __init__(
        self,
        name: str,
        model: Any,
        callbacks: list[Any] | None = None,
        around: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        after: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.config: dict[str, Any] = {"callbacks": callbacks} if callbacks else {}
        self.around = around or contextlib.nullcontext
        self.after = after or (lambda: None)
        self.samples = Samples([], [])


def openinference() -> tuple[Callable[[], contextlib.AbstractContextManager[Any]], Any] | None:
    try:
        from openinference.instrumentation.langchain import LangChainInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = LangChainInstrumentor()

    @contextlib.contextmanager
    def instrumented() -> Iterator[None]:
        # The instrumentor patches every callback manager process-wide: on only
        # while its variant runs.
        instrumentor.instrument(tracer_provider=provider)
        try:
            yield
        finally:
            instrumentor.uninstrument()
            exporter.clear()

    return instrumented, exporter


def langsmith_tracer() -> tuple[Any, Any, RecordingSession] | None:
    try:
        from langchain_core.tracers import LangChainTracer
        from langsmith import Client
    except ImportError:
        return None
    session = RecordingSession()
    client = Client(
        api_url="http://langsmith.invalid",
        api_key="lsv2-bench-not-a-key",
        session=session,
        auto_batch_tracing=True,
        info={"version": "0.0.0"},
    )
    tracer = LangChainTracer(client=client, project_name="seedlock-bench")
    return tracer, client, session


def run(variants: list[Variant], texts: list[str], calls: int, rounds: int, mode: str) -> None:
    def one(v: Variant, n: int) -> Samples:
        with v.around():
            if mode == "sync":
                s = time_calls(lambda i: v.model.invoke(texts[i % len(texts)], config=v.config), n)
            else:
                s = asyncio.run(
                    atime_calls(
                        lambda i: v.model.ainvoke(texts[i % len(texts)], config=v.config), n
                    )
                )
            v.after()
        return s

    for v in variants:
        one(v, 100)  # warm up
    block = max(1, calls // rounds)
    for r in range(rounds):
        for v in variants[r % len(variants) :] + variants[: r % len(variants)]:
            settle()
            v.samples.extend(one(v, block))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--backend", choices=["inproc", "http"], default="inproc")
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    args = parser.parse_args()
    configure_structlog()
    header(f"Peer instrumentation, per-call overhead ({args.backend} stub, {args.mode})")
    texts = prompts(100)
    with tempfile.TemporaryDirectory() as tmp, backend(args.backend) as b:
        variants = [Variant("bare ChatOpenAI", bare_model(b))]
        oi = openinference()
        if oi is not None:
            variants.append(Variant("bare + OpenInference (in-memory OTel)", bare_model(b),
                                    around=oi[0]))  # fmt: skip
        ls = langsmith_tracer()
        if ls is not None:
            tracer, client, _ = ls

            def drain() -> None:
                tracer.wait_for_futures()
                client.flush()

            variants.append(Variant("bare + LangSmith tracer (recording client)", bare_model(b),
                                    callbacks=[tracer], after=drain))  # fmt: skip
        handlers = []
        for name, model in (
            ("bare + SeedLock handler (SQLite)", bare_model(b)),
            ("locked + SeedLock handler (SQLite)", locked_model(b)),
        ):
            h = SeedLockCallbackHandler(store=open_store(f"sqlite:///{Path(tmp) / name[:6]}.db"))
            handlers.append(h)
            variants.append(Variant(name, model, callbacks=[h], after=h.flush))
        run(variants, texts, args.calls, args.rounds, args.mode)
        base = variants[0].samples
        b_wall, b_cpu, b_p99 = median(base.wall), median(base.cpu), percentile(base.wall, 99)
        rows = []
        for v in variants:
            s = v.samples
            rows.append([
                v.name, s.n, median(s.wall) / 1000, (median(s.wall) - b_wall) / 1000,
                (percentile(s.wall, 99) - b_p99) / 1000, (median(s.cpu) - b_cpu) / 1000,
                (s.total_cpu / s.n - base.total_cpu / base.n) / 1000, median(s.wall) / b_wall,
            ])  # fmt: skip
        print(
            table(
                ["variant", "calls", "wall med µs", "+wall med µs", "+wall p99 µs",
                 "+call CPU med µs", "+process CPU mean µs", "wall ratio (med)"],
                rows,
            )
        )  # fmt: skip
        if ls is not None:
            print(f"\nLangSmith client: {ls[2].sent} batched requests recorded, "
                  f"{ls[2].bytes:,} bytes (not sent)")  # fmt: skip
        for h in handlers:
            h.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
