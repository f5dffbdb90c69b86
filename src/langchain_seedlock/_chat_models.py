"""Locked chat models: every request is sent with the seed and locked parameters.

`LockedChatOpenAI` / `LockedAzureChatOpenAI` enforce the lock on the final
request payload (``_get_request_payload``, the one place every Chat Completions
request of langchain-openai is built), so it holds through invoke, stream,
batch, async, ``bind``, ``bind_tools`` and ``with_structured_output``.
`lock_model` wraps any other chat model that takes a seed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableParallel,
    RunnableSequence,
    RunnableWithFallbacks,
)
from langchain_core.runnables.passthrough import RunnableAssign
from langchain_core.tools import BaseTool
from langchain_openai import AzureChatOpenAI, ChatOpenAI
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from langchain_seedlock._body import PARAM_CONTAINERS
from langchain_seedlock._callbacks import add_run_metadata
from langchain_seedlock._enforce import (
    SPELLINGS,
    apply_policy,
    find_overrides,
    find_violations,
    locked_request,
    report_dropped,
)
from langchain_seedlock._errors import (
    LockViolationError,
    MalformedResponseError,
    UnsupportedModelError,
)
from langchain_seedlock._hashing import output_hash, request_hash, request_hash_from_messages
from langchain_seedlock._lock import SeedLock
from langchain_seedlock._providers import check_model, unsupported_param
from langchain_seedlock._record import clean_fingerprint
from langchain_seedlock._redact import redact_url

# Keys added to each AIMessage's response_metadata (and the ChatResult's llm_output).
META_FINGERPRINT = "system_fingerprint"
META_SEED = "seed"
META_LOCK_HASH = "seedlock_lock_hash"
META_REQUEST_HASH = "seedlock_request_hash"
META_OUTPUT_HASH = "seedlock_output_hash"
_RECORD_KEYS = (META_FINGERPRINT, META_SEED, META_LOCK_HASH, META_REQUEST_HASH, META_OUTPUT_HASH)

# Private kwarg carrying per-call state from `_generate`/`_stream` to
# `_get_request_payload` through langchain-openai's own kwargs plumbing:
# no contextvars, so it is safe across threads, tasks and generators.
_CALL_KWARG = "seedlock_call"
# Private generation_info key: a fingerprint seen on a streamed chunk that
# langchain-openai would drop (it only keeps the one on the finish chunk).
_RAW_FINGERPRINT = "seedlock_raw_fingerprint"

# Fields of the OpenAI models that are built from the others, never copied.
_CLIENT_FIELDS = frozenset({"client", "async_client", "root_client", "root_async_client"})


@dataclass(slots=True)
class _Call:
    """What one call learns on its way: the request hash, streamed fingerprints."""

    request_hash: str | None = None
    fingerprint: str | None = None
    fingerprint_in_chunks: bool = False


def _lock_from(value: Any) -> SeedLock:
    if isinstance(value, SeedLock):
        return value
    if isinstance(value, Mapping):
        return SeedLock.from_dict(value)
    raise UnsupportedModelError(f"lock must be a SeedLock, got {type(value).__name__}")


def _stamp_metadata(
    lock: SeedLock, messages: Sequence[BaseMessage], fingerprint: str | None, req_hash: str | None
) -> dict[str, Any]:
    """Write the record keys into each message; return the call-level keys."""
    if not messages:
        raise MalformedResponseError(
            "the model server answered with no choices: there is no output to record "
            "(an OpenAI-compatible server must return at least one choice)"
        )
    hashes = [output_hash([message]) for message in messages]
    for message, message_hash in zip(messages, hashes, strict=True):
        message.response_metadata.update(
            {
                META_FINGERPRINT: fingerprint,
                META_SEED: lock.seed,
                META_LOCK_HASH: lock.lock_hash,
                META_REQUEST_HASH: req_hash,
                META_OUTPUT_HASH: message_hash,
            }
        )
    return {
        META_FINGERPRINT: fingerprint,
        META_SEED: lock.seed,
        META_LOCK_HASH: lock.lock_hash,
        META_REQUEST_HASH: req_hash,
        # One message hashes as itself (see output_hash): not computed twice.
        META_OUTPUT_HASH: hashes[0] if len(messages) == 1 else output_hash(messages),
    }


def _stamp_result(
    lock: SeedLock,
    result: ChatResult,
    fingerprint: str | None,
    req_hash: str | None,
    run_manager: Any,
) -> ChatResult:
    """Record keys on each message, in ``llm_output`` and on the traced run."""
    messages = [g.message for g in result.generations]
    call_meta = _stamp_metadata(lock, messages, fingerprint, req_hash)
    result.llm_output = {**(result.llm_output or {}), **call_meta}
    _record_on_run(run_manager, call_meta)
    return result


def _record_on_run(run_manager: Any, call_meta: Mapping[str, Any]) -> None:
    """Put the record into the tracers' run metadata (LangSmith shows it on the run)."""
    if run_manager is None or not run_manager.handlers:
        return  # nothing traces this run
    add_run_metadata(
        run_manager.run_id,
        {
            "system_fingerprint": call_meta[META_FINGERPRINT],
            "gen_ai.request.seed": call_meta[META_SEED],
            "seedlock.lock_hash": call_meta[META_LOCK_HASH],
            "seedlock.request_hash": call_meta[META_REQUEST_HASH],
            "seedlock.output_hash": call_meta[META_OUTPUT_HASH],
        },
        tracers=run_manager.handlers,
    )


