"""Test helpers for code that uses langchain-seedlock, in the spirit of ``structlog.testing``.

- `capture_seedlock_events`: the ``seedlock.*`` events logged inside a block,
  as dicts.
- `FakeBackend`: an OpenAI-compatible server on 127.0.0.1 with scripted
  answers, fingerprints and drift, for a locked model or any ``ChatOpenAI``.
- `assert_reproduced`, `assert_drift`, `events_named`: assertions on captured
  events.

The package's own test suite uses these; nothing here needs pytest.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from langchain_seedlock import _events

__all__ = [
    "FakeBackend",
    "assert_drift",
    "assert_reproduced",
    "capture_seedlock_events",
    "default_reply",
    "events_named",
    "forget_server_info",
    "raw_completion",
    "sample_from_schema",
    "wait_for_server_info",
]


@contextlib.contextmanager
def capture_seedlock_events() -> Iterator[list[dict[str, Any]]]:
    """Capture the ``seedlock.*`` events logged inside the block, at every level.

    Each event is a dict: ``event`` (the name), ``log_level`` and its
    key-value pairs. As ``structlog.testing.capture_logs`` does, it replaces
    structlog's processors (and its level filter) for the duration of the block.

    Example:
        ```python
        with capture_seedlock_events() as events:
            chain.invoke(...)
        assert_reproduced(events)
        ```
    """
    captured: list[dict[str, Any]] = []

    def keep(_logger: Any, method_name: str, event_dict: Any) -> Any:
        if str(event_dict.get("event", "")).startswith("seedlock."):
            captured.append({**event_dict, "log_level": method_name})
        raise structlog.DropEvent

    # What structlog.testing.capture_logs does, with a filter: the list fills
    # while the block runs.
    config = structlog.get_config()
    saved = {"processors": config["processors"], "wrapper_class": config["wrapper_class"]}
    structlog.configure(processors=[keep], wrapper_class=structlog.make_filtering_bound_logger(0))
    try:
        yield captured
    finally:
        structlog.configure(**saved)


def events_named(events: Sequence[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The events called ``name`` (``"seedlock.output_drift"`` or ``"output_drift"``)."""
    full = name if name.startswith("seedlock.") else f"seedlock.{name}"
    return [e for e in events if e.get("event") == full]


def assert_reproduced(events: Sequence[dict[str, Any]], *, min_calls: int = 1) -> None:
    """Fail unless at least ``min_calls`` calls were observed and none drifted,
    changed fingerprint or failed."""
    calls = events_named(events, _events.CALL)
    if len(calls) < min_calls:
        raise AssertionError(
            f"expected at least {min_calls} seedlock.call event(s), got {len(calls)}"
        )
    bad = [
        e
        for e in events
        if e.get("event")
        in (_events.OUTPUT_DRIFT, _events.FINGERPRINT_CHANGED, _events.CALL_FAILED)
    ]
    if bad:
        summary = ", ".join(
            f"{e['event']} (request {str(e.get(_events.K_REQUEST_HASH, '?'))[:12]})" for e in bad
        )
        raise AssertionError(f"expected every call to reproduce; got {summary}")


def assert_drift(
    events: Sequence[dict[str, Any]], *, explained: bool | None = None, count: int | None = None
) -> list[dict[str, Any]]:
    """Fail unless ``seedlock.output_drift`` was logged (``count`` times, if
    given; all with ``seedlock.explained == explained``, if given). Returns them."""
    drifts = events_named(events, _events.OUTPUT_DRIFT)
    if not drifts:
        raise AssertionError("expected a seedlock.output_drift event, got none")
    if count is not None and len(drifts) != count:
        raise AssertionError(f"expected {count} seedlock.output_drift event(s), got {len(drifts)}")
    if explained is not None:
        wrong = [d for d in drifts if d.get(_events.K_EXPLAINED) is not explained]
        if wrong:
            raise AssertionError(
                f"expected drift with explained={explained}; "
                f"{len(wrong)} of {len(drifts)} had explained={not explained}"
            )
    return drifts


Body = dict[str, Any]


def wait_for_server_info(timeout: float = 5.0) -> bool:
    """Wait until the background fetches of servers' self-descriptions (the
    ``server`` fields of the backend identity) are done; False on timeout.
    Calls never wait for them: a test that needs them known waits here."""
    from langchain_seedlock._identity import SERVERS

    return SERVERS.wait(timeout)


def forget_server_info() -> None:
    """Forget every server's cached self-description and declared settings
    (between tests that reuse one `FakeBackend`)."""
    from langchain_seedlock._identity import SERVERS

    SERVERS.clear()


def default_reply(body: Body) -> str:
    seed = body.get("seed")
    last = body["messages"][-1].get("content") if body.get("messages") else ""
    if isinstance(last, list):
        last = " ".join(p.get("text", "") for p in last if isinstance(p, dict))
    if seed is None:
        return f"unseeded {random.random():.12f} {last}"
    temperature = body.get("temperature")
    return f"seed={seed} t={temperature} says: {last}"


