#!/usr/bin/env bash
# Starts or stops a private Sentinel setup on free loopback ports: one
# master, one replica, three sentinels (quorum 2) watching the master under
# the name "mymaster".
#   scripts/redis-sentinel.sh start DIR [extra redis-server args for the data nodes]
#       -> prints redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster
#          (DIR/ports: "MASTER REPLICA S1 S2 S3")
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
up() { for _ in $(seq 1 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1; }
case "$cmd" in
start)
  for attempt in 1 2 3; do
    stop_all
    read -r -a ports <<<"$(free_ports 5)"
    m=${ports[0]}; r=${ports[1]}; ok=1
    for p in "$m" "$r"; do
      nd="$dir/data-$p"; mkdir -p "$nd"
      extra=(); [ "$p" = "$r" ] && extra=(--replicaof 127.0.0.1 "$m")
      redis-server --bind 127.0.0.1 --port "$p" --dir "$nd" --save '' --appendonly no \
        --daemonize yes --pidfile "$nd/redis.pid" --logfile "$nd/redis.log" "${extra[@]}" "$@" \
        >/dev/null 2>&1 || ok=0
    done
    [ $ok = 1 ] && up "$m" && up "$r" || continue
    for _ in $(seq 1 100); do # the replica is in sync
      redis-cli -p "$r" info replication | grep -q 'master_link_status:up' && break; sleep 0.1
    done
    for s in "${ports[@]:2:3}"; do
      sd="$dir/sentinel-$s"; mkdir -p "$sd"
      cat >"$sd/sentinel.conf" <<CONF
bind 127.0.0.1
port $s
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
        info=$(redis-cli -p "$s" sentinel master mymaster 2>/dev/null | tr '\n' ' ')
        [[ "$info" == *"num-slaves 1 "* && "$info" == *"num-other-sentinels 2 "* ]] || { all=0; break; }
      done
      [ $all = 1 ] && break; sleep 0.1
    done
    [ $all = 1 ] || continue
    echo "${ports[*]}" >"$dir/ports"
    url="redis+sentinel://127.0.0.1:${ports[2]},127.0.0.1:${ports[3]},127.0.0.1:${ports[4]}/mymaster"
    echo "$url" >"$dir/url"; echo "$url"; exit 0
  done
  stop_all
  echo "redis sentinel setup did not start; see the logs under $dir" >&2; exit 1 ;;
stop) stop_all ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
