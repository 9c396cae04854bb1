#!/bin/sh
# Ingest-only writers serving their fresh objects (730ddb1, bin/varve-writer)
# against 3521c20 (bin/varve-nowriter: fetch nodes read them from the
# bucket), alternately, on the tiered targets (an ingest tier and one fetch node).
cd "$(git rev-parse --show-toplevel)"
# bin/varve-nowriter: go build at 3521c20; bin/varve-writer and bin/varve: at 730ddb1.
# Then: python3 bench/results/scale/ab-tailpoll/cpu.py $out/old-1 ... $out/new-3
out=${OUT:-/tmp/wc}
for r in 1 2 3; do
  for v in old new; do
    bin=bin/varve-nowriter; [ $v = new ] && bin=bin/varve-writer
    VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin $bin --profile scale --targets varve-minio-tiered-1,varve-minio-tiered-2,varve-minio-tiered-4 --duration 15s --warmup 2s --quiet --out $out/$v-$r
  done
done
echo done