class FakeBackend:
    """An OpenAI-compatible chat completions server on 127.0.0.1, for tests.

    Real HTTP, so every client path (sync, async, streaming) runs as in
    production. Point any OpenAI-style model at `base_url`; change the
    attributes below at any time (between calls) to script drift.

    Attributes:
        fingerprint: the ``system_fingerprint`` sent (None omits the key).
        fingerprint_chunks: when streaming, which chunks carry it: ``"all"``,
            ``"last"`` (the one with ``finish_reason``, as OpenAI does),
            ``"first"`` or ``"none"``.
        reply: a string, or a function of the request body returning one; the
            default is deterministic for a seeded request and random without.
        variants: ``[(text, weight), ...]``: a seeded request is answered by
            one of these, drawn by weight (a backend whose seed is
            best-effort); drawn from a random generator seeded
            with 0 at start and at `reset`, so a test run repeats.
        tool_calls: ``[{"name": ..., "arguments": {...}}]`` to answer with, or
            a function of the request body returning such a list (or None).
        model_name: the resolved ``model`` to answer with (default: as asked).
        delay: seconds to wait before answering.
        status: an HTTP status other than 200 answers an error.
        raw_response / raw_sse: bytes sent as they are (malformed responses).
        props: the answer to ``GET /props`` (a llama.cpp server describing
            itself: ``build_info``, ``total_slots``...); None answers 404, as
            a server that does not describe itself.
        requests: every request body received, in order (thread-safe).

    Example:
        ```python
        from langchain_seedlock import LockedChatOpenAI, SeedLock
        from langchain_seedlock.testing import FakeBackend

        with FakeBackend() as backend:
            model = LockedChatOpenAI(model="m", base_url=backend.base_url,
                                     api_key="none", lock=SeedLock(seed=1))
            model.invoke("hi")
            assert backend.last_request["seed"] == 1
        ```
    """

    # The scriptable attributes; their defaults are set in one place, `reset`.
    fingerprint: str | None
    fingerprint_chunks: str
    reply: str | Callable[[Body], str]
    variants: Sequence[tuple[str, float]] | None
    tool_calls: list[dict[str, Any]] | Callable[[Body], Any] | None
    auto_tools: bool
    model_name: str | None
    delay: float
    status: int
    raw_response: bytes | None
    raw_sse: bytes | None
    props: Body | None

    def __init__(self, *, port: int = 0) -> None:
        """``port``: 0 picks a free one; a stopped backend's port starts a
        "restarted" server at the same `base_url`."""
        self.requests: list[Body] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()  # open client connections
        self.reset()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeBackend:
        """Serve in a daemon thread; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket and the open connections (as a
        server that goes down does: a client's kept-alive connection fails)."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Back to the defaults; forget the requests received."""
        self.fingerprint = "fp_stub_1"
        self.fingerprint_chunks = "last"
        self.reply = default_reply
        self.variants = None
        self._variant_rng = random.Random(0)
        self.tool_calls = None
        self.auto_tools = True
        self.model_name = None
        self.delay = 0.0
        self.status = 200
        self.raw_response = None
        self.raw_sse = None
        self.props = None
        with self._lock:
            self.requests.clear()

    @property
    def last_request(self) -> Body:
        with self._lock:
            return self.requests[-1]

    # -- building answers -------------------------------------------------
    def _text(self, body: Body, index: int) -> str:
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
        if schema is not None and self.reply is default_reply:
            return json.dumps(sample_from_schema(schema))
        if (body.get("response_format") or {}).get(
            "type"
        ) == "json_object" and self.reply is default_reply:
            return json.dumps({"answer": "stub"})
        if self.variants and body.get("seed") is not None:
            texts, weights = zip(*self.variants, strict=True)
            with self._lock:
                text = self._variant_rng.choices(texts, weights)[0]
        else:
            text = self.reply(body) if callable(self.reply) else self.reply
        return text if index == 0 else f"{text} #{index}"

    def _tool_calls(self, body: Body) -> list[dict[str, Any]] | None:
        calls = self.tool_calls(body) if callable(self.tool_calls) else self.tool_calls
        if calls is None and self.auto_tools:
            calls = _auto_tool_call(body)
        if not calls:
            return None
        return [
            {
                "id": f"call_{i}_{random.randrange(10**8)}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for i, c in enumerate(calls)
        ]

    def completion(self, body: Body) -> Body:
        n = int(body.get("n") or 1)
        calls = self._tool_calls(body)
        choices = []
        for i in range(n):
            text = "" if calls else self._text(body, i)
            message: Body = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            choice: Body = {
                "index": i,
                "message": message,
                "finish_reason": "tool_calls" if calls else "stop",
            }
            if body.get("logprobs"):
                choice["logprobs"] = {
                    "content": [
                        {"token": tok, "logprob": -0.5, "bytes": None, "top_logprobs": []}
                        for tok in _tokens(text)
                    ]
                }
            choices.append(choice)
        out: Body = {
            "id": f"chatcmpl-{random.randrange(10**9)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name or body.get("model", "stub"),
            "choices": choices,
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }
        if self.fingerprint is not None:
            out["system_fingerprint"] = self.fingerprint
        return out

    def stream_chunks(self, body: Body) -> Iterator[Body]:
        calls = self._tool_calls(body)
        text = "" if calls else self._text(body, 0)
        pieces: list[Body] = [{"role": "assistant", "content": ""}]
        if calls:
            for i, call in enumerate(calls):
                pieces.append({"tool_calls": [{"index": i, **call}]})
        else:
            pieces += [{"content": tok} for tok in _tokens(text)]
        base = {
            "id": "chatcmpl-stream",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model_name or body.get("model", "stub"),
        }
        total = len(pieces) + 1
        for i, delta in enumerate([*pieces, {}]):
            last = i == total - 1
            chunk: Body = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            if last:
                chunk["choices"][0]["finish_reason"] = "tool_calls" if calls else "stop"
            where = self.fingerprint_chunks
            if self.fingerprint is not None and (
                where == "all" or (where == "last" and last) or (where == "first" and i == 0)
            ):
                chunk["system_fingerprint"] = self.fingerprint
            yield chunk
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
            yield {**base, "choices": [], "usage": usage}


def raw_completion(**overrides: Any) -> bytes:
    """A valid chat completion body (no fingerprint) for ``stub.raw_response``;
    ``key=...`` removes a key, any other value replaces it."""
    body: Body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    for key, value in overrides.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps(body).encode()


def sample_from_schema(
    schema: Any, defs: dict[str, Any] | None = None, text: str = "stub text"
) -> Any:
    """A value that satisfies a JSON schema (enough of JSON schema for tool args)."""
    if not isinstance(schema, dict):
        return "x"
    defs = {**(defs or {}), **schema.get("$defs", {}), **schema.get("definitions", {})}
    if "$ref" in schema:
        return sample_from_schema(defs[schema["$ref"].split("/")[-1]], defs, text)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return sample_from_schema(options[0], defs, text)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: sample_from_schema(sub, defs, text) for name, sub in props.items()}
    if kind == "array":
        return [sample_from_schema(schema.get("items", {}), defs, text)]
    return {"integer": 3, "number": 3.0, "boolean": True, "null": None}.get(kind, text)


