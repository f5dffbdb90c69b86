"""`LockedChatModel`: any chat model that takes a seed, wrapped by `lock_model`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import model_validator

from langchain_seedlock import _observe as core
from langchain_seedlock._body import PARAM_CONTAINERS
from langchain_seedlock._enforce import locked_request
from langchain_seedlock._errors import LockViolationError
from langchain_seedlock._hashing import request_hash_from_messages
from langchain_seedlock._locked_base import (
    LockHolder,
    StreamRecorder,
    carry_record,
    rebind,
    stamp_result,
    whole_as_chunk,
)
from langchain_seedlock._locked_openai import _CALL_KWARG
from langchain_seedlock._providers import check_model, unsupported_param
from langchain_seedlock._record import clean_fingerprint

_NAME_ATTRS = ("model_name", "model", "model_id", "deployment_name")


class LockedChatModel(LockHolder, BaseChatModel):
    """A chat model wrapped by `lock_model`: delegates to ``model`` with the lock applied.

    The locked values are set on a copy of the inner model's fields; call-time
    and bind-time values are checked against the lock with its violation
    policy, and ``bind_tools`` / ``with_structured_output`` keep the lock.
    """

    model: BaseChatModel
    """The inner model, with the locked values set on its fields."""

    @model_validator(mode="after")
    def _apply_lock_to_inner(self) -> Any:
        """Constructor values against the lock (a conflict raises: it is in the
        code, not in a call), then the locked values set on a copy of the model."""
        provider = check_model(self.model, self.lock.seed)  # no seed / a "random" seed
        via_kwargs = provider.via_model_kwargs if provider else ()  # ChatGroq's seed
        model_fields = type(self.model).model_fields
        fields: dict[str, str] = {}  # canonical name -> the model's field
        for name in self.lock.canonical():
            if name in via_kwargs:
                continue  # set in model_kwargs below
            field = core.field_for(model_fields, name)
            if field is None:
                raise unsupported_param(self.model, name)
            fields[name] = field
        # Mappings of more parameters (model_kwargs, extra_body...) reach the wire too.
        nested: dict[str, Any] = {
            name: value
            for name in PARAM_CONTAINERS
            if name in model_fields
            and isinstance(value := getattr(self.model, name, None), Mapping)
        }
        # Only a value the user set conflicts (not ChatMistralAI's default temperature).
        current = {
            field: getattr(self.model, field, None)
            for field in fields.values()
            if field in self.model.model_fields_set
        }
        for v in core.constructor_conflicts(self.lock, current, nested):
            raise LockViolationError(v.field, v.locked, v.attempted, "constructor argument")
        locked = self.lock.canonical()
        updates: dict[str, Any] = {field: locked[name] for name, field in fields.items()}
        if nested:  # equal values made the locked ones
            updates.update(locked_request(self.lock, nested))
        if via_kwargs:
            sent = {k: v for k, v in locked.items() if k in via_kwargs}
            kwargs = updates.get("model_kwargs") or getattr(self.model, "model_kwargs", None)
            updates["model_kwargs"] = {**(kwargs or {}), **sent}
        self.model = self.model.model_copy(update=updates)
        return self

    @property
    def _llm_type(self) -> str:
        return f"seedlock-{self.model._llm_type}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {**self.model._identifying_params, "seedlock_lock": self.lock.canonical()}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return self.model._get_ls_params(stop=stop, **kwargs)

    def _combine_llm_outputs(self, llm_outputs: list[dict[str, Any] | None]) -> dict[str, Any]:
        combined: dict[str, Any] = self.model._combine_llm_outputs(llm_outputs)
        carry_record(combined, llm_outputs)
        return combined

    def _locked_call(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[list[str] | None, dict[str, Any], str]:
        """Call-time values through the lock's policy, the lock winning; the request hash."""
        lock = self.lock
        if kwargs or stop is not None:
            given = {**kwargs, "stop": stop} if stop is not None else kwargs
            kwargs, overrides = core.apply_lock(
                given, lock, source="call argument",
                log_fields={"gen_ai.provider.name": self.model._llm_type},
            )  # fmt: skip
            if stop is not None:
                stop = kwargs.pop("stop")
            for v in overrides:  # the inner model's field carries the locked value
                for key in core.spellings(v.field):
                    if key != "stop":
                        kwargs.pop(key, None)
            kwargs = self._fill_options(kwargs)
        params = {
            "model": core.model_name(self.model, _NAME_ATTRS),
            **{k: v for k, v in kwargs.items() if k != _CALL_KWARG},
            **lock.canonical(),
        }
        return stop, kwargs, request_hash_from_messages(self.model._llm_type, messages, params)

    def _fill_options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """A call-time ``options`` mapping with the locked values in it.

        ``ChatOllama`` sends such a mapping *instead of* the options it builds
        from its fields, so without the locked values in it the seed and the
        locked parameters would not be sent at all. They are written under the
        model's own field names (``num_predict`` for ``max_tokens``), which
        are Ollama's option names.
        """
        options = kwargs.get("options")
        if not isinstance(options, Mapping):
            return kwargs
        filled = dict(options)
        for name, value in self.lock.canonical().items():
            if not any(key in filled for key in core.spellings(name)):
                filled[core.field_for(type(self.model).model_fields, name) or name] = value
        return {**kwargs, "options": filled}

    def _stamp(self, result: ChatResult, req_hash: str, run_manager: Any = None) -> ChatResult:
        llm_output = result.llm_output or {}
        # Integrations put it in llm_output, generation_info or the message.
        candidates = [
            llm_output.get(core.META_FINGERPRINT),
            *((g.generation_info or {}).get(core.META_FINGERPRINT) for g in result.generations),
            *(g.message.response_metadata.get(core.META_FINGERPRINT) for g in result.generations),
        ]
        fingerprint = next((c for c in map(clean_fingerprint, candidates) if c), None)
        return stamp_result(self.lock, result, fingerprint, req_hash, run_manager)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        stop, kwargs, req_hash = self._locked_call(messages, stop, kwargs)
        result = self.model._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        return self._stamp(result, req_hash, run_manager)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        stop, kwargs, req_hash = self._locked_call(messages, stop, kwargs)
        result = await self.model._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)
        return self._stamp(result, req_hash, run_manager)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        stop, kwargs, req_hash = self._locked_call(messages, stop, kwargs)
        if type(self.model)._stream is BaseChatModel._stream:  # no native streaming
            result = self._stamp(
                self.model._generate(messages, stop=stop, run_manager=run_manager, **kwargs),
                req_hash,
            )
            yield whole_as_chunk(result.generations[0].message)
            return
        recorder = StreamRecorder(self.lock, req_hash)
        for chunk in self.model._stream(messages, stop=stop, run_manager=run_manager, **kwargs):
            yield recorder.see(chunk)
        yield recorder.final()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        if (
            type(self.model)._astream is BaseChatModel._astream
            and type(self.model)._stream is BaseChatModel._stream
        ):
            for chunk in self._stream(messages, stop=stop, **kwargs):
                yield chunk
            return
        stop, kwargs, req_hash = self._locked_call(messages, stop, kwargs)
        recorder = StreamRecorder(self.lock, req_hash)
        async for chunk in self.model._astream(
            messages, stop=stop, run_manager=run_manager, **kwargs
        ):
            yield recorder.see(chunk)
        yield recorder.final()

    # -- keep the lock across the inner model's helpers -----------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Format tools the way the inner model does, then bind them to the locked model."""
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        rebound: Runnable[LanguageModelInput, AIMessage] = rebind(
            self.model.bind_tools(tools, **kwargs), self.model, self
        )
        return rebound

    def with_structured_output(
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """The inner model's structured output, every model call going through the lock."""
        rebound: Runnable[LanguageModelInput, Any] = rebind(
            self.model.with_structured_output(schema, include_raw=include_raw, **kwargs),
            self.model,
            self,
        )
        return rebound
