#!/usr/bin/env bash
# One command on a fresh machine: set everything up, then run the main job.
# Main job today: size and render the example LLMDeployments (llmfleet plan / render).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
for f in manifests/examples/*.yaml; do
  .venv/bin/llmfleet plan -f "$f"
  echo
done
mkdir -p build
.venv/bin/llmfleet render -f manifests/examples/llama3-8b.yaml > build/llama3-8b.rendered.yaml
echo "rendered $(grep -c '^kind:' build/llama3-8b.rendered.yaml) objects into build/llama3-8b.rendered.yaml"
