#!/bin/bash
# The old build (a3eff2a) and the head of the time (50df907: checkpoints in
# batches, one prune transaction a pass, producers reread together), one
# run each, in that order; bin/varve-old and bin/varve-head built from
# those commits, bin/varve the bench harness.
cd /work/main
mkdir -p /tmp/abcp
for v in head old; do
  VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-$v --profile scale --compact --targets varve-minio-2 --duration 240s --warmup 2s --quiet --out /tmp/abcp/$v > /tmp/abcp/$v.log 2>&1
done
