"""Recorded request payloads: what ``seedlock verify --recorded`` re-sends.

With ``capture_content=True`` (the one opt-in for prompt content: a payload
holds the prompts, so it may hold personal data), a door's record carries
the request as JSON: the messages as LangChain dicts
(``messages_to_dict``), the model, and the request's parameters as the
request hash read them (tools, response format, sampling parameters, seed).
The store keeps one per request hash. Transport keys (headers, timeouts,
``user``...) and the API key are left out: they are not part of the request
hash, and headers may carry credentials.

`recorded_hash` recomputes the request hash of a payload the way the doors
compute it (`request_hash_from_messages`), so a re-send is checked to be the
same request before it is sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from langchain_core.messages import BaseMessage, messages_from_dict, messages_to_dict

from langchain_seedlock import _events as ev
from langchain_seedlock._hashing import (
    _INVOCATION_ONLY_KEYS,
    TRANSPORT_KEYS,
    request_hash_from_messages,
)

PAYLOAD_VERSION: Final = 1
# Never stored: not part of the request hash, and may carry credentials.
LEFT_OUT: Final = _INVOCATION_ONLY_KEYS | TRANSPORT_KEYS | {"default_headers", "headers"}


def payload_json(
    provider: str, model: str | None, sent: Sequence[BaseMessage], params: Mapping[str, Any]
) -> str | None:
    """The JSON payload of one request, or None when its parameters are not
    JSON (a payload that cannot be stored whole is not stored at all)."""
    try:
        return json.dumps(
            {
                "version": PAYLOAD_VERSION,
                "provider": provider,
                "model": model,
                "messages": messages_to_dict(sent),
                "params": {k: v for k, v in params.items() if k not in LEFT_OUT},
            },
            sort_keys=True,
            allow_nan=False,
        )
    except (TypeError, ValueError):  # a parameter that is not JSON (a Pydantic class)
        return None
    except Exception as exc:  # noqa: BLE001 - the call is recorded without its payload
        ev.log_internal_error("payload_json", exc)
        return None


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A stored payload, read back."""

    request_hash: str
    provider: str
    model: str | None
    messages: list[BaseMessage]
    params: dict[str, Any]

    def recorded_hash(self) -> str:
        """The request hash of this payload, as the doors compute it."""
        return request_hash_from_messages(self.provider, self.messages, self.params)


class PayloadError(ValueError):
    """A stored payload that cannot be read back."""


def load_payload(request_hash: str, text: str) -> RecordedRequest:
    try:
        data = json.loads(text)
        if data.get("version") != PAYLOAD_VERSION:
            raise PayloadError(
                f"payload version {data.get('version')!r}, this langchain-seedlock reads "
                f"{PAYLOAD_VERSION}: upgrade langchain-seedlock"
            )
        return RecordedRequest(
            request_hash,
            str(data["provider"]),
            data.get("model"),
            messages_from_dict(data["messages"]),
            dict(data["params"]),
        )
    except PayloadError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PayloadError(
            f"the stored payload of request {request_hash[:12]} is unreadable: {exc}"
        ) from exc
