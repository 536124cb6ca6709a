"""ListOffsets by timestamp and MAX_TIMESTAMP, per record, as Kafka 4.4 answers them.

Kafka answers a timestamp lookup with the first record (in offset order, below the high watermark)
whose timestamp is >= the target: that record's own offset and timestamp, even inside a batch (compressed
or not). MAX_TIMESTAMP (-3) is the first record holding the largest timestamp. Nothing found: offset -1,
timestamp -1, no error. With LogAppendTime every record of a batch carries the batch's append time.

Every expected answer is computed from the records the test produced and read back (offset and
timestamp of each), never hard-coded. Clients: the Java consumer's offsetsForTimes and Admin
listOffsets(maxTimestamp) (ListOffsetsTimes.java), kafka-python's offsets_for_times and
list_partition_offsets, confluent-kafka's offsets_for_times and AdminClient.list_offsets, and raw
ListOffsets requests (v1-v11) for the special timestamps and their version gates.
"""

import struct
import time
from pathlib import Path

import pytest

from conftest import KAFKA_RUN, consume_all, create_topic
from rawfetch import Part, compact_array, compact_str, fetch, round_trip, std_array, std_str
from test_protocol_errors import connect

HERE = Path(__file__).resolve().parent
JAVA = HERE / "ListOffsetsTimes.java"

# CreateTime base: ten minutes ago, whole seconds. Recent enough that retention.ms (7 days, by the largest
# timestamp of a segment) keeps the data, and far enough in the past that every stamp the tests add stays
# below Kafka 4's message.timestamp.after.max.ms (1 hour ahead).
T0 = (int(time.time()) - 600) * 1000

LIST_OFFSETS = 2
NONE = 0
UNSUPPORTED_VERSION = 35


# ---------------------------------------------------------------- producing and reading back


def produce_one_batch(bootstrap, topic, timestamps, compression="none"):
    """confluent-kafka: every record in one batch (long linger, then one flush)."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 60000, "compression.type": compression,
                  "batch.num.messages": 100000, "batch.size": 1000000, "acks": "all"})
    # Know the partition's leader first: records produced before that wait in another queue and can
    # reach the partition's queue in two parts, making two batches.
    p.list_topics(topic, timeout=30)
    errors = []
    for i, ts in enumerate(timestamps):
        p.produce(topic, value=f"v{i}-".encode() + b"x" * 100, key=f"k{i}".encode(), partition=0,
                  timestamp=ts, on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(60) == 0
    assert not errors, errors


def java_produce_one_batch(kafka_run, bootstrap, topic, timestamps, compression):
    out = kafka_run(str(JAVA), "produce", bootstrap, topic, compression, *timestamps).stdout
    acked = [line.split() for line in out.splitlines() if line.startswith("P ")]
    assert len(acked) == len(timestamps), out


def records_of(bootstrap, topic):
    """[(offset, timestamp)] of every record of partition 0, as a consumer reads them."""
    msgs = consume_all(bootstrap, topic, 1)[0]
    got = [(m.offset(), m.timestamp()[1]) for m in msgs]
    assert [o for o, _ in got] == list(range(len(got)))
    return got


def batch_count(broker, topic):
    """How many batches partition 0 holds (raw Fetch v11 from offset 0, 64 MiB)."""
    with connect(broker) as s:
        n, offset = 0, 0
        while True:
            pr = fetch(s, 11, [Part(topic, 0, offset=offset, partition_max_bytes=64 << 20)],
                       max_bytes=64 << 20).partitions[0]
            if pr.batches == 0:
                return n
            n += pr.batches
            offset = pr.next_offset


# ---------------------------------------------------------------- Kafka's answers, from the records


def expect_at(records, ts):
    """(offset, timestamp) of the first record with timestamp >= ts, or None."""
    return next(((o, t) for o, t in records if t >= ts), None)


def expect_max(records):
    top = max(t for _, t in records)
    return expect_at(records, top)


def targets_for(records, extra=()):
    """Every timestamp produced, one either side of it, and one past the end."""
    ts = {t + d for _, t in records for d in (-1, 0, 1)}
    ts.add(max(t for _, t in records) + 1000)
    ts.update(extra)
    return sorted(t for t in ts if t >= 0)


# ---------------------------------------------------------------- the clients


def java_query(kafka_run, bootstrap, topic, targets):
    out = kafka_run(str(JAVA), "query", bootstrap, topic, *targets).stdout
    by_ts, top = {}, None
    for line in out.splitlines():
        f = line.split()
        if f[:1] == ["T"]:
            by_ts[int(f[1])] = None if f[2] == "none" else (int(f[2]), int(f[3]))
        elif f[:1] == ["MAX"]:
            top = (int(f[1]), int(f[2]))
    assert set(by_ts) == set(targets), out
    return by_ts, top


def kafka_python_query(bootstrap, topic, targets):
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    from kafka.admin import OffsetSpec
    tp = TopicPartition(topic, 0)
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        by_ts = {}
        for ts in targets:
            r = c.offsets_for_times({tp: ts})[tp]
            by_ts[ts] = None if r is None else (r.offset, r.timestamp)
    finally:
        c.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        r = admin.list_partition_offsets({tp: OffsetSpec.MAX_TIMESTAMP})[tp]
        top = (r.offset, r.timestamp)
    finally:
        admin.close()
    return by_ts, top


def confluent_query(bootstrap, topic, targets):
    """librdkafka's offsets_for_times gives offsets only (-1 when nothing is found); its AdminClient
    list_offsets gives offset and timestamp."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"unused-{topic}", "enable.auto.commit": False})
    try:
        offsets = {}
        for ts in targets:
            [r] = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=30)
            assert r.error is None, r.error
            offsets[ts] = r.offset
    finally:
        c.close()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tp = TopicPartition(topic, 0)
    by_ts = {}
    for ts in targets[:40]:  # one request each: a sample is enough next to offsets_for_times
        r = admin.list_offsets({tp: OffsetSpec.for_timestamp(ts)})[tp].result(30)
        by_ts[ts] = None if r.offset == -1 else (r.offset, r.timestamp)
    r = admin.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(30)
    return offsets, by_ts, (r.offset, r.timestamp)


