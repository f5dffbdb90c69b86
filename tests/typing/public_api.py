"""Checked by mypy (strict), never run: the public API must type-check as documented."""

from __future__ import annotations

from langchain_core.messages import AIMessage

from langchain_seedlock import (
    LockedChatOpenAI,
    LockViolationError,
    SeedLock,
    SeedLockError,
    lock_model,
)


def typed_usage() -> None:
    lock: SeedLock = SeedLock(seed=123, temperature=0.7, max_tokens=200, on_violation="warn")
    seed: int = lock.seed
    digest: str = lock.lock_hash
    model = LockedChatOpenAI(model="gpt-4o-mini", lock=lock)
    relocked = lock_model(model, lock)
    message = relocked.invoke("hi")
    assert isinstance(message, AIMessage)
    fingerprint = message.response_metadata.get("system_fingerprint")
    try:
        model.invoke("hi", temperature=1.0)
    except LockViolationError as exc:
        field: str = exc.field
        del field
    except SeedLockError:
        pass
    del seed, digest, fingerprint
