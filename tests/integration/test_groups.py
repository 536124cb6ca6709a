"""Consumer groups with real clients: librdkafka (range and cooperative-sticky), kafka-python, and
Kafka's Java tools (console consumer, kafka-consumer-groups, consumer-perf-test, static membership).

Every test here also passes against Apache Kafka 4.4 (RINGTIDE_TEST_TARGET=kafka). Ringtide runs with
Kafka's default group.initial.rebalance.delay.ms (3 s); the Kafka target runs with 0, so waits here are
generous. The time for the group to hand over the partitions of a member that left is printed and
appended to $RINGTIDE_TEST_LOGS/rebalance-times.txt.
"""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from conftest import LOG_DIR, TARGET, create_topic, wait_for

pytestmark = pytest.mark.needs_groups

CONSUMER_GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def produce(bootstrap, topic, partitions, per_partition, tag="r"):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(per_partition):
        for part in range(partitions):
            p.produce(topic, value=f"{tag}-{part}-{i}".encode(), partition=part)
    assert p.flush(60) == 0


def end_offsets(bootstrap, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-watermarks"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


def record_rebalance_time(what, seconds):
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} target={TARGET} {what} {seconds:.3f}s\n"
    with open(LOG_DIR / "rebalance-times.txt", "a") as f:
        f.write(line)
    print(line, end="")


class Member(threading.Thread):
    """A confluent-kafka group member polling in its own thread. Commits synchronously after every batch
    (and once more when stopped); records every (partition, offset) it reads and its assignment."""

    def __init__(self, bootstrap, group, topic, strategy, **extra):
        super().__init__(daemon=True)
        self.conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "partition.assignment.strategy": strategy,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "fetch.wait.max.ms": 100,
            **extra,
        }
        self.topic = topic
        self.got = []
        self.assignment = set()
        self.revocations = 0
        self.error = None
        self._stop_event = threading.Event()

    def run(self):
        try:
            c = Consumer(self.conf)

            def on_revoke(consumer, parts):
                self.revocations += 1

            c.subscribe([self.topic], on_revoke=on_revoke)
            while not self._stop_event.is_set():
                msgs = c.consume(500, 0.2)
                read = False
                for m in msgs:
                    if m.error():
                        continue
                    self.got.append((m.partition(), m.offset()))
                    read = True
                if read:
                    try:
                        c.commit(asynchronous=False)
                    except KafkaException:
                        pass  # a commit racing a rebalance is retried by the next owner
                self.assignment = {tp.partition for tp in c.assignment()}
            try:
                c.commit(asynchronous=False)
            except KafkaException:
                pass
            c.close()
        except Exception as e:  # surfaced by the test
            self.error = e

    def stop(self):
        self._stop_event.set()
        self.join(30)
        assert not self.is_alive(), "member did not stop"
        assert self.error is None, f"member failed: {self.error!r}"


def assignments_ok(members, partitions):
    seen = []
    for m in members:
        seen.extend(m.assignment)
    return sorted(seen) == list(range(partitions))


