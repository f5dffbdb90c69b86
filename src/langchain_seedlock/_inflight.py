"""Calls in flight per base URL in this process: a cause hint for drift.

Batch composition is the usual reason a seeded request changes on a server
that batches concurrent requests (Thinking Machines, "Defeating
Nondeterminism in LLM Inference", 2025), so each call records how many calls
to the same base URL were in flight in this process when it started, itself
included (``seedlock.in_flight``: 1 = alone).

A door calls `enter` when a call starts and `leave` with the token when it
ends (or fails). Nested doors (a `SeedLockMiddleware` whose model also runs
a `SeedLockCallbackHandler`) count a call once: the inner door sees the
outer door's entry in its context and reuses its count.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

# The report's buckets: (label, lowest, highest) in-flight counts.
BUCKETS: Final = (("1", 1, 1), ("2-4", 2, 4), ("5-16", 5, 16), (">16", 17, None))
BUCKET_LOW: Final = {label: low for label, low, _ in BUCKETS}


def bucket(in_flight: int | None) -> str | None:
    """The report bucket of an in-flight count (None when not recorded)."""
    if in_flight is None:
        return None
    for label, low, high in BUCKETS:
        if in_flight >= low and (high is None or in_flight <= high):
            return label
    return BUCKETS[0][0]  # 0 or less cannot happen: counted as alone


@dataclass(slots=True)
class Token:
    key: str
    count: int
    owner: bool  # False: an outer door counted this call
    live: bool = True  # until `leave`: a context may outlive its call


_lock = threading.Lock()
_counts: dict[str, int] = {}
_current: contextvars.ContextVar[Token | None] = contextvars.ContextVar(
    "seedlock_in_flight", default=None
)


def enter(key: str) -> Token:
    """Count a call to ``key`` (its base URL, or its provider when the URL is
    unknown) as started; the token holds the count at its start."""
    outer = _current.get()
    if outer is not None and outer.live and outer.key == key:
        return Token(key, outer.count, owner=False)
    with _lock:
        count = _counts.get(key, 0) + 1
        _counts[key] = count
    token = Token(key, count, owner=True)
    _current.set(token)
    return token


def leave(token: Token | None) -> None:
    """The call of ``token`` ended. Idempotent; None does nothing."""
    if token is None or not token.owner or not token.live:
        return
    token.live = False
    with _lock:
        left = _counts.get(token.key, 0) - 1
        if left > 0:
            _counts[token.key] = left
        else:
            _counts.pop(token.key, None)


def now(key: str) -> int:
    """Calls to ``key`` in flight right now (tests, diagnostics)."""
    with _lock:
        return _counts.get(key, 0)


def reset_after_fork() -> None:
    """A child starts with no call in flight (the parent's are not its own)."""
    global _lock  # noqa: PLW0603 - a parent's thread may have held it at the fork
    _lock = threading.Lock()
    _counts.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=reset_after_fork)


# Where chat model classes keep their server's URL (ChatOpenAI, ChatOllama /
# ChatMistralAI / others, AzureChatOpenAI), in their fields and serialized kwargs.
_URL_FIELDS: Final = ("openai_api_base", "base_url", "azure_endpoint", "endpoint")


def base_url_of(model: Any) -> str | None:
    """The base URL a chat model sends to: a model object, or the ``kwargs``
    of its serialized form (what a callback handler sees). None: the
    provider's default endpoint, or not known."""
    kwargs = model.get("kwargs") if isinstance(model, Mapping) else None
    for name in _URL_FIELDS:
        value = kwargs.get(name) if isinstance(kwargs, Mapping) else getattr(model, name, None)
        if isinstance(value, str) and value:
            return value.rstrip("/")
    return None


def key_for(base_url: str | None, provider: str) -> str:
    """What in-flight calls are counted per: the base URL, else the provider
    (its default endpoint)."""
    return base_url or f"provider:{provider}"
