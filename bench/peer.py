"""Placing ours: the same per-call overhead for established LangChain
instrumentation running in-process, in the same run, on the same stub.

- OpenInference's ``LangChainInstrumentor`` (OpenTelemetry spans for every
  run) with an in-memory exporter and a ``SimpleSpanProcessor``;
- LangSmith's ``LangChainTracer`` with a ``Client`` whose HTTP session
  records the requests instead of sending them (batching thread included);
- ours: ``SeedLockCallbackHandler`` with a SQLite store, on the bare model
  and on the locked model.

All variants are sync ``invoke`` (``--mode async`` for ``ainvoke``, awaited
one at a time). Method: paired, interleaved per call, as in
``overhead.py``: on a shared VM the CPU speed drifts (up to ~1.6x, in phases
lasting seconds), so every call index i calls every variant once, back to
back, in an order changing with i, and the "+" columns are statistics over
i of ``variant_i - bare_i`` (the wall ratio: median of ``variant_i /
bare_i``). "call CPU" is the calling thread's. Background work runs as in
an application (LangSmith's batching thread, our store writer: never
flushed per call) and is attributed by thread: the threads a variant starts
while it is built and during its first warm-up calls (made alone) are its
own; "bg CPU" is their CPU over the timed phase (up to an untimed flush
after it), per call, and "+total CPU" = "+call CPU med" + "bg CPU", what a
CPU-bound process pays. OpenInference's in-memory exporter is synchronous
(its spans are exported in the call path). OpenInference patches
every callback manager process-wide: it is instrumented around each of its
own calls only (untimed).

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
    Variant,
    arun_paired,
    backend,
    bare_model,
    configure_structlog,
    header,
    locked_model,
    model_variant,
    new_threads,
    paired_table,
    prompts,
    run_paired,
    thread_lines,
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


def openinference() -> Callable[[], contextlib.AbstractContextManager[None]] | None:
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
        # around its variant's calls (skip_dep_check: no package metadata scan).
        instrumentor.instrument(tracer_provider=provider, skip_dep_check=True)
        try:
            yield
        finally:
            instrumentor.uninstrument()
            exporter.clear()

    return instrumented


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per variant")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls per variant")
    parser.add_argument("--backend", choices=["inproc", "http"], default="inproc")
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    args = parser.parse_args()
    configure_structlog()
    header(f"Peer instrumentation, per-call overhead ({args.backend} stub, {args.mode})")
    texts = prompts(100)
    with tempfile.TemporaryDirectory() as tmp, backend(args.backend) as b:
        variants: list[Variant] = [model_variant("bare ChatOpenAI", bare_model(b), texts)]
        oi = openinference()
        if oi is not None:
            variants.append(model_variant("bare + OpenInference (in-memory OTel)", bare_model(b),
                                          texts, around=oi))  # fmt: skip
        with new_threads() as ls_threads:  # the client's tracing thread
            ls = langsmith_tracer()
        if ls is not None:
            tracer, client, _ = ls

            def drain() -> None:
                tracer.wait_for_futures()
                client.flush()

            variants.append(model_variant("bare + LangSmith tracer (recording client)",
                                          bare_model(b), texts, callbacks=[tracer],
                                          drain=drain, threads=ls_threads))  # fmt: skip
        handlers = []
        for name, model in (
            ("bare + SeedLock handler (SQLite)", bare_model(b)),
            ("locked + SeedLock handler (SQLite)", locked_model(b)),
        ):
            with new_threads() as started:  # the handler's store writer thread
                h = SeedLockCallbackHandler(
                    store=open_store(f"sqlite:///{Path(tmp) / name[:6]}.db")
                )
            handlers.append(h)
            variants.append(model_variant(name, model, texts, callbacks=[h], drain=h.flush,
                                          threads=started,
                                          dropped=lambda h=h: h.monitor.dropped))  # fmt: skip
        if args.mode == "sync":
            samples = run_paired(variants, args.calls, args.warmup)
        else:
            samples = asyncio.run(arun_paired(variants, args.calls, args.warmup))
        names = [v.name for v in variants]
        print(paired_table(names, samples))
        print("\n(+ columns and ratios: paired per call index against bare ChatOpenAI)")
        print(f"\nbackground threads charged:\n{thread_lines(names, samples)}")
        if ls is not None:
            print(f"\nLangSmith client: {ls[2].sent} batched requests recorded, "
                  f"{ls[2].bytes:,} bytes (not sent)")  # fmt: skip
        for h in handlers:
            h.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