def _auto_tool_call(body: Body) -> list[dict[str, Any]] | None:
    """Call a tool when tools are offered and the last message is not a tool result."""
    tools = body.get("tools") or []
    messages = body.get("messages") or []
    choice = body.get("tool_choice")
    if not tools or choice == "none" or (messages and messages[-1].get("role") == "tool"):
        return None
    tool = tools[0]
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        tool = next((t for t in tools if t["function"]["name"] == wanted), tool)
    fn = tool["function"]
    # Strings echo the prompt, so a test can find its own words in the arguments.
    last = messages[-1].get("content") if messages else ""
    text = last if isinstance(last, str) and last else "stub text"
    return [
        {
            "name": fn["name"],
            "arguments": sample_from_schema(fn.get("parameters") or {}, text=text[:80]),
        }
    ]


def _embeddings(body: Body) -> Body:
    """Deterministic 8-dimensional vectors derived from each input's bytes."""
    import hashlib

    inputs = body.get("input")
    texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
    data = []
    for i, text in enumerate(texts):
        digest = hashlib.sha256(str(text).encode()).digest()
        data.append({"object": "embedding", "index": i, "embedding": [b / 255 for b in digest[:8]]})
    return {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }


def _tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _make_handler(stub: FakeBackend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with stub._lock:
                stub._connections.add(self.connection)

        def finish(self) -> None:
            with stub._lock:
                stub._connections.discard(self.connection)
            super().finish()

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._json(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
            elif self.path.rstrip("/") == "/props" and stub.props is not None:
                self._json(200, stub.props)
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with stub._lock:
                stub.requests.append(body)
            if stub.delay:
                time.sleep(stub.delay)
            if self.path.rstrip("/").endswith("/embeddings"):
                self._json(200, _embeddings(body))
                return
            if stub.status != 200:
                self._json(
                    stub.status, {"error": {"message": "stub error", "type": "server_error"}}
                )
                return
            if body.get("stream") and stub.raw_sse is not None:
                self._raw(stub.raw_sse, "text/event-stream")
                return
            if stub.raw_response is not None and not body.get("stream"):
                self._raw(stub.raw_response)
                return
            if body.get("stream"):
                self._sse(stub.stream_chunks(body))
            else:
                self._json(200, stub.completion(body))

        def _raw(self, data: bytes, content_type: str = "application/json") -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _json(self, status: int, payload: Body) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _sse(self, chunks: Iterator[Body]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in chunks:
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

    return Handler
