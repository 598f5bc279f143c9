#!/usr/bin/env bash
# The README's test command, and what .ci/run calls: installs danmaku with its
# test extras into .venv, starts throwaway PostgreSQL and Redis servers where
# their binaries are installed (scripts/services.sh), runs ruff and the whole
# test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[test]'
ruff check .
. scripts/services.sh
python -m pytest -q "$@"
