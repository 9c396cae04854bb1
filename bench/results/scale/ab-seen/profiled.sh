#!/bin/bash
v=$1; cd /work/main
VARVE_PPROF=true VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-$v --profile scale --compact --targets varve-minio-2 --duration 150s --warmup 2s --quiet --out /tmp/diag/$v > /tmp/diag/$v.log 2>&1 &
bpid=$!
profiled=0
while kill -0 $bpid 2>/dev/null; do
  i=0
  for pid in $(pgrep -f "varve-$v serve"); do
    addr=$(tr '\0' '\n' < /proc/$pid/cmdline | grep -A1 -- '^--listen$' | tail -1)
    role=n1; tr '\0' '\n' < /proc/$pid/cmdline | grep -q compact && role=n0
    curl -s "http://$addr/metrics" > /tmp/diag/$v.$role.tmp 2>/dev/null && [ -s /tmp/diag/$v.$role.tmp ] && mv /tmp/diag/$v.$role.tmp /tmp/diag/$v.$role.metrics
    if [ $profiled = 0 ] && grep -q "workload scale-1000p" /tmp/diag/$v.log; then
      (sleep 40; curl -s "http://$addr/debug/pprof/profile?seconds=60" > /tmp/diag/$v.$role.pprof) &
      i=1
    fi
  done
  [ $i = 1 ] && profiled=1
  sleep 5
done
wait
echo done > /tmp/diag/$v.DONE
