"""Log compaction (issue 12) as Kafka 4.4 does it: compacted topics refuse records without a key, are
never deleted by age alone, and the log cleaner keeps the latest record of every key.

The cleaner tests run on a broker of their own with a short `log.cleaner.backoff.ms` and retention check
interval, the same settings on both targets.
"""

import time

import pytest

import prodraw
from conftest import Broker, create_topic
from kafka.record.memory_records import MemoryRecordsBuilder
from test_protocol_errors import connect

NONE = 0
INVALID_RECORD = 87


def keyed_batch(pairs, first_ts=None):
    """One uncompressed batch of (key, value) records; None is a null key or a tombstone."""
    ts = int(time.time() * 1000) if first_ts is None else first_ts
    b = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    for i, (k, v) in enumerate(pairs):
        b.append(ts + i, k, v, headers=[])
    b.close()
    return bytes(b.buffer())


@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_keyless_records_refused(broker, topic_name, policy):
    create_topic(broker.bootstrap, topic_name, config={"cleanup.policy": policy})
    s = connect(broker)
    try:
        r = prodraw.one(s, 8, topic_name, 0, keyed_batch([(b"a", b"1"), (None, b"2"), (b"c", b"3"), (None, b"4")]))
        why = f"Compacted topic cannot accept message without key in topic partition {topic_name}-0"
        assert r["error"] == INVALID_RECORD
        assert (r["base_offset"], r["log_start_offset"]) == (-1, 0)
        assert r["record_errors"] == [(1, why), (3, why)]
        assert r["error_message"] == (
            "One or more records have been rejected due to 2 record errors in total, and only showing the "
            f"first three errors at most: [RecordError(batchIndex=1, message='{why}'), "
            f"RecordError(batchIndex=3, message='{why}')]")
        # Nothing of the refused batch was appended; keyed records and tombstones are taken.
        r = prodraw.one(s, 8, topic_name, 0, keyed_batch([(b"a", b"1"), (b"b", None)]))
        assert (r["error"], r["base_offset"]) == (NONE, 0)
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------------
# The log cleaner, on a broker of its own (short backoff) of the target kind.

CLEANER_BROKER_CONFIG = {"log.cleaner.backoff.ms": "200"}
SEGMENT_MS = 100  # every produce below lands in a segment of its own: the one before it has aged out


@pytest.fixture(scope="module")
def cleaner_broker():
    b = Broker("compaction", config=CLEANER_BROKER_CONFIG)
    b.start()
    yield b
    b.stop()


def read_all(broker, topic):
    """Every record of partition 0 from the log start: [(offset, key, value)]."""
    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "compaction-reader",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    return out
                raise AssertionError(m.error())
            out.append((m.offset(), m.key(), m.value()))
        raise AssertionError("no end of partition within 30 s")
    finally:
        c.close()


def produce_aged(s, topic, pairs):
    """Produces one batch after the active segment has aged past segment.ms, so it starts a new segment."""
    time.sleep(SEGMENT_MS * 1.5 / 1000)
    r = prodraw.one(s, 8, topic, 0, keyed_batch(pairs))
    assert r["error"] == NONE, r
    return r["base_offset"]


def wait_records(broker, topic, expected, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        got = read_all(broker, topic)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_cleaner_keeps_latest_value_of_every_key(cleaner_broker, topic_name, kafka_run):
    create_topic(cleaner_broker.bootstrap, topic_name, config={
        "cleanup.policy": "compact", "segment.ms": str(SEGMENT_MS), "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "2000"})
    s = connect(cleaner_broker)
    try:
        keys = [f"k{i}".encode() for i in range(10)]
        assert produce_aged(s, topic_name, [(k, b"a") for k in keys]) == 0
        assert produce_aged(s, topic_name, [(k, b"b") for k in keys[:5]]) == 10
        assert produce_aged(s, topic_name, [(keys[9], None)]) == 15
        assert produce_aged(s, topic_name, [(b"roll", b"x")]) == 16  # the active segment: never cleaned
        expected = ([(5 + i, keys[5 + i], b"a") for i in range(4)]
                    + [(10 + i, keys[i], b"b") for i in range(5)]
                    + [(15, keys[9], None), (16, b"roll", b"x")])
        assert wait_records(cleaner_broker, topic_name, expected) == expected

        # Past delete.retention.ms the tombstone goes at the next cleaning (new records make the log
        # dirty again); the offsets of what stays never change.
        time.sleep(2.5)
        assert produce_aged(s, topic_name, [(b"roll", b"y")]) == 17
        assert produce_aged(s, topic_name, [(b"roll2", b"z")]) == 18
        expected = expected[:-2] + [(17, b"roll", b"y"), (18, b"roll2", b"z")]
        assert wait_records(cleaner_broker, topic_name, expected) == expected
    finally:
        s.close()
    # Kafka's own tool reads every sealed segment the cleaner wrote.
    d = cleaner_broker.data_dir / f"{topic_name}-0"
    logs = sorted(d.glob("*.log"))[:-1]
    assert logs
    p = kafka_run("dump-log", "--files", ",".join(map(str, logs)), "--print-data-log")
    assert "baseOffset" in p.stdout and "Exception" not in p.stdout + p.stderr, p.stdout[-2000:] + p.stderr[-2000:]
