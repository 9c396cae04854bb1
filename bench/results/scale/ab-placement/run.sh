#!/bin/sh
# Producer placement, before and after in one run: 996d0c9 (every node
# keeps the producers that reach it) against the placement commit, each
# variant both the bench (its clients are the SDK) and the nodes,
# alternately, two rounds; every round starts new clusters.
#   git worktree add /tmp/wt-base 996d0c9 && (cd /tmp/wt-base && go build -o /work/main/bin/varve-base ./cmd/varve)
#   go build -o bin/varve-place ./cmd/varve
cd "$(git rev-parse --show-toplevel)"
out=${OUT:-/tmp/abplace}
for r in 1 2; do
  for v in base place; do
    VARVE_MINIO_BIN=.tools/bin/minio bin/varve-$v bench --varve-bin bin/varve-$v --profile scale \
      --targets varve-minio-tiered-1,varve-minio-tiered-2,varve-minio-tiered-4,varve-minio-4 \
      --duration 15s --warmup 2s --quiet --out $out/$v-$r
  done
done
# Then: python3 bench/results/scale/ab-tailpoll/cpu.py $out/*
