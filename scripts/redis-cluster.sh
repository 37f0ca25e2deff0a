#!/usr/bin/env bash
# Starts or stops a private Redis Cluster of 3 masters + 3 replicas on free
# loopback ports (client port and cluster bus port both chosen free, the
# bus with cluster-port, so no port+10000 can collide or overflow).
#   scripts/redis-cluster.sh start DIR [extra redis-server args]
#       -> prints the seed URL redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
#          (DIR/ports lists the six client ports, masters first as created)
#   scripts/redis-cluster.sh stop DIR   -> stops every node, removes its files
# cluster-node-timeout is 2000 ms so that a killed master's replica takes
# over within a few seconds in tests.
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?dir}; shift 2
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
free_ports() { # n distinct free ports
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()
PY
}
stop_all() {
  local f pid
  for f in "$dir"/node-*/redis.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f"); kill "$pid" 2>/dev/null || true
  done
  for f in "$dir"/node-*/redis.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$dir"/node-* "$dir/ports" "$dir/url" "$dir/create.log"
}
case "$cmd" in
start)
  for attempt in 1 2 3; do
    stop_all
    read -r -a ports <<<"$(free_ports 12)"
    ok=1
    for i in 0 1 2 3 4 5; do
      p=${ports[$i]}; b=${ports[$((i + 6))]}; nd="$dir/node-$p"; mkdir -p "$nd"
      if ! redis-server --bind 127.0.0.1 --port "$p" --cluster-enabled yes --cluster-port "$b" \
           --cluster-config-file "$nd/nodes.conf" --cluster-node-timeout 2000 \
           --dir "$nd" --save '' --appendonly no --daemonize yes \
           --pidfile "$nd/redis.pid" --logfile "$nd/redis.log" "$@" >/dev/null 2>&1; then ok=0; break; fi
    done
    [ $ok = 1 ] || continue
    for p in "${ports[@]:0:6}"; do
      for _ in $(seq 1 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
      redis-cli -p "$p" ping >/dev/null 2>&1 || ok=0
    done
    [ $ok = 1 ] || continue
    nodes=(); for p in "${ports[@]:0:6}"; do nodes+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
      >"$dir/create.log" 2>&1 || continue
    for _ in $(seq 1 200); do # cluster_state:ok on every node
      all=1
      for p in "${ports[@]:0:6}"; do
        redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || { all=0; break; }
      done
      [ $all = 1 ] && break; sleep 0.1
    done
    [ $all = 1 ] || continue
    echo "${ports[*]:0:6}" >"$dir/ports"
    url="redis+cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
    echo "$url" >"$dir/url"; echo "$url"; exit 0
  done
  stop_all
  echo "redis cluster did not start; see $dir/create.log" >&2; exit 1 ;;
stop) stop_all ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