class _StreamRecorder:
    """Follows a stream: the fingerprint wherever it was sent, and the chunks
    whose merge is hashed into the record carried by the last chunk."""

    def __init__(self, lock: SeedLock, request_hash: str | None = None) -> None:
        self.lock = lock
        self.call = _Call(request_hash=request_hash)
        self._chunks: list[AIMessageChunk] = []

    def see(self, chunk: ChatGenerationChunk) -> ChatGenerationChunk:
        call = self.call
        info = chunk.generation_info or {}
        raw = clean_fingerprint(info.pop(_RAW_FINGERPRINT, None))
        if raw and call.fingerprint is None:
            call.fingerprint = raw
        # langchain-openai copies it into the finish chunk's generation_info;
        # other integrations may put it straight into the message metadata.
        message = chunk.message
        sent = info.get(META_FINGERPRINT) or message.response_metadata.get(META_FINGERPRINT)
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
        chunks, call, lock = self._chunks, self.call, self.lock
        merged = (
            add_ai_message_chunks(chunks[0], *chunks[1:]) if chunks else AIMessageChunk(content="")
        )
        meta: dict[str, Any] = {
            META_SEED: lock.seed,
            META_LOCK_HASH: lock.lock_hash,
            META_REQUEST_HASH: call.request_hash,
            META_OUTPUT_HASH: output_hash([merged]),
        }
        if not call.fingerprint_in_chunks:
            meta[META_FINGERPRINT] = call.fingerprint
        content: str | list[str | dict[str, Any]] = "" if isinstance(merged.content, str) else []
        return ChatGenerationChunk(
            message=AIMessageChunk(content=content, response_metadata=meta, chunk_position="last")
        )


def _serialize_lock(data: Any, lock: SeedLock) -> Any:
    """`to_json` output with the lock as a plain dict (it is not a Serializable)."""
    if isinstance(data, dict) and isinstance(data.get("kwargs"), dict):
        data["kwargs"]["lock"] = lock.to_dict()
    return data


def _carry_record(combined: dict[str, Any], llm_outputs: list[dict[str, Any] | None]) -> None:
    """Keep a single call's record keys in the combined llm_output (one call: its
    record is the run's; several calls have no single record)."""
    if len(llm_outputs) == 1 and llm_outputs[0]:
        combined.update({k: v for k, v in llm_outputs[0].items() if k in _RECORD_KEYS})


if TYPE_CHECKING:
    _LockBase = BaseChatModel
    _OpenAIBase = BaseChatOpenAI
else:
    _LockBase = BaseModel
    _OpenAIBase = object


class _LockHolder(_LockBase):
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
            kwargs["lock"] = _lock_from(kwargs["lock"]).to_dict()
        super().__init__(**kwargs)

    @field_validator("lock", mode="before")
    @classmethod
    def _coerce_lock(cls, value: Any) -> SeedLock:
        return _lock_from(value)

    def to_json(self) -> Any:
        return _serialize_lock(super().to_json(), self.lock)

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


