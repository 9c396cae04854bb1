#!/bin/sh
# Peer blocks shipped undecoded (1cf8e04, bin/varve-peerdec) against 57c1397 (bin/varve-hedge), alternately.
cd "$(git rev-parse --show-toplevel)"
# bin/varve-hedge: go build at 57c1397; bin/varve-peerdec and bin/varve: at 1cf8e04.
# Then: python3 bench/results/scale/ab-tailpoll/cpu.py $out/old-1 ... $out/new-3
out=${OUT:-/tmp/pd}
for r in 1 2 3; do
  for v in old new; do
    bin=bin/varve-hedge; [ $v = new ] && bin=bin/varve-peerdec
    VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin $bin --profile scale --targets varve-minio-1,varve-minio-2,varve-minio-4 --duration 15s --warmup 2s --quiet --out $out/$v-$r
  done
done
echo done
