#!/usr/bin/env bash
# Runs the tests. Expects hack/setup.sh (or hack/up.sh) to have run. Extra arguments go to pytest.
#
#   ./hack/test.sh          the whole suite: static checks, then unit, integration against the real local
#                           components (API server, Redis, Prometheus, engine-sim) and the benchmarks' smoke runs
#   ./hack/test.sh --fast   static checks and unit tests only: no cluster, no servers (under two minutes)
#
# Static checks: ruff (lint and format), mypy --strict on the typed packages, the import contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "run ./hack/up.sh first (it creates .venv)" >&2; exit 2; }
fast=0
if [ "${1:-}" = "--fast" ]; then fast=1; shift; fi

step() { printf '== %s\n' "$*" >&2; }
step "ruff check";        .venv/bin/ruff check operator tests bench hack
step "ruff format";       .venv/bin/ruff format --check --quiet operator tests bench hack
step "mypy";              .venv/bin/mypy
step "import contracts";  PYTHONPATH=operator .venv/bin/lint-imports --no-cache >/dev/null \
                            || PYTHONPATH=operator .venv/bin/lint-imports --no-cache
if [ "$fast" = 1 ]; then
  step "unit tests"
  exec .venv/bin/python -m pytest tests/unit -q --timeout=300 "$@"
fi
step "all tests"
exec .venv/bin/python -m pytest --timeout=900 "$@"
