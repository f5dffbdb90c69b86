"""Checked by mypy (strict), never run: the public API must type-check as documented."""

from __future__ import annotations

from langchain_core.messages import AIMessage

from langchain_seedlock import (
    LocalServer,
    LockedChatOpenAI,
    LockViolationError,
    ProbeResult,
    SeedLock,
    SeedLockCallbackHandler,
    SeedLockError,
    SeedLockMiddleware,
    SeedLockOTel,
    SeedLockSpanProcessor,
    UnusableSeedError,
    lock_model,
    run_probe,
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
    try:
        lock_model(model, lock.replace(seed=-1))
    except UnusableSeedError as err:
        provider: str = err.provider
        bad_seed: int = err.value
        del provider, bad_seed
    del seed, digest, fingerprint


def typed_lazy_names() -> None:
    # Imported on first use (module __getattr__), typed through TYPE_CHECKING.
    with LocalServer(slots=1, cache_prompt=False) as server:
        result: ProbeResult = run_probe(base_url=server.base_url, runs=2, store="memory://")
    rate: float = result.seeded.exact_match_rate
    handler = SeedLockCallbackHandler(metadata_keys=("tenant",), include_tags=True)
    keys: tuple[str, ...] = handler.metadata_keys
    middleware = SeedLockMiddleware(SeedLock(seed=1), metadata_keys=["user_id"])
    tags: bool = middleware.include_tags
    del rate, keys, tags


def typed_otel() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    provider.add_span_processor(
        SeedLockSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter()), max_hold=10)
    )
    handler = SeedLockCallbackHandler(
        otel=SeedLockOTel(tracer_provider=provider, create_spans=True)
    )
    middleware = SeedLockMiddleware(SeedLock(seed=1), otel=True)
    del handler, middleware