SUBPROCESS_MEMBER = r"""
import sys
from confluent_kafka import Consumer
bootstrap, group, topic, strategy = sys.argv[1:5]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "partition.assignment.strategy": strategy,
              "enable.auto.commit": False, "auto.offset.reset": "latest",
              "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
c.subscribe([topic])
last = None
while True:
    c.poll(0.2)
    a = sorted(tp.partition for tp in c.assignment())
    if a != last:
        print("ASSIGNED", len(a), flush=True)
        last = a
"""


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_librdkafka_three_members(fresh_broker, topic_name, strategy, tmp_path):
    bs = fresh_broker.bootstrap
    parts = 6
    group = f"g-{strategy}-{uuid.uuid4().hex[:6]}"
    create_topic(bs, topic_name, parts)
    produce(bs, topic_name, parts, 100)
    expected = {(p, o) for p in range(parts) for o in range(100)}

    members = [Member(bs, group, topic_name, strategy) for _ in range(3)]
    for m in members:
        m.start()

    def all_read(ms, want):
        got = set()
        for m in ms:
            got.update(m.got)
        return want <= got

    wait_for(lambda: assignments_ok(members, parts) and all(len(m.assignment) == 2 for m in members),
             90, 0.1, "3 members sharing 6 partitions")
    wait_for(lambda: all_read(members, expected), 60, 0.1, "every record read")

    # A member leaves: its partitions are handed to the other two.
    t0 = time.monotonic()
    members[0].stop()
    rest = members[1:]
    wait_for(lambda: assignments_ok(rest, parts), 60, 0.02, "handover after leave")
    record_rebalance_time(f"leave-3-members-6-partitions strategy={strategy}", time.monotonic() - t0)
    produce(bs, topic_name, parts, 20, tag="after-leave")
    wait_for(lambda: all_read(rest, {(p, o) for p in range(parts) for o in range(100, 120)}),
             60, 0.1, "records after the leave read")

    # A member that stops heartbeating (SIGKILL) loses its partitions after its session timeout.
    script = tmp_path / "member.py"
    script.write_text(SUBPROCESS_MEMBER)
    proc = subprocess.Popen([sys.executable, str(script), bs, group, topic_name, strategy],
                            stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            line = proc.stdout.readline()
            assert line, "subprocess member exited"
            if line.startswith("ASSIGNED") and int(line.split()[1]) > 0:
                break
            assert time.monotonic() < deadline, "subprocess member got no partitions"
        wait_for(lambda: not assignments_ok(rest, parts) or sum(len(m.assignment) for m in rest) < parts,
                 30, 0.05, "the other members to give up partitions")
    finally:
        proc.kill()
        proc.wait()
    t0 = time.monotonic()
    wait_for(lambda: assignments_ok(rest, parts), 60, 0.05, "handover after session expiry")
    record_rebalance_time(f"session-expiry(6s) strategy={strategy}", time.monotonic() - t0)
    produce(bs, topic_name, parts, 20, tag="after-kill")
    new = {(p, o) for p in range(parts) for o in range(120, 140)}
    wait_for(lambda: all_read(rest, new), 60, 0.1, "records after the kill read")

    for m in rest:
        m.stop()
    got = set()
    for m in members:
        got.update(m.got)
    assert {(p, o) for p in range(parts) for o in range(140)} <= got, "some record was never read"

    # Committed offsets are the end offsets; after a restart a new member resumes from them.
    ends = end_offsets(bs, topic_name, parts)
    c = Consumer({"bootstrap.servers": bs, "group.id": group})
    committed = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic_name, p) for p in range(parts)], timeout=30)}
    c.close()
    assert committed == ends, f"committed {committed} != end offsets {ends}"

    fresh_broker.restart()
    produce(bs, topic_name, parts, 10, tag="after-restart")
    m = Member(bs, group, topic_name, strategy)
    m.start()
    try:
        want = {(p, ends[p] + i) for p in range(parts) for i in range(10)}
        wait_for(lambda: want <= set(m.got), 90, 0.1, "new records after restart")
    finally:
        m.stop()
    again = [(p, o) for (p, o) in m.got if o < ends[p]]
    assert not again, f"records committed before the restart were read again: {again[:10]}"


def test_kafka_python_group_of_two(broker, topic_name):
    from kafka import KafkaConsumer

    bs = broker.bootstrap
    parts = 4
    create_topic(bs, topic_name, parts)
    produce(bs, topic_name, parts, 50)
    group = f"kp-{uuid.uuid4().hex[:6]}"
    got = [[], []]
    assigned = [set(), set()]
    stop = threading.Event()
    errors = []

    def run(i):
        try:
            c = KafkaConsumer(topic_name, bootstrap_servers=bs, group_id=group, auto_offset_reset="earliest",
                              enable_auto_commit=False, session_timeout_ms=10000, heartbeat_interval_ms=1000)
            while not stop.is_set():
                for tp, msgs in c.poll(timeout_ms=200).items():
                    got[i].extend((m.partition, m.offset) for m in msgs)
                if got[i]:
                    try:
                        c.commit()
                    except Exception:
                        pass
                assigned[i] = {tp.partition for tp in c.assignment()}
            c.close()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: errors or (sorted(list(assigned[0]) + list(assigned[1])) == list(range(parts))
                                    and assigned[0] and assigned[1]), 90, 0.1, "2 kafka-python members sharing 4 partitions")
        assert not errors, errors
        want = {(p, o) for p in range(parts) for o in range(50)}
        wait_for(lambda: want <= set(got[0]) | set(got[1]), 60, 0.1, "every record read")
        assert not assigned[0] & assigned[1]
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors


