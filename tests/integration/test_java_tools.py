"""Apache Kafka's own Java command-line tools (the bin/kafka-*.sh scripts),
run through tests/kafka/kafka-run against the broker."""

import re
import time

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer
from kafka import TopicPartition as KTP

from conftest import wait_for

SEGMENT_BYTES = 1048576  # the minimum segment.bytes Kafka 4.x accepts (1 MiB)


def topics_in(bootstrap):
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def end_offsets(bootstrap, topic, partitions):
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-offsets"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(partitions)}
    finally:
        c.close()


def read_assigned(bootstrap, topic, partition, count, timeout=60):
    """kafka-python consumer, no group, manual assignment, from offset 0."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest")
    try:
        tp = KTP(topic, partition)
        c.assign([tp])
        c.seek_to_beginning(tp)
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                out.extend(recs)
        return out
    finally:
        c.close()


def test_topics_create_list_describe_delete(bootstrap, kafka_run, topic_name):
    b = ["--bootstrap-server", bootstrap]
    p = kafka_run("topics", *b, "--create", "--topic", topic_name, "--partitions", "3",
                  "--replication-factor", "1", "--config", "retention.ms=3600000")
    assert f"Created topic {topic_name}." in p.stdout

    p = kafka_run("topics", *b, "--list")
    assert topic_name in p.stdout.split()

    p = kafka_run("topics", *b, "--describe", "--topic", topic_name)
    lines = p.stdout.strip().splitlines()
    head = lines[0]
    assert f"Topic: {topic_name}" in head and "PartitionCount: 3" in head and "ReplicationFactor: 1" in head, p.stdout
    assert "retention.ms=3600000" in head, p.stdout
    parts = sorted(int(m.group(1)) for l in lines[1:] if (m := re.search(r"\bPartition: (\d+)\s", l)))
    assert parts == [0, 1, 2], p.stdout
    for l in lines[1:]:
        assert re.search(r"Leader: \d+\s", l) and re.search(r"Isr: \d+", l), l

    # creating it again is an error
    p = kafka_run("topics", *b, "--create", "--topic", topic_name, "--partitions", "1",
                  "--replication-factor", "1", check=False)
    assert p.returncode != 0 and "already exists" in (p.stdout + p.stderr)

    kafka_run("topics", *b, "--delete", "--topic", topic_name)
    wait_for(lambda: topic_name not in topics_in(bootstrap), 30, 0.2, "topic deletion")
    p = kafka_run("topics", *b, "--list")
    assert topic_name not in p.stdout.split()


def test_console_producer(bootstrap, kafka_run, topic_name):
    kafka_run("topics", "--bootstrap-server", bootstrap, "--create", "--topic", topic_name,
              "--partitions", "1", "--replication-factor", "1")
    lines = [f"k{i}:line {i} \u00e9\u4e2d" for i in range(200)]
    kafka_run("console-producer", "--bootstrap-server", bootstrap, "--topic", topic_name,
              "--reader-property", "parse.key=true", "--reader-property", "key.separator=:",
              input="\n".join(lines) + "\n")
    recs = read_assigned(bootstrap, topic_name, 0, 200)
    assert [(r.key, r.value) for r in recs] == \
        [(f"k{i}".encode(), f"line {i} \u00e9\u4e2d".encode()) for i in range(200)]
    assert [r.offset for r in recs] == list(range(200))


def test_console_consumer_assigned_partition(bootstrap, kafka_run, topic_name):
    """kafka-console-consumer with --partition (assign(), no group join)."""
    kafka_run("console-producer", "--bootstrap-server", bootstrap, "--topic", topic_name,
              input="".join(f"msg-{i}\n" for i in range(50)))
    p = kafka_run("console-consumer", "--bootstrap-server", bootstrap, "--topic", topic_name,
                  "--partition", "0", "--offset", "earliest", "--max-messages", "50",
                  "--timeout-ms", "30000", "--formatter-property", "print.offset=true")
    out = [l for l in p.stdout.splitlines() if l.strip()]
    assert len(out) == 50, p.stdout
    for i, l in enumerate(out):
        assert l.startswith(f"Offset:{i}") and l.endswith(f"msg-{i}"), l


def test_producer_perf_and_get_offsets(bootstrap, kafka_run, topic_name):
    kafka_run("topics", "--bootstrap-server", bootstrap, "--create", "--topic", topic_name,
              "--partitions", "2", "--replication-factor", "1")
    p = kafka_run("producer-perf-test", "--topic", topic_name, "--num-records", "20000",
                  "--record-size", "1024", "--throughput", "-1",
                  "--producer-props", f"bootstrap.servers={bootstrap}", timeout=300)
    final = [l for l in p.stdout.splitlines() if l.startswith("20000 records sent")]
    assert final, p.stdout
    assert "records/sec" in final[-1]

    wm = end_offsets(bootstrap, topic_name, 2)
    assert sum(hi for _, hi in wm.values()) == 20000, wm

    p = kafka_run("get-offsets", "--bootstrap-server", bootstrap, "--topic", topic_name)
    latest = dict(l.rsplit(":", 1) for l in p.stdout.split())
    assert latest == {f"{topic_name}:{part}": str(hi) for part, (_, hi) in wm.items()}, p.stdout
    p = kafka_run("get-offsets", "--bootstrap-server", bootstrap, "--topic", topic_name, "--time", "-2")
    earliest = dict(l.rsplit(":", 1) for l in p.stdout.split())
    assert earliest == {f"{topic_name}:0": "0", f"{topic_name}:1": "0"}, p.stdout


def test_dump_log_rolled_segment(broker, kafka_run, topic_name):
    bootstrap = broker.bootstrap
    kafka_run("topics", "--bootstrap-server", bootstrap, "--create", "--topic", topic_name,
              "--partitions", "1", "--replication-factor", "1",
              "--config", f"segment.bytes={SEGMENT_BYTES}")
    n = 3000
    payload = lambda i: f"rec-{i:06d}-" + "abcdefghij" * 100  # ~1 KiB, uncompressed: ~3 MiB
    kafka_run("console-producer", "--bootstrap-server", bootstrap, "--topic", topic_name,
              input="".join(payload(i) + "\n" for i in range(n)))
    assert end_offsets(bootstrap, topic_name, 1)[0] == (0, n)

    def segments():
        logs = sorted(broker.data_dir.rglob(f"{topic_name}-0/*.log"))
        return logs if len(logs) >= 2 else None
    logs = wait_for(segments, 30, 0.2, "a rolled segment")
    first = logs[0]
    assert first.name == "00000000000000000000.log", logs
    next_base = int(logs[1].name.split(".")[0])
    assert 0 < next_base < n
    assert first.stat().st_size <= SEGMENT_BYTES

    p = kafka_run("dump-log", "--files", str(first), "--print-data-log")
    out = p.stdout
    assert f"Dumping {first}" in out
    assert "Log starting offset: 0" in out, out[:2000]
    for bad in ("invalid bytes", "Non-consecutive", "not match", "Exception", "corrupt"):
        assert bad.lower() not in out.lower() and bad.lower() not in p.stderr.lower(), (bad, out[-2000:], p.stderr[-2000:])
    offsets, payloads = [], []
    for l in out.splitlines():
        m = re.search(r"\| offset: (\d+) .*payload: (.*)$", l)
        if m:
            offsets.append(int(m.group(1)))
            payloads.append(m.group(2))
    assert offsets == list(range(next_base)), (offsets[:5], offsets[-5:], next_base)
    assert payloads == [payload(i) for i in range(next_base)]
    # batch headers cover the same range
    batches = [(int(a), int(b)) for a, b in re.findall(r"baseOffset: (\d+) lastOffset: (\d+)", out)]
    assert batches and batches[0][0] == 0 and batches[-1][1] == next_base - 1
    assert all(b2[0] == b1[1] + 1 for b1, b2 in zip(batches, batches[1:]))
