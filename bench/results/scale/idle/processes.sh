#!/bin/bash
# processes.sh N [SECONDS [BINARY]]: what N idle Varve nodes cost with no client at
# all. Starts `varve etcd` and N `varve serve` nodes (default roles, the
# sequencer on, a shared fs: store in a temporary directory), waits 8 s for
# them to settle, and prints the CPU seconds of etcd and of each node over
# SECONDS (default 30) of idleness, read from /proc/PID/stat (utime+stime).
# Run from the repository root after `make build` (BINARY: bin/varve).
set -euo pipefail
N=${1:?usage: processes.sh N [SECONDS [BINARY]]}
SECS=${2:-30}
V=${3:-$PWD/bin/varve}
DIR=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EC=$(free_port); EP=$(free_port)
"$V" etcd --data-dir "$DIR/etcd" --listen-client "http://127.0.0.1:$EC" --listen-peer "http://127.0.0.1:$EP" >"$DIR/etcd.log" 2>&1 &
PIDS+=($!)
sleep 2
for i in $(seq 0 $((N - 1))); do
  "$V" serve --listen "127.0.0.1:$(free_port)" --node-id "idle-$i" --etcd-endpoints "http://127.0.0.1:$EC" --store "fs:$DIR/store" >"$DIR/node$i.log" 2>&1 &
  PIDS+=($!)
done
sleep 8
for i in "${!PIDS[@]}"; do
  if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
    echo "process $i exited before the measurement:" >&2
    for f in "$DIR"/*.log; do echo "== $f" >&2; tail -n 5 "$f" >&2; done
    exit 1
  fi
done
tick=$(getconf CLK_TCK)
cpu() { for p in "${PIDS[@]}"; do awk '{print $14+$15}' "/proc/$p/stat"; done; }
mapfile -t a < <(cpu)
sleep "$SECS"
mapfile -t b < <(cpu)
printf 'etcd %.2f s' "$(echo "(${b[0]}-${a[0]})/$tick" | bc -l)"
for i in $(seq 1 "$N"); do printf ', node %d %.2f s' $((i - 1)) "$(echo "(${b[$i]}-${a[$i]})/$tick" | bc -l)"; done
printf ' over %d s idle\n' "$SECS"