def check_all_clients(kafka_run, bootstrap, topic, records, extra_targets=()):
    targets = targets_for(records, extra_targets)
    want = {ts: expect_at(records, ts) for ts in targets}
    want_max = expect_max(records)

    by_ts, top = java_query(kafka_run, bootstrap, topic, targets)
    assert by_ts == want, _diff("Java offsetsForTimes", by_ts, want)
    assert top == want_max, f"Java listOffsets(maxTimestamp) {top} != {want_max}"

    by_ts, top = kafka_python_query(bootstrap, topic, targets)
    assert by_ts == want, _diff("kafka-python offsets_for_times", by_ts, want)
    assert top == want_max, f"kafka-python MAX_TIMESTAMP {top} != {want_max}"

    offsets, by_ts, top = confluent_query(bootstrap, topic, targets)
    want_offsets = {ts: (w[0] if w else -1) for ts, w in want.items()}
    assert offsets == want_offsets, _diff("confluent offsets_for_times", offsets, want_offsets)
    assert by_ts == {ts: want[ts] for ts in by_ts}, _diff("confluent list_offsets", by_ts, want)
    assert top == want_max, f"confluent list_offsets(max_timestamp) {top} != {want_max}"


def _diff(who, got, want):
    bad = [(ts, got.get(ts), want.get(ts)) for ts in sorted(want) if got.get(ts) != want.get(ts)]
    return f"{who}: {len(bad)} wrong answers (timestamp, got, want): {bad[:12]}"


# ---------------------------------------------------------------- raw ListOffsets


def list_offsets_raw(broker, version, topic, timestamp, partition=0, correlation_id=7, current_leader_epoch=-1):
    """One ListOffsets request for one partition; returns (error, timestamp, offset, leader_epoch)."""
    flexible = version >= 6
    part = struct.pack(">i", partition)
    if version >= 4:
        part += struct.pack(">i", current_leader_epoch)
    part += struct.pack(">q", timestamp)
    body = struct.pack(">i", -1)  # replica id
    if version >= 2:
        body += struct.pack(">b", 0)  # READ_UNCOMMITTED
    if flexible:
        body += compact_array([compact_str(topic) + compact_array([part + b"\x00"]) + b"\x00"])
        if version >= 10:
            body += struct.pack(">i", 5000)
        body += b"\x00"
    else:
        body += std_array([std_str(topic) + std_array([part])])
    r = round_trip(broker, LIST_OFFSETS, version, flexible, correlation_id, body)
    if version >= 2:
        r.take(">i")  # throttle
    n_topics = r.compact_len() if flexible else r.take(">i")
    assert n_topics == 1
    assert (r.compact_str() if flexible else r.std_str()) == topic
    n_parts = r.compact_len() if flexible else r.take(">i")
    assert n_parts == 1
    index, err, ts, offset = r.take(">ihqq")
    assert index == partition
    epoch = r.take(">i") if version >= 4 else None
    return err, ts, offset, epoch


