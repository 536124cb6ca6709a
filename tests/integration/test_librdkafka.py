"""librdkafka (confluent-kafka) idempotent producer, lz4 and zstd, read back
with a manually assigned consumer: everything must come back intact."""

import time

import pytest
from confluent_kafka import Producer, TIMESTAMP_CREATE_TIME

from conftest import consume_all, create_topic

N = 24_000
PARTITIONS = 3


def record(i, codec, ts0):
    key = f"key-{i % 1000}".encode()
    value = None if i % 997 == 5 else (f"value-{i}-{codec}-".encode() + bytes([i % 251]) * (i % 300))
    headers = [("seq", str(i).encode()), ("codec", codec.encode()), ("empty", b""),
               ("dup", b"1"), ("dup", b"2"), ("null", None)]
    return key, value, headers, ts0 + i


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_idempotent_roundtrip(bootstrap, topic_name, codec):
    create_topic(bootstrap, topic_name, PARTITIONS)
    p = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": codec,
        "linger.ms": 5,
        "partitioner": "murmur2_random",
    })
    ts0 = int(time.time() * 1000) - 3_600_000  # an hour ago: distinguishable from broker time
    reports = {}
    errors = []

    def on_delivery(err, msg, i):
        if err is not None:
            errors.append((i, err))
        else:
            reports[i] = (msg.partition(), msg.offset())

    for i in range(N):
        key, value, headers, ts = record(i, codec, ts0)
        while True:
            try:
                p.produce(topic_name, key=key, value=value, headers=headers, timestamp=ts,
                          on_delivery=lambda err, msg, i=i: on_delivery(err, msg, i))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    remaining = p.flush(60)
    assert remaining == 0, f"{remaining} messages not delivered"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:5]}"
    assert len(reports) == N

    # expected layout from the delivery reports
    by_part = {}
    key_part = {}
    for i, (part, off) in reports.items():
        by_part.setdefault(part, {})[off] = i
        key = record(i, codec, ts0)[0]
        assert key_part.setdefault(key, part) == part, "same key landed on two partitions"
    assert set(by_part) == set(range(PARTITIONS)), f"not all partitions used: {sorted(by_part)}"
    for part, offs in by_part.items():
        assert sorted(offs) == list(range(len(offs))), f"partition {part}: offsets not contiguous from 0"
        seqs = [offs[o] for o in sorted(offs)]
        assert seqs == sorted(seqs), f"partition {part}: produce order not preserved"

    got = consume_all(bootstrap, topic_name, PARTITIONS, {p: len(o) for p, o in by_part.items()})
    for part, msgs in got.items():
        assert [m.offset() for m in msgs] == list(range(len(by_part[part])))
        for m in msgs:
            i = by_part[part][m.offset()]
            key, value, headers, ts = record(i, codec, ts0)
            assert m.key() == key, (part, m.offset())
            assert m.value() == value, (part, m.offset())
            assert m.headers() == headers, (part, m.offset(), m.headers())
            assert m.timestamp() == (TIMESTAMP_CREATE_TIME, ts), (part, m.offset(), m.timestamp())
    assert sum(len(v) for v in got.values()) == N
