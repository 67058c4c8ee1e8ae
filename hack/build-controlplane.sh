#!/usr/bin/env bash
# Builds the local control plane from Go modules (no Docker, no prebuilt downloads):
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and etcd from one
# generated Go module that requires k8s.io/kubernetes and replaces each staging module
# by its published v0.X.Y; kwok and helm with `go install`. Binaries are cached under
# ~/.cache/llmfleet/bin/<k8s-version>/ and the build is skipped when they are present.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
BIN="$CACHE/bin/$K8S_VERSION"
WORK="$CACHE/build/controlplane-$K8S_VERSION"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
export GOCACHE="${GOCACHE:-$CACHE/go-build}"

log() { printf '[build-controlplane %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

want=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm kwok-stages.yaml)
missing=()
for b in "${want[@]}"; do [ -e "$BIN/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then
  log "all binaries cached in $BIN"
  echo "$BIN"
  exit 0
fi
log "building ${missing[*]} into $BIN (Kubernetes $K8S_VERSION, kwok $KWOK_VERSION, helm $HELM_VERSION)"
mkdir -p "$BIN" "$WORK"
command -v go >/dev/null || { echo "go is required (Go >= 1.26)" >&2; exit 2; }

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
staging_version="v0.${K8S_VERSION#v1.}"

cd "$WORK"
if [ ! -f go.mod ] || ! grep -q "k8s.io/kubernetes $K8S_VERSION" go.mod; then
  log "generating go.mod from k8s.io/kubernetes@$K8S_VERSION's own replace block"
  kmod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  goline=$(grep -E '^go ' "$kmod")
  {
    echo "module llmfleet.io/controlplane"
    echo
    echo "$goline"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$kmod" | grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging' | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "resolving modules (go mod tidy)"
  go mod tidy -e >&2
fi

ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [ -x "$BIN/$b" ] && continue
  log "compiling $b (tens of minutes on 2 cores for the first one)"
  t0=$SECONDS
  go build -trimpath -ldflags "$ld" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b" && mv "$BIN/$b.tmp" "$BIN/$b"
  log "$b done in $((SECONDS - t0)) s"
done
if [ ! -x "$BIN/etcd" ]; then
  log "compiling etcd"
  t0=$SECONDS
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3 && mv "$BIN/etcd.tmp" "$BIN/etcd"
  log "etcd done in $((SECONDS - t0)) s"
fi
if [ ! -x "$BIN/kwok" ]; then
  log "compiling kwok $KWOK_VERSION"
  t0=$SECONDS
  GOBIN="$BIN" GOFLAGS= go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  log "kwok done in $((SECONDS - t0)) s"
fi
if [ ! -f "$BIN/kwok-stages.yaml" ]; then
  # kwok >= 0.8 takes its stages (node heartbeat, pod ready/complete/delete) from config; use the
  # "fast" stages its module ships.
  kdir=$(GOFLAGS= go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  for f in "$kdir"/kustomize/stage/node/fast/*.yaml "$kdir"/kustomize/stage/node/heartbeat/*.yaml "$kdir"/kustomize/stage/pod/fast/*.yaml; do
    case "$f" in */kustomization.yaml) continue ;; esac
    printf -- '---\n'; cat "$f"
  done > "$BIN/kwok-stages.yaml.tmp" && mv "$BIN/kwok-stages.yaml.tmp" "$BIN/kwok-stages.yaml"
fi
if [ ! -x "$BIN/helm" ]; then
  log "compiling helm $HELM_VERSION"
  t0=$SECONDS
  GOBIN="$BIN" GOFLAGS= go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  log "helm done in $((SECONDS - t0)) s"
fi
# The binaries are all that is used from here on: the Go build cache (about 4 GiB) is dropped unless asked
# to keep it (LLMFLEET_KEEP_GO_CACHE=1, for whoever bumps versions and rebuilds often).
if [ "${LLMFLEET_KEEP_GO_CACHE:-0}" != 1 ] && [ "$GOCACHE" = "$CACHE/go-build" ]; then
  rm -rf "$GOCACHE"
fi
log "done: $BIN"
echo "$BIN"
