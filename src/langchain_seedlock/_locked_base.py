"""What every locked model shares: the `lock` field and its serialization, the
record stamped on results and streams, and re-binding helpers to the lock."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import (
    RunnableBinding,
    RunnableParallel,
    RunnableSequence,
    RunnableWithFallbacks,
)
from langchain_core.runnables.passthrough import RunnableAssign
from pydantic import BaseModel, ConfigDict, Field, field_validator

from langchain_seedlock import _observe as core
from langchain_seedlock._errors import UnsupportedModelError
from langchain_seedlock._hashing import output_hash
from langchain_seedlock._lock import SeedLock
from langchain_seedlock._record import clean_fingerprint
from langchain_seedlock._redact import redact_url

# Private generation_info key: a fingerprint seen on a streamed chunk that
# langchain-openai would drop (it only keeps the one on the finish chunk).
RAW_FINGERPRINT = "seedlock_raw_fingerprint"


def lock_from(value: Any) -> SeedLock:
    if isinstance(value, SeedLock):
        return value
    if isinstance(value, Mapping):
        return SeedLock.from_dict(value)
    raise UnsupportedModelError(f"lock must be a SeedLock, got {type(value).__name__}")


@dataclass(slots=True)
class Call:
    """What one call learns on its way: the request hash, streamed fingerprints."""

    request_hash: str | None = None
    fingerprint: str | None = None
    fingerprint_in_chunks: bool = False


def stamp_result(
    lock: SeedLock,
    result: ChatResult,
    fingerprint: str | None,
    req_hash: str | None,
    run_manager: Any,
) -> ChatResult:
    """The record keys on each message, in ``llm_output`` and on the traced run."""
    call_meta = core.stamp_messages(
        lock, [g.message for g in result.generations], fingerprint, req_hash
    )
    result.llm_output = {**(result.llm_output or {}), **call_meta}
    if run_manager is not None and run_manager.handlers:  # something traces this run
        core.add_run_metadata(
            run_manager.run_id,
            core.run_metadata_of_stamp(call_meta),
            tracers=run_manager.handlers,
        )
    return result


def carry_record(combined: dict[str, Any], llm_outputs: list[dict[str, Any] | None]) -> None:
    """Keep a single call's record keys in the combined llm_output (one call: its
    record is the run's; several calls have no single record)."""
    if len(llm_outputs) == 1 and llm_outputs[0]:
        combined.update({k: v for k, v in llm_outputs[0].items() if k in core.RECORD_KEYS})


class StreamRecorder:
    """Follows a stream: the fingerprint wherever it was sent, and the chunks
    whose merge is hashed into the record carried by the last chunk."""

    def __init__(self, lock: SeedLock, request_hash: str | None = None) -> None:
        self.lock = lock
        self.call = Call(request_hash=request_hash)
        self._chunks: list[AIMessageChunk] = []

    def see(self, chunk: ChatGenerationChunk) -> ChatGenerationChunk:
        call = self.call
        info = chunk.generation_info or {}
        raw = clean_fingerprint(info.pop(RAW_FINGERPRINT, None))
        if raw and call.fingerprint is None:
            call.fingerprint = raw
        # langchain-openai copies it into the finish chunk's generation_info;
        # other integrations may put it straight into the message metadata.
        message = chunk.message
        sent = info.get(core.META_FINGERPRINT) or message.response_metadata.get(
            core.META_FINGERPRINT
        )
        if sent:
            call.fingerprint = clean_fingerprint(sent)
            call.fingerprint_in_chunks = True
        if isinstance(message, AIMessageChunk):
            self._chunks.append(message)
        return chunk

    def final(self) -> ChatGenerationChunk:
        """The empty last chunk of the stream, carrying the record keys.

        Streamed response_metadata is merged by concatenating strings, so a
        key already sent by an earlier chunk (the finish chunk's fingerprint)
        is not repeated here.
        """
        chunks, call = self._chunks, self.call
        merged = (
            add_ai_message_chunks(chunks[0], *chunks[1:]) if chunks else AIMessageChunk(content="")
        )
        meta = core.stamp(
            self.lock,
            fingerprint=call.fingerprint,
            req_hash=call.request_hash,
            out_hash=output_hash([merged]),
        )
        if call.fingerprint_in_chunks:
            del meta[core.META_FINGERPRINT]
        content: str | list[str | dict[str, Any]] = "" if isinstance(merged.content, str) else []
        return ChatGenerationChunk(
            message=AIMessageChunk(content=content, response_metadata=meta, chunk_position="last")
        )


