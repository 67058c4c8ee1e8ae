#!/usr/bin/env bash
# A real local Kubernetes control plane without Docker: etcd, kube-apiserver (RBAC on),
# kube-controller-manager, kube-scheduler and kwok (fake GPU nodes in a spot and an on-demand pool,
# pod IPs from a 127.X.0.0/16 of its own so local processes can serve on them).
#
#   hack/cluster.sh up      start (builds the binaries first if they are not cached), print KUBECONFIG
#   hack/cluster.sh down    stop exactly what `up` started
#   hack/cluster.sh env     print `export KUBECONFIG=…` and PATH for the cached kubectl/helm
#   hack/cluster.sh status  show what is running
#
# LLMFLEET_CLUSTER_DIR chooses the run directory (default ~/.cache/llmfleet/run/cluster), so tests can
# run their own cluster beside a developer's.
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSION="${K8S_VERSION:-v1.36.3}"
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
BIN="$CACHE/bin/$K8S_VERSION"
RUN="${LLMFLEET_CLUSTER_DIR:-$CACHE/run/cluster}"
KCFG="$RUN/kubeconfig"
# Each cluster takes its own /16 of loopback (127.64–127.243), so two clusters on one machine (a developer's
# `dev up` beside the tests, or processes a killed runner left behind) never hand out the same pod IP:port.
POD_CIDR="${LLMFLEET_POD_CIDR:-127.$((64 + RANDOM % 180)).0.0/16}"
SPOT_NODES="${LLMFLEET_SPOT_NODES:-2}"
ONDEMAND_NODES="${LLMFLEET_ONDEMAND_NODES:-2}"
log() { printf '[cluster %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() {  # name, command...
  local name=$1; shift
  nohup "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

certs() {
  local d="$RUN/pki"; mkdir -p "$d"; cd "$d"
  [ -f ca.crt ] && { cd - >/dev/null; return; }
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 -subj "/CN=llmfleet-dev-ca" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' > server.ext
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=kube-apiserver" 2>/dev/null
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 365 -extfile server.ext 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=llmfleet-admin" 2>/dev/null
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 365 -extfile client.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  cd - >/dev/null
}

kubeconfig() {  # api port
  local d="$RUN/pki"
  cat >"$KCFG" <<KC
apiVersion: v1
kind: Config
clusters:
- name: llmfleet-dev
  cluster: {server: "https://127.0.0.1:$1", certificate-authority: "$d/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$d/admin.crt", client-key: "$d/admin.key"}
contexts:
- name: llmfleet-dev
  context: {cluster: llmfleet-dev, user: admin, namespace: default}
current-context: llmfleet-dev
KC
}

wait_for() {  # description, seconds, command...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then log "timed out waiting for $what"; return 1; fi
    sleep 0.5
  done
}

nodes_yaml() {
  local pool=$1 count=$2 i
  for i in $(seq 1 "$count"); do
    cat <<NODE
---
apiVersion: v1
kind: Node
metadata:
  name: gpu-$pool-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels:
    type: kwok
    kubernetes.io/hostname: gpu-$pool-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node.kubernetes.io/instance-type: p5.48xlarge
    nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
    llmfleet.io/capacity-type: $pool
    topology.kubernetes.io/zone: local-a
spec:
$( [ "$pool" = spot ] && printf '  taints:\n  - {key: llmfleet.io/capacity-type, value: spot, effect: NoSchedule}\n' || printf '  taints: []\n')
status:
  allocatable: {cpu: "192", memory: 2048Gi, pods: "110", nvidia.com/gpu: "8", ephemeral-storage: 1Ti}
  capacity: {cpu: "192", memory: 2048Gi, pods: "110", nvidia.com/gpu: "8", ephemeral-storage: 1Ti}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake, kernelVersion: fake, osImage: kwok, containerRuntimeVersion: fake, bootID: "", machineID: "", systemUUID: ""}
  phase: Running
NODE
  done
}

