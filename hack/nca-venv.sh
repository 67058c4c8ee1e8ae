#!/usr/bin/env bash
# IBM's NetworkPolicy analyser (network-config-analyzer on PyPI, `nca`), in a virtualenv of its own under
# ~/.cache/llmfleet/nca-venv/<version>: the local control plane has no network plugin, so
# tests/integration/test_network_isolation.py has nca compute who can reach whom from the rendered policies,
# the pods' labels and the namespaces. Its own venv because it pins PyYAML below what the kubernetes client
# needs. Prints the path of `nca`. Safe to run again: skips what is there (~20 s cold).
set -euo pipefail
VERSION="${NCA_VERSION:-2.1.0}"
OUT="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}/nca-venv/$VERSION"
if [ ! -f "$OUT/.complete" ]; then
  rm -rf "$OUT"
  "${PYTHON:-python3}" -m venv "$OUT"
  "$OUT/bin/pip" install -q --disable-pip-version-check "network-config-analyzer==$VERSION" >&2
  "$OUT/bin/nca" --version >&2
  touch "$OUT/.complete"
fi
echo "$OUT/bin/nca"