class _LockedOpenAIMixin(_LockHolder, _OpenAIBase):
    """The lock for langchain-openai models; see `LockedChatOpenAI`."""

    # A class variable, not a pydantic private attribute: read on every call,
    # and private attributes go through pydantic's slower ``__getattr__``.
    _seedlock_provider: ClassVar[str] = "openai"

    @model_validator(mode="before")
    @classmethod
    def _merge_lock(cls, values: Any) -> Any:
        if not isinstance(values, dict) or "lock" not in values:
            return values
        lock = _lock_from(values["lock"])
        if values.get("use_responses_api"):
            raise UnsupportedModelError(
                "use_responses_api=True cannot be locked: OpenAI's Responses API takes "
                "no seed and returns no system_fingerprint. Use the Chat Completions API "
                "(the default) with a SeedLock."
            )
        model_kwargs = dict(values.get("model_kwargs") or {})
        # What model_kwargs and extra_body would send (as `_default_params` and
        # the openai SDK merge them); the fields themselves are checked below.
        nested = find_violations(lock, {"extra_body": values.get("extra_body"), **model_kwargs})
        if nested:
            v = nested[0]
            raise LockViolationError(v.field, v.locked, v.attempted, "constructor argument")
        for name in lock.canonical():  # equal: the field below carries it (once)
            for key in SPELLINGS.get(name, (name,)):
                if key != "response_format":
                    model_kwargs.pop(key, None)
        for name, locked in lock.canonical().items():
            field = "max_tokens" if name == "max_tokens" else name
            given = values.get(
                field, values.get("max_completion_tokens") if field == "max_tokens" else None
            )
            if given is None and name in model_kwargs:
                given = model_kwargs[name]
            if given is not None and not lock.equals_locked(name, given):
                raise LockViolationError(name, locked, given, "constructor argument")
            if name == "response_format":
                model_kwargs[name] = locked
            else:
                values.pop("max_completion_tokens", None) if field == "max_tokens" else None
                values[field] = locked
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
        call: _Call | None = kwargs.pop(_CALL_KWARG, None)
        lock = self.lock
        # 1. Call-time and bind-time values that differ from the lock, wherever
        # they are given: as arguments, or inside extra_body / extra_query.
        given = {**kwargs, "stop": stop} if stop is not None else kwargs
        overrides = find_overrides(lock, given)
        if overrides:  # log fields only built when there is something to report
            apply_policy(lock, overrides, source="call argument", log_fields=self._log_fields())
            # warn / ignore: the lock wins
            if any(v.field == "stop" for v in overrides):
                stop = list(lock.canonical()["stop"])
            kwargs = locked_request(lock, kwargs)
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        # 2. What will really be sent (the payload with its extra_body merged over
        # it, as the openai SDK sends it) against the lock: constructor extra_body
        # and model_kwargs, a field changed after construction, an integration
        # that dropped a parameter.
        final = find_violations(lock, payload, require_all=True)
        if final:
            report_dropped(
                lock,
                [v for v in final if v.kind == "missing"],
                model=self.model_name,
                log_fields=self._log_fields(),
            )
            apply_policy(
                lock,
                [v for v in final if v.kind == "override"],
                source="request payload",
                log_fields=self._log_fields(),
            )
        # 3. The locked value everywhere it is sent (extra_body included), and an
        # equal value of another type (seed=5.0 for a locked 5) sent as the locked
        # integer: providers refuse a float seed or max_tokens.
        payload = locked_request(lock, payload)
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
        raw = chunk.get(META_FINGERPRINT) or (chunk.get("chunk") or {}).get(META_FINGERPRINT)
        if generation_chunk is not None:
            # langchain-openai copies the finish chunk's fingerprint as is: bound it
            # like the non-streamed record (a huge one would reach every consumer).
            for meta in (
                generation_chunk.generation_info,
                generation_chunk.message.response_metadata,
            ):
                if meta and meta.get(META_FINGERPRINT):
                    meta[META_FINGERPRINT] = clean_fingerprint(meta[META_FINGERPRINT])
        if generation_chunk is not None and raw:
            generation_chunk.generation_info = {
                **(generation_chunk.generation_info or {}),
                _RAW_FINGERPRINT: raw,
            }
        return generation_chunk

    # -- stamping results ---------------------------------------------------
    def _stamp(self, result: ChatResult, call: _Call, run_manager: Any) -> ChatResult:
        llm_output = result.llm_output or {}
        fingerprint = clean_fingerprint(llm_output.get(META_FINGERPRINT))
        return _stamp_result(self.lock, result, fingerprint, call.request_hash, run_manager)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = _Call()
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
        call = _Call()
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
        recorder = _StreamRecorder(self.lock)
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
        recorder = _StreamRecorder(self.lock)
        async for chunk in super()._astream(
            messages, stop=stop, run_manager=run_manager, **{**kwargs, _CALL_KWARG: recorder.call}
        ):
            yield recorder.see(chunk)
        yield recorder.final()

    def _combine_llm_outputs(self, llm_outputs: list[dict[str, Any] | None]) -> dict[str, Any]:
        combined: dict[str, Any] = super()._combine_llm_outputs(llm_outputs)
        _carry_record(combined, llm_outputs)
        return combined


