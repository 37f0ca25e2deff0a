#!/usr/bin/env bash
# Starts or stops a private redis-server on a free loopback port.
#   scripts/redis-server.sh start DIR [extra redis-server args]  -> prints the port
#   scripts/redis-server.sh stop DIR
#   scripts/redis-server.sh tls-certs CERTDIR   -> test certificates (openssl):
#       ca.crt/ca.key (the CA), server.crt/key (localhost + 127.0.0.1, by ca),
#       client.crt/key (by ca), other-ca.crt (a second, unrelated CA)
#   scripts/redis-server.sh start-tls DIR CERTDIR [extra args]
#       -> prints "PLAIN_PORT TLS_PORT": one server on both ports, TLS with
#          server.crt; client certificates not required unless the extra args
#          say --tls-auth-clients yes
# DIR holds the pidfile, the log and (with --appendonly yes) the data.
set -euo pipefail
cmd=${1:?start|start-tls|stop|tls-certs}; dir=${2:?dir}; shift 2
mkdir -p "$dir"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
case "$cmd" in
tls-certs)
  # EC keys: fast to make. Valid for 2 days: made again by every run.
  cd "$dir"
  ossl() { openssl "$@" >/dev/null 2>&1 || { echo "openssl $1 failed" >&2; exit 1; }; }
  newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  ossl req -x509 "${newkey[@]}" -keyout ca.key -out ca.crt -days 2 -subj /CN=runlane-test-ca
  ossl req -x509 "${newkey[@]}" -keyout other-ca.key -out other-ca.crt -days 2 -subj /CN=runlane-other-ca
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  for who in server client; do
    ossl req "${newkey[@]}" -keyout $who.key -out $who.csr -subj /CN=runlane-test-$who
    ossl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $who.crt -days 2 -extfile $who.ext
  done
  chmod 600 ./*.key ;;
start-tls)
  certs=${1:?certdir}; shift
  for _ in 1 2 3 4 5; do
    port=$(free_port); tport=$(free_port)
    [ "$port" != "$tport" ] || continue
    if redis-server --bind 127.0.0.1 --port "$port" --tls-port "$tport" \
         --tls-cert-file "$certs/server.crt" --tls-key-file "$certs/server.key" \
         --tls-ca-cert-file "$certs/ca.crt" --tls-auth-clients no \
         --dir "$dir" --save '' --appendonly no \
         --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@" >/dev/null 2>&1; then
      for _ in $(seq 1 100); do
        if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then echo "$port $tport"; exit 0; fi
        sleep 0.05
      done
    fi
  done
  echo "redis-server (TLS) did not start; see $dir/redis.log" >&2; exit 1 ;;
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
*) echo "usage: $0 start|start-tls|stop|tls-certs DIR" >&2; exit 2 ;;
esac
