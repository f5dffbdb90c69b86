"""A local HTTP server speaking the chat wire formats of several providers.

Each request is recorded (path and JSON body, as the integration sent it) and
answered in the format its path asks for, so the real integration parses a
real response:

- ``/api/chat``: Ollama (NDJSON lines when streaming, one JSON object otherwise);
- ``...:generateContent`` / ``...:streamGenerateContent``: Gemini's REST API
  (server-sent events when streaming);
- anything else: OpenAI-style chat completions (Mistral, Groq, DeepSeek, xAI),
  with ``system_fingerprint`` when `ProviderStub.fingerprint` is set.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

REPLY = ("Mars ", "is red.")


@dataclass(frozen=True)
class Received:
    path: str
    body: dict[str, Any]


class ProviderStub:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.fingerprint: str | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ProviderStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        self.fingerprint = None
        with self._lock:
            self.requests.clear()

    @property
    def last(self) -> Received:
        with self._lock:
            return self.requests[-1]

    def record(self, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(Received(path, body))


def _openai(stub: ProviderStub, body: dict[str, Any], stream: bool) -> Iterator[dict[str, Any]]:
    base: dict[str, Any] = {"id": "chatcmpl-1", "created": 1, "model": body.get("model", "m")}
    if stub.fingerprint is not None:
        base["system_fingerprint"] = stub.fingerprint
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    if not stream:
        message = {"role": "assistant", "content": "".join(REPLY)}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        yield {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        return
    for i, piece in enumerate(REPLY):
        last = i == len(REPLY) - 1
        delta = {"role": "assistant", "content": piece}
        choice = {"index": 0, "delta": delta, "finish_reason": "stop" if last else None}
        chunk = {**base, "object": "chat.completion.chunk", "choices": [choice]}
        yield {**chunk, "usage": usage} if last else chunk


def _ollama(body: dict[str, Any], stream: bool) -> Iterator[dict[str, Any]]:
    base = {"model": body.get("model", "m"), "created_at": "2026-12-03T10:00:00Z"}
    done = {
        "done": True,
        "done_reason": "stop",
        "total_duration": 1000,
        "prompt_eval_count": 3,
        "eval_count": 2,
    }
    if not stream:
        yield {**base, "message": {"role": "assistant", "content": "".join(REPLY)}, **done}
        return
    for piece in REPLY:
        yield {**base, "message": {"role": "assistant", "content": piece}, "done": False}
    yield {**base, "message": {"role": "assistant", "content": ""}, **done}


def _gemini(stream: bool) -> Iterator[dict[str, Any]]:
    pieces = REPLY if stream else ("".join(REPLY),)
    for i, piece in enumerate(pieces):
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": piece}], "role": "model"},
            "index": 0,
        }
        if i == len(pieces) - 1:
            candidate["finishReason"] = "STOP"
        yield {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": 3,
                "candidatesTokenCount": 2,
                "totalTokenCount": 5,
            },
            "modelVersion": "gemini-stub-001",
            "responseId": "resp-1",
        }


def _handler(stub: ProviderStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            stub.record(self.path, body)
            if self.path.startswith("/api/chat"):
                stream = body.get("stream", True)
                self._send(_ollama(body, stream), "application/x-ndjson", "ndjson", stream)
            elif ":streamGenerateContent" in self.path:
                self._send(_gemini(stream=True), "text/event-stream", "sse-plain", True)
            elif ":generateContent" in self.path:
                self._send(_gemini(stream=False), "application/json", "json", False)
            else:
                stream = bool(body.get("stream"))
                kind = "sse" if stream else "json"
                self._send(_openai(stub, body, stream), _TYPES[kind], kind, stream)

        def _send(
            self, messages: Iterator[dict[str, Any]], content_type: str, kind: str, stream: bool
        ) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            if not stream:
                data = json.dumps(next(messages)).encode()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_header("Connection", "close")
            self.end_headers()
            for message in messages:
                text = json.dumps(message)
                line = f"{text}\n" if kind == "ndjson" else f"data: {text}\n\n"
                self.wfile.write(line.encode())
            if kind == "sse":
                self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

    return Handler


_TYPES = {"sse": "text/event-stream", "json": "application/json"}


@pytest.fixture(scope="session")
def _provider_stub_server() -> Iterator[ProviderStub]:
    stub = ProviderStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def provider_stub(_provider_stub_server: ProviderStub) -> ProviderStub:
    """The multi-provider stub, with no requests recorded and no fingerprint."""
    _provider_stub_server.reset()
    return _provider_stub_server
