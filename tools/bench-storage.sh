#!/usr/bin/env bash
# Issue 5's storage benchmark in one run: durable creates/s and latency at
# 1, 16 and 128 clients straight into SQLite, into etcd through the store,
# raw etcd puts, and through the API server on SQLite and on etcd; then
# the SQLite size under an hour of simulated churn.
# Usage: bash tools/bench-storage.sh [path/to/r8s]   (a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
R8S="${1:-${CARGO_TARGET_DIR:-/var/tmp/r8s-target}/release/r8s}"
[ -x "$R8S" ] || { echo "build first: cargo build --release (missing $R8S)" >&2; exit 1; }
command -v etcd >/dev/null || { echo "needs etcd (Debian: etcd-server)" >&2; exit 1; }
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cport=$(free_port); pport=$(free_port)
etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$cport" \
  --advertise-client-urls "http://127.0.0.1:$cport" --listen-peer-urls "http://127.0.0.1:$pport" \
  >"$work/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill $etcd_pid 2>/dev/null; wait $etcd_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$cport/health" >/dev/null 2>&1 && break
  sleep 0.2
done
etcd_url="etcd://127.0.0.1:$cport"
export R8S_LOG=warn
echo "== SQLite store"; "$R8S" bench store --datastore "sqlite://$work/store.db"
echo "== etcd store (one create transaction each)"; "$R8S" bench store --datastore "$etcd_url"
echo "== raw etcd puts"; "$R8S" bench store --datastore "$etcd_url" --raw
echo "== API server on SQLite"; "$R8S" bench api
echo "== API server on etcd"; "$R8S" bench api "--server-arg=--datastore=$etcd_url"
echo "== SQLite size under churn"; "$R8S" bench churn --db "$work/churn.db"
