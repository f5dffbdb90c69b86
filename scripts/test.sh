#!/usr/bin/env bash
# Set up everything and run every check: lint, types, docs, examples, tests.
# This is the command README.md names and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SEEDLOCK_RAISE_INTERNAL_ERRORS=1  # internal errors fail tests instead of being logged

echo "==> ruff"
.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
echo "==> mypy (strict)"
.venv/bin/mypy
echo "==> docs (mkdocs --strict)"
.venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
echo "==> examples"
bash scripts/run-examples.sh

echo "==> pytest"
set +e
.venv/bin/python -m pytest tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$rc"
