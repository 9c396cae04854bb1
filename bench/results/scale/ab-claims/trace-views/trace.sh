#!/bin/bash
# scale bench with the temporary Txn-by-caller interceptor; snapshots the
# counts when the 1,000-partition workload starts.
cd /work/main
rm -rf /tmp/txntrace2; mkdir -p /tmp/txntrace2
TXNTRACE=/tmp/txntrace2/t VARVE_MINIO_BIN=.tools/bin/minio bin/varve-trace3 bench --varve-bin bin/varve-trace3 --profile scale --compact --targets varve-minio-2 --duration 240s --warmup 2s --quiet --out /tmp/txntrace2/report > /tmp/txntrace2/bench.log 2>&1 &
b=$!
marked=0
while kill -0 $b 2>/dev/null; do
  if [ $marked = 0 ] && grep -q "workload scale-1000p" /tmp/txntrace2/bench.log; then
    for f in /tmp/txntrace2/t.*; do cp $f $f.at1000p; done; marked=1
  fi
  for f in /tmp/txntrace2/t.[0-9]*; do case $f in *.at1000p|*.last) ;; *) cp $f $f.last;; esac; done
  sleep 2
done
echo done > /tmp/txntrace2/DONE
