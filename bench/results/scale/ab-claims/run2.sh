#!/bin/bash
# This build (nested: a9623e6) twice around a run of the previous one
# (claims: 7252cb1), 240 s per workload, 2 nodes, compact role on the first;
# then one run of a9623e6 with a temporary client-side count of etcd Txn
# calls by caller (not committed) to see what else etcd is asked.
cd /work/main
for r in nested-1 claims-3 nested-2; do v=${r%-*}
  VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-$v --profile scale --compact --targets varve-minio-2 --duration 240s --warmup 2s --quiet --out /tmp/abnested/$r > /tmp/abnested/$r.log 2>&1
done
VARVE_TXN_TRACE=/tmp/txntrace/t VARVE_MINIO_BIN=.tools/bin/minio bin/varve bench --varve-bin bin/varve-trace2 --profile scale --compact --targets varve-minio-2 --duration 240s --warmup 2s --quiet --out /tmp/abnested/trace > /tmp/abnested/trace.log 2>&1
echo done > /tmp/abnested/DONE