class LockedChatOpenAI(_LockedOpenAIMixin, ChatOpenAI):
    """`ChatOpenAI` that sends every request with a seed and locked sampling parameters.

    Setup:
        ```bash
        pip install langchain-seedlock
        export OPENAI_API_KEY="sk-..."
        ```

    Instantiate:
        ```python
        from langchain_seedlock import LockedChatOpenAI, SeedLock

        lock = SeedLock(seed=123, temperature=0.7, max_tokens=200)
        model = LockedChatOpenAI(model="gpt-4o-mini", lock=lock)
        ```
        Constructor arguments that conflict with the lock raise
        `LockViolationError`; ``use_responses_api=True`` raises
        `UnsupportedModelError` (the Responses API has no seed).

    Invoke:
        ```python
        msg = model.invoke("Name a planet.")
        msg.response_metadata["system_fingerprint"]  # e.g. "fp_44709d6fcb", or None
        msg.response_metadata["seedlock_request_hash"]  # sha256 of the wire request
        msg.response_metadata["seedlock_output_hash"]  # sha256 of text + tool calls
        ```
        A call-time or bind-time value that differs from the lock
        (``model.invoke(..., temperature=1.0)``, or inside ``extra_body``,
        which the openai SDK merges over the request body) raises
        `LockViolationError` before anything is sent, or with
        ``on_violation="warn"`` logs ``seedlock.lock_violation`` and sends
        the locked value.

    Stream:
        ```python
        full = None
        for chunk in model.stream("Name a planet."):
            full = chunk if full is None else full + chunk
        full.response_metadata["system_fingerprint"]  # kept even if sent on early chunks
        ```

    Agents:
        ```python
        model.bind_tools([get_weather])  # the lock holds
        model.with_structured_output(Answer)  # every method, include_raw too
        ```
        For ``create_agent`` with any model, see `SeedLockMiddleware`.

    Drift events:
        Attach `SeedLockCallbackHandler` (``config={"callbacks": [handler]}``) to
        compare each call with its baseline and log ``seedlock.output_drift`` and
        ``seedlock.fingerprint_changed`` with structlog.
    """

    _seedlock_provider = "openai"


class LockedAzureChatOpenAI(_LockedOpenAIMixin, AzureChatOpenAI):
    """`AzureChatOpenAI` with a `SeedLock`; see `LockedChatOpenAI` for the behaviour.

    Instantiate:
        ```python
        model = LockedAzureChatOpenAI(
            azure_deployment="gpt-4o-mini",
            api_version="2024-10-21",
            lock=SeedLock(seed=123, temperature=0.7),
        )
        ```
    """

    _seedlock_provider = "azure"


# ---------------------------------------------------------------------------
# lock_model: any chat model that takes a seed
# ---------------------------------------------------------------------------

# Field names other integrations use for each locked parameter.
_FIELD_ALIASES = SPELLINGS


def _field_for(model: BaseChatModel, name: str) -> str | None:
    fields = type(model).model_fields
    for candidate in _FIELD_ALIASES.get(name, (name,)):
        if candidate in fields:
            return candidate
    return None


