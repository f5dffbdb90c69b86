"""The agent's model swapped for its locked twin (`SeedLockMiddleware`, ``lock_models``)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

from langchain_core.language_models import BaseChatModel
from langchain_openai import AzureChatOpenAI, ChatOpenAI

from langchain_seedlock import _fork
from langchain_seedlock import _observe as core
from langchain_seedlock._body import PARAM_CONTAINERS
from langchain_seedlock._chat_models import lock_model
from langchain_seedlock._enforce import apply_policy, locked_request
from langchain_seedlock._errors import UnsupportedModelError
from langchain_seedlock._lock import SeedLock

_SOURCE_MODEL: Final = "agent model constructor"
_CACHE_SIZE: Final = 64


class LockedTwins:
    """A plain ``ChatOpenAI`` / ``AzureChatOpenAI`` -> its locked twin (`lock_model`),
    cached per model and lock; other models are kept (``model_settings`` carry
    the lock to them)."""

    def __init__(self) -> None:
        self._models: OrderedDict[tuple[int, str, str], tuple[BaseChatModel, BaseChatModel]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        _fork.register(self, after_in_child=LockedTwins._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent's thread may have held it

    def twin(
        self, model: BaseChatModel, lock: SeedLock, log_fields: Mapping[str, Any]
    ) -> BaseChatModel:
        existing = getattr(model, "lock", None)
        if isinstance(existing, SeedLock):
            if existing.canonical() == lock.canonical():
                return model
            raise UnsupportedModelError(
                f"the agent's model is already locked with {existing!r}, which differs from "
                f"the middleware's {lock!r}; give the agent the unlocked model (the "
                "middleware locks it), or the same lock without seed_per_step"
            )
        if type(model) not in (ChatOpenAI, AzureChatOpenAI):
            return model
        key = (id(model), lock.lock_hash, lock.on_violation)
        with self._lock:
            hit = self._models.get(key)
            if hit is not None and hit[0] is model:
                self._models.move_to_end(key)
                return hit[1]
        # Constructor values that differ from the lock go through the policy, as
        # a call's would: the middleware, not the user's code, locks this model.
        # (ChatOpenAI names its fields as the wire does; its model_kwargs and
        # extra_body reach the wire too.)
        fields = {name: getattr(model, name, None) for name in lock.canonical()}
        nested = {name: getattr(model, name, None) for name in PARAM_CONTAINERS}
        nested = {k: v for k, v in nested.items() if isinstance(v, Mapping)}
        conflicts = core.constructor_conflicts(lock, fields, nested)
        apply_policy(lock, conflicts, source=_SOURCE_MODEL, log_fields=log_fields)
        update: dict[str, Any] = {v.field: None for v in conflicts}
        if conflicts and nested:
            update.update(locked_request(lock, nested))
        locked = lock_model(model.model_copy(update=update), lock)
        with self._lock:
            self._models[key] = (model, locked)  # keeps `model` alive: its id stays unique
            while len(self._models) > _CACHE_SIZE:
                self._models.popitem(last=False)
        return locked
