"""OpenTelemetry export (the ``otel`` extra): each call's record and verdict
on its span, drift verdicts as ``gen_ai.evaluation.result`` events, metrics.

The doors (`SeedLockCallbackHandler`, `SeedLockMiddleware`) resolve their
``otel=`` option with `door_options` and `door_exporter`, open a `_Call` with `_Exporter.start`
when a model call starts and put it in the `CallRecord` (``record.otel``);
`DriftMonitor` calls ``record.otel.decided(...)`` once the call is decided
(possibly later, on its reader thread). Everything else is here.

Which span gets the attributes and the event, first match wins:

1. The GenAI spans an instrumentation started during the call (openai-v2,
   OpenInference, OpenLLMetry), claimed by `SeedLockSpanProcessor`. They end
   inside the OpenAI client call, before LangChain reports the call's end, so
   the processor holds them and forwards an amended copy once the verdict is
   known (see `_otel_processor`). How a span is tied to its call: `start`
   puts the call in a context variable, in the very context the model call
   runs in (a callback handler's ``on_chat_model_start`` runs inline, before
   the request is sent); the processor's ``on_start`` reads it.
2. The span that was current and recording when the call started (the
   user's own, or a LangChain-level span).
3. With ``SeedLockOTel(create_spans=True)``: one ``chat {model}`` CLIENT span
   of ours, following the GenAI conventions, from the call's start to its end.

Nothing here imports OpenTelemetry until export is turned on: ``import
langchain_seedlock`` stays light, and a missing extra is a clear error.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from langchain_seedlock import _events as ev
from langchain_seedlock._args import check_bool
from langchain_seedlock._errors import InvalidArgumentError, OTelNotInstalledError

if TYPE_CHECKING:
    from langchain_seedlock._decide import Decision
    from langchain_seedlock._record import CallRecord

ENV: Final = "SEEDLOCK_OTEL"
"""``SEEDLOCK_OTEL=1`` turns export on for every door left at ``otel=None``."""
SCOPE: Final = "langchain_seedlock"
EVALUATION_EVENT: Final = "gen_ai.evaluation.result"
EVALUATION_NAME: Final = "seedlock.reproducibility"
K_EVALUATION_NAME: Final = "gen_ai.evaluation.name"
K_SCORE_VALUE: Final = "gen_ai.evaluation.score.value"
K_SCORE_LABEL: Final = "gen_ai.evaluation.score.label"
K_EXPLANATION: Final = "gen_ai.evaluation.explanation"
K_OPERATION: Final = "gen_ai.operation.name"
K_OUTCOME: Final = "seedlock.outcome"
METRIC_CALLS: Final = "seedlock.calls"
METRIC_RATE: Final = "seedlock.reproducibility_rate"
# The verdicts that are an evaluation of the output, and their score: 1 the
# usual output, 0.5 an output seen before, 0 an output never seen under this
# backend (explained or not: the label says which).
SCORES: Final = {
    "reproduced": 1.0,
    "known_variant": 0.5,
    "new_variant": 0.0,
    "explained": 0.0,
}
# A span is a model call's when it says so at its start: the GenAI
# conventions (openai-v2, OpenLLMetry), or OpenInference's span kind.
GENAI_OPERATIONS: Final = frozenset({"chat", "text_completion", "generate_content"})

_ON: Final = ("1", "true", "yes", "on")
_OFF: Final = ("", "0", "false", "no", "off")
_CURRENT: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "seedlock_otel_call", default=None
)


def require() -> None:
    """Raise `OTelNotInstalledError` unless the ``otel`` extra is importable."""
    try:
        import opentelemetry.metrics
        import opentelemetry.sdk.trace
        import opentelemetry.trace  # noqa: F401
    except ImportError as exc:
        raise OTelNotInstalledError(f"cannot import {exc.name or 'opentelemetry'}") from exc


@dataclass(frozen=True, slots=True)
class SeedLockOTel:
    """Where and how a door exports to OpenTelemetry (``otel=SeedLockOTel(...)``;
    ``otel=True`` is ``SeedLockOTel()``).

    Args:
        tracer_provider: the provider spans are made with (default: the global one).
        meter_provider: the provider metrics are made with (default: the global one).
        logger_provider: the provider the verdict is also emitted with as a
            log-record event, the conventions' form of an event (default: the
            global one; nothing is emitted while none is set).
        create_spans: when no instrumentation span and no recording span
            is there to carry a call's record, make one ``chat {model}`` span
            per call (GenAI conventions).

    Raises:
        OTelNotInstalledError: the ``otel`` extra is not installed.
    """

    tracer_provider: Any = None
    meter_provider: Any = None
    logger_provider: Any = None
    create_spans: bool = False

    def __post_init__(self) -> None:
        check_bool("SeedLockOTel", "create_spans", self.create_spans)
        require()


def door_options(owner: str, otel: Any) -> SeedLockOTel | None:
    """A door's checked ``otel=`` argument (None: export is off); ``None``
    defers to `ENV`. Raises `OTelNotInstalledError` when on without the extra."""
    if otel is None:
        raw = os.environ.get(ENV, "").strip().lower()
        if raw in _OFF:
            return None
        if raw not in _ON:
            raise InvalidArgumentError(
                owner, "otel", raw,
                f"is None, so the environment variable {ENV} decides, and it must be "
                f"one of {', '.join(repr(v) for v in _ON + _OFF[1:])}",
            )  # fmt: skip
        otel = True
    if otel is False:
        return None
    if otel is True:
        return SeedLockOTel()
    if not isinstance(otel, SeedLockOTel):
        raise InvalidArgumentError(
            owner, "otel", otel, "must be True, False, None or a SeedLockOTel"
        )
    return otel


def door_exporter(options: SeedLockOTel | None, capture_content: bool) -> _Exporter | None:
    """The exporter of a door whose `door_options` are ``options``."""
    return None if options is None else _Exporter(options, capture_content)


class _Meters:
    """The instruments of one meter provider, shared by every exporter using it
    (an instrument is created once per name)."""

    def __init__(self, meter_provider: Any) -> None:
        from opentelemetry import metrics

        from langchain_seedlock import __version__

        meter = metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
        self.calls = meter.create_counter(
            METRIC_CALLS,
            unit="{call}",
            description="Observed model calls by outcome: reproduced, known_variant, "
            "new_variant, explained, first, incomplete, unseeded",
        )
        self._lock = threading.Lock()
        self._rates: dict[tuple[Any, ...], tuple[int, int]] = {}
        meter.create_observable_gauge(
            METRIC_RATE,
            callbacks=[self._observe_rates],
            unit="1",
            description="Share of repeat calls whose output was already known, per model "
            "and backend identity (this process's calls)",
        )

    def set_rate(self, key: tuple[tuple[str, Any], ...], known: int, repeats: int) -> None:
        with self._lock:
            self._rates[key] = (known, repeats)

    def _observe_rates(self, _options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        with self._lock:
            rates = list(self._rates.items())
        return [Observation(known / repeats, dict(key)) for key, (known, repeats) in rates]


_METERS: dict[int, tuple[Any, _Meters]] = {}  # id(provider) -> (provider, meters)
_METERS_LOCK = threading.Lock()


def _meters_for(meter_provider: Any) -> _Meters:
    with _METERS_LOCK:
        hit = _METERS.get(id(meter_provider))
        if hit is None or hit[0] is not meter_provider:
            hit = _METERS[id(meter_provider)] = (meter_provider, _Meters(meter_provider))
        return hit[1]


class _Exporter:
    """One door's export: starts `_Call`s, and turns a decided call into span
    attributes, an evaluation event and metrics."""

    def __init__(self, options: SeedLockOTel, capture_content: bool) -> None:
        from opentelemetry import _logs, trace

        from langchain_seedlock import __version__

        self.options = options
        self.logger = _logs.get_logger(SCOPE, __version__, logger_provider=options.logger_provider)
        self.capture_content = capture_content
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=options.tracer_provider)
        self.meters = _meters_for(options.meter_provider)

    def __repr__(self) -> str:
        return f"_Exporter({self.options!r})"

    def start(self, *, claim: bool = True) -> _Call | None:
        """A call starts, in the context the model call will run in. ``claim``:
        let `SeedLockSpanProcessor` tie the GenAI spans started in this context
        to it (False when one callback start stands for several calls:
        ``generate()`` with several prompts starts them all first). Never
        raises: None when it failed (logged as ``seedlock.internal_error``)."""
        try:
            from opentelemetry import context, trace

            call = _Call(self, time.time_ns(), context.get_current(), trace.get_current_span())
            _CURRENT.set(call if claim else None)
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            ev.log_internal_error("otel.start", exc)
            return None
        return call

    # -- a decided call --------------------------------------------------------------
    def attributes(self, record: CallRecord, decision: Decision | None) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            ev.K_REQUEST_MODEL: record.request_model,
            ev.K_SEED: record.seed,
            ev.K_FINGERPRINT: record.system_fingerprint,
            ev.K_REQUEST_HASH: record.request_hash,
            ev.K_OUTPUT_HASH: record.output_hash,
            ev.K_BACKEND_ID: record.backend_id,
            ev.K_LOCK_HASH: record.lock_hash,
        }
        if decision is not None:
            from langchain_seedlock._drift_events import VARIANT_LABELS

            attrs[ev.K_VARIANT] = VARIANT_LABELS[decision.verdict]
        if self.capture_content:
            attrs[ev.K_PROMPT_TEXT] = record.prompt_text
            attrs[ev.K_OUTPUT_TEXT] = record.output_text
        return {k: v for k, v in attrs.items() if v is not None}

    def evaluation(
        self, record: CallRecord, decision: Decision | None, explanation: str | None
    ) -> dict[str, Any] | None:
        """The ``gen_ai.evaluation.result`` event's attributes (None: no verdict
        to report: an unseeded, first or incomplete call)."""
        label = None if decision is None else str(decision.verdict)
        if decision is None or label not in SCORES:
            return None
        if explanation is None:  # reproduced: no drift event was built
            explanation = (
                f"same answer as the request's usual one (seen {decision.usual_count}x) "
                f"under fingerprint {record.system_fingerprint}"
            )
        return {
            K_EVALUATION_NAME: EVALUATION_NAME,
            K_SCORE_VALUE: SCORES[label],
            K_SCORE_LABEL: label,
            K_EXPLANATION: explanation,
        }

    def span_attributes(self, record: CallRecord) -> dict[str, Any]:
        """A span of ours: the GenAI conventions' request and response attributes."""
        attrs: dict[str, Any] = {
            K_OPERATION: "chat",
            ev.K_PROVIDER: record.provider,
            ev.K_RESPONSE_MODEL: record.response_model,
            ev.K_SERVICE_TIER: record.service_tier,
            ev.K_INPUT_TOKENS: record.input_tokens,
            ev.K_OUTPUT_TOKENS: record.output_tokens,
        }
        for name, key in (
            ("temperature", ev.K_TEMPERATURE),
            ("top_p", ev.K_TOP_P),
            ("max_tokens", ev.K_MAX_TOKENS),
        ):
            attrs[key] = record.params.get(name)
        return {k: v for k, v in attrs.items() if v is not None}

    def count(self, record: CallRecord, decision: Decision | None, rate: tuple[int, int]) -> None:
        key = (
            (ev.K_PROVIDER, record.provider),
            (ev.K_REQUEST_MODEL, record.request_model or "?"),
            (ev.K_BACKEND_ID, record.backend_id),
            (ev.K_FINGERPRINT, record.system_fingerprint or ""),
        )
        outcome = "unseeded" if decision is None else str(decision.verdict)
        self.meters.calls.add(1, {**dict(key), K_OUTCOME: outcome})
        known, repeats = rate
        if decision is not None and repeats:
            self.meters.set_rate(key, known, repeats)