def whole_as_chunk(message: BaseMessage) -> ChatGenerationChunk:
    """A whole answer as the one chunk of a stream (a model with no native streaming)."""
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content=message.content,
            response_metadata=message.response_metadata,
            tool_call_chunks=[
                {
                    "name": c["name"],
                    "args": json.dumps(c["args"]),
                    "id": c.get("id"),
                    "index": i,
                    "type": "tool_call_chunk",
                }
                for i, c in enumerate(getattr(message, "tool_calls", []) or [])
            ],
            chunk_position="last",
        )
    )


if TYPE_CHECKING:
    _LockBase = BaseChatModel
else:
    _LockBase = BaseModel


class LockHolder(_LockBase):
    """The `lock` field and its serialization, shared by every locked model."""

    # hide_input_in_errors: `model_validate({...})` runs `__init__` under
    # pydantic, which quotes its whole input (the API key included) in the
    # ValidationError of any ValueError raised there, ours (an invalid lock)
    # or the integration's. The message still names the field and the reason.
    model_config = ConfigDict(arbitrary_types_allowed=True, hide_input_in_errors=True)

    lock: SeedLock = Field(...)
    """The seed and sampling parameters every request is sent with."""

    def __init__(self, **kwargs: Any) -> None:
        # Keep the lock as a plain dict in lc_kwargs so dumpd/loads round-trip.
        if "lock" in kwargs:
            kwargs["lock"] = lock_from(kwargs["lock"]).to_dict()
        super().__init__(**kwargs)

    @field_validator("lock", mode="before")
    @classmethod
    def _coerce_lock(cls, value: Any) -> SeedLock:
        return lock_from(value)

    def to_json(self) -> Any:
        data: Any = super().to_json()
        # The lock as a plain dict (it is not a Serializable).
        if isinstance(data, dict) and isinstance(data.get("kwargs"), dict):
            data["kwargs"]["lock"] = self.lock.to_dict()
        return data

    def __repr_args__(self) -> Any:
        # A base URL may carry credentials (https://user:pw@host/v1): masked in
        # repr() and str(), as the API key is.
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if isinstance(value, str) and "://" in value else value

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """``["langchain_seedlock"]``: load with ``valid_namespaces=["langchain_seedlock"]``."""
        return ["langchain_seedlock"]

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True


def rebind(runnable: Any, inner: BaseChatModel, outer: BaseChatModel) -> Any:
    """Replace ``inner`` (bare or bound) by ``outer`` anywhere in ``runnable``.

    The inner model's ``bind_tools`` / ``with_structured_output`` return
    bindings of the inner model, which would bypass the lock.
    """
    if runnable is inner:
        return outer
    if isinstance(runnable, RunnableBinding):
        return runnable.__class__(
            bound=outer if runnable.bound is inner else rebind(runnable.bound, inner, outer),
            kwargs=runnable.kwargs,
            config=runnable.config,
            config_factories=runnable.config_factories,
            custom_input_type=runnable.custom_input_type,
            custom_output_type=runnable.custom_output_type,
        )
    if isinstance(runnable, RunnableSequence):
        steps = [rebind(step, inner, outer) for step in runnable.steps]
        return RunnableSequence(*steps, name=runnable.name)
    if isinstance(runnable, RunnableParallel):
        return RunnableParallel({k: rebind(v, inner, outer) for k, v in runnable.steps__.items()})
    if isinstance(runnable, RunnableAssign):
        return RunnableAssign(rebind(runnable.mapper, inner, outer))
    if isinstance(runnable, RunnableWithFallbacks):
        return runnable.__class__(
            runnable=rebind(runnable.runnable, inner, outer),
            fallbacks=[rebind(f, inner, outer) for f in runnable.fallbacks],
            exceptions_to_handle=runnable.exceptions_to_handle,
            exception_key=runnable.exception_key,
        )
    return runnable
