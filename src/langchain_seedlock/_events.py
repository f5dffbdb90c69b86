"""Structured events: one constant name per kind, data in key-value pairs.

The library never configures structlog; it logs through
``structlog.get_logger("langchain_seedlock")`` and lets the application decide
where lines go (see `configure_logging` for applications with no setup).
Key names follow the OpenTelemetry GenAI conventions where one exists; ours
live under ``seedlock.*``. docs/events.md is the reference for every event.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final, TextIO

import structlog

from langchain_seedlock._args import check_bool, check_int, check_names
from langchain_seedlock._errors import InvalidArgumentError

LOGGER_NAME: Final = "langchain_seedlock"

# Event names: one per kind.
CALL: Final = "seedlock.call"
LOCK_VIOLATION: Final = "seedlock.lock_violation"
UNSEEDED_CALL: Final = "seedlock.unseeded_call"
PARAM_DROPPED: Final = "seedlock.param_dropped"
FINGERPRINT_CHANGED: Final = "seedlock.fingerprint_changed"
FINGERPRINT_MISSING: Final = "seedlock.fingerprint_missing"
BACKEND_CHANGED: Final = "seedlock.backend_changed"
BACKEND_INFO_UNAVAILABLE: Final = "seedlock.backend_info_unavailable"
OUTPUT_DRIFT: Final = "seedlock.output_drift"
OUTPUT_VARIANT: Final = "seedlock.output_variant"
INCOMPLETE_OUTPUT: Final = "seedlock.incomplete_output"
REPRODUCIBILITY_CHANGED: Final = "seedlock.reproducibility_changed"
CALL_FAILED: Final = "seedlock.call_failed"
STORE_ERROR: Final = "seedlock.store_error"
STORE_OVERFLOW: Final = "seedlock.store_overflow"
INTERNAL_ERROR: Final = "seedlock.internal_error"
LOCAL_SERVER_FALLBACK: Final = "seedlock.local_server_fallback"

# Events that are also written to the store (``seedlock.call`` is not: the
# store already counts every call in its output and fingerprint rows).
STORED_EVENTS: Final = frozenset(
    {
        FINGERPRINT_CHANGED,
        BACKEND_CHANGED,
        FINGERPRINT_MISSING,
        OUTPUT_DRIFT,
        UNSEEDED_CALL,
        LOCK_VIOLATION,
        INCOMPLETE_OUTPUT,
        REPRODUCIBILITY_CHANGED,
    }
)

# Key names (OpenTelemetry GenAI where one exists, ours under seedlock.*).
K_PROVIDER: Final = "gen_ai.provider.name"
K_REQUEST_MODEL: Final = "gen_ai.request.model"
K_RESPONSE_MODEL: Final = "gen_ai.response.model"
K_SEED: Final = "gen_ai.request.seed"
K_TEMPERATURE: Final = "gen_ai.request.temperature"
K_TOP_P: Final = "gen_ai.request.top_p"
K_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
K_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
K_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
K_FINGERPRINT: Final = "openai.response.system_fingerprint"
K_SERVICE_TIER: Final = "openai.response.service_tier"
K_ERROR_TYPE: Final = "error.type"
K_REQUEST_HASH: Final = "seedlock.request_hash"
K_OUTPUT_HASH: Final = "seedlock.output_hash"
K_LOCK_HASH: Final = "seedlock.lock_hash"
K_BACKEND_ID: Final = "seedlock.backend_id"
K_MODEL_KEY: Final = "seedlock.model_key"
K_CHANGED_FIELDS: Final = "seedlock.changed_fields"
K_BACKEND: Final = "seedlock.backend"
K_IN_FLIGHT: Final = "seedlock.in_flight"
K_SERVER_SLOTS: Final = "seedlock.server_slots"
# fingerprint_changed
K_PREVIOUS_FINGERPRINT: Final = "seedlock.previous_fingerprint"
K_PREVIOUS_FINGERPRINT_FIRST_SEEN: Final = "seedlock.previous_fingerprint_first_seen"
K_PREVIOUS_FINGERPRINT_LAST_SEEN: Final = "seedlock.previous_fingerprint_last_seen"
K_FINGERPRINT_FIRST_SEEN: Final = "seedlock.fingerprint_first_seen"
# output_drift / output_variant
K_SUMMARY: Final = "seedlock.summary"
K_VARIANT: Final = "seedlock.variant"
"""The call's class: ``first``, ``reproduced``, ``known``, ``new``, ``incomplete``."""
K_REQUEST_LABEL: Final = "seedlock.request_label"
K_EXPLAINED: Final = "seedlock.explained"
K_PREVIOUS_BACKEND_ID: Final = "seedlock.previous_backend_id"
K_PREVIOUS_OUTPUT_HASH: Final = "seedlock.previous_output_hash"
K_PREVIOUS_OUTPUT_COUNT: Final = "seedlock.previous_output_count"
K_PREVIOUS_OUTPUT_FIRST_SEEN: Final = "seedlock.previous_output_first_seen"
K_OUTPUT_COUNT: Final = "seedlock.output_count"
K_DISTINCT_OUTPUTS: Final = "seedlock.distinct_outputs"
K_DIFF_CHAR: Final = "seedlock.first_difference.char"
K_DIFF_TOKEN: Final = "seedlock.first_difference.token"  # noqa: S105 - a key name
K_SIMILARITY: Final = "seedlock.similarity"
K_SIMILARITY_ESTIMATE: Final = "seedlock.similarity_is_estimate"
"""True: ``seedlock.similarity`` is estimated from the outputs' stored sketches
(Jaccard of 3-word shingles), the texts being unknown to this process."""
K_DIVERGENCE_AT: Final = "seedlock.divergence_at"
"""``"[64, 128)"``: the characters where the first difference lies, from sketches."""
K_USUAL_OUTPUT_TOKENS: Final = "seedlock.usual_output_tokens"
# reproducibility_changed
K_REPRO_RATE: Final = "seedlock.reproducibility_rate"
K_REPRO_INTERVAL: Final = "seedlock.reproducibility_interval"
K_PREVIOUS_REPRO_RATE: Final = "seedlock.previous_reproducibility_rate"
K_REPORTED_AT: Final = "seedlock.reported_at"
"""On an info-level ``seedlock.reproducibility_changed``: when a process of
the fleet already reported (and stored) this change as the warning."""
K_PREVIOUS_REPRO_INTERVAL: Final = "seedlock.previous_reproducibility_interval"
K_REPEAT_CALLS: Final = "seedlock.repeat_calls"
# content (only with capture_content=True)
K_PROMPT_TEXT: Final = "seedlock.prompt_text"
K_OUTPUT_TEXT: Final = "seedlock.output_text"
K_PREVIOUS_OUTPUT_TEXT: Final = "seedlock.previous_output_text"
# store problems
K_STORE_URL: Final = "seedlock.store_url"
K_OPERATION: Final = "seedlock.operation"
K_SUPPRESSED: Final = "seedlock.suppressed"
K_DROPPED: Final = "seedlock.dropped"
# local_server_fallback (process.* from the OpenTelemetry process conventions)
K_SIGNAL: Final = "seedlock.signal"
K_FLAG_ADDED: Final = "seedlock.flag_added"
K_REASON: Final = "seedlock.reason"
K_EXIT_CODE: Final = "process.exit.code"
K_COMMAND_LINE: Final = "process.command_line"
# pipeline context (LangGraph / agents): plain names, as LangGraph spells them
CONTEXT_KEYS: Final = (
    "seedlock_label",  # the user's own name for the request (run metadata)
    "langgraph_node",
    "langgraph_step",
    "langgraph_checkpoint_ns",
    "checkpoint_ns",
    "thread_id",
    "agent_step",
)

