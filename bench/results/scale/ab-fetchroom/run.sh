#!/bin/sh
# An answer of stored batches reserving its blocks' bytes at once: the
# commit before (base) against it (new), alternately, four rounds of the
# ingest node + fetch node target; each variant is both the bench and the
# nodes. The fetch node is varve-serve-node-1.
#   git worktree add /tmp/wt-base HEAD~1 && (cd /tmp/wt-base && go build -o $PWD/bin/varve-base ./cmd/varve)
#   go build -o bin/varve-new ./cmd/varve
cd "$(git rev-parse --show-toplevel)"
out=${OUT:-/tmp/abroom}
for r in 1 2 3 4; do
  for v in base new; do
    VARVE_MINIO_BIN=.tools/bin/minio bin/varve-$v bench --varve-bin bin/varve-$v --profile scale \
      --targets varve-minio-tiered-1 --duration 20s --warmup 2s --quiet --out $out/$v-$r
  done
done
