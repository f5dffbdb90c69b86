"""The observation core: what every door (locked models, callback handler,
agent middleware) does with a call, written once.

- the record keys (message metadata, run metadata), one definition;
- `apply_lock`: a request's parameters with the lock applied, under one
  policy (`SeedLock.on_violation`), wherever a parameter reaches the wire
  (top level, ``extra_body``, ``model_kwargs``, ``options``, ``extra_query``);
- `record_from_result`: the `CallRecord` of a call, built in one function
  (the place to add a field every door records);
- `run_metadata` / `add_run_metadata`: what tracers (LangSmith) show.

The doors translate LangChain's shapes into these calls and hand the record
to `DriftMonitor.observe`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final
from uuid import UUID

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.messages import AIMessage, BaseMessage, get_buffer_string
from langchain_core.tracers.base import AsyncBaseTracer, BaseTracer

from langchain_seedlock import _events as ev
from langchain_seedlock._body import effective_params
from langchain_seedlock._enforce import (
    SPELLINGS,
    Violation,
    apply_policy,
    find_overrides,
    find_violations,
    locked_request,
    report_dropped,
)
from langchain_seedlock._errors import MalformedResponseError
from langchain_seedlock._hashing import (
    PARAM_ALIASES,
    output_hash,
    param_value,
    request_hash_from_messages,
)
from langchain_seedlock._identity import Fields
from langchain_seedlock._lock import SeedLock
from langchain_seedlock._payload import payload_json
from langchain_seedlock._record import CallRecord, clean_fingerprint, is_complete, sampling_params

# -- record keys ---------------------------------------------------------------------
# Keys a locked model adds to each AIMessage's response_metadata (and llm_output).
META_FINGERPRINT: Final = "system_fingerprint"
META_SEED: Final = "seed"
META_LOCK_HASH: Final = "seedlock_lock_hash"
META_REQUEST_HASH: Final = "seedlock_request_hash"
META_OUTPUT_HASH: Final = "seedlock_output_hash"
RECORD_KEYS: Final = (
    META_FINGERPRINT,
    META_SEED,
    META_LOCK_HASH,
    META_REQUEST_HASH,
    META_OUTPUT_HASH,
)
# A run's metadata (what tracers show) uses the event key names (`_events`),
# and ``system_fingerprint`` as LangChain's tracers spell it.


# -- parameter names -----------------------------------------------------------------
def canonical_param(name: str) -> str:
    """The canonical name of a parameter (``max_completion_tokens`` -> ``max_tokens``,
    ``random_seed`` -> ``seed``): the token-limit alias resolved in one place."""
    return PARAM_ALIASES.get(name, name)


def spellings(name: str) -> tuple[str, ...]:
    """Every name a request may carry the canonical parameter ``name`` under."""
    return SPELLINGS.get(name, (name,))


def field_for(fields: Mapping[str, Any], name: str) -> str | None:
    """The first spelling of ``name`` that is a key of ``fields`` (a model's fields)."""
    return next((key for key in spellings(name) if key in fields), None)


# -- the lock --------------------------------------------------------------------------
def apply_lock(
    params: Mapping[str, Any],
    lock: SeedLock,
    *,
    source: str,
    log_fields: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[Violation]]:
    """``params`` (call-time, bind-time or settings values) with the lock applied,
    and the values that differed from it.

    One policy for every door: a value that differs from the lock (``None``
    included: it asks to send a JSON ``null`` or to drop a default), wherever
    it sits, goes through ``lock.on_violation``: ``"raise"`` raises
    `LockViolationError` (nothing is sent), ``"warn"`` logs one
    ``seedlock.lock_violation`` per field, ``"ignore"`` is silent; then the
    locked value is what is sent, in every place and spelling it was given.
    Nothing absent is added.
    """
    violations = find_overrides(lock, params)
    if violations:
        apply_policy(lock, violations, source=source, log_fields=log_fields)
    return locked_request(lock, params), violations


def with_lock(
    params: Mapping[str, Any], lock: SeedLock, *, seed_key: str = "seed"
) -> dict[str, Any]:
    """``params`` carrying every locked parameter at the top level, under its
    canonical name (the seed under ``seed_key``: ``random_seed`` for a model
    with that field), any other spelling of it removed."""
    wire = lock.wire_params()
    if seed_key != "seed":
        wire[seed_key] = wire.pop("seed")
    locked = {canonical_param(k) for k in wire}
    out = {k: v for k, v in params.items() if canonical_param(k) not in locked}
    out.update(wire)
    return out


def check_observed(
    params: Mapping[str, Any], lock: SeedLock, *, enforce: bool, source: str
) -> list[Violation]:
    """What an observing door (the callback handler) does with a request it
    cannot change: with ``enforce``, a difference refuses the call
    (`LockViolationError`, whatever ``lock.on_violation`` says: refusing is
    all such a door can do), a missing seed first; else the differences
    (a missing seed included) to report as observed."""
    violations = find_violations(lock, params, require_all=True)
    if violations and enforce:
        ordered = sorted(violations, key=lambda v: v.field != "seed")  # seed first
        apply_policy(lock.replace(on_violation="raise"), ordered, source=source)
    return violations


def check_sent(
    payload: Mapping[str, Any], lock: SeedLock, *, model: str | None, log_fields: Mapping[str, Any]
) -> dict[str, Any]:
    """The final request body against the lock, then locked: a parameter the
    integration dropped is `report_dropped`, one it changed goes through the
    policy (constructor ``extra_body`` / ``model_kwargs``, a field changed
    after construction)."""
    final = find_violations(lock, payload, require_all=True)
    if final:
        missing = [v for v in final if v.kind == "missing"]
        report_dropped(lock, missing, model=model, log_fields=log_fields)
        overrides = [v for v in final if v.kind == "override"]
        apply_policy(lock, overrides, source="request payload", log_fields=log_fields)
    return locked_request(lock, payload)


def constructor_conflicts(
    lock: SeedLock, fields: Mapping[str, Any], nested: Mapping[str, Any]
) -> list[Violation]:
    """The locked parameters a model's constructor sets to another value, one
    per parameter: its fields (None or ``[]``: not set) and, apart from them,
    its mappings of more parameters (``model_kwargs``, ``extra_body``...),
    which the integration would send over the fields."""
    given = {k: v for k, v in fields.items() if v is not None and v != []}
    found: dict[str, Violation] = {}
    for v in (*find_violations(lock, given), *find_violations(lock, nested)):
        found.setdefault(v.field, v)
    return list(found.values())


# -- the record ------------------------------------------------------------------------
def record_from_result(
    *,
    provider: str,
    request_model: str | None,
    outputs: Sequence[BaseMessage],
    sent: Sequence[BaseMessage],
    params: Mapping[str, Any],
    lock: SeedLock | None = None,
    llm_output: Mapping[str, Any] | None = None,
    generation_info: Mapping[str, Any] | None = None,
    chunk_fingerprint: Any = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    context: Mapping[str, Any] | None = None,
    capture_content: bool = False,
    base_url: str | None = None,
    declared: Fields = (),
    in_flight: int | None = None,
    otel: Any = None,
) -> CallRecord:
    """The `CallRecord` of one call: the one place a record is built.

    ``outputs``: the generated messages (one per choice); ``sent``: the
    messages sent; ``params``: the request's other parameters as sent (model,
    tools, sampling parameters, seed; ``extra_body`` entries count), used
    for the seed, the sampling parameters and, when no locked model hashed
    the request, the request hash. What a locked model stamped on the
    message (`META_*` keys) is reused; the fingerprint is looked for in
    ``llm_output``, the streamed chunks, ``generation_info`` and the message,
    then bounded (`clean_fingerprint`). ``base_url``, ``declared`` and
    ``in_flight`` feed the backend identity (`_identity`, `_inflight`);
    ``otel``: the call's OpenTelemetry export, handed the verdict by the monitor.
    """
    if not outputs:
        raise MalformedResponseError("the model server answered with no choices")
    first = outputs[0]
    single = len(outputs) == 1
    meta = first.response_metadata or {}
    out = llm_output or {}
    info = generation_info or {}
    body = effective_params(params)
    fingerprint = clean_fingerprint(
        first_present(
            out.get(META_FINGERPRINT), chunk_fingerprint,
            info.get(META_FINGERPRINT), meta.get(META_FINGERPRINT),
        )
    )  # fmt: skip
    req_hash = first_str(meta.get(META_REQUEST_HASH), out.get(META_REQUEST_HASH))
    if req_hash is None:
        req_hash = request_hash_from_messages(provider, sent, body)
    out_hash = first_str(meta.get(META_OUTPUT_HASH) if single else out.get(META_OUTPUT_HASH))
    if out_hash is None:
        out_hash = output_hash(outputs)
    lock_hash = first_str(meta.get(META_LOCK_HASH), out.get(META_LOCK_HASH))
    if lock_hash is None and lock is not None:
        lock_hash = lock.lock_hash
    # The seed sent: a locked model's stamp, else the request's own.
    seed = meta[META_SEED] if META_SEED in meta else param_value(body, "seed")
    usage = first.usage_metadata if isinstance(first, AIMessage) else None
    return CallRecord(
        provider=provider,
        request_model=request_model,
        request_hash=req_hash,
        output_hash=out_hash,
        seed=seed if type(seed) is int else None,
        system_fingerprint=fingerprint,
        response_model=first_str(meta.get("model_name"), out.get("model_name")),
        service_tier=first_str(meta.get("service_tier"), out.get("service_tier")),
        lock_hash=lock_hash,
        params=sampling_params(body),
        input_tokens=usage.get("input_tokens") if usage else None,
        output_tokens=usage.get("output_tokens") if usage else None,
        run_id=run_id,
        parent_run_id=parent_run_id,
        context=context or {},
        output_text=first.text if single else "\n".join(m.text for m in outputs),
        output_token_list=_tokens(meta),
        prompt_text=get_buffer_string(sent) if capture_content else None,
        request_payload=payload_json(provider, request_model, sent, params)
        if capture_content
        else None,
        complete=is_complete(
            provider, first_present(info.get("finish_reason"), meta.get("finish_reason"))
        ),
        base_url=base_url,
        declared=declared,
        in_flight=in_flight,
        otel=otel,
    )


def stamp_messages(
    lock: SeedLock, messages: Sequence[BaseMessage], fingerprint: str | None, req_hash: str | None
) -> dict[str, Any]:
    """A locked model's record on each message (`META_*` keys); the call-level keys."""
    if not messages:
        raise MalformedResponseError(
            "the model server answered with no choices: there is no output to record "
            "(an OpenAI-compatible server must return at least one choice)"
        )
    hashes = [output_hash([message]) for message in messages]
    for message, message_hash in zip(messages, hashes, strict=True):
        message.response_metadata.update(
            stamp(lock, fingerprint=fingerprint, req_hash=req_hash, out_hash=message_hash)
        )
    # One message hashes as itself (see output_hash): not computed twice.
    out_hash = hashes[0] if len(messages) == 1 else output_hash(messages)
    return stamp(lock, fingerprint=fingerprint, req_hash=req_hash, out_hash=out_hash)


def stamp(
    lock: SeedLock, *, fingerprint: str | None, req_hash: str | None, out_hash: str
) -> dict[str, Any]:
    """The `META_*` keys of a locked call (the seed sent is the lock's: the
    locked model writes it over every place a seed is given)."""
    return {
        META_FINGERPRINT: fingerprint,
        META_SEED: lock.seed,
        META_LOCK_HASH: lock.lock_hash,
        META_REQUEST_HASH: req_hash,
        META_OUTPUT_HASH: out_hash,
    }


# -- run metadata (tracers) ------------------------------------------------------------
def run_metadata(record: CallRecord) -> dict[str, Any]:
    """The keys a call adds to its run's metadata (what LangSmith shows)."""
    fields = {
        META_FINGERPRINT: record.system_fingerprint,
        ev.K_SEED: record.seed,
        ev.K_REQUEST_HASH: record.request_hash,
        ev.K_OUTPUT_HASH: record.output_hash,
    }
    if record.lock_hash:
        fields[ev.K_LOCK_HASH] = record.lock_hash
    return fields


def run_metadata_of_stamp(stamped: Mapping[str, Any]) -> dict[str, Any]:
    """`run_metadata` of a locked model's stamp (`stamp`): the same keys."""
    return {
        META_FINGERPRINT: stamped[META_FINGERPRINT],
        ev.K_SEED: stamped[META_SEED],
        ev.K_REQUEST_HASH: stamped[META_REQUEST_HASH],
        ev.K_OUTPUT_HASH: stamped[META_OUTPUT_HASH],
        ev.K_LOCK_HASH: stamped[META_LOCK_HASH],
    }


def add_run_metadata(
    run_id: UUID,
    fields: Mapping[str, Any],
    *,
    metadata: dict[str, Any] | None = None,
    tracers: Sequence[Any] = (),
) -> None:
    """Add ``fields`` to the metadata of the tracers' `Run` for ``run_id``
    (before the tracers post it: handlers run in list order, and tracers
    enabled by environment variables come after the callbacks passed).

    Two paths reach that `Run`: ``metadata``, the dict LangChain gives to
    ``on_chat_model_start``, is the very dict a `BaseTracer` keeps as
    ``run.extra["metadata"]`` (the run collector, ``astream_events``, most
    custom tracers); `LangChainTracer` copies it when it posts the run start,
    so ``tracers`` (those of the enclosing runnable's callback manager,
    `tracers_of`, or a locked model's ``run_manager.handlers``) get
    ``run.add_metadata``. A chat model invoked alone, outside any runnable,
    has no enclosing manager: a locked model stamps its own run then.
    """
    if metadata is not None:
        metadata.update(fields)
    for tracer in tracers:
        run_map = getattr(tracer, "run_map", None)
        run = run_map.get(str(run_id)) if isinstance(run_map, Mapping) else None
        if run is None:
            continue
        current = run.extra.get("metadata") if isinstance(run.extra, dict) else None
        if current is not None and current is metadata:
            continue  # already updated through the shared dict
        if hasattr(run, "add_metadata"):
            run.add_metadata(dict(fields))
        else:  # pragma: no cover - every Run is a langsmith RunTree in langchain-core 1.x
            run.extra.setdefault("metadata", {}).update(fields)


def tracers_of(config: Any) -> list[Any]:
    """Tracers of an enclosing runnable's callback manager (``config`` is
    ``var_child_runnable_config`` at the run's start)."""
    if not config:
        return []
    callbacks = config.get("callbacks")
    if isinstance(callbacks, BaseCallbackManager):
        handlers: Sequence[Any] = callbacks.handlers
    elif isinstance(callbacks, list):
        handlers = callbacks
    else:
        return []
    return [h for h in handlers if isinstance(h, BaseTracer | AsyncBaseTracer)]


# -- small readers ---------------------------------------------------------------------
def first_present(*values: Any) -> Any:
    """The first value that is neither None nor ``""``."""
    for value in values:
        if value is not None and value != "":
            return value
    return None


def first_str(*values: Any) -> str | None:
    """The first non-empty string."""
    for value in values:
        if isinstance(value, str) and value:
            return value
    return None


def model_name(
    model: Any, attrs: Sequence[str] = ("model_name", "model", "model_id")
) -> str | None:
    """A chat model's model name, from the first of ``attrs`` it has as a string."""
    for attr in attrs:
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


def _tokens(meta: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Generated tokens from OpenAI logprobs in response_metadata, if any."""
    logprobs = meta.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if not isinstance(content, list):
        return None
    return tuple(str(t.get("token", "")) for t in content if isinstance(t, Mapping))