# include_tags=True: the run's tags (a list) under this key.
K_TAGS: Final = "tags"
# Keys a user's metadata key may not take in events: structlog's own, ours
# (they would overwrite the call's model, seed, hashes...) and our namespaces.
_STRUCTLOG_KEYS: Final = frozenset(
    {"event", "level", "log_level", "logger", "logger_name", "timestamp", "exc_info", "stack_info"}
)
_RESERVED_PREFIXES: Final = ("seedlock.", "gen_ai.", "openai.", "error.", "process.")
_RESERVED_KEYS: Final = _STRUCTLOG_KEYS | {"run_id", "parent_run_id", "lc_source"}


def check_context_options(
    owner: str, metadata_keys: Any, include_tags: Any
) -> tuple[tuple[str, ...], bool]:
    """The checked ``metadata_keys`` / ``include_tags`` arguments of a door
    (`SeedLockCallbackHandler`, `SeedLockMiddleware`): see `call_context`."""
    keys = check_names(owner, "metadata_keys", metadata_keys)
    for key in keys:
        if key in _RESERVED_KEYS or key == K_TAGS or key.startswith(_RESERVED_PREFIXES):
            raise InvalidArgumentError(
                owner, "metadata_keys", metadata_keys,
                f"cannot hold {key!r}: events already use that name "
                f"(reserved: {', '.join(sorted(_RESERVED_KEYS | {K_TAGS}))} "
                f"and names starting with {', '.join(_RESERVED_PREFIXES)})",
            )  # fmt: skip
    return keys, check_bool(owner, "include_tags", include_tags)