@dataclass(eq=False, slots=True)
class _Call:
    """One model call on its way to OpenTelemetry (``CallRecord.otel``)."""

    exporter: _Exporter
    start_ns: int
    context: Any  # the OpenTelemetry context at the start: our span's parent
    span_at_start: Any  # the span current at the start (maybe not recording)
    lock: threading.Lock = field(default_factory=threading.Lock)
    claimed: list[Any] = field(default_factory=list)  # GenAI spans started in the call
    held: list[tuple[Any, int]] = field(default_factory=list)  # (processor, span id)
    done: bool = False
    attrs: Mapping[str, Any] = field(default_factory=dict)
    event: Mapping[str, Any] | None = None
    event_ns: int = 0

    # -- from SeedLockSpanProcessor -----------------------------------------------------
    def claim(self, span: Any) -> bool:
        """Tie a GenAI span started in this call's context to it (while undecided)."""
        with self.lock:
            if self.done:
                return False
            self.claimed.append(span)
            return True

    def hold(self, processor: Any, span_id: int) -> bool:
        """A claimed span ended: keep it at ``processor`` until the verdict
        (False: the call is decided already, forward it amended now)."""
        with self.lock:
            if self.done:
                return False
            self.held.append((processor, span_id))
            return True

    def amend(self, span: Any) -> Any:
        """An ended span with this call's attributes and event (a new `ReadableSpan`)."""
        from opentelemetry.sdk.trace import Event, ReadableSpan

        events = list(span.events)
        if self.event is not None:
            events.append(Event(EVALUATION_EVENT, dict(self.event), self.event_ns))
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes={**(span.attributes or {}), **self.attrs},
            events=events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    # -- from the doors and DriftMonitor --------------------------------------------------
    def decided(
        self,
        record: CallRecord,
        decision: Decision | None,
        rate: tuple[int, int],
        explanation: str | None,
    ) -> None:
        """The call's verdict is known: write it where it belongs. Never raises
        (but see ``SEEDLOCK_RAISE_INTERNAL_ERRORS``)."""
        try:
            self._decided(record, decision, rate, explanation)
        except Exception as exc:  # noqa: BLE001 - instrumentation never breaks the call
            self.abandon()
            ev.log_internal_error("otel.decided", exc)

    def _decided(
        self,
        record: CallRecord,
        decision: Decision | None,
        rate: tuple[int, int],
        explanation: str | None,
    ) -> None:
        exporter = self.exporter
        attrs = exporter.attributes(record, decision)
        event = exporter.evaluation(record, decision, explanation)
        now = time.time_ns()
        with self.lock:
            self.attrs, self.event, self.event_ns = attrs, event, now
            self.done = True
            held, self.held = self.held, []
            live = [s for s in self.claimed if s.is_recording()]
        held_ids = {sid for _, sid in held}
        for processor, span_id in held:
            processor.release(span_id, self)
        evaluated = None  # the span the verdict is about
        if self.claimed:
            evaluated = self.claimed[0]
            for span in live:  # a claimed span still open (unusual): write it directly
                if span.get_span_context().span_id not in held_ids:
                    self._write(span, attrs, event, now)
        elif self.span_at_start.is_recording():
            evaluated = self.span_at_start
            self._write(evaluated, attrs, event, now)
        elif exporter.options.create_spans:
            evaluated = self._own_span(record, attrs, event, now)
        if event is not None:
            self._emit_log(event, evaluated, now)
        exporter.count(record, decision, rate)

    def _emit_log(self, event: Mapping[str, Any], evaluated: Any, now: int) -> None:
        """The verdict as a log-record event, parented to the evaluated span
        (as the conventions ask), or to the call's context when there is none."""
        from opentelemetry import trace

        context = self.context
        if evaluated is not None:
            span = trace.NonRecordingSpan(evaluated.get_span_context())
            context = trace.set_span_in_context(span, context)
        self.exporter.logger.emit(
            timestamp=now, context=context, event_name=EVALUATION_EVENT, attributes=dict(event)
        )

    def abandon(self) -> None:
        """The call failed or gave nothing to record: forward its held spans as
        they are (the context variable keeps no claim on later spans)."""
        with self.lock:
            self.done = True
            held, self.held = self.held, []
        for processor, span_id in held:
            processor.release(span_id, None)

    @staticmethod
    def _write(
        span: Any, attrs: Mapping[str, Any], event: Mapping[str, Any] | None, now: int
    ) -> None:
        span.set_attributes(dict(attrs))
        if event is not None:
            span.add_event(EVALUATION_EVENT, dict(event), timestamp=now)

    def _own_span(
        self,
        record: CallRecord,
        attrs: Mapping[str, Any],
        event: Mapping[str, Any] | None,
        now: int,
    ) -> Any:
        from opentelemetry.trace import SpanKind

        exporter = self.exporter
        span = exporter.tracer.start_span(
            f"chat {record.request_model}" if record.request_model else "chat",
            context=self.context,
            kind=SpanKind.CLIENT,
            attributes={**exporter.span_attributes(record), **attrs},
            start_time=self.start_ns,
        )
        if event is not None:
            span.add_event(EVALUATION_EVENT, dict(event), timestamp=now)
        # It ends where the call ended (the verdict may come later, from the store).
        span.end(end_time=max(self.start_ns, int(record.at * 1e9)))
        return span


def current_call() -> _Call | None:
    """The call started in this context, if it still takes spans (for the processor)."""
    return _CURRENT.get()
