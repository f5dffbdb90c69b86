#!/usr/bin/env bash
# Run every example against the embedded local model (or the stub it ships);
# any failure fails, and only a failing example's output is shown.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for example in examples/*.py; do
    echo "--> $example"
    if ! .venv/bin/python "$example" > "$log" 2>&1; then
        cat "$log"
        echo "example failed: $example" >&2
        exit 1
    fi
done
