#!/usr/bin/env bash
# Sets up .venv with the test tools, then runs ruff, mypy and the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k names; -m 'not daemon' leaves out the
# tests that start `olla serve`). A test that runs past 300 s fails (pytest-timeout, pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
.venv/bin/python -m ruff check olla tests
.venv/bin/python -m ruff format --check olla tests
.venv/bin/python -m mypy
.venv/bin/python -m pytest -q "$@"
