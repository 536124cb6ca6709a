"""Log compaction (issue 12) as Kafka 4.4 does it: compacted topics refuse records without a key, are
never deleted by age alone, and the log cleaner keeps the latest record of every key.

The cleaner tests run on a broker of their own with a short `log.cleaner.backoff.ms` and retention check
interval, the same settings on both targets.
"""

import os
import random
import signal
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

CLEANER_BROKER_CONFIG = {"log.cleaner.backoff.ms": "200", "log.retention.check.interval.ms": "500"}
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


def produce_aged(s, topic, pairs, first_ts=None):
    """Produces one batch after the active segment has aged past segment.ms, so it starts a new segment."""
    time.sleep(SEGMENT_MS * 1.5 / 1000)
    r = prodraw.one(s, 8, topic, 0, keyed_batch(pairs, first_ts))
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


def test_compact_delete_honours_both(cleaner_broker, topic_name):
    """cleanup.policy=compact,delete: segments older than retention.ms go as with delete, and what stays is
    compacted; a key whose only records were in a deleted segment is gone."""
    create_topic(cleaner_broker.bootstrap, topic_name, config={
        "cleanup.policy": "compact,delete", "segment.ms": str(SEGMENT_MS), "min.cleanable.dirty.ratio": "0.01",
        "retention.ms": "3600000"})
    s = connect(cleaner_broker)
    try:
        two_hours_ago = int(time.time() * 1000) - 2 * 3600 * 1000
        keys = [f"k{i}".encode() for i in range(5)]
        assert produce_aged(s, topic_name, [(k, b"old") for k in keys], first_ts=two_hours_ago) == 0
        assert produce_aged(s, topic_name, [(k, b"new") for k in keys[:3]]) == 5
        assert produce_aged(s, topic_name, [(keys[3], b"new"), (keys[0], b"newer")]) == 8
        assert produce_aged(s, topic_name, [(b"roll", b"x")]) == 10
        expected = [(6, keys[1], b"new"), (7, keys[2], b"new"), (8, keys[3], b"new"), (9, keys[0], b"newer"),
                    (10, b"roll", b"x")]
        assert wait_records(cleaner_broker, topic_name, expected) == expected
    finally:
        s.close()


CRASH_CYCLES = int(os.environ.get("RINGTIDE_COMPACTION_CRASH_CYCLES", "20"))


@pytest.mark.skipif(os.environ.get("RINGTIDE_TEST_TARGET", "ringtide") != "ringtide",
                    reason="kills the broker 20 times: a Kafka restart takes ~20 s")
