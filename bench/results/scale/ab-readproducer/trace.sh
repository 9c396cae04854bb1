#!/bin/bash
# trace.sh NAME: the scale profile on one node, 15 s per workload, run by
# bin/varve-NAME, a build with the temporary Txn-by-caller interceptor
# (../ab-claims/trace/client.go.diff and txntrace.go.txt applied in a
# worktree; never committed); then
#   python3 ../ab-checkpoint/trace/callers.py /tmp/NAME /tmp/NAME/callers
# NAME=trace7 built at 71d24f9 (before-*), trace8 at 5b66e0b (after-*).
set -u
N=${1:?usage: trace.sh NAME}
cd /work/main
rm -rf /tmp/$N; mkdir -p /tmp/$N
TXNTRACE=/tmp/$N/t VARVE_MINIO_BIN=.tools/bin/minio bin/varve-$N bench --varve-bin bin/varve-$N --profile scale --targets varve-minio-1 --duration 15s --warmup 2s --quiet --out /tmp/$N/report > /tmp/$N/bench.log 2>&1 &
b=$!
marked=0
while kill -0 $b 2>/dev/null; do
  if [ $marked = 0 ] && grep -q "workload scale-1000p" /tmp/$N/bench.log; then
    for f in /tmp/$N/t.*; do cp $f $f.at1000p; done; marked=1
  fi
  for f in /tmp/$N/t.[0-9]*; do case $f in *.at1000p|*.last) ;; *) cp $f $f.last;; esac; done 2>/dev/null
  sleep 1
done