up() {
  bash hack/build-controlplane.sh >/dev/null
  mkdir -p "$RUN"
  if running kube-apiserver && [ -f "$KCFG" ]; then
    log "already running ($RUN)"; echo "export KUBECONFIG=$KCFG"; return
  fi
  down quiet || true
  certs
  local etcd_port etcd_peer api_port; etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port)
  log "starting etcd on 127.0.0.1:$etcd_port"
  rm -rf "$RUN/etcd"
  start etcd "$BIN/etcd" --data-dir "$RUN/etcd" --name dev \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "dev=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --quota-backend-bytes 4294967296 \
    --log-level warn
  wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"
  log "starting kube-apiserver on https://127.0.0.1:$api_port"
  local p="$RUN/pki"
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$p/server.crt" --tls-private-key-file "$p/server.key" --client-ca-file "$p/ca.crt" \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --api-audiences https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/16 --authorization-mode RBAC --allow-privileged \
    --audit-log-path "$RUN/audit.log" --audit-policy-file hack/audit-policy.yaml --audit-log-maxsize 200 \
    --enable-priority-and-fairness=false --max-requests-inflight 2000 --max-mutating-requests-inflight 1000 \
    --cert-dir "$RUN/apiserver-certs" --v 0
  kubeconfig "$api_port"
  wait_for "kube-apiserver /readyz" 120 curl -sf --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" "https://127.0.0.1:$api_port/readyz"
  log "starting kube-controller-manager, kube-scheduler and kwok"
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$KCFG" --leader-elect=false \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" --use-service-account-credentials=false \
    --bind-address 127.0.0.1 --secure-port 0 --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
    --kube-api-qps 200 --kube-api-burst 400 --concurrent-deployment-syncs 20 --concurrent-replicaset-syncs 20 --v 0
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$KCFG" --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
    --kube-api-qps 200 --kube-api-burst 400
  start kwok "$BIN/kwok" --kubeconfig "$KCFG" --config "$BIN/kwok-stages.yaml" --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake --cidr "$POD_CIDR" --node-ip 127.0.0.1
  { nodes_yaml on-demand "$ONDEMAND_NODES"; nodes_yaml spot "$SPOT_NODES"; } > "$RUN/nodes.yaml"
  KUBECONFIG="$KCFG" wait_for "default namespace" 60 "$BIN/kubectl" get namespace default
  KUBECONFIG="$KCFG" "$BIN/kubectl" apply -f "$RUN/nodes.yaml" >/dev/null
  KUBECONFIG="$KCFG" wait_for "kwok nodes Ready" 60 "$BIN/kubectl" wait --for=condition=Ready node --all --timeout=2s
  KUBECONFIG="$KCFG" wait_for "default service account" 60 "$BIN/kubectl" get serviceaccount default
  log "ready: $(KUBECONFIG="$KCFG" "$BIN/kubectl" get nodes --no-headers | wc -l) nodes; logs in $RUN"
  echo "export KUBECONFIG=$KCFG"
}

down() {
  local quiet=${1:-}
  for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    if running "$name"; then
      kill "$(cat "$RUN/$name.pid")" 2>/dev/null || true
      for _ in $(seq 1 50); do running "$name" || break; sleep 0.1; done
      running "$name" && kill -9 "$(cat "$RUN/$name.pid")" 2>/dev/null || true
      [ -z "$quiet" ] && log "stopped $name"
    fi
    rm -f "$RUN/$name.pid"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "export KUBECONFIG=$KCFG"; echo "export PATH=$BIN:\$PATH" ;;
  status) for n in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
            if running "$n"; then echo "$n running (pid $(cat "$RUN/$n.pid"))"; else echo "$n stopped"; fi; done ;;
  *) echo "usage: hack/cluster.sh up|down|env|status" >&2; exit 2 ;;
esac
