#!/usr/bin/env bash
# Run every example against the embedded local model; any failure fails.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
for example in examples/*.py; do
    echo "--> $example"
    .venv/bin/python "$example" > /dev/null
done
