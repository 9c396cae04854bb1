#!/bin/bash
# The partitions' several jobs fenced on their view (views: the commit
# after a9623e6) twice around a run of a9623e6 (nested).
cd /work/main
for r in views-1 nested-3 views-2; do v=${r%-*}
  VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-$v --profile scale --compact --targets varve-minio-2 --duration 240s --warmup 2s --quiet --out /tmp/abviews/$r > /tmp/abviews/$r.log 2>&1
done
echo done > /tmp/abviews/DONE
