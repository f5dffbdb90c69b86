"""The locked chat models: every request is sent with the seed and locked parameters.

`LockedChatOpenAI` / `LockedAzureChatOpenAI` (the lock on the wire payload:
`_locked_openai`) and `lock_model` for any chat model that takes a seed
(`_locked_model`); both stamp the record keys of `_observe` on each answer.
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langchain_openai import AzureChatOpenAI, ChatOpenAI

from langchain_seedlock._errors import UnsupportedModelError
from langchain_seedlock._lock import SeedLock
from langchain_seedlock._locked_model import LockedChatModel
from langchain_seedlock._locked_openai import LockedOpenAIMixin

__all__ = ["LockedAzureChatOpenAI", "LockedChatModel", "LockedChatOpenAI", "lock_model"]

# Fields of the OpenAI models that are built from the others, never copied.
_CLIENT_FIELDS = frozenset({"client", "async_client", "root_client", "root_async_client"})


class LockedChatOpenAI(LockedOpenAIMixin, ChatOpenAI):
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


class LockedAzureChatOpenAI(LockedOpenAIMixin, AzureChatOpenAI):
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
    if isinstance(model, LockedOpenAIMixin | LockedChatModel):
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
    target: type[LockedOpenAIMixin] | None = None
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