def call_context(
    metadata: Mapping[str, Any] | None,
    tags: Sequence[str] | None = None,
    *,
    metadata_keys: tuple[str, ...] = (),
    include_tags: bool = False,
) -> dict[str, Any]:
    """The context a call's events carry (`CallRecord.context`), from its run
    metadata and tags: the one rule every door applies.

    Always the `CONTEXT_KEYS` present in ``metadata``; then only what the
    user allowed, since metadata may hold personal data: the
    ``metadata_keys`` present (values as given), and with ``include_tags``
    the tags as a list under ``tags`` (left out when there are none).
    """
    if not metadata:
        context: dict[str, Any] = {}
    else:
        context = {k: metadata[k] for k in CONTEXT_KEYS if k in metadata}
        for key in metadata_keys:
            if key in metadata:
                context[key] = metadata[key]
    if include_tags and tags:
        context[K_TAGS] = list(tags)
    return context


# Environment variable that makes internal errors raise (set it in tests).
RAISE_INTERNAL_ERRORS_ENV: Final = "SEEDLOCK_RAISE_INTERNAL_ERRORS"

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


LEVEL_NAMES: Final = tuple(_LEVELS)


def get_logger() -> Any:
    """The package's structlog logger (resolved per call, so configuration made
    after import applies).

    Unconfigured, structlog prints every level to stdout, which would mix the
    debug ``seedlock.call`` lines into a program's own output. So until the
    application configures structlog (or calls `configure_logging`), the
    package writes only warnings and above, to stderr.
    """
    if structlog.is_configured():
        # One lazy proxy, reused: it still resolves the configuration on each
        # use unless the application set ``cache_logger_on_first_use=True``,
        # which a new proxy per call would defeat (a logger built per call).
        return _PROXY
    stream = sys.stderr  # looked up per call: tests and programs swap it
    cached = _UNCONFIGURED[0]
    if cached is None or cached[0] is not stream:
        logger = structlog.wrap_logger(
            structlog.PrintLogger(file=stream),
            wrapper_class=_UNCONFIGURED_WRAPPER,
            logger_name=LOGGER_NAME,
        )
        cached = _UNCONFIGURED[0] = (stream, logger)
    return cached[1]


_PROXY = structlog.get_logger(LOGGER_NAME)
_UNCONFIGURED_WRAPPER = structlog.make_filtering_bound_logger(30)  # warning
_UNCONFIGURED: list[tuple[Any, Any] | None] = [None]  # (stream, logger) last built


def level_number(level: str | int) -> int:
    """``"info"`` -> 20; numbers pass through. Raises ValueError on an unknown name."""
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {sorted(_LEVELS)}") from None


def is_enabled(logger: Any, level: str | int) -> bool:
    """Whether ``logger`` would emit a line at ``level`` (True when it cannot tell).

    Lets callers skip building fields for a line the configuration discards
    (``make_filtering_bound_logger`` and the stdlib ``BoundLogger`` both tell).
    """
    number = level_number(level)
    try:
        check = logger.is_enabled_for
    except AttributeError:
        try:
            check = logger.isEnabledFor
        except AttributeError:
            return True
    try:
        return bool(check(number))
    except Exception:  # noqa: BLE001 - a logger that cannot answer logs everything
        return True


