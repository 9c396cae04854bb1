#!/bin/sh
# Scale-out at proportional load: N ingest nodes (the tiered targets: N
# ingest,sequence nodes and one fetch node) at N x 5,000 rec/s, against one
# ingest node at 5,000, 10,000 and 20,000 rec/s; two rounds, at 81e88ff.
# Reports only (report.json, report.md); the plots are left out.
cd "$(git rev-parse --show-toplevel)"
out=${OUT:-/tmp/ablin}
for r in 1 2; do
  for tr in tiered-1:5000 tiered-2:10000 tiered-4:20000 tiered-1:20000 tiered-1:10000; do
    t=${tr%%:*}; rate=${tr##*:}
    VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --profile scale --targets varve-minio-$t --rate $rate --duration 15s --warmup 2s --quiet --out $out/$t-$rate-$r
  done
done
# Then: python3 bench/results/scale/linearity/table.py $out