# ---------------------------------------------------------------- tests


def test_one_batch_of_ten_each_in_between_time(broker, kafka_run, topic_name):
    """10 records t+0 .. t+9000 in one batch: asking for t+4500 is offset 5 at t+5000."""
    create_topic(broker.bootstrap, topic_name)
    produce_one_batch(broker.bootstrap, topic_name, [T0 + i * 1000 for i in range(10)])
    assert batch_count(broker, topic_name) == 1
    records = records_of(broker.bootstrap, topic_name)
    assert [t for _, t in records] == [T0 + i * 1000 for i in range(10)]
    halves = [T0 + i * 500 for i in range(-1, 21)]
    check_all_clients(kafka_run, broker.bootstrap, topic_name, records, halves)
    assert expect_at(records, T0 + 4500) == (5, T0 + 5000)  # the case of the issue, from the model


def test_non_monotonic_timestamps_inside_a_batch(broker, kafka_run, topic_name):
    create_topic(broker.bootstrap, topic_name)
    stamps = [T0 + d for d in (5000, 1000, 9000, 3000, 3000, 9000, 0, 8000, 7000, 2000)]
    produce_one_batch(broker.bootstrap, topic_name, stamps)
    assert batch_count(broker, topic_name) == 1
    records = records_of(broker.bootstrap, topic_name)
    assert [t for _, t in records] == stamps
    check_all_clients(kafka_run, broker.bootstrap, topic_name, records)


def test_many_batches_over_several_segments(broker, kafka_run, topic_name):
    """~1.6 MiB in 1 MiB segments (Kafka 4's smallest segment.bytes), non-monotonic within and across
    batches, so that both the segment choice and the time and offset indexes are used."""
    create_topic(broker.bootstrap, topic_name, config={"segment.bytes": str(1 << 20)})
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 60000, "acks": "all",
                  "batch.num.messages": 100000, "batch.size": 1000000})
    p.list_topics(topic_name, timeout=30)  # see produce_one_batch
    for b in range(40):
        for i in range(10):
            ts = T0 + b * 10_000 + ((i * 7 + b * 3) % 10) * 1000 - (b % 4) * 15_000
            p.produce(topic_name, value=bytes([65 + (b + i) % 26]) * 4000, partition=0, timestamp=ts)
        assert p.flush(60) == 0  # one batch per flush
    records = records_of(broker.bootstrap, topic_name)
    assert len(records) == 400
    assert batch_count(broker, topic_name) == 40
    segments = list(broker.data_dir.glob(f"**/{topic_name}-0/*.log")) if broker.data_dir else []
    if segments:
        assert len(segments) >= 2, segments
    check_all_clients(kafka_run, broker.bootstrap, topic_name, records)


@pytest.mark.parametrize("producer,codec", [
    ("confluent", "lz4"), ("confluent", "zstd"), ("confluent", "gzip"), ("confluent", "snappy"),
    ("java", "lz4"), ("java", "zstd"), ("java", "gzip"), ("java", "snappy"),
])
def test_compressed_batches(broker, kafka_run, topic_name, producer, codec):
    create_topic(broker.bootstrap, topic_name)
    batches = [
        [T0 + d for d in (4000, 1000, 6000, 2000, 6000, 0)],
        [T0 + d for d in (3000, 8000, 5000, 7000)],
        [T0 + d for d in (500, 7500, 9500, 9500, 100)],
    ]
    for stamps in batches:
        if producer == "java":
            java_produce_one_batch(kafka_run, broker.bootstrap, topic_name, stamps, codec)
        else:
            produce_one_batch(broker.bootstrap, topic_name, stamps, codec)
    assert batch_count(broker, topic_name) == len(batches)
    records = records_of(broker.bootstrap, topic_name)
    assert [t for _, t in records] == [t for b in batches for t in b]
    check_all_clients(kafka_run, broker.bootstrap, topic_name, records)