def raise_internal_errors() -> bool:
    """True when ``SEEDLOCK_RAISE_INTERNAL_ERRORS=1``: internal errors propagate
    instead of being logged as ``seedlock.internal_error`` (for tests)."""
    return os.environ.get(RAISE_INTERNAL_ERRORS_ENV, "").strip().lower() in ("1", "true", "yes")


def log_internal_error(where: str, exc: BaseException) -> None:
    """Log ``seedlock.internal_error`` for a bug caught in the instrumentation path,
    or re-raise it when `raise_internal_errors` is on."""
    if raise_internal_errors():
        raise exc
    with contextlib.suppress(Exception):  # logging must never break the caller
        get_logger().error(
            INTERNAL_ERROR,
            where=where,
            exc_info=exc,
            **{K_ERROR_TYPE: type(exc).__qualname__},
        )


def emit(where: str, level: str, event: str, /, **fields: Any) -> None:
    """Log one event on the package's logger, never raising into the caller.

    The one guard for every log line on a model call's path (the violation
    policy, dropped parameters, the drift monitor's events): a sink that
    fails (``OSError: No space left on device``, a processor that raises) is
    handled like any other instrumentation failure, by `log_internal_error`
    (which re-raises under ``SEEDLOCK_RAISE_INTERNAL_ERRORS=1``), and the
    call goes on. ``where`` names the caller in that ``seedlock.internal_error``.
    """
    emit_on(None, where, level, event, fields)


def emit_on(logger: Any, where: str, level: str, event: str, fields: Mapping[str, Any]) -> None:
    """`emit` on a logger already resolved (``None``: `get_logger`), for hot paths."""
    try:
        getattr(logger if logger is not None else get_logger(), level)(event, **fields)
    except Exception as exc:  # noqa: BLE001 - logging never breaks the caller
        log_internal_error(where, exc)


def configure_logging(
    *,
    json: bool = True,
    file: str | os.PathLike[str] | TextIO | None = None,
    level: str | int = "info",
    force: bool = False,
) -> bool:
    """Send structlog output as JSON lines (or readable lines) to stderr or a file.

    For applications that have no structlog configuration of their own. It
    does nothing, and returns False, when structlog was already configured
    (``structlog.is_configured()``) unless ``force=True``: an application
    that set up structlog keeps its processors, renderer and level. It
    configures structlog process-wide (every structlog logger, not only
    ours), which is what an application without a setup wants. The library
    never calls it on import; the ``seedlock`` CLI calls it for itself.

    Args:
        json: JSON lines (``True``) or structlog's console renderer.
        file: a path (opened for appending, line-buffered) or an open text
            stream; stderr when None.
        level: the lowest level written (``"debug"`` shows ``seedlock.call``).
        force: configure even if structlog is already configured.

    Returns:
        Whether structlog was configured by this call.
    """
    owner = "configure_logging"
    check_bool(owner, "json", json)
    check_bool(owner, "force", force)
    if isinstance(level, str):
        if level.lower() not in _LEVELS:
            raise InvalidArgumentError(
                owner, "level", level, f"is an unknown log level; use one of {list(_LEVELS)}"
            )
    else:
        check_int(owner, "level", level, minimum=0, maximum=logging.CRITICAL)
    is_path = isinstance(file, str | os.PathLike)
    if file is not None and not is_path and not callable(getattr(file, "write", None)):
        raise InvalidArgumentError(
            owner, "file", file, "must be a path, an open text stream or None"
        )
    if structlog.is_configured() and not force:
        return False
    stream: TextIO
    if file is None:
        stream = sys.stderr
    elif isinstance(file, str | os.PathLike):
        stream = open(file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the config
    else:
        stream = file
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json
        # Insertion order, not alphabetical: events put the summary and the
        # verdict first, so a person reads what happened before the hashes.
        else structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # No locals in tracebacks: they could hold prompts, outputs or keys.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
            if json
            else structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    return True
