#!/bin/sh
# The Kafka listener (varve-minio-1-kafka: franz-go idempotent producers and
# consumers) against the Connect API (varve-minio-1: the Go SDK) on the same
# node, etcd and MinIO, at 8 and 1,000 partitions (bench/results/kafka/README.md).
cd "$(git rev-parse --show-toplevel)"
# bin/varve: go build -o bin/varve ./cmd/varve at 82c01d7 (listener of 2089bf1:
# idempotent produce requests of a connection handled at once).
# bin/varve-94a667a: the same at 94a667a (the listener before 2089bf1: one
# request at a time per connection), run by the bench of 82c01d7.
go build -o bin/varve ./cmd/varve
out=${OUT:-bench/results/kafka}
export VARVE_MINIO_BIN=.tools/bin/minio
# 5,000 records/s offered (the scale workloads), two rounds in turn.
bin/varve bench --profile scale --targets varve-minio-1,varve-minio-1-kafka --duration 20s --warmup 5s --rounds 2 --quiet --out $out/rate
# The same after 269ae33 (a version 3 block's buffer starts at its first
# batches, not 64 KiB), with the binary of 2f483a5.
bin/varve bench --profile scale --targets varve-minio-1,varve-minio-1-kafka --duration 20s --warmup 5s --rounds 2 --quiet --out $out/rate-269ae33
# Max rate.
bin/varve bench --profile scale --targets varve-minio-1,varve-minio-1-kafka --duration 20s --warmup 5s --rate 0 --quiet --out $out/max
# The Kafka producers with a 25 ms linger (5 requests in flight cover the node's 100 ms flush tick).
bin/varve bench --profile scale --targets varve-minio-1-kafka --duration 20s --warmup 5s --linger 25ms --quiet --out $out/linger25
# The listener before 2089bf1.
bin/varve bench --varve-bin bin/varve-94a667a --profile scale --targets varve-minio-1-kafka --duration 20s --warmup 5s --quiet --out $out/serial-94a667a
# CPU profiles of the node, 15 s of the 1,000-partition window (VARVE_PPROF=true
# reaches the nodes through the bench's environment).
for tg in varve-minio-1-kafka varve-minio-1; do
  log=/tmp/prof-$tg.log
  VARVE_PPROF=true bin/varve bench --profile scale --targets $tg --duration 20s --warmup 5s --quiet --out /tmp/prof-$tg > $log 2>&1 &
  b=$!
  until grep -q "workload scale-1000p" $log; do sleep 1; done
  sleep 8
  port=$(ps -eo args | grep "varve serve" | grep -v grep | sed -n 's/.*--listen 127.0.0.1:\([0-9]*\).*/\1/p' | head -1)
  curl -s -o $out/profiles/cpu-$tg-1000p.pprof "http://127.0.0.1:$port/debug/pprof/profile?seconds=15"
  wait $b
done