def test_console_consumer_random_group(broker, kafka_run, topic_name):
    bs = broker.bootstrap
    create_topic(bs, topic_name, 3)
    produce(bs, topic_name, 3, 10)
    p = kafka_run("console-consumer", "--bootstrap-server", bs, "--topic", topic_name, "--from-beginning",
                  "--max-messages", 30, "--timeout-ms", 60000)
    lines = [l for l in p.stdout.splitlines() if l.startswith("r-")]
    assert sorted(lines) == sorted(f"r-{part}-{i}" for part in range(3) for i in range(10))


def describe_offsets(kafka_run, bs, group, topic):
    """{partition: (current offset or None, log end, lag)} from kafka-consumer-groups --describe."""
    p = kafka_run(CONSUMER_GROUPS, "--bootstrap-server", bs, "--describe", "--group", group)
    out = {}
    for line in p.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[0] == group and cols[1] == topic:
            cur = None if cols[3] == "-" else int(cols[3])
            out[int(cols[2])] = (cur, int(cols[4]), cols[5])
    return out


def test_consumer_groups_tool(broker, kafka_run, topic_name):
    bs = broker.bootstrap
    parts = 3
    create_topic(bs, topic_name, parts)
    t_before = time.strftime("%Y-%m-%dT%H:%M:%S.000", time.gmtime(time.time() - 3600))
    produce(bs, topic_name, parts, 10)
    group = f"tools-{uuid.uuid4().hex[:6]}"

    m = Member(bs, group, topic_name, "range")
    m.start()
    try:
        wait_for(lambda: len(m.got) >= 30, 90, 0.1, "consumer read everything")
        # Active group: list and describe show the member.
        wait_for(lambda: group in kafka_run(CONSUMER_GROUPS, "--bootstrap-server", bs, "--list").stdout.split(),
                 30, 0.5, "group listed")
        p = kafka_run(CONSUMER_GROUPS, "--bootstrap-server", bs, "--describe", "--group", group, "--members")
        assert group in p.stdout and "rdkafka" in p.stdout, p.stdout
        p = kafka_run(CONSUMER_GROUPS, "--bootstrap-server", bs, "--describe", "--group", group, "--state")
        assert "Stable" in p.stdout, p.stdout
    finally:
        m.stop()

    wait_for(lambda: describe_offsets(kafka_run, bs, group, topic_name) == {p: (10, 10, "0") for p in range(parts)},
             30, 0.5, "lag 0 after the consumer committed")
    # Produce 5 more: lag 5 per partition.
    produce(bs, topic_name, parts, 5, tag="more")
    assert describe_offsets(kafka_run, bs, group, topic_name) == {p: (10, 15, "5") for p in range(parts)}

    def reset(*how):
        p = kafka_run(CONSUMER_GROUPS, "--bootstrap-server", bs, "--reset-offsets", "--group", group,
                      "--topic", topic_name, *how, "--execute")
        return p.stdout

    reset("--to-earliest")
    assert describe_offsets(kafka_run, bs, group, topic_name) == {p: (0, 15, "15") for p in range(parts)}
    reset("--to-latest")
    assert describe_offsets(kafka_run, bs, group, topic_name) == {p: (15, 15, "0") for p in range(parts)}
    reset("--shift-by", "-4")
    assert describe_offsets(kafka_run, bs, group, topic_name) == {p: (11, 15, "4") for p in range(parts)}
    reset("--to-datetime", t_before)
    assert describe_offsets(kafka_run, bs, group, topic_name) == {p: (0, 15, "15") for p in range(parts)}

    kafka_run(CONSUMER_GROUPS, "--bootstrap-server", bs, "--delete", "--group", group)
    assert group not in kafka_run(CONSUMER_GROUPS, "--bootstrap-server", bs, "--list").stdout.split()
    # A deleted group has no committed offsets any more.
    c = Consumer({"bootstrap.servers": bs, "group.id": group})
    committed = c.committed([TopicPartition(topic_name, p) for p in range(parts)], timeout=30)
    c.close()
    assert all(tp.offset < 0 for tp in committed), committed


