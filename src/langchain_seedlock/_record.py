"""`CallRecord`: everything the package knows about one model call.

Built once per call by whichever door saw it (locked model, callback handler,
agent middleware) and handed to the drift monitor, the store and the events.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_seedlock._hashing import backend_id, canonical_json, param_value, sha256_hex

if TYPE_CHECKING:
    from langchain_seedlock._identity import BackendIdentity, Fields

# A fingerprint is a short build label ("fp_44709d6fcb", "b4273-0c1bd2b"); a
# longer one is kept recognisable but bounded, so a broken server cannot
# bloat every log line and stored row.
MAX_FINGERPRINT_CHARS = 128


def clean_fingerprint(value: Any) -> str | None:
    """The fingerprint as a short string, or None when the server sent none.

    Empty strings count as none (langchain-openai writes ``""`` when the key
    is absent); a non-string value is kept as its JSON text; an over-long one
    is cut and suffixed with a hash of the whole value so distinct values stay
    distinct.
    """
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else canonical_json(value)
    if len(text) <= MAX_FINGERPRINT_CHARS:
        return text
    return f"{text[:64]}...sha256:{sha256_hex(text)[:16]}"


# Providers whose responses always carry a finish reason when complete.
_FINISH_REASON_PROVIDERS = frozenset({"openai", "azure", "azure_openai", "azure-openai"})


def is_complete(provider: str, finish_reason: Any) -> bool:
    """Whether an output ended properly. OpenAI-compatible servers send a
    ``finish_reason`` on every complete choice (on the last chunk when
    streaming); without it the stream broke off. Other providers name it
    differently or not at all: their outputs count as complete."""
    return finish_reason is not None or provider not in _FINISH_REASON_PROVIDERS


def new_id() -> str:
    """A random 128-bit id as 32 hex digits (fork-safe: read from the OS each time)."""
    return os.urandom(16).hex()


# The sampling parameters a record keeps (CallRecord.params), by canonical name.
SAMPLING_PARAMS = ("temperature", "top_p", "max_tokens")


def sampling_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The `SAMPLING_PARAMS` set in ``params`` (any spelling), by canonical name."""
    out = {}
    for name in SAMPLING_PARAMS:
        value = param_value(params, name)
        if value is not None:
            out[name] = value
    return out


@dataclass(slots=True)  # not frozen: a frozen init costs 4x, on every call
class CallRecord:
    """One model call, after its response arrived. Read-only by convention: it
    is shared by the monitor, the events and the store writer thread."""

    provider: str
    """``openai``, ``azure_openai``, or the model's ``_llm_type``."""
    request_model: str | None
    """The model name that was asked for."""
    request_hash: str
    output_hash: str
    seed: int | None
    system_fingerprint: str | None = None
    response_model: str | None = None
    service_tier: str | None = None
    lock_hash: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    """Sampling parameters as sent (temperature, top_p, max_tokens...)."""
    input_tokens: int | None = None
    output_tokens: int | None = None
    run_id: str | None = None
    parent_run_id: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    """Pipeline position: langgraph_node, langgraph_step, thread_id, agent_step."""
    output_text: str | None = None
    """Generated text. Kept in memory to locate drift; stored/logged only with
    ``capture_content=True``."""
    output_token_list: tuple[str, ...] | None = None
    """Generated tokens when the response had logprobs (to locate drift by token)."""
    prompt_text: str | None = None
    """Prompt text; only filled with ``capture_content=True``."""
    request_payload: str | None = None
    """The request as JSON (`_payload`), for ``seedlock verify --recorded``;
    only filled with ``capture_content=True``, stored once per request hash."""
    complete: bool = True
    """False when the output was cut before its finish reason (a stream that
    broke off): such an output is never a baseline (see `is_complete`)."""
    base_url: str | None = None
    """Where the call was sent (None: the provider's default); never stored."""
    declared: Fields = ()
    """Backend settings the user declared (`_identity.check_declared`)."""
    in_flight: int | None = None
    """Calls to the same base URL in flight in this process when this one
    started, itself included (`_inflight`)."""
    identity: BackendIdentity | None = None
    """Set by the drift monitor before the record is shared (`_identity`)."""
    known: bool | None = None
    """Set by the drift monitor: for a repeat call of a seeded request,
    whether its output was already known (None: not a repeat call)."""
    at: float = field(default_factory=time.time)
    record_id: str | None = None
    """Set by `BackgroundWriter` on the copy it writes, one per submission: a
    store counts a record with an id once, even when a write whose outcome was
    unknown (connection lost after COMMIT) is retried."""
    otel: Any = None
    """The call's OpenTelemetry export (`_otel._Call`) when the door has it on:
    `DriftMonitor` hands it the verdict. Never stored."""

    @property
    def backend_id(self) -> str:
        """Hash of the backend identity (`_identity.BackendIdentity`); before the
        monitor set it, of the response fields: fingerprint, model, service tier."""
        if self.identity is not None:
            return self.identity.id
        return backend_id(self.system_fingerprint, self.response_model, self.service_tier)

    @property
    def model_key(self) -> str:
        """What fingerprints are tracked per: ``provider:model``."""
        return f"{self.provider}:{self.request_model or '?'}"
