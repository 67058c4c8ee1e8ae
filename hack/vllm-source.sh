#!/usr/bin/env bash
# vLLM's own source, for the conformance checks (tests/integration/test_vllm_conformance.py and
# hack/vllm_flags.py): downloads the vllm wheel of the tested release (no dependencies, no torch), keeps the
# few Python files the checks read under ~/.cache/llmfleet/vllm-src/<version> (about 1 MB) and drops the
# wheel (about 330 MB). Prints the directory. Safe to run again: skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${VLLM_VERSION:-$(.venv/bin/python -c 'from llmfleet.api.v1alpha1 import TESTED_VLLM_VERSION as v; print(v)')}"
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
OUT="$CACHE/vllm-src/$VERSION"
FILES=(
  vllm/engine/arg_utils.py
  vllm/entrypoints/common/cli_args.py
  vllm/utils/argparse_utils.py
  vllm/v1/metrics/loggers.py
  vllm/v1/metrics/buckets.py
)
log() { printf '[vllm-source %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
if [ -f "$OUT/.complete" ]; then
  echo "$OUT"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
t0=$SECONDS
log "downloading the vllm $VERSION wheel (no dependencies)"
.venv/bin/pip download -q --no-deps --only-binary=:all: "vllm==$VERSION" -d "$tmp" >&2
whl=$(ls "$tmp"/vllm-"$VERSION"-*.whl)
mkdir -p "$OUT"
.venv/bin/python - "$whl" "$OUT" "${FILES[@]}" <<'PY'
import sys, zipfile
whl, out, *files = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    for f in files:
        z.extract(f, out)
PY
touch "$OUT/.complete"
log "kept ${#FILES[@]} files in $OUT ($((SECONDS - t0)) s)"
echo "$OUT"
