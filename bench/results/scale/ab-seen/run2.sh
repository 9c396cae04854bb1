#!/bin/bash
cd /work/main
for r in new2-1 old-2 new2-2; do v=${r%-*}
  VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-$v --profile scale --compact --targets varve-minio-2 --duration 240s --warmup 2s --quiet --out /tmp/abseen/$r > /tmp/abseen/$r.log 2>&1
done
echo done > /tmp/abseen/DONE2
