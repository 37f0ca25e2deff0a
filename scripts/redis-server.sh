#!/usr/bin/env bash
# Starts or stops a private redis-server on a free loopback port.
#   scripts/redis-server.sh start DIR [extra redis-server args]  -> prints the port
#   scripts/redis-server.sh stop DIR
# DIR holds the pidfile, the log and (with --appendonly yes) the data.
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?dir}; shift 2
mkdir -p "$dir"
case "$cmd" in
start)
  for _ in 1 2 3 4 5; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    if redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
         --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@" >/dev/null 2>&1; then
      for _ in $(seq 1 100); do
        if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then echo "$port"; exit 0; fi
        sleep 0.05
      done
    fi
    # "Address already in use" races: try another port.
  done
  echo "redis-server did not start; see $dir/redis.log" >&2; exit 1 ;;
stop)
  if [ -f "$dir/redis.pid" ]; then
    pid=$(cat "$dir/redis.pid"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    rm -f "$dir/redis.pid"
  fi ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