def test_consumer_perf_test(broker, kafka_run, topic_name):
    bs = broker.bootstrap
    create_topic(bs, topic_name, 2)
    kafka_run("producer-perf-test", "--topic", topic_name, "--num-records", 5000, "--record-size", 100,
              "--throughput", -1, "--producer-props", f"bootstrap.servers={bs}", "acks=all")
    p = kafka_run("consumer-perf-test", "--bootstrap-server", bs, "--topic", topic_name,
                  "--num-records", 5000, "--group", f"perf-{uuid.uuid4().hex[:6]}", "--timeout", 60000)
    rows = [l for l in p.stdout.splitlines() if l and l[0].isdigit()]
    assert rows, p.stdout
    # start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, ...
    assert int(rows[-1].split(",")[4].strip()) >= 5000, p.stdout


def test_java_static_member_restart_without_rebalance(broker, kafka_run, topic_name, tmp_path):
    """A Java consumer with group.instance.id restarts within its session timeout: the other member is not
    rebalanced (no revocation) and the restarted one gets its partitions back."""
    bs = broker.bootstrap
    parts = 2
    create_topic(bs, topic_name, parts)
    group = f"static-{uuid.uuid4().hex[:6]}"
    other = Member(bs, group, topic_name, "range", **{"group.instance.id": "py-1", "session.timeout.ms": 30000})
    other.start()
    kafka_run_path = os.path.join(os.path.dirname(__file__), "..", "kafka", "kafka-run")

    def start_java(n):
        out = open(tmp_path / f"java-{n}.out", "w")
        return subprocess.Popen(
            [kafka_run_path, "console-consumer", "--bootstrap-server", bs, "--topic", topic_name,
             "--group", group, "--from-beginning", "--consumer-property", "group.instance.id=java-1",
             "--consumer-property", "session.timeout.ms=30000",
             "--consumer-property", "partition.assignment.strategy=org.apache.kafka.clients.consumer.RangeAssignor"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True), out

    java, out = start_java(1)
    try:
        wait_for(lambda: len(other.assignment) == 1, 90, 0.1, "the Java member to join (py-1 keeps one partition)")
        time.sleep(1)
        revocations = other.revocations
        assignment = set(other.assignment)
        # Stop the Java consumer (a static member sends no LeaveGroup) and start it again.
        os.killpg(java.pid, signal.SIGTERM)
        java.wait(30)
        out.close()
        java, out = start_java(2)
        produce(bs, topic_name, parts, 5)
        java_part = ({0, 1} - assignment).pop()
        wait_for(lambda: sum(1 for l in open(tmp_path / "java-2.out") if l.startswith(f"r-{java_part}-")) == 5,
                 60, 0.2, "the restarted Java member consumes its partition")
        assert other.revocations == revocations, "the restart caused a rebalance"
        assert other.assignment == assignment
    finally:
        try:
            os.killpg(java.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        java.wait(30)
        out.close()
        other.stop()


def java_string_hash(s):
    h = 0
    for unit in s.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def test_offsets_readable_by_kafka_dump_log(broker, kafka_run, topic_name):
    """Commits are records of __consumer_offsets in Kafka's schemas: DumpLogSegments decodes them."""
    bs = broker.bootstrap
    create_topic(bs, topic_name, 1)
    group = f"dump-{uuid.uuid4().hex[:6]}"
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False})
    deadline = time.monotonic() + 60
    while True:  # Kafka answers NOT_COORDINATOR while it loads a just-created __consumer_offsets
        try:
            c.commit(offsets=[TopicPartition(topic_name, 0, 42)], asynchronous=False)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    c.close()
    h = java_string_hash(group)
    partition = (0 if h == -(1 << 31) else abs(h)) % 50
    logs = sorted((broker.data_dir / f"__consumer_offsets-{partition}").glob("*.log"))
    assert logs, f"no segment for __consumer_offsets-{partition}"
    # check=False: Ringtide's active segment ends in zero padding (O_DIRECT), which DumpLogSegments
    # reports as a corrupt record after printing every real batch.
    p = kafka_run("dump-log", "--files", ",".join(map(str, logs)), "--offsets-decoder", check=False)
    want_key = f'"group":"{group}","topic":"{topic_name}","partition":0'
    assert want_key in p.stdout and '"offset":42' in p.stdout, p.stdout[-3000:]
