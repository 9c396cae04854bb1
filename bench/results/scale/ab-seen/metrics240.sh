#!/bin/bash
v=$1; out=/tmp/diagm; mkdir -p $out; cd /work/main
VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-$v --profile scale --compact --targets varve-minio-2 --duration 240s --warmup 2s --quiet --out $out/$v > $out/$v.log 2>&1 &
bpid=$!
marked=0
while kill -0 $bpid 2>/dev/null; do
  for pid in $(pgrep -f "varve-$v serve"); do
    addr=$(tr '\0' '\n' < /proc/$pid/cmdline | grep -A1 -- '^--listen$' | tail -1)
    role=n1; tr '\0' '\n' < /proc/$pid/cmdline | grep -q compact && role=n0
    curl -s -m 3 "http://$addr/metrics" > $out/$v.$role.tmp 2>/dev/null && [ -s $out/$v.$role.tmp ] && mv $out/$v.$role.tmp $out/$v.$role.last
    if [ $marked = 0 ] && grep -q "workload scale-1000p" $out/$v.log; then cp $out/$v.$role.last $out/$v.$role.start 2>/dev/null; fi
  done
  grep -q "workload scale-1000p" $out/$v.log && marked=1
  sleep 5
done
echo done > $out/$v.DONE