class LockedChatModel(_LockHolder, BaseChatModel):
    """A chat model wrapped by `lock_model`: delegates to ``model`` with the lock applied.

    The locked values are set on a copy of the inner model's fields; call-time
    and bind-time values are checked against the lock with its violation
    policy, and ``bind_tools`` / ``with_structured_output`` keep the lock.
    """

    model: BaseChatModel
    """The inner model, with the locked values set on its fields."""

    @model_validator(mode="after")
    def _apply_lock_to_inner(self) -> Any:
        provider = check_model(self.model, self.lock.seed)  # no seed / a "random" seed
        via_kwargs = provider.via_model_kwargs if provider else ()  # ChatGroq's seed
        updates: dict[str, Any] = {}
        for name, locked in self.lock.canonical().items():
            if name in via_kwargs:
                continue  # set in model_kwargs below
            field = _field_for(self.model, name)
            if field is None:
                raise unsupported_param(self.model, name)
            current = getattr(self.model, field, None)
            # Only a value the user set conflicts (not ChatMistralAI's default temperature).
            if (
                field in self.model.model_fields_set
                and current is not None
                and current != []
                and not self.lock.equals_locked(name, current)
            ):
                raise LockViolationError(name, locked, current, "constructor argument")
            updates[field] = locked
        # Fields that are mappings of more parameters (model_kwargs, extra_body...)
        # reach the wire too: checked like the fields, equal values made the locked ones.
        nested: dict[str, Any] = {
            name: value
            for name in PARAM_CONTAINERS
            if name in type(self.model).model_fields
            and isinstance(value := getattr(self.model, name, None), Mapping)
        }
        if nested:
            conflicts = find_violations(self.lock, nested)
            if conflicts:
                v = conflicts[0]
                raise LockViolationError(v.field, v.locked, v.attempted, "constructor argument")
            updates.update(locked_request(self.lock, nested))
        if via_kwargs:
            sent = {k: v for k, v in self.lock.canonical().items() if k in via_kwargs}
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
        _carry_record(combined, llm_outputs)
        return combined

    def _locked_call(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[list[str] | None, dict[str, Any], str]:
        """Check call-time values, let the lock win, and hash the request."""
        lock = self.lock
        given = {**kwargs, **({"stop": stop} if stop is not None else {})}
        overrides = find_overrides(lock, given)
        apply_policy(
            lock,
            overrides,
            source="call argument",
            log_fields={"gen_ai.provider.name": self.model._llm_type},
        )
        for v in overrides:
            if v.field == "stop":
                stop = list(v.locked)
            for key in _FIELD_ALIASES.get(v.field, (v.field,)):
                kwargs.pop(key, None)
        if kwargs:
            # The lock wins in extra_body / options / model_kwargs too, and an equal
            # value of another type (seed=5.0) is passed as the locked one.
            kwargs = self._fill_options(locked_request(lock, kwargs))
        params = {
            "model": _model_name(self.model),
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
            if not any(key in filled for key in _FIELD_ALIASES.get(name, (name,))):
                filled[_field_for(self.model, name) or name] = value
        return {**kwargs, "options": filled}

    def _stamp(self, result: ChatResult, req_hash: str, run_manager: Any = None) -> ChatResult:
        llm_output = result.llm_output or {}
        # Integrations put it in llm_output, generation_info or the message.
        candidates = [
            llm_output.get(META_FINGERPRINT),
            *((g.generation_info or {}).get(META_FINGERPRINT) for g in result.generations),
            *(g.message.response_metadata.get(META_FINGERPRINT) for g in result.generations),
        ]
        fingerprint = next((c for c in map(clean_fingerprint, candidates) if c), None)
        return _stamp_result(self.lock, result, fingerprint, req_hash, run_manager)

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
            message = result.generations[0].message
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=message.content,
                    response_metadata=message.response_metadata,
                    tool_call_chunks=[
                        {
                            "name": c["name"],
                            "args": _json(c["args"]),
                            "id": c.get("id"),
                            "index": i,
                            "type": "tool_call_chunk",
                        }
                        for i, c in enumerate(getattr(message, "tool_calls", []) or [])
                    ],
                    chunk_position="last",
                )
            )
            return
        recorder = _StreamRecorder(self.lock, req_hash)
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
        recorder = _StreamRecorder(self.lock, req_hash)
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
        rebound: Runnable[LanguageModelInput, AIMessage] = _rebind(
            self.model.bind_tools(tools, **kwargs), self.model, self
        )
        return rebound

    def with_structured_output(
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """The inner model's structured output, every model call going through the lock."""
        rebound: Runnable[LanguageModelInput, Any] = _rebind(
            self.model.with_structured_output(schema, include_raw=include_raw, **kwargs),
            self.model,
            self,
        )
        return rebound


def _json(value: Any) -> str:
    return json.dumps(value)


def _model_name(model: BaseChatModel) -> str | None:
    for attr in ("model_name", "model", "model_id", "deployment_name"):
        value = getattr(model, attr, None)
        if isinstance(value, str):
            return value
    return None


def _rebind(runnable: Any, inner: BaseChatModel, outer: LockedChatModel) -> Any:
    """Replace ``inner`` (bare or bound) by ``outer`` anywhere in ``runnable``.

    The inner model's ``bind_tools`` / ``with_structured_output`` return
    bindings of the inner model, which would bypass the lock.
    """
    if runnable is inner:
        return outer
    if isinstance(runnable, RunnableBinding):
        if runnable.bound is inner:
            return runnable.__class__(
                bound=outer,
                kwargs=runnable.kwargs,
                config=runnable.config,
                config_factories=runnable.config_factories,
                custom_input_type=runnable.custom_input_type,
                custom_output_type=runnable.custom_output_type,
            )
        return runnable.__class__(
            bound=_rebind(runnable.bound, inner, outer),
            kwargs=runnable.kwargs,
            config=runnable.config,
            config_factories=runnable.config_factories,
            custom_input_type=runnable.custom_input_type,
            custom_output_type=runnable.custom_output_type,
        )
    if isinstance(runnable, RunnableSequence):
        steps = [_rebind(step, inner, outer) for step in runnable.steps]
        return RunnableSequence(*steps, name=runnable.name)
    if isinstance(runnable, RunnableParallel):
        return RunnableParallel({k: _rebind(v, inner, outer) for k, v in runnable.steps__.items()})
    if isinstance(runnable, RunnableAssign):
        return RunnableAssign(_rebind(runnable.mapper, inner, outer))
    if isinstance(runnable, RunnableWithFallbacks):
        return runnable.__class__(
            runnable=_rebind(runnable.runnable, inner, outer),
            fallbacks=[_rebind(f, inner, outer) for f in runnable.fallbacks],
            exceptions_to_handle=runnable.exceptions_to_handle,
            exception_key=runnable.exception_key,
        )
    return runnable


def lock_model(model: BaseChatModel, lock: SeedLock) -> BaseChatModel:
    """Return a chat model that sends every call with ``lock``.

    ``ChatOpenAI`` / ``AzureChatOpenAI`` become `LockedChatOpenAI` /
    `LockedAzureChatOpenAI` with the same settings (the lock is then checked
    on the wire payload); any other model with a seed field (``seed`` or
    ``random_seed``) is wrapped in `LockedChatModel`. A model that cannot take
    a seed raises `UnsupportedModelError`; a seed its backend reads as
    "random" raises `UnusableSeedError` (the table: docs/providers.md).
    """
    if not isinstance(lock, SeedLock):
        raise UnsupportedModelError(f"lock must be a SeedLock, got {type(lock).__name__}")
    if isinstance(model, _LockedOpenAIMixin | LockedChatModel):
        if model.lock == lock:
            return model
        raise UnsupportedModelError(
            f"{type(model).__name__} is already locked with {model.lock!r}; "
            "lock the unlocked model instead"
        )
    if not isinstance(model, BaseChatModel):
        raise UnsupportedModelError(
            f"lock_model takes a chat model, got {type(model).__name__}; pass the model "
            "itself, not a binding or chain (lock first, then bind_tools / with_structured_output)"
        )
    target: type[_LockedOpenAIMixin] | None = None
    if type(model) is ChatOpenAI:
        target = LockedChatOpenAI
    elif type(model) is AzureChatOpenAI:
        target = LockedAzureChatOpenAI
    if target is not None:
        settings = {
            name: getattr(model, name)
            for name in model.model_fields_set
            if name not in _CLIENT_FIELDS
        }
        return target(**settings, lock=lock)
    return LockedChatModel(model=model, lock=lock)
