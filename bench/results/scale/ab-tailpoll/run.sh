#!/bin/bash
cd /work/main
for i in 1 2 3; do for v in old new; do
  VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-$v --profile scale --targets varve-minio-1,varve-minio-2 --duration 15s --warmup 2s --quiet --out /tmp/ab/$v-$i > /tmp/ab/$v-$i.log 2>&1
done; done
echo done > /tmp/ab/DONE
