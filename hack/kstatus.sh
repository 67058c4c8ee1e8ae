#!/usr/bin/env bash
# Builds `kstatus` (hack/kstatus/main.go) from Go modules: sigs.k8s.io/cli-utils' kstatus library, the status
# rules Flux and kpt apply to any resource. The tests check the LLMDeployment status the operator really
# writes against it. Cached as ~/.cache/llmfleet/bin/kstatus-<version>; prints KSTATUS=<path>.
set -euo pipefail
CLI_UTILS_VERSION="${CLI_UTILS_VERSION:-v0.37.2}"
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
OUT="$CACHE/bin/kstatus-$CLI_UTILS_VERSION"
log() { printf '[kstatus %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
if [ -x "$OUT" ]; then echo "KSTATUS=$OUT"; exit 0; fi
command -v go >/dev/null || { echo "go is required (Go >= 1.24)" >&2; exit 2; }
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
export GOCACHE="${GOCACHE:-$CACHE/go-build}"
src="$(cd "$(dirname "$0")" && pwd)/kstatus/main.go"
work="$CACHE/build/kstatus-$CLI_UTILS_VERSION"
mkdir -p "$work" "$CACHE/bin"
cp "$src" "$work/main.go"
cd "$work"
[ -f go.mod ] || go mod init llmfleet.io/kstatus >/dev/null 2>&1
log "building kstatus from sigs.k8s.io/cli-utils@$CLI_UTILS_VERSION"
go get "sigs.k8s.io/cli-utils@$CLI_UTILS_VERSION" >/dev/null 2>&1
go mod tidy >/dev/null 2>&1
go build -trimpath -o "$OUT.tmp" . && mv "$OUT.tmp" "$OUT"
echo "KSTATUS=$OUT"
