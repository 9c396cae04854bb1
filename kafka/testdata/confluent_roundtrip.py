"""Round trip through confluent-kafka-python (librdkafka) against a Kafka
listener, for kafka/python_test.go.

Usage: confluent_roundtrip.py BOOTSTRAP TOPIC PARTITIONS N TIMEOUT_SECONDS

An idempotent producer (enable.idempotence, acks=all) produces N records:
record i has key "k<i % 7>" (record 0 has none), value "v<i>", headers
("i", str(i)) and ("h", b"\\x00\\xff<i>"), a fixed timestamp, and every fifth
record names partition i % PARTITIONS (the others are placed by their key).
Every delivery report is collected. A consumer then assign()s every
partition from the beginning and reads until it holds N records.

Prints one JSON object on stdout: {"delivered": [...], "consumed": [...]},
each entry {"i", "partition", "offset", "key", "value", "headers",
"timestamp"} (bytes as latin-1 strings, None as null). Exits 1 with the
reason on stderr on any delivery error, consumer error, client error
callback, or when the timeout passes first.
"""

import json
import sys
import time

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

BASE_TS = 1_700_000_000_000


def fail(msg):
    print("confluent_roundtrip.py: " + msg, file=sys.stderr)
    sys.exit(1)


def text(b):
    if b is None:
        return None
    if isinstance(b, str):
        b = b.encode()
    return b.decode("latin-1")


def headers_of(hs):
    return [[k, text(v)] for k, v in (hs or [])]


def main():
    if len(sys.argv) != 6:
        fail("usage: BOOTSTRAP TOPIC PARTITIONS N TIMEOUT_SECONDS")
    bootstrap, topic = sys.argv[1], sys.argv[2]
    partitions, n, timeout = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    deadline = time.monotonic() + timeout
    print("confluent-kafka %s, librdkafka %s" % (confluent_kafka.version()[0], confluent_kafka.libversion()[0]),
          file=sys.stderr)

    client_errors = []

    def on_error(err):
        client_errors.append(str(err))

    p = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "error_cb": on_error,
    })
    delivered = {}

    def report(i):
        def cb(err, msg):
            if err is not None:
                delivered[i] = {"i": i, "error": str(err)}
                return
            delivered[i] = {
                "i": i, "partition": msg.partition(), "offset": msg.offset(),
                "key": text(msg.key()), "value": text(msg.value()),
                "headers": headers_of(msg.headers()), "timestamp": msg.timestamp()[1],
            }
        return cb

    for i in range(n):
        kw = {
            "value": ("v%d" % i).encode(),
            "headers": [("i", str(i).encode()), ("h", b"\x00\xff" + str(i).encode())],
            "timestamp": BASE_TS + i,
            "on_delivery": report(i),
        }
        if i > 0:
            kw["key"] = ("k%d" % (i % 7)).encode()
        if i % 5 == 0:
            kw["partition"] = i % partitions
        while True:
            try:
                p.produce(topic, **kw)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(max(deadline - time.monotonic(), 0.1))
    if left:
        fail("%d records not delivered before the timeout; client errors: %s" % (left, client_errors))
    if client_errors:
        fail("producer errors: %s" % client_errors)
    bad = [d for d in delivered.values() if "error" in d]
    if bad:
        fail("delivery failed: %s" % bad[:5])
    if len(delivered) != n:
        fail("%d delivery reports for %d records" % (len(delivered), n))

    c = Consumer({
        "bootstrap.servers": bootstrap,
        # A group id is required by the client; assign() never joins it
        # and nothing is committed.
        "group.id": "confluent-roundtrip",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "error_cb": on_error,
    })
    c.assign([TopicPartition(topic, part, confluent_kafka.OFFSET_BEGINNING) for part in range(partitions)])
    consumed = []
    while len(consumed) < n:
        if time.monotonic() > deadline:
            fail("consumed %d of %d records before the timeout; client errors: %s" % (len(consumed), n, client_errors))
        msg = c.poll(0.2)
        if msg is None:
            continue
        if msg.error() is not None:
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            fail("consumer error: %s" % msg.error())
        hs = headers_of(msg.headers())
        i = int(dict((k, v) for k, v in hs)["i"]) if hs else -1
        consumed.append({
            "i": i, "partition": msg.partition(), "offset": msg.offset(),
            "key": text(msg.key()), "value": text(msg.value()),
            "headers": hs, "timestamp": msg.timestamp()[1],
        })
    c.close()
    if client_errors:
        fail("client errors: %s" % client_errors)
    json.dump({"delivered": [delivered[i] for i in range(n)], "consumed": consumed}, sys.stdout)


if __name__ == "__main__":
    main()
