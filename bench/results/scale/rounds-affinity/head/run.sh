#!/bin/sh
# Partition-aware clients (BENCH_AFFINITY=1, affinity.patch) and spread clients
# alternately, the same binary, three rounds each (measured at 0446ce7).
# Run from the repository root.
set -e
out=${OUT:-/tmp/aff}
mkdir -p $out
git worktree add --detach /tmp/affwt HEAD
(cd /tmp/affwt && git apply "$OLDPWD/bench/results/scale/rounds-affinity/affinity.patch" && go build -o "$OLDPWD/bin/varve-affinity" ./cmd/varve)
git worktree remove --force /tmp/affwt
for r in 1 2 3; do
  for mode in aff spread; do
    if [ $mode = aff ]; then export BENCH_AFFINITY=1; else unset BENCH_AFFINITY; fi
    VARVE_MINIO_BIN=.tools/bin/minio bin/varve-affinity bench --profile scale --targets varve-minio-1,varve-minio-2,varve-minio-4 --duration 15s --warmup 2s --quiet --out $out/$mode-$r
  done
done
python3 bench/results/scale/ab-tailpoll/cpu.py $out/aff-1 $out/aff-2 $out/aff-3 $out/spread-1 $out/spread-2 $out/spread-3
