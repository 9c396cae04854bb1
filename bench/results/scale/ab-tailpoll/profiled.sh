#!/bin/bash
# profile every node during each target's 1,000-partition workload (WL=scale-8p: the 8-partition one)
v=$1; out=/tmp/prof/$v; rm -rf $out; mkdir -p $out; cd /work/main
VARVE_PPROF=true VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-$v --profile scale --targets ${TARGETS:-varve-minio-1,varve-minio-2} --duration 40s --warmup 2s --quiet --out $out/report > $out/bench.log 2>&1 &
b=$!
done_n=0
while kill -0 $b 2>/dev/null; do
  n=$(grep -c "workload ${WL:-scale-1000p}" $out/bench.log)
  if [ "$n" -gt "$done_n" ]; then
    done_n=$n
    sleep 8
    k=0
    for pid in $(pgrep -f "varve-$v serve"); do
      addr=$(tr '\0' '\n' < /proc/$pid/cmdline | grep -A1 -- '^--listen$' | tail -1)
      k=$((k+1))
      curl -s "http://$addr/debug/pprof/profile?seconds=25" > $out/t$n.n$k.pprof &
    done
    sleep 27
  fi
  sleep 1
done
echo done > $out/DONE
