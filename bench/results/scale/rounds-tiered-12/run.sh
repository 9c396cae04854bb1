#!/bin/sh
# The ingest tier's CPU ratio over twelve rounds: six with the targets in
# the order one, two, four ingest nodes, six in the reverse order (a check
# that the order within a round does not favour a side). Each round starts
# new clusters; 20 s measured per workload. Commit 7e404e3 (the product
# code of 77585af); the pooled column of the reports is from the next
# commit's `varve bench report --from report.json --out DIR`.
cd "$(git rev-parse --show-toplevel)"
VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --profile scale \
  --targets varve-minio-tiered-1,varve-minio-tiered-2,varve-minio-tiered-4 \
  --rounds 6 --duration 20s --warmup 2s --quiet --out ${OUT:-/tmp/rounds6}/inorder
VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --profile scale \
  --targets varve-minio-tiered-4,varve-minio-tiered-2,varve-minio-tiered-1 \
  --rounds 6 --duration 20s --warmup 2s --quiet --out ${OUT:-/tmp/rounds6}/reversed
