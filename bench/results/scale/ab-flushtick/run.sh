#!/bin/sh
# Producers that hold a batch for the node's next seal (7dc4734: Produce
# answers carry Varve-Next-Flush, the SDK producer sends just before the
# seal) against 81e88ff (a batch every linger, 5 ms), alternately, on the
# tiered targets. The bench process runs the clients (the SDK), so each
# variant is both the bench and the nodes' binary.
cd "$(git rev-parse --show-toplevel)"
# bin/varve-old: go build -o bin/varve-old ./cmd/varve at 81e88ff;
# bin/varve-new: the same at 7dc4734.
# Then: python3 bench/results/scale/ab-tailpoll/cpu.py $out/old-1 ... $out/new-2
out=${OUT:-/tmp/ft}
for r in 1 2; do
  for v in old new; do
    VARVE_MINIO_BIN=.tools/bin/minio bin/varve-$v bench --varve-bin bin/varve-$v --profile scale --targets varve-minio-tiered-1,varve-minio-tiered-2,varve-minio-tiered-4 --duration 15s --warmup 2s --quiet --out $out/$v-$r
  done
done
echo done
