#!/usr/bin/env bash
# Set up (first run builds llama-server: ~8 min) and run the reproducibility
# probe. With no OPENAI_API_KEY / --base-url it runs against the embedded
# SmolLM2 model on 127.0.0.1. Extra arguments go to `seedlock probe`, e.g.
#   bash scripts/probe.sh --preset cookbook --html cookbook.html
#   bash scripts/probe.sh --preset batch-invariance   # starts two server setups in turn
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDLOCK_SKIP_POSTGRES=1 bash scripts/setup.sh
exec .venv/bin/seedlock probe "$@"
