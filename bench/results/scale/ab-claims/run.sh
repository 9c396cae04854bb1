#!/bin/bash
# Alternating runs of the previous build (final: 12e4745) and this one
# (claims: 7252cb1), 240 s per workload, 2 nodes, compact role on the first.
cd /work/main
for r in claims-1 final-2 claims-2; do v=${r%-*}
  VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-$v --profile scale --compact --targets varve-minio-2 --duration 240s --warmup 2s --quiet --out /tmp/abclaims/$r > /tmp/abclaims/$r.log 2>&1
done
echo done > /tmp/abclaims/DONE
