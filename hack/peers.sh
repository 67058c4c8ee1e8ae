#!/usr/bin/env bash
# Installs the peers the benchmarks compare against, each in its own virtualenv under
# ~/.cache/llmfleet/peers (they pin their own dependency versions): LiteLLM's proxy.
set -euo pipefail
PEERS="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}/peers"
LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"
if [ ! -x "$PEERS/litellm/bin/litellm" ]; then
  echo "[peers] installing litellm[proxy]==$LITELLM_VERSION into $PEERS/litellm" >&2
  python3 -m venv "$PEERS/litellm"
  "$PEERS/litellm/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"
fi
echo "$PEERS/litellm/bin/litellm"
