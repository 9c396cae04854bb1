#!/bin/bash
# trace.sh NAME: the scale bench with the compact role on, run by
# bin/varve-NAME, a build with the temporary Txn-by-caller interceptor
# (../../ab-claims/trace/client.go.diff and txntrace.go.txt applied in a
# worktree; never committed). Snapshots the counts when the 1,000-partition
# workload starts; trace/callers.py then turns /tmp/NAME into tables.
# Used for trace-cp-prune/ (NAME=trace4, 9762194) and trace-final/ (NAME=trace6, 24c0430).
set -u
N=${1:?usage: trace.sh NAME}
cd /work/main
rm -rf /tmp/$N; mkdir -p /tmp/$N
TXNTRACE=/tmp/$N/t VARVE_MINIO_BIN=.tools/bin/minio bin/varve-$N bench --varve-bin bin/varve-$N --profile scale --compact --targets varve-minio-2 --duration 240s --warmup 2s --quiet --out /tmp/$N/report > /tmp/$N/bench.log 2>&1 &
b=$!
marked=0
while kill -0 $b 2>/dev/null; do
  if [ $marked = 0 ] && grep -q "workload scale-1000p" /tmp/$N/bench.log; then
    for f in /tmp/$N/t.*; do cp $f $f.at1000p; done; marked=1
  fi
  for f in /tmp/$N/t.[0-9]*; do case $f in *.at1000p|*.last) ;; *) cp $f $f.last;; esac; done
  sleep 2
done
echo done > /tmp/$N/DONE
