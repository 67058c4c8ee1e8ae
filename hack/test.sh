#!/usr/bin/env bash
# Runs the whole test suite (unit, integration against real local components, benchmark smoke runs).
# Expects hack/setup.sh (or hack/up.sh) to have run. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "run ./hack/up.sh first (it creates .venv)" >&2; exit 2; }
exec .venv/bin/python -m pytest --timeout=900 "$@"
