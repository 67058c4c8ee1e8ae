#!/usr/bin/env bash
# One command on a fresh machine: set everything up, then run the main job.
# Main job: size the examples (llmfleet plan), then `llmfleet dev up`: a local Kubernetes control plane
# (built from Go modules), the operator, engine/gateway/cache pods run as local processes, one
# LLMDeployment reconciled to Ready and a streaming completion served through its gateway.
# Pass --keep to leave the stack running (see the printed KUBECONFIG).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
for f in manifests/examples/*.yaml; do
  .venv/bin/llmfleet plan -f "$f"
  echo
done
exec .venv/bin/llmfleet dev up "$@"
