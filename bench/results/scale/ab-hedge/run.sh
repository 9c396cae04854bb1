#!/bin/sh
# Hedged PUTs on (default) and off (VARVE_PUT_HEDGE_MIN=off, inherited by the nodes), alternately, same binary.
cd "$(git rev-parse --show-toplevel)"
go build -o bin/varve-hedge ./cmd/varve
for r in 1 2 3; do
  for mode in on off; do
    if [ $mode = off ]; then export VARVE_PUT_HEDGE_MIN=off; else unset VARVE_PUT_HEDGE_MIN; fi
    VARVE_MINIO_BIN=.tools/bin/minio bin/varve-hedge bench --profile scale --targets varve-minio-1,varve-minio-2,varve-minio-4 --duration 15s --warmup 2s --quiet --out ${OUT:-/tmp/hedge}/$mode-$r
  done
done
echo done
