#!/bin/bash
cd /work/main
for i in 1; do for v in old new; do
  VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-$v --profile scale --compact --targets varve-minio-2 --duration 240s --warmup 2s --quiet --out /tmp/abseen/$v-$i > /tmp/abseen/$v-$i.log 2>&1
done; done
echo done > /tmp/abseen/DONE
