#!/bin/bash
cd /work/main
VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-5b66e0b --profile scale --duration 15s --warmup 2s --quiet --out /tmp/full/scale > /tmp/full/scale.log 2>&1
VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-5b66e0b --profile scale --partitions 10000 --targets varve-minio-1,varve-minio-2,varve-minio-4 --duration 15s --warmup 2s --quiet --out /tmp/full/10000p > /tmp/full/10000p.log 2>&1
echo done > /tmp/full/DONE
