#!/usr/bin/env bash
# Installs dd with its test extras into .venv and runs the whole test suite.
# This is the README's test command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[test]'
ruff check .
python -m pytest -q "$@"
