"""The embedded local backend: llama.cpp's ``llama-server`` with SmolLM2 (the ``local`` extra).

Not imported by ``import langchain_seedlock``: ``LocalServer`` there is a
lazy name that imports this package on first use.
"""

from langchain_seedlock.local._server import (
    ENV_BINARY,
    ENV_MODEL,
    MODEL_NAME,
    LocalServer,
    find_llama_server,
    find_model,
    local_backend_installed,
)

__all__ = [
    "ENV_BINARY",
    "ENV_MODEL",
    "MODEL_NAME",
    "LocalServer",
    "find_llama_server",
    "find_model",
    "local_backend_installed",
]
