#!/usr/bin/env bash
# Regenerates everything generated: the chart's version (from llmfleet.__version__, the one source), the CRD
# (from the pydantic models) into crds/ and the chart, and the plain install manifests (from the chart).
# The tests fail when a committed copy is stale. --check: regenerate, then fail if anything changed.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(.venv/bin/python -c 'import llmfleet; print(llmfleet.__version__)')
sed -i -E "s/^version: .*/version: $version/; s/^appVersion: .*/appVersion: \"$version\"/" charts/llmfleet/Chart.yaml
.venv/bin/llmfleet crd > crds/llmfleet.io_llmdeployments.yaml
cp crds/llmfleet.io_llmdeployments.yaml charts/llmfleet/crds/
BIN=$(bash hack/build-controlplane.sh)
"$BIN/helm" template llmfleet charts/llmfleet --namespace llmfleet-system --include-crds \
  | sed '/^# Source:/d' > manifests/install/llmfleet.yaml
if [ "${1:-}" = "--check" ] && ! git diff --quiet -- crds charts manifests; then
  echo "generated files were stale and are regenerated now (git diff crds charts manifests); add them" >&2
  exit 1
fi