def test_kill_during_cleaning_keeps_every_acknowledged_latest_value(topic_name, kafka_run):
    """kill -9 at random moments while the cleaner rewrites and swaps segments (it runs all the time: tiny
    segments, a 10 ms backoff, every produce makes the log dirty): after each restart the latest
    acknowledged value of every key is there (or a later write of the key), offsets never go backwards,
    and Kafka's dump-log reads every segment."""
    rnd = random.Random(20261201)
    b = Broker("compaction-crash", config={"log.cleaner.backoff.ms": "10"})
    b.start()
    try:
        create_topic(b.bootstrap, topic_name, config={
            "cleanup.policy": "compact", "segment.ms": "20", "min.cleanable.dirty.ratio": "0.01"})
        acked = {}  # key -> (offset, value) of its latest acknowledged write
        end = 0
        seq = 0
        for cycle in range(CRASH_CYCLES):
            s = connect(b)
            deadline = time.monotonic() + rnd.uniform(0.3, 1.2)
            try:
                while time.monotonic() < deadline:
                    keys = rnd.sample(range(40), 8)
                    pairs = [(f"k{k}".encode(), None if rnd.random() < 0.1 else f"v{seq}-{k}".encode())
                             for k in keys]
                    seq += 1
                    r = prodraw.one(s, 8, topic_name, 0, keyed_batch(pairs))
                    assert r["error"] == NONE, r
                    for i, (k, v) in enumerate(pairs):
                        acked[k] = (r["base_offset"] + i, v)
                    end = r["base_offset"] + len(pairs)
                    time.sleep(rnd.uniform(0, 0.03))
            finally:
                s.close()
            time.sleep(rnd.uniform(0, 0.05))
            b.stop(signal.SIGKILL)
            b.start()
            got = read_all(b, topic_name)
            offsets = [o for o, _, _ in got]
            assert offsets == sorted(set(offsets)), f"cycle {cycle}: offsets out of order or repeated"
            assert offsets and offsets[-1] >= end - 1, f"cycle {cycle}: log ends at {offsets[-1:]}, acked up to {end - 1}"
            latest = {}
            for o, k, v in got:
                latest[k] = (o, v)
            for k, (o, v) in acked.items():
                have = latest.get(k)
                if v is None and have is None:
                    continue  # a tombstone may be gone once its horizon passed (not within this test)
                assert have is not None and (have[0] > o or have == (o, v)), \
                    f"cycle {cycle}: key {k!r} acked at {o} = {v!r}, log has {have!r}"
        cleaned = [ln for ln in b.log_path.read_text(errors="replace").splitlines() if "log cleaned" in ln]
        assert cleaned, "the cleaner never ran"
    finally:
        b.stop()
    d = b.data_dir / f"{topic_name}-0"
    logs = sorted(d.glob("*.log"))
    p = kafka_run("dump-log", "--files", ",".join(map(str, logs[:-1])), check=False)
    assert "baseOffset" in p.stdout and "Exception" not in p.stdout + p.stderr, p.stdout[-2000:] + p.stderr[-2000:]
    assert not list(d.glob("*.cleaned")) and not list(d.glob("*.swap"))


def test_consumer_offsets_stay_bounded_and_restore(topic_name):
    """__consumer_offsets is compacted like any compacted topic: a group committing for a long time leaves
    only its latest offsets behind once segments roll and are cleaned, and a restart restores them."""
    import groupraw as G
    b = Broker("offsets-compaction", config={
        "log.cleaner.backoff.ms": "200", "offsets.topic.num.partitions": "1",
        "offsets.topic.segment.bytes": "1048576"})
    b.start()
    try:
        create_topic(b.bootstrap, topic_name, partitions=8)
        groups = [f"{topic_name}-g{i}" for i in range(2)]
        for g in groups:
            G.wait_coordinator(b, g, topic_name)
        rounds, window = 1500, 64
        s = connect(b)
        try:
            corr, sent = 100, []
            for r in range(rounds):
                for g in groups:
                    corr += 1
                    s.sendall(G.offset_commit_v7(corr, g, topic_name, {p: r * 8 + p for p in range(8)}))
                    sent.append(corr)
                    if len(sent) >= window:
                        errs = G.parse_offset_commit_v7(G.answer(s, sent.pop(0)))
                        assert all(e == NONE for e in errs.values()), errs
            for c in sent:
                errs = G.parse_offset_commit_v7(G.answer(s, c))
                assert all(e == NONE for e in errs.values()), errs
        finally:
            s.close()
        d = b.data_dir / "__consumer_offsets-0"
        written = sum(f.stat().st_size for f in d.glob("*.log"))
        assert len(list(d.glob("*.log"))) >= 3, f"the commits should fill several segments ({written} bytes)"

        def sealed_bytes():
            logs = sorted(d.glob("*.log"))[:-1]
            return sum(f.stat().st_size for f in logs)
        deadline = time.monotonic() + 90
        while sealed_bytes() > 64 * 1024 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sealed_bytes() <= 64 * 1024, f"sealed segments hold {sealed_bytes()} bytes of {written} written"
        b.restart()
        last = (rounds - 1) * 8
        for g in groups:
            assert G.fetch_committed(b, g, topic_name, list(range(8))) == {p: last + p for p in range(8)}
    finally:
        b.stop()
