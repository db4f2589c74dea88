#!/usr/bin/env bash
# A local cluster of osprey hosts (one process each) on 127.0.0.1 to play with: every
# host a controller voter, its own data dir under ./osprey-cluster/host-N and its own
# ports. Host N: bootstrap 127.0.0.1:(9092 + 10*(N-1)), its shards on the ports after it,
# controller on 127.0.0.1:(9099 + 10*(N-1)), admin HTTP (/metrics, /health) on
# 127.0.0.1:(9644 + N-1).
#
#   scripts/cluster.sh start [HOSTS]   start HOSTS hosts (default 3) in the background
#   scripts/cluster.sh stop            SIGTERM every host of the cluster, wait for each
#   scripts/cluster.sh status          which hosts run, and the bootstrap list
#
# All hosts share this machine's CPUs (and disk): a place to try the cluster's behaviour,
# not to measure it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR="$ROOT/osprey-cluster"
BIN="${OSPREY_BIN:-$ROOT/target/release/osprey}"
CORES="${CORES:-2}"
# Extra `osprey serve` flags for every host, e.g. EXTRA="--default-replication-factor 3".
EXTRA="${EXTRA:-}"

bootstrap_port() { echo $((9092 + 10 * ($1 - 1))); }
controller_port() { echo $((9099 + 10 * ($1 - 1))); }
admin_port() { echo $((9644 + $1 - 1)); }

start() {
  local hosts=${1:-3}
  if [ ! -x "$BIN" ]; then cargo build --release --bin osprey; fi
  mkdir -p "$DIR"
  local voters=""
  for i in $(seq 1 "$hosts"); do voters="${voters:+$voters,}$i@127.0.0.1:$(controller_port "$i")"; done
  echo "$hosts" > "$DIR/hosts"
  for i in $(seq 1 "$hosts"); do
    mkdir -p "$DIR/host-$i"
    "$BIN" serve --node-id "$i" --controller-quorum-voters "$voters" --cores "$CORES" \
      --listen "127.0.0.1:$(bootstrap_port "$i")" --admin-listen "127.0.0.1:$(admin_port "$i")" --data-dir "$DIR/host-$i/data" $EXTRA \
      > "$DIR/host-$i/stdout" 2> "$DIR/host-$i/log" &
    echo $! > "$DIR/host-$i/pid"
  done
  for i in $(seq 1 "$hosts"); do
    for _ in $(seq 1 300); do
      grep -q "osprey ready" "$DIR/host-$i/stdout" 2>/dev/null && break
      if ! kill -0 "$(cat "$DIR/host-$i/pid")" 2>/dev/null; then
        echo "host $i exited; its log:" >&2; tail -20 "$DIR/host-$i/log" >&2; exit 1
      fi
      sleep 0.1
    done
    grep -q "osprey ready" "$DIR/host-$i/stdout" || { echo "host $i not ready after 30 s" >&2; exit 1; }
  done
  status
}

stop() {
  [ -f "$DIR/hosts" ] || { echo "no cluster in $DIR"; return 0; }
  for pidf in "$DIR"/host-*/pid; do
    pid=$(cat "$pidf"); kill -TERM "$pid" 2>/dev/null || true
  done
  for pidf in "$DIR"/host-*/pid; do
    pid=$(cat "$pidf")
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pidf"
  done
  echo "stopped (data kept in $DIR)"
}

status() {
  [ -f "$DIR/hosts" ] || { echo "no cluster in $DIR"; return 0; }
  local list=""
  for i in $(seq 1 "$(cat "$DIR/hosts")"); do
    if [ -f "$DIR/host-$i/pid" ] && kill -0 "$(cat "$DIR/host-$i/pid")" 2>/dev/null; then
      echo "host $i: running, $(grep -o 'bootstrap=.*' "$DIR/host-$i/stdout" | tail -1), log $DIR/host-$i/log"
      list="${list:+$list,}127.0.0.1:$(bootstrap_port "$i")"
    else
      echo "host $i: stopped"
    fi
  done
  echo "bootstrap servers: $list"
}

case "${1:-}" in
  start) start "${2:-3}" ;;
  stop) stop ;;
  status) status ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
