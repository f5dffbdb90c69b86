"""A real OTLP/HTTP receiver on 127.0.0.1 and the real OpenTelemetry pipeline
(SDK, OTLP/HTTP exporters, OpenTelemetry's openai-v2 instrumentation).

``otel`` is the pipeline: a `TracerProvider` whose spans go through
`SeedLockSpanProcessor` and a `BatchSpanProcessor` to the receiver, a
`MeterProvider` and a `LoggerProvider` exporting there too (made once per
session), and `OpenAIInstrumentor` instrumenting the OpenAI client with them
for the test. Each test gets it with the receiver emptied.
``Otel.collect()`` flushes both providers and returns what the receiver
decoded (protobuf, with ``opentelemetry-proto``). Skipped only when the
``otel`` extra (or the test extra's exporters) is missing: CI installs them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

try:
    from opentelemetry import _logs, metrics, trace
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from langchain_seedlock import SeedLockSpanProcessor
except ImportError as exc:  # the otel and test extras: CI installs them
    MISSING: str | None = f"the otel extra or the test extra is not installed ({exc.name})"
else:
    MISSING = None


def value(v: AnyValue) -> Any:
    """An OTLP attribute value as Python."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


@dataclass
class SpanOut:
    """One span as the receiver decoded it."""

    name: str
    scope: str
    span_id: bytes
    parent_span_id: bytes
    kind: int
    start: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    raw: bytes  # the span's protobuf bytes: to search for text that must not be there


@dataclass
class Receiver:
    """What arrived at the OTLP/HTTP endpoint."""

    url: str = ""
    spans: list[SpanOut] = field(default_factory=list)
    metrics: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    # Log-record events: (event name, span id, attributes).
    events: list[tuple[str, bytes, dict[str, Any]]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.spans.clear()
            self.metrics.clear()
            self.events.clear()
            self.paths.clear()

    def take_traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        out = []
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(
                        SpanOut(
                            s.name, ss.scope.name, s.span_id, s.parent_span_id, s.kind,
                            s.start_time_unix_nano,
                            {a.key: value(a.value) for a in s.attributes},
                            [(e.name, {a.key: value(a.value) for a in e.attributes})
                             for e in s.events],
                            s.SerializeToString(),
                        )
                    )  # fmt: skip
        with self.lock:
            self.spans.extend(out)

    def take_logs(self, body: bytes) -> None:
        request = ExportLogsServiceRequest.FromString(body)
        out = [
            (r.event_name, r.span_id, {a.key: value(a.value) for a in r.attributes})
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for r in sl.log_records
        ]
        with self.lock:
            self.events.extend(out)

    def take_metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        out = []
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    points = m.sum.data_points if m.HasField("sum") else m.gauge.data_points
                    for p in points:
                        number = p.as_double if p.HasField("as_double") else p.as_int
                        attrs = {a.key: value(a.value) for a in p.attributes}
                        out.append((m.name, attrs, number))
        with self.lock:
            self.metrics.extend(out)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.lock:
                receiver.paths.append(self.path)
            if self.path == "/v1/traces":
                receiver.take_traces(body)
                answer = ExportTraceServiceResponse().SerializeToString()
            elif self.path == "/v1/logs":
                receiver.take_logs(body)
                answer = ExportLogsServiceResponse().SerializeToString()
            elif self.path == "/v1/metrics":
                receiver.take_metrics(body)
                answer = ExportMetricsServiceResponse().SerializeToString()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Handler


@dataclass
class Otel:
    receiver: Receiver
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    processor: SeedLockSpanProcessor

    def collect(self) -> Receiver:
        """Export everything ended so far to the receiver, and return it."""
        self.tracer_provider.force_flush()
        self.meter_provider.force_flush()
        self.logger_provider.force_flush()
        return self.receiver

    def chat_spans(self, *, ours: bool = False) -> list[SpanOut]:
        """The exported ``chat ...`` spans in start order: the instrumentation's
        (default) or seedlock's own (``ours``)."""
        spans = [
            s for s in self.collect().spans
            if s.name.startswith("chat") and (s.scope == "langchain_seedlock") == ours
        ]  # fmt: skip
        return sorted(spans, key=lambda s: s.start)


@pytest.fixture(scope="session")
def _otel_session() -> Iterator[Otel]:
    if MISSING is not None:
        pytest.skip(MISSING)
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    receiver.url = f"http://{host!s}:{port}"
    resource = Resource.create({"service.name": "seedlock-tests"})
    processor = SeedLockSpanProcessor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces"))
    )
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(processor)
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{receiver.url}/v1/metrics"),
        export_interval_millis=3_600_000,  # exported on force_flush only
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{receiver.url}/v1/logs"))
    )  # Global too: for doors left at otel=None under SEEDLOCK_OTEL=1.
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _logs.set_logger_provider(logger_provider)
    yield Otel(receiver, tracer_provider, meter_provider, logger_provider, processor)
    tracer_provider.shutdown()
    meter_provider.shutdown()
    logger_provider.shutdown()
    server.shutdown()
    server.server_close()


@pytest.fixture
def otel(_otel_session: Otel) -> Iterator[Otel]:
    """The pipeline, with everything exported before this test dropped, and
    the OpenAI client instrumented for this test only (other tests' calls
    must not go through OpenTelemetry)."""
    _otel_session.collect()
    _otel_session.receiver.clear()
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(
        tracer_provider=_otel_session.tracer_provider,
        meter_provider=_otel_session.meter_provider,
        logger_provider=_otel_session.logger_provider,
    )
    yield _otel_session
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
