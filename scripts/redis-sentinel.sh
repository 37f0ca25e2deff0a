#!/usr/bin/env bash
# Starts or stops a private Sentinel setup on free loopback ports: one
# master, one replica, three sentinels (quorum 2) watching the master under
# the name "mymaster".
#   scripts/redis-sentinel.sh start DIR [extra redis-server args for the data nodes]
#       -> prints redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster
#          (DIR/ports: "MASTER REPLICA S1 S2 S3")
#   scripts/redis-sentinel.sh start-tls DIR CERTDIR [extra args for the data nodes]
#       -> the same over TLS only: no plaintext port on any node or sentinel,
#          tls-replication yes (the replica and the sentinels reach the
#          master, and the sentinels each other, over TLS), client
#          certificates required; each process has a certificate of its own,
#          made from CERTDIR's ca.crt/ca.key (scripts/redis-server.sh
#          tls-certs), carrying IP:127.0.0.1 and DNS:sentinel.runlane.test
#          (serverAuth and clientAuth: it is also the process's client
#          certificate); prints rediss+sentinel://127.0.0.1:S1,.../mymaster
#   scripts/redis-sentinel.sh stop DIR   -> stops every process, removes its files
# down-after-milliseconds 1000 and failover-timeout 5000: a killed master's
# replica is promoted within a few seconds in tests.
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?dir}; shift 2
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
free_ports() {
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
  for f in "$dir"/*/redis.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f"); kill "$pid" 2>/dev/null || true
  done
  for f in "$dir"/*/redis.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$dir"/data-* "$dir"/sentinel-* "$dir/ports" "$dir/url"
}
tls=0
if [ "$cmd" = start-tls ]; then
  certs=$(cd "${1:?certdir}" && pwd); shift; tls=1; cmd=start
fi
cli_tls=()
[ $tls = 1 ] && cli_tls=(--tls --cacert "$certs/ca.crt" --cert "$certs/client.crt" --key "$certs/client.key")
cli() { local p=$1; shift; redis-cli "${cli_tls[@]}" -h 127.0.0.1 -p "$p" "$@"; }
up() { for _ in $(seq 1 100); do cli "$1" ping >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1; }
node_cert() { # node_cert DIR: DIR/node.crt, DIR/node.key
  local nd=$1
  printf 'subjectAltName=IP:127.0.0.1,DNS:sentinel.runlane.test\nextendedKeyUsage=serverAuth,clientAuth\n' >"$nd/node.ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$nd/node.key" \
    -out "$nd/node.csr" -subj "/CN=runlane-sentinel-setup" >/dev/null 2>&1 &&
  openssl x509 -req -in "$nd/node.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -CAcreateserial \
    -out "$nd/node.crt" -days 2 -extfile "$nd/node.ext" >/dev/null 2>&1
}
tls_conf() { # the TLS lines of a config file for DIR's process on PORT
  printf 'port 0\ntls-port %s\ntls-replication yes\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-auth-clients yes\n' \
    "$2" "$1/node.crt" "$1/node.key" "$certs/ca.crt"
}
case "$cmd" in
start)
  for attempt in 1 2 3; do
    stop_all
    read -r -a ports <<<"$(free_ports 5)"
    m=${ports[0]}; r=${ports[1]}; ok=1
    for p in "$m" "$r"; do
      nd="$dir/data-$p"; mkdir -p "$nd"
      extra=(); [ "$p" = "$r" ] && extra=(--replicaof 127.0.0.1 "$m")
      listen=(--port "$p")
      if [ $tls = 1 ]; then
        node_cert "$nd" || { echo "openssl failed" >&2; ok=0; break; }
        listen=(--port 0 --tls-port "$p" --tls-replication yes --tls-cert-file "$nd/node.crt"
                --tls-key-file "$nd/node.key" --tls-ca-cert-file "$certs/ca.crt" --tls-auth-clients yes)
      fi
      redis-server --bind 127.0.0.1 "${listen[@]}" --dir "$nd" --save '' --appendonly no \
        --daemonize yes --pidfile "$nd/redis.pid" --logfile "$nd/redis.log" "${extra[@]}" "$@" \
        >/dev/null 2>&1 || ok=0
    done
    [ $ok = 1 ] && up "$m" && up "$r" || continue
    for _ in $(seq 1 100); do # the replica is in sync
      cli "$r" info replication | grep -q 'master_link_status:up' && break; sleep 0.1
    done
    for s in "${ports[@]:2:3}"; do
      sd="$dir/sentinel-$s"; mkdir -p "$sd"
      if [ $tls = 1 ]; then
        node_cert "$sd" || { echo "openssl failed" >&2; ok=0; break; }
        tls_conf "$sd" "$s" >"$sd/sentinel.conf"
      else
        echo "port $s" >"$sd/sentinel.conf"
      fi
      cat >>"$sd/sentinel.conf" <<CONF
bind 127.0.0.1
daemonize yes
pidfile $sd/redis.pid
logfile $sd/redis.log
dir $sd
sentinel monitor mymaster 127.0.0.1 $m 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 5000
sentinel parallel-syncs mymaster 1
CONF
      redis-server "$sd/sentinel.conf" --sentinel >/dev/null 2>&1 || ok=0
    done
    [ $ok = 1 ] || continue
    for s in "${ports[@]:2:3}"; do up "$s" || ok=0; done
    [ $ok = 1 ] || continue
    for _ in $(seq 1 200); do # every sentinel sees the replica and the other sentinels
      all=1
      for s in "${ports[@]:2:3}"; do
        info=$(cli "$s" sentinel master mymaster 2>/dev/null | tr '\n' ' ')
        [[ "$info" == *"num-slaves 1 "* && "$info" == *"num-other-sentinels 2 "* ]] || { all=0; break; }
      done
      [ $all = 1 ] && break; sleep 0.1
    done
    [ $all = 1 ] || continue
    echo "${ports[*]}" >"$dir/ports"
    scheme=redis+sentinel; [ $tls = 1 ] && scheme=rediss+sentinel
    url="$scheme://127.0.0.1:${ports[2]},127.0.0.1:${ports[3]},127.0.0.1:${ports[4]}/mymaster"
    echo "$url" >"$dir/url"; echo "$url"; exit 0
  done
  stop_all
  echo "redis sentinel setup did not start; see the logs under $dir" >&2; exit 1 ;;
stop) stop_all ;;
*) echo "usage: $0 start|start-tls|stop DIR" >&2; exit 2 ;;
esac
