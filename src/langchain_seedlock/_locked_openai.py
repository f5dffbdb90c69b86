"""The lock for langchain-openai models (`LockedChatOpenAI`, `LockedAzureChatOpenAI`).

The lock is applied on the final request payload (``_get_request_payload``,
the one place every Chat Completions request of langchain-openai is built),
so it holds through invoke, stream, batch, async, ``bind``, ``bind_tools``
and ``with_structured_output``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import model_validator

from langchain_seedlock import _observe as core
from langchain_seedlock._errors import LockViolationError, UnsupportedModelError
from langchain_seedlock._hashing import request_hash
from langchain_seedlock._locked_base import (
    RAW_FINGERPRINT,
    Call,
    LockHolder,
    StreamRecorder,
    carry_record,
    lock_from,
    stamp_result,
)
from langchain_seedlock._providers import check_model
from langchain_seedlock._record import clean_fingerprint

# Private kwarg carrying per-call state from `_generate`/`_stream` to
# `_get_request_payload` through langchain-openai's own kwargs plumbing:
# no contextvars, so it is safe across threads, tasks and generators.
_CALL_KWARG = "seedlock_call"

if TYPE_CHECKING:
    _OpenAIBase = BaseChatOpenAI
else:
    _OpenAIBase = object


class LockedOpenAIMixin(LockHolder, _OpenAIBase):
    """The lock for langchain-openai models; see `LockedChatOpenAI`."""

    # A class variable, not a pydantic private attribute: read on every call,
    # and private attributes go through pydantic's slower ``__getattr__``.
    _seedlock_provider: ClassVar[str] = "openai"

    @model_validator(mode="before")
    @classmethod
    def _merge_lock(cls, values: Any) -> Any:
        """Constructor values against the lock (a conflict raises: it is in the
        code, not in a call), then the locked values set on the fields."""
        if not isinstance(values, dict) or "lock" not in values:
            return values
        lock = lock_from(values["lock"])
        if values.get("use_responses_api"):
            raise UnsupportedModelError(
                "use_responses_api=True cannot be locked: OpenAI's Responses API takes "
                "no seed and returns no system_fingerprint. Use the Chat Completions API "
                "(the default) with a SeedLock."
            )
        model_kwargs = dict(values.get("model_kwargs") or {})
        canonical = lock.canonical()
        fields = {k: values[k] for name in canonical for k in core.spellings(name) if k in values}
        # What model_kwargs and extra_body would send (as `_default_params` and the
        # openai SDK merge them), checked apart from the fields they would override.
        nested = {"extra_body": values.get("extra_body"), "model_kwargs": model_kwargs}
        for v in core.constructor_conflicts(lock, fields, nested):
            raise LockViolationError(v.field, v.locked, v.attempted, "constructor argument")
        for name, locked in canonical.items():
            if name == "response_format":  # no field: sent from model_kwargs
                model_kwargs[name] = locked
                continue
            for key in core.spellings(name):  # equal: the field below carries it (once)
                model_kwargs.pop(key, None)
                values.pop(key, None)
            values[name] = locked
        if model_kwargs or "model_kwargs" in values:
            values["model_kwargs"] = model_kwargs
        return values

    @model_validator(mode="after")
    def _refuse_responses_api(self) -> Any:
        if self._use_responses_api({}):
            raise UnsupportedModelError(
                f"model {self.model_name!r} is served through OpenAI's Responses API, "
                "which takes no seed and returns no system_fingerprint: it cannot be locked."
            )
        check_model(self, self.lock.seed)  # a seed its server reads as "random"
        return self

    # -- the choke point: every Chat Completions request is built here --------
    def _get_request_payload(
        self, input_: LanguageModelInput, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        call: Call | None = kwargs.pop(_CALL_KWARG, None)
        lock = self.lock
        # 1. Call-time and bind-time values, wherever given (as arguments, or
        # inside extra_body / extra_query): the lock's policy, then the lock wins.
        if kwargs or stop is not None:
            given = {**kwargs, "stop": stop} if stop is not None else kwargs
            kwargs, _ = core.apply_lock(
                given, lock, source="call argument", log_fields=self._log_fields()
            )
            if stop is not None:
                stop = kwargs.pop("stop")
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        # 2. What will really be sent (constructor extra_body and model_kwargs, a
        # field changed after construction, an integration that dropped a
        # parameter), then the locked value everywhere it is sent.
        payload = core.check_sent(
            payload, lock, model=self.model_name, log_fields=self._log_fields()
        )
        if call is not None:
            call.request_hash = request_hash(self._seedlock_provider, payload)
        return payload

    def _log_fields(self) -> dict[str, Any]:
        return {
            "gen_ai.request.model": self.model_name,
            "gen_ai.provider.name": self._seedlock_provider,
        }

    def _convert_chunk_to_generation_chunk(
        self,
        chunk: dict[str, Any],
        default_chunk_class: type,
        base_generation_info: dict[str, Any] | None,
    ) -> ChatGenerationChunk | None:
        generation_chunk = super()._convert_chunk_to_generation_chunk(
            chunk, default_chunk_class, base_generation_info
        )
        if generation_chunk is None:
            return None
        # langchain-openai copies the finish chunk's fingerprint as is: bound it
        # like the non-streamed record (a huge one would reach every consumer).
        for meta in (generation_chunk.generation_info, generation_chunk.message.response_metadata):
            if meta and meta.get(core.META_FINGERPRINT):
                meta[core.META_FINGERPRINT] = clean_fingerprint(meta[core.META_FINGERPRINT])
        fp = core.META_FINGERPRINT
        raw = chunk.get(fp) or (chunk.get("chunk") or {}).get(fp)
        if raw:
            generation_chunk.generation_info = {
                **(generation_chunk.generation_info or {}),
                RAW_FINGERPRINT: raw,
            }
        return generation_chunk

    # -- stamping results ---------------------------------------------------
    def _stamp(self, result: ChatResult, call: Call, run_manager: Any) -> ChatResult:
        fingerprint = clean_fingerprint((result.llm_output or {}).get(core.META_FINGERPRINT))
        return stamp_result(self.lock, result, fingerprint, call.request_hash, run_manager)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = Call()
        result = super()._generate(
            messages, stop=stop, run_manager=run_manager, **{**kwargs, _CALL_KWARG: call}
        )
        return self._stamp(result, call, run_manager)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = Call()
        result = await super()._agenerate(
            messages, stop=stop, run_manager=run_manager, **{**kwargs, _CALL_KWARG: call}
        )
        return self._stamp(result, call, run_manager)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        recorder = StreamRecorder(self.lock)
        for chunk in super()._stream(
            messages, stop=stop, run_manager=run_manager, **{**kwargs, _CALL_KWARG: recorder.call}
        ):
            yield recorder.see(chunk)
        yield recorder.final()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        recorder = StreamRecorder(self.lock)
        async for chunk in super()._astream(
            messages, stop=stop, run_manager=run_manager, **{**kwargs, _CALL_KWARG: recorder.call}
        ):
            yield recorder.see(chunk)
        yield recorder.final()

    def _combine_llm_outputs(self, llm_outputs: list[dict[str, Any] | None]) -> dict[str, Any]:
        combined: dict[str, Any] = super()._combine_llm_outputs(llm_outputs)
        carry_record(combined, llm_outputs)
        return combined
