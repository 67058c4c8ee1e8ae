#!/usr/bin/env bash
# Installs the peers the benchmarks compare against, each in its own virtualenv under
# ~/.cache/llmfleet/peers (they pin their own dependency versions): LiteLLM's proxy (PyPI) and Portkey's
# open-source gateway (npm, run with node).
set -euo pipefail
PEERS="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}/peers"
LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"
PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
if [ ! -x "$PEERS/litellm/bin/litellm" ]; then
  echo "[peers] installing litellm[proxy]==$LITELLM_VERSION into $PEERS/litellm" >&2
  python3 -m venv "$PEERS/litellm"
  "$PEERS/litellm/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"
fi
if [ ! -f "$PEERS/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
  if command -v npm >/dev/null; then
    echo "[peers] installing @portkey-ai/gateway@$PORTKEY_VERSION into $PEERS/portkey" >&2
    mkdir -p "$PEERS/portkey"
    # --ignore-scripts: its postinstall runs patch-package for its own development tree, not needed to run it
    (cd "$PEERS/portkey" && npm install -s --no-audit --no-fund --ignore-scripts "@portkey-ai/gateway@$PORTKEY_VERSION" >&2)
  else
    echo "[peers] no npm: Portkey's gateway is skipped" >&2
  fi
fi
if [ "${1:-}" = "--granian" ]; then
  # granian runs the gateway itself (bench/granian_app.py), so it goes into .venv beside llmfleet
  GRANIAN_VERSION="${GRANIAN_VERSION:-2.8.9}"
  "$(dirname "$0")/../.venv/bin/pip" install -q "granian==$GRANIAN_VERSION" >&2
fi
echo "$PEERS/litellm/bin/litellm"
