#!/usr/bin/env bash
# Starts or stops a private Redis Cluster of 3 masters + 3 replicas on free
# loopback ports (client port and cluster bus port both chosen free, the
# bus with cluster-port, so no port+10000 can collide or overflow).
#   scripts/redis-cluster.sh start DIR [extra redis-server args]
#       -> prints the seed URL redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
#          (DIR/ports lists the six client ports, masters first as created)
#   scripts/redis-cluster.sh start-tls DIR CERTDIR [extra redis-server args]
#       -> the same over TLS only (no plaintext port; --tls-cluster and
#          --tls-replication yes; client certificates required): node i
#          listens on 127.0.0.<i+1> with a certificate of its own, made from
#          CERTDIR's ca.crt/ca.key (scripts/redis-server.sh tls-certs), that
#          carries IP:127.0.0.<i+1> and DNS:cluster.runlane.test only, so a
#          client must verify each node by the address it dials; prints
#          rediss+cluster://127.0.0.1:P1,127.0.0.2:P2,127.0.0.3:P3
#          (DIR/nodes lists the six ip:port, masters first)
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
  rm -rf "$dir"/node-* "$dir/ports" "$dir/nodes" "$dir/url" "$dir/create.log"
}
tls=0
if [ "$cmd" = start-tls ]; then
  certs=$(cd "${1:?certdir}" && pwd); shift; tls=1; cmd=start
fi
ip_of() { echo 127.0.0.1; }
cli_tls=()
[ $tls = 1 ] && cli_tls=(--tls --cacert "$certs/ca.crt" --cert "$certs/client.crt" --key "$certs/client.key")
node_cert() { # node_cert DIR IP: DIR/node.crt, DIR/node.key
  local nd=$1 ip=$2
  printf 'subjectAltName=IP:%s,DNS:cluster.runlane.test\nextendedKeyUsage=serverAuth,clientAuth\n' "$ip" >"$nd/node.ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$nd/node.key" \
    -out "$nd/node.csr" -subj "/CN=runlane-node-$ip" >/dev/null 2>&1 &&
  openssl x509 -req -in "$nd/node.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -CAcreateserial \
    -out "$nd/node.crt" -days 2 -extfile "$nd/node.ext" >/dev/null 2>&1
}
case "$cmd" in
start)
  for attempt in 1 2 3; do
    stop_all
    read -r -a ports <<<"$(free_ports 12)"
    ok=1
    for i in 0 1 2 3 4 5; do
      p=${ports[$i]}; b=${ports[$((i + 6))]}; nd="$dir/node-$p"; mkdir -p "$nd"
      ip=$(ip_of $i); listen=(--port "$p")
      if [ $tls = 1 ]; then
        node_cert "$nd" "$ip" || { echo "openssl failed for node $ip" >&2; ok=0; break; }
        listen=(--port 0 --tls-port "$p" --tls-cluster yes --tls-replication yes
                --tls-cert-file "$nd/node.crt" --tls-key-file "$nd/node.key"
                --tls-ca-cert-file "$certs/ca.crt" --tls-auth-clients yes)
      fi
      if ! redis-server --bind "$ip" "${listen[@]}" --cluster-enabled yes --cluster-port "$b" \
           --cluster-config-file "$nd/nodes.conf" --cluster-node-timeout 2000 \
           --dir "$nd" --save '' --appendonly no --daemonize yes \
           --pidfile "$nd/redis.pid" --logfile "$nd/redis.log" "$@" >/dev/null 2>&1; then ok=0; break; fi
    done
    [ $ok = 1 ] || continue
    nodes=(); for i in 0 1 2 3 4 5; do nodes+=("$(ip_of $i):${ports[$i]}"); done
    cli() { local hp=$1; shift; redis-cli "${cli_tls[@]}" -h "${hp%:*}" -p "${hp##*:}" "$@"; }
    for hp in "${nodes[@]}"; do
      for _ in $(seq 1 100); do cli "$hp" ping >/dev/null 2>&1 && break; sleep 0.05; done
      cli "$hp" ping >/dev/null 2>&1 || ok=0
    done
    [ $ok = 1 ] || continue
    timeout 60 redis-cli "${cli_tls[@]}" --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
      >"$dir/create.log" 2>&1 || continue
    for _ in $(seq 1 200); do # cluster_state:ok on every node
      all=1
      for hp in "${nodes[@]}"; do
        cli "$hp" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || { all=0; break; }
      done
      [ $all = 1 ] && break; sleep 0.1
    done
    [ $all = 1 ] || continue
    echo "${ports[*]:0:6}" >"$dir/ports"
    printf '%s\n' "${nodes[@]}" >"$dir/nodes"
    if [ $tls = 1 ]; then
      url="rediss+cluster://${nodes[0]},${nodes[1]},${nodes[2]}"
    else
      url="redis+cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
    fi
    echo "$url" >"$dir/url"; echo "$url"; exit 0
  done
  stop_all
  echo "redis cluster did not start; see $dir/create.log" >&2; exit 1 ;;
stop) stop_all ;;
*) echo "usage: $0 start|start-tls|stop DIR" >&2; exit 2 ;;
esac