def test_log_append_time_topic(broker, kafka_run, topic_name):
    """LogAppendTime: every record of a batch carries the batch's append time, whatever the producer
    stamped (here: CreateTime stamps in the past, descending)."""
    create_topic(broker.bootstrap, topic_name, config={"message.timestamp.type": "LogAppendTime"})
    for b in range(3):
        produce_one_batch(broker.bootstrap, topic_name, [T0 - b * 100 - i for i in range(4)],
                          "lz4" if b == 1 else "none")
        time.sleep(0.02)
    assert batch_count(broker, topic_name) == 3
    records = records_of(broker.bootstrap, topic_name)
    stamps = [t for _, t in records]
    assert all(t > T0 for t in stamps), stamps
    for b in range(3):
        assert len(set(stamps[b * 4:(b + 1) * 4])) == 1, stamps
    check_all_clients(kafka_run, broker.bootstrap, topic_name, records, [T0])


def test_empty_partition_and_past_the_end(broker, topic_name):
    create_topic(broker.bootstrap, topic_name)
    # Kafka's metadata names the leader before the log exists; it answers NOT_LEADER_OR_FOLLOWER (6) meanwhile.
    deadline = time.monotonic() + 30
    while list_offsets_raw(broker, 1, topic_name, -1)[0] == 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    for v in (1, 5, 7, 9):
        assert list_offsets_raw(broker, v, topic_name, T0)[:3] == (NONE, -1, -1)
    assert list_offsets_raw(broker, 9, topic_name, -3)[:3] == (NONE, -1, -1)
    produce_one_batch(broker.bootstrap, topic_name, [T0 + i for i in range(5)], "zstd")
    records = records_of(broker.bootstrap, topic_name)
    end = max(t for _, t in records) + 1
    for v in (1, 4, 6, 10):
        err, ts, offset, epoch = list_offsets_raw(broker, v, topic_name, end)
        assert (err, ts, offset) == (NONE, -1, -1)
        assert epoch in (None, -1)
        err, ts, offset, epoch = list_offsets_raw(broker, v, topic_name, T0 + 2)
        assert (err, offset, ts) == (NONE, *expect_at(records, T0 + 2))
        assert epoch is None or epoch >= 0


def test_special_timestamps_and_their_versions(broker, topic_name):
    """EARLIEST (-2), LATEST (-1), MAX_TIMESTAMP (-3, v7+), EARLIEST_LOCAL (-4, v8+), LATEST_TIERED (-5,
    v9+), EARLIEST_PENDING_UPLOAD (-6, v11+); other negative timestamps, and a special one below its
    version, are UNSUPPORTED_VERSION. Without tiered storage -5 and -6 find nothing: offset -1, epoch -1."""
    create_topic(broker.bootstrap, topic_name)
    produce_one_batch(broker.bootstrap, topic_name, [T0 + d for d in (300, 900, 100)], "lz4")
    records = records_of(broker.bootstrap, topic_name)
    n = len(records)
    for v in range(1, 12):
        assert list_offsets_raw(broker, v, topic_name, -2)[:3] == (NONE, -1, 0), v
        assert list_offsets_raw(broker, v, topic_name, -1)[:3] == (NONE, -1, n), v
        want_max = expect_max(records)
        got = list_offsets_raw(broker, v, topic_name, -3)
        assert got[:3] == ((NONE, want_max[1], want_max[0]) if v >= 7 else (UNSUPPORTED_VERSION, -1, -1)), v
        got = list_offsets_raw(broker, v, topic_name, -4)
        assert got[:3] == ((NONE, -1, 0) if v >= 8 else (UNSUPPORTED_VERSION, -1, -1)), v
        got = list_offsets_raw(broker, v, topic_name, -5)
        assert got[:3] == ((NONE, -1, -1) if v >= 9 else (UNSUPPORTED_VERSION, -1, -1)), v
        if v >= 9:
            assert got[3] == -1  # no tiered offset, no epoch
        got = list_offsets_raw(broker, v, topic_name, -6)
        assert got == ((NONE, -1, -1, -1) if v >= 11 else (UNSUPPORTED_VERSION, -1, -1, -1 if v >= 4 else None)), v
        for other in (-7, -1000):
            assert list_offsets_raw(broker, v, topic_name, other)[:3] == (UNSUPPORTED_VERSION, -1, -1), (v, other)
