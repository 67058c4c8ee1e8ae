#!/usr/bin/env bash
# Regenerates everything generated: the CRD (from the pydantic models) into crds/ and the chart, and the
# plain install manifests (from the chart). The tests fail when a committed copy is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/llmfleet crd > crds/llmfleet.io_llmdeployments.yaml
cp crds/llmfleet.io_llmdeployments.yaml charts/llmfleet/crds/
BIN=$(bash hack/build-controlplane.sh)
"$BIN/helm" template llmfleet charts/llmfleet --namespace llmfleet-system --include-crds \
  | sed '/^# Source:/d' > manifests/install/llmfleet.yaml
