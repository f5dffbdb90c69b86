"""What each kind of server tells about itself (`_identity.fetch_server_fields`),
against small HTTP servers on 127.0.0.1 speaking each one's real endpoints:
vLLM ``/version``, Ollama ``/api/version`` + ``/api/tags``, SGLang
``/get_server_info``, llama.cpp ``/props``, and a server that answers none."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from langchain_seedlock._identity import fetch_server_fields

OLLAMA_TAGS = {
    "models": [
        {"name": "qwen3:8b", "model": "qwen3:8b", "digest": "a" * 64, "size": 1},
        {"name": "llama3.2:latest", "model": "llama3.2:latest", "digest": "b" * 64, "size": 2},
    ]
}
SERVERS: dict[str, dict[str, Any]] = {
    "vllm": {"/version": {"version": "0.11.2"}},
    "ollama": {"/api/version": {"version": "0.12.6"}, "/api/tags": OLLAMA_TAGS},
    "sglang": {
        "/get_server_info": {
            "version": "0.5.4",
            "enable_deterministic_inference": True,
            "tp_size": 2,
            "model_path": "/models/secret-dir/qwen",
        }
    },
    "llama.cpp": {
        "/props": {
            "build_info": "b11434-portable",
            "model_path": "/home/u/m/SmolLM2.gguf",
            "total_slots": 4,
            "chat_template": "{{ messages }}",
            "default_generation_settings": {"n_ctx": 4096, "params": {"temperature": 0.8}},
        }
    },
    "unknown": {},
}


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(routes: Mapping[str, Any]) -> str:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = routes.get(self.path)
                payload = json.dumps(body if body is not None else {"error": "nf"}).encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_vllm(serve: Any) -> None:
    assert fetch_server_fields(serve(SERVERS["vllm"]), "m") == {
        "server": "vllm", "version": "0.11.2",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("model", "digest"),
    [("qwen3:8b", "a" * 64), ("llama3.2", "b" * 64), ("not-pulled", None)],
)
def test_ollama_version_and_the_model_digest(serve: Any, model: str, digest: str | None) -> None:
    fields = fetch_server_fields(serve(SERVERS["ollama"]), model)
    assert fields.pop("model_digest", None) == digest
    assert fields == {"server": "ollama", "version": "0.12.6"}


def test_sglang_deterministic_mode_is_part_of_the_identity(serve: Any) -> None:
    fields = fetch_server_fields(serve(SERVERS["sglang"]), "m")
    assert fields == {
        "server": "sglang", "version": "0.5.4", "enable_deterministic_inference": True,
        "tp_size": 2,
    }  # fmt: skip
    assert "secret-dir" not in json.dumps(fields)  # only the named fields, never paths


def test_llama_cpp_keeps_the_file_name_not_its_directory(serve: Any) -> None:
    fields = fetch_server_fields(serve(SERVERS["llama.cpp"]), "m")
    assert fields["server"] == "llama.cpp"
    assert fields["model_file"] == "SmolLM2.gguf"
    assert (fields["total_slots"], fields["n_ctx"]) == (4, 4096)
    assert "/home/u" not in json.dumps(fields)


def test_a_server_answering_none_of_them_adds_nothing(serve: Any) -> None:
    assert fetch_server_fields(serve(SERVERS["unknown"]), "m") == {}
