"""What OpenTelemetry export adds per call: the locked model + handler, with
and without ``otel=`` (SeedLockSpanProcessor in front of an exporter that
discards), all under OpenTelemetry's openai-v2 instrumentation (the baseline
pays for its span too). Paired, interleaved timing as in overhead.py.
Reported, never asserted.

    .venv/bin/python bench/otel.py --calls 1000 --backend inproc
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from common import (
    Samples,
    Variant,
    arun_paired,
    backend,
    bare_model,
    configure_structlog,
    header,
    locked_model,
    model_variant,
    paired,
    paired_table,
    prompts,
    run_paired,
)
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from langchain_seedlock import SeedLockCallbackHandler, SeedLockOTel, SeedLockSpanProcessor

BASELINE = "bare ChatOpenAI (openai-v2)"
WITHOUT = "locked + handler"
WITH = "locked + handler + otel"


class Discard(SpanExporter):
    """Counts spans and drops them: the cost of exporting is not ours."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--backend", choices=["inproc", "http"], default="inproc")
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    args = parser.parse_args()
    configure_structlog()
    header("OpenTelemetry export overhead")
    discard = Discard()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SeedLockSpanProcessor(SimpleSpanProcessor(discard)))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    OpenAIInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    texts = prompts(100)
    with backend(args.backend) as b:
        plain = SeedLockCallbackHandler()
        exporting = SeedLockCallbackHandler(
            otel=SeedLockOTel(tracer_provider=tracer_provider, meter_provider=meter_provider)
        )
        variants: list[Variant] = [
            model_variant(BASELINE, bare_model(b), texts),
            model_variant(WITHOUT, locked_model(b), texts, callbacks=[plain]),
            model_variant(WITH, locked_model(b), texts, callbacks=[exporting]),
        ]
        if args.mode == "sync":
            samples: list[Samples] = run_paired(variants, args.calls, args.warmup)
        else:
            samples = asyncio.run(arun_paired(variants, args.calls, args.warmup))
    names = [v.name for v in variants]
    print(f"### {args.backend} stub, {args.mode}\n")
    print(paired_table(names, samples))
    by_name = dict(zip(names, samples, strict=True))
    added = paired(by_name[WITH], by_name[WITHOUT])
    print(
        f"\ninfo  otel export adds per call over {WITHOUT!r} (paired median): "
        f"call CPU {added.cpu_med:.1f} µs, trimmed mean {added.cpu_trimmed:.1f} µs; "
        f"spans exported: {discard.spans}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
