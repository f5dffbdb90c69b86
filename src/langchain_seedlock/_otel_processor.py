"""`SeedLockSpanProcessor`: hold an instrumentation's GenAI span until the
call's verdict is known, then export it with seedlock's attributes and event.

Why a processor that holds spans: OpenTelemetry's openai-v2 instrumentation
(and the other OpenAI instrumentations) end their span inside the OpenAI
client call, before LangChain reports the call's end; after ``end()`` a span
takes no attributes, and the SDK hands it to the exporting processor at once.
``_on_ending`` does not help either: it runs inside ``end()``, before the
output reaches LangChain (and in SDK 1.45 after the attributes were frozen).
So this processor sits in front of the user's exporting processor: spans
that are not a seedlock call's pass straight through; a claimed GenAI span
(see `_otel`) is kept until the call is decided, then an amended copy (a new
`ReadableSpan`: same ids, times and status, plus seedlock's attributes and
the ``gen_ai.evaluation.result`` event) goes on. A span whose verdict does
not come within ``max_hold`` seconds goes on as it was.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from langchain_seedlock import _events as ev
from langchain_seedlock import _otel
from langchain_seedlock._args import check_instance, check_number

_otel.require()  # `from langchain_seedlock import SeedLockSpanProcessor` names the extra
from opentelemetry.context import Context  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor  # noqa: E402

_REAP_INTERVAL = 0.5


class SeedLockSpanProcessor(SpanProcessor):
    """Wrap your exporting span processor so that the spans of OpenTelemetry's
    OpenAI instrumentations carry seedlock's record and verdict.

    Example:
        ```python
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from langchain_seedlock import SeedLockSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(
            SeedLockSpanProcessor(BatchSpanProcessor(OTLPSpanExporter()))
        )
        ```

    Args:
        processor: the processor spans go on to (a `BatchSpanProcessor`...).
        max_hold: seconds a span waits for its call's verdict at most.
    """

    def __init__(self, processor: SpanProcessor, *, max_hold: float = 30.0) -> None:
        owner = "SeedLockSpanProcessor"
        check_instance(owner, "processor", processor, SpanProcessor, "a SpanProcessor")
        check_number(owner, "max_hold", max_hold, minimum=0)
        self.processor = processor
        self.max_hold = float(max_hold)
        self._lock = threading.Condition()
        self._claimed: dict[int, _otel._Call] = {}  # span id -> its call, while open
        self._held: dict[int, tuple[ReadableSpan, float]] = {}  # span id -> (span, deadline)
        self._reaper: threading.Thread | None = None
        self._reaper_idle = False  # waiting without a timeout (nothing held)
        self._closed = False

    def __repr__(self) -> str:
        return f"SeedLockSpanProcessor({self.processor!r}, max_hold={self.max_hold})"

    # -- SpanProcessor -------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.processor.on_start(span, parent_context=parent_context)
        try:
            call = _otel.current_call()
            if call is not None and _is_genai(span.attributes) and call.claim(span):
                with self._lock:
                    self._claimed[span.context.span_id] = call
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("SeedLockSpanProcessor.on_start", exc)

    def _on_ending(self, span: Span) -> None:
        self.processor._on_ending(span)

    def on_end(self, span: ReadableSpan) -> None:
        span_id = span.context.span_id if span.context is not None else 0
        with self._lock:
            call = self._claimed.pop(span_id, None)
            if self._closed:
                call = None
            if call is not None:
                self._held[span_id] = (span, time.monotonic() + self.max_hold)
                self._start_reaper()
        if call is None:
            self.processor.on_end(span)
        elif not call.hold(self, span_id):  # decided already: amend it now
            self.release(span_id, call)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._release_all()
        self.processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Forward every held span (as it is, if its verdict has not come yet)
        and flush: flush the handler or middleware first to have the verdicts."""
        self._release_all()
        return self.processor.force_flush(timeout_millis)

    # -- holding -------------------------------------------------------------------
    def release(self, span_id: int, call: _otel._Call | None) -> None:
        """Forward a held span, amended by ``call`` (None: as it is)."""
        with self._lock:
            held = self._held.pop(span_id, None)
        if held is None:
            return  # released already (timed out, flushed)
        span = held[0]
        if call is not None:
            try:
                span = call.amend(span)
            except Exception as exc:  # noqa: BLE001 - the span still goes on, unamended
                ev.log_internal_error("SeedLockSpanProcessor.release", exc)
        self.processor.on_end(span)

    def _release_all(self) -> None:
        with self._lock:
            ids = list(self._held)
        for span_id in ids:
            self.release(span_id, None)

    def _start_reaper(self) -> None:  # caller holds the lock
        if self._reaper_idle:  # asleep since nothing was held: it has a span to watch
            self._lock.notify_all()
        if self._reaper is None:
            self._reaper = threading.Thread(
                target=self._reap, name="seedlock-otel-hold", daemon=True
            )
            self._reaper.start()

    def _reap(self) -> None:
        """Forward, as they are, the spans whose verdict did not come in time."""
        while True:
            with self._lock:
                if self._closed:
                    return
                # Asleep while nothing is held; else checks twice a second.
                self._reaper_idle = not self._held
                self._lock.wait(None if self._reaper_idle else _REAP_INTERVAL)
                self._reaper_idle = False
                now = time.monotonic()
                late = [sid for sid, (_, deadline) in self._held.items() if deadline <= now]
            for span_id in late:
                self.release(span_id, None)


def _is_genai(attributes: Any) -> bool:
    """A model call's span, by what it says at its start."""
    if not attributes:
        return False
    return (
        attributes.get(_otel.K_OPERATION) in _otel.GENAI_OPERATIONS
        or attributes.get("openinference.span.kind") == "LLM"
        or attributes.get("llm.request.type") in ("chat", "completion")
    )
