#!/usr/bin/env bash
# Prometheus from Debian's package (no Docker, no prebuilt download): the autoscaler's integration tests and
# `llmfleet dev up` scrape the engine pods' real /metrics with it. Debian's package does not start a service
# here (no init system); llmfleet starts its own process with its own config (llmfleet.dev.prometheus).
# Prints `PROMETHEUS=<path>`.
set -euo pipefail
log() { printf '[prometheus %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
bin=$(command -v prometheus || true)
if [ -z "$bin" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "prometheus is missing: install it (Debian: apt-get install prometheus) and run this again" >&2
    exit 2
  fi
  log "installing Debian's prometheus package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
  bin=$(command -v prometheus)
fi
echo "PROMETHEUS=$bin"
