"""``seedlock verify --recorded``: re-send the requests a chain recorded.

A door with ``capture_content=True`` stores each request's payload once per
request hash (`_payload`). Each is rebuilt (messages, model, tools, response
format, sampling parameters and seed as recorded), checked to hash as the
recorded request, sent to the backend, and its answer classified against
the store's outputs for that request the way the drift monitor does
(`_decide.classify`): under the answer's backend identity, a reproduced
output or a known variant passes and a new variant fails; under a backend
identity the request was never answered by, the drift is explained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from langchain_seedlock._decide import Verdict, classify
from langchain_seedlock._errors import BackendUnavailableError, SeedLockError, is_connection_error

if TYPE_CHECKING:
    from langchain_seedlock._identity import Fields
    from langchain_seedlock._payload import RecordedRequest
    from langchain_seedlock._store._base import BaselineStore, OutputSeen

# How to turn capture on, said wherever a payload is missing.
CAPTURE_HINT: Final = (
    "record them with capture_content=True on SeedLockCallbackHandler, SeedLockMiddleware "
    "or the locked model's DriftMonitor (payloads hold the prompts)"
)
# What a re-send sends and the recorded hash covers, apart from the keyword arguments.
_NOT_KWARGS: Final = frozenset({"model", "model_name", "stop"})


class NotResendableError(SeedLockError):
    """A recorded request that cannot be re-sent as the same request."""


@dataclass(frozen=True, slots=True)
class Resent:
    """One re-sent request: its answer and the verdict."""

    request_hash: str
    verdict: Verdict
    output_hash: str
    usual_output: str | None
    fingerprint_then: str | None
    fingerprint_now: str | None


def select(store: BaselineStore, wanted: list[str] | None) -> list[str]:
    """The request hashes to re-send: every recorded one, or those asked for
    (a full hash or a unique prefix of at least 8 characters)."""
    recorded = store.payload_hashes()
    if not recorded:
        raise NotResendableError(
            f"the store {store.url} holds no recorded request payloads; {CAPTURE_HINT}"
        )
    if not wanted:
        return recorded
    chosen = []
    for prefix in wanted:
        found = [h for h in recorded if h.startswith(prefix)] if len(prefix) >= 8 else []
        if len(found) != 1:
            why = "is ambiguous" if found else "matches no recorded payload"
            raise NotResendableError(
                f"--request {prefix!r} {why} (give 8 or more characters of a request "
                f"hash the store holds a payload for; {len(recorded)} recorded)"
            )
        chosen.append(found[0])
    return chosen


def resend(
    store: BaselineStore,
    request_hash: str,
    *,
    base_url: str | None,
    api_key: str | None,
    declared: Fields = (),
) -> Resent:
    """Re-send one recorded request and classify its answer (``declared``:
    the backend settings declared for the server it is sent to)."""
    from langchain_seedlock._payload import load_payload

    text = store.request_payload(request_hash)
    if text is None:
        raise NotResendableError(f"request {request_hash[:12]} has no recorded payload")
    recorded = load_payload(request_hash, text)
    model, kwargs, stop = _rebuild(recorded, base_url=base_url, api_key=api_key)
    try:
        message = model.invoke(recorded.messages, stop=stop, **kwargs)
    except Exception as exc:
        if is_connection_error(exc):
            raise BackendUnavailableError(f"cannot reach the model server: {exc}") from exc
        raise SeedLockError(
            f"re-sending request {request_hash[:12]} failed: {type(exc).__name__}: {exc}"
        ) from exc
    return _classify(
        store, recorded, message,
        model=model.model_name, base_url=base_url, declared=declared,
        params=model._get_invocation_params(stop=stop, **kwargs),
    )  # fmt: skip


def _rebuild(
    recorded: RecordedRequest, *, base_url: str | None, api_key: str | None
) -> tuple[Any, dict[str, Any], list[str] | None]:
    """The model and call arguments that send ``recorded`` again, checked to
    hash as the recorded request before anything is sent."""
    from langchain_openai import ChatOpenAI

    if recorded.provider != "openai":
        raise NotResendableError(
            f"request {recorded.request_hash[:12]} was recorded for provider "
            f"{recorded.provider!r}; seedlock verify re-sends OpenAI-compatible requests only"
        )
    params = recorded.params
    name = params.get("model") or recorded.model
    if not isinstance(name, str):
        raise NotResendableError(f"request {recorded.request_hash[:12]} recorded no model name")
    stop = params.get("stop")
    kwargs = {k: v for k, v in params.items() if k not in _NOT_KWARGS}
    model = ChatOpenAI(
        model=name,
        base_url=base_url,
        api_key=api_key or "sk-no-key",  # type: ignore[arg-type]
        timeout=120.0,
        max_retries=0,
    )
    # The same request: the body about to be sent hashes as recorded (a
    # locked model, the middleware's locked twin: their hash covers the final
    # body); or, for a hash of messages and invocation parameters (the
    # callback handler on a plain model), the payload hashes as recorded and
    # the model sends exactly its parameters, nothing more.
    from langchain_seedlock._hashing import request_hash

    body = model._get_request_payload(recorded.messages, stop=stop, **kwargs)
    if request_hash("openai", body) == recorded.request_hash:
        return model, kwargs, stop
    if recorded.recorded_hash() != recorded.request_hash:
        raise NotResendableError(
            f"request {recorded.request_hash[:12]} would not be the same request if re-sent: "
            "neither its payload nor the body ChatOpenAI would send hashes as recorded; "
            "not re-sent"
        )
    sent = _asked(model._get_invocation_params(stop=stop, **kwargs))
    if sent != _asked(params):
        differ = sorted(k for k in set(sent) | set(_asked(params)) if sent.get(k) != params.get(k))
        raise NotResendableError(
            f"request {recorded.request_hash[:12]} would not be the same request if re-sent "
            f"with ChatOpenAI (parameters differ: {', '.join(differ)}); not re-sent"
        )
    return model, kwargs, stop


def _asked(params: Mapping[str, Any]) -> dict[str, Any]:
    """What a request asks the server for: its body without what LangChain
    adds to invocation parameters (the model's alias, a stop left unset)."""
    from langchain_seedlock._body import effective_params
    from langchain_seedlock._payload import LEFT_OUT

    return {
        k: v
        for k, v in effective_params(params).items()
        if k not in LEFT_OUT and k != "model_name" and not (k == "stop" and v is None)
    }


def _classify(
    store: BaselineStore,
    recorded: RecordedRequest,
    message: Any,
    *,
    model: str,
    base_url: str | None,
    declared: Fields,
    params: Mapping[str, Any],
) -> Resent:
    from langchain_seedlock import _identity
    from langchain_seedlock._observe import record_from_result

    record = record_from_result(
        provider="openai",
        request_model=model,
        outputs=[message],
        sent=recorded.messages,
        params=params,
        base_url=base_url,
    )
    # The server's own fields are part of the identity: wait for them, as
    # the monitor has them for every call but a process's first.
    _identity.SERVERS.get(base_url, record.request_model)
    _identity.SERVERS.wait()
    identity = _identity.identity_for(
        fingerprint=record.system_fingerprint, model=record.response_model,
        service_tier=record.service_tier, base_url=base_url,
        request_model=record.request_model, declared=declared,
    )  # fmt: skip
    outputs = store.outputs_for(recorded.request_hash)
    history: dict[str, dict[str, OutputSeen]] = {}
    for o in outputs:
        history.setdefault(o.backend_id, {})[o.output_hash] = o
    decision = classify(record.output_hash, identity.id, history, complete=record.complete)
    then = next((o for o in outputs if o.output_hash == decision.usual_output), None)
    return Resent(
        recorded.request_hash,
        decision.verdict,
        record.output_hash,
        decision.usual_output,
        then.system_fingerprint if then is not None else None,
        record.system_fingerprint,
    )
