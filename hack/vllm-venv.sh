#!/usr/bin/env bash
# vLLM itself, importable, for the conformance tests that need its own code at run time
# (tests/integration/test_vllm_conformance.py through hack/vllm_conform.py): its argument parser reads every
# rendered argument vector, its pydantic protocol models validate engine-sim's answers. A virtualenv of its own
# under ~/.cache/llmfleet/vllm-venv/<version> with `vllm==<tested version>` and its dependencies from PyPI (torch
# included: about 4 GB to download, 9.5 GB installed, ~5 min cold here; nothing in it needs a GPU: it runs with
# VLLM_TARGET_DEVICE=cpu). Prints the venv's python. Safe to run again: skips what is there.
# LLMFLEET_SKIP_VLLM=1 skips it (the conformance tests that need it then fail, naming this script).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${VLLM_VERSION:-$(.venv/bin/python -c 'from llmfleet.api.v1alpha1 import TESTED_VLLM_VERSION as v; print(v)')}"
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
OUT="$CACHE/vllm-venv/$VERSION"
log() { printf '[vllm-venv %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
if [ -f "$OUT/.complete" ]; then
  echo "$OUT/bin/python"
  exit 0
fi
t0=$SECONDS
rm -rf "$OUT"
PY="${PYTHON:-python3}"
"$PY" -m venv "$OUT"
log "installing vllm $VERSION and its dependencies into $OUT (torch included; a few minutes)"
# No pip cache: the wheels would take another 4 GB of disk.
"$OUT/bin/pip" install -q --no-cache-dir --upgrade pip >&2
"$OUT/bin/pip" install -q --no-cache-dir "vllm==$VERSION" >&2
VLLM_TARGET_DEVICE=cpu "$OUT/bin/python" -c 'import vllm.entrypoints.common.cli_args' >&2
touch "$OUT/.complete"
log "ready in $((SECONDS - t0)) s: $(du -sh "$OUT" | cut -f1)"
echo "$OUT/bin/python"
