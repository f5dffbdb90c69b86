"""Structured events: one constant name per kind, data in key-value pairs.

The library never configures structlog; it logs through
``structlog.get_logger("langchain_seedlock")`` and lets the application decide
where lines go (see `configure_logging` for applications with no setup).
Key names follow the OpenTelemetry GenAI conventions where one exists.
"""

from __future__ import annotations

from typing import Any, Final

import structlog

LOGGER_NAME: Final = "langchain_seedlock"

# Event names: one per kind.
CALL: Final = "seedlock.call"
LOCK_VIOLATION: Final = "seedlock.lock_violation"
UNSEEDED_CALL: Final = "seedlock.unseeded_call"
PARAM_DROPPED: Final = "seedlock.param_dropped"
FINGERPRINT_CHANGED: Final = "seedlock.fingerprint_changed"
FINGERPRINT_MISSING: Final = "seedlock.fingerprint_missing"
OUTPUT_DRIFT: Final = "seedlock.output_drift"
CALL_FAILED: Final = "seedlock.call_failed"
STORE_ERROR: Final = "seedlock.store_error"
INTERNAL_ERROR: Final = "seedlock.internal_error"

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
K_REQUEST_HASH: Final = "seedlock.request_hash"
K_OUTPUT_HASH: Final = "seedlock.output_hash"
K_LOCK_HASH: Final = "seedlock.lock_hash"
K_BACKEND_ID: Final = "seedlock.backend_id"


def get_logger() -> Any:
    """The package's structlog logger (resolved lazily, so configuration made
    after import applies)."""
    return structlog.get_logger(LOGGER_NAME)
