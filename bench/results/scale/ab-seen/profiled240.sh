#!/bin/bash
v=$1; out=/tmp/diag240; mkdir -p $out; cd /work/main
VARVE_PPROF=true VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-$v --profile scale --compact --targets varve-minio-2 --duration 240s --warmup 2s --quiet --out $out/$v > $out/$v.log 2>&1 &
bpid=$!
profiled=0
while kill -0 $bpid 2>/dev/null; do
  if [ $profiled = 0 ] && grep -q "workload scale-1000p" $out/$v.log; then
    sleep 60
    for pid in $(pgrep -f "varve-$v serve"); do
      addr=$(tr '\0' '\n' < /proc/$pid/cmdline | grep -A1 -- '^--listen$' | tail -1)
      role=n1; tr '\0' '\n' < /proc/$pid/cmdline | grep -q compact && role=n0
      (curl -s "http://$addr/debug/pprof/profile?seconds=150" > $out/$v.$role.pprof) &
    done
    profiled=1
  fi
  sleep 5
done
wait
echo done > $out/$v.DONE
