"""Incremental fetch sessions (KIP-227), as Kafka 4.4 serves them.

Raw protocol (rawfetch.py), v12 (topic names) and v15 (topic ids):
  * a full fetch (session id 0, epoch 0) creates a session: an id != 0 and every partition;
  * an incremental fetch (the id, epoch 1, 2, ...) naming nothing gets no partitions; a produce makes
    exactly that partition appear; a partition the request moves forward stays out once it has nothing
    new; forgotten partitions leave the session;
  * a wrong epoch gets INVALID_FETCH_SESSION_EPOCH (71), an unknown id FETCH_SESSION_ID_NOT_FOUND (70), both
    with session id 0 and no partitions, and neither harms the session; a session created with names and
    continued with ids gets FETCH_SESSION_TOPIC_ID_ERROR (106); epoch -1 closes the session;
  * partitions that returned records move to the end of the session's order (Kafka reads and answers in
    that order), so with a small max_bytes every partition gets its turn.

Clients: the Java consumer (a small manual-assign consumer run through the kafka_run fixture),
kafka-python (which uses sessions) and librdkafka (which never does: it always sends session id 0, epoch
-1) each read a 200-partition topic, every record exactly once; on Ringtide /metrics shows the Java
consumer's session (kafka_server_fetchsessioncache_*). Across a broker restart the sessions are gone: a
raw session gets FETCH_SESSION_ID_NOT_FOUND and starts over, and the Java and kafka-python consumers read
every record exactly once.
"""

import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import KAFKA_RUN, TARGET, create_topic, wait_for
from rawfetch import (FETCH_SESSION_ID_NOT_FOUND, FETCH_SESSION_TOPIC_ID_ERROR, INVALID_FETCH_SESSION_EPOCH,
                      NONE, Part, fetch, topic_id)
from test_protocol_errors import connect

HERE = Path(__file__).resolve().parent
JAVA_CONSUMER = HERE / "SessionConsumer.java"
VERSIONS = [12, 15]  # flexible with topic names; topic ids
PARTITIONS = 200
PER_PARTITION = 25
SESSION_METRIC = "kafka_server_fetchsessioncache_numincrementalfetchsessions"
PARTITIONS_METRIC = "kafka_server_fetchsessioncache_numincrementalfetchpartitionscached"


# ---------------------------------------------------------------- helpers


def produce(bootstrap, topic, counts, tag="r"):
    """Produce counts[partition] records to each partition; values are f"{tag}-{partition}-{i}"."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for part, n in counts.items():
        for i in range(n):
            while True:
                try:
                    p.produce(topic, value=f"{tag}-{part}-{i}".encode(), partition=part)
                    break
                except BufferError:
                    p.poll(0.1)
    assert p.flush(60) == 0


def ref(s, version, topic):
    """How a Fetch of `version` names `topic`: its name before v13, its id from v13."""
    return topic if version < 13 else topic_id(s, topic)


def ready(s, version, topic, partitions):
    """Waits until a sessionless fetch of every partition answers without error (right after CreateTopics,
    Kafka answers NOT_LEADER_OR_FOLLOWER for a moment); returns the topic as `version` names it."""
    t = ref(s, version, topic)

    def ok():
        r = fetch(s, version, [Part(t, p) for p in range(partitions)], max_wait_ms=0)
        return all(p.error_code == NONE for p in r.partitions) and len(r.partitions) == partitions

    wait_for(ok, 30, interval=0.1, what=f"{topic}'s partitions to be fetchable")
    return t


def indexes(resp):
    return [p.index for p in resp.partitions]


class Session:
    """A raw fetch session on one connection: keeps the id and the epoch."""

    def __init__(self, s, version):
        self.s, self.version, self.id, self.epoch, self.corr = s, version, 0, 0, 0

    def send(self, parts, epoch=None, session_id=None, forgotten=(), max_wait_ms=300, **kw):
        self.corr += 1
        return fetch(self.s, self.version, parts, correlation_id=self.corr, max_wait_ms=max_wait_ms,
                     session_id=self.id if session_id is None else session_id,
                     session_epoch=self.epoch if epoch is None else epoch, forgotten=forgotten, **kw)

    def open(self, parts, session_id=0, **kw):
        """A full fetch (epoch 0) that creates a session; `session_id` names one to close."""
        r = self.send(parts, epoch=0, session_id=session_id, max_wait_ms=0, **kw)
        assert r.error_code == NONE and r.session_id != 0, r.summary()
        self.id, self.epoch = r.session_id, 1
        return r

    def next(self, parts=(), **kw):
        """An incremental fetch with the current epoch; on success the epoch moves on."""
        r = self.send(list(parts), **kw)
        if r.error_code == NONE:
            assert r.session_id == self.id, r.summary()
            self.epoch += 1
        return r


def metrics_text(broker):
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics", timeout=10) as r:
        return r.read().decode()


def metric_sum(text, name):
    """A per-core metric summed over the cores."""
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}\{{[^}}]*\}}\s+(\S+)$", text, re.M))


class MetricWatch:
    """On Ringtide, scrapes the session gauges every 100 ms in the background: `sessions` and `partitions`
    are the largest values seen above what they were at the start (`base_sessions`, `base_partitions`:
    sessions other tests left open)."""

    def __init__(self, broker):
        self.broker, self.sessions, self.partitions = broker, 0.0, 0.0
        self.base_sessions = self.base_partitions = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                text = metrics_text(self.broker)
                self.sessions = max(self.sessions, metric_sum(text, SESSION_METRIC) - self.base_sessions)
                self.partitions = max(self.partitions,
                                      metric_sum(text, PARTITIONS_METRIC) - self.base_partitions)
            except OSError:
                pass  # the broker is restarting
            self._stop.wait(0.1)

    def __enter__(self):
        if TARGET == "ringtide":
            text = metrics_text(self.broker)
            self.base_sessions = metric_sum(text, SESSION_METRIC)
            self.base_partitions = metric_sum(text, PARTITIONS_METRIC)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def check_exactly_once(got, topic_counts):
    """got: [(partition, offset, value)]; every record of every partition exactly once."""
    seen = {}
    for part, offset, value in got:
        assert (part, offset) not in seen, f"partition {part} offset {offset} read twice"
        seen[(part, offset)] = value
    for part, n in topic_counts.items():
        offsets = sorted(o for p, o in seen if p == part)
        assert offsets == list(range(n)), f"partition {part}: read offsets {offsets[:10]}... of {n}"
        values = {seen[(part, o)] for o in offsets}
        assert values == {f"r-{part}-{i}" for i in range(n)}, f"partition {part}: wrong values"
    assert len(seen) == sum(topic_counts.values())


@pytest.fixture(scope="module")
def big_topic(broker):
    """A 200-partition topic with PER_PARTITION records in each, shared by the client tests."""
    name = f"sessions-200-{int(time.time() * 1000) % 100000}"
    create_topic(broker.bootstrap, name, PARTITIONS)
    counts = {p: PER_PARTITION for p in range(PARTITIONS)}
    produce(broker.bootstrap, name, counts)
    return name, counts


def java_consumer_cmd(bootstrap, topic, partitions, expected, pause_ms=0, max_partition_bytes=1 << 20,
                      max_poll_records=500):
    return [str(KAFKA_RUN), str(JAVA_CONSUMER), bootstrap, topic, str(partitions), str(expected), str(pause_ms),
            str(max_partition_bytes), str(max_poll_records)]


def parse_java_output(out):
    got = []
    for line in out.splitlines():
        if line.startswith("R "):
            _, part, offset, value = line.split(" ", 3)
            got.append((int(part), int(offset), value))
    return got


# ---------------------------------------------------------------- raw protocol


@pytest.mark.parametrize("version", VERSIONS)
def test_incremental_fetch_carries_only_news(broker, topic_name, version):
    create_topic(broker.bootstrap, topic_name, 3)
    with connect(broker) as s:
        t = ready(s, version, topic_name, 3)
        sess = Session(s, version)
        r = sess.open([Part(t, p) for p in range(3)])
        assert sorted(indexes(r)) == [0, 1, 2]
        assert all(p.error_code == NONE and p.high_watermark == 0 for p in r.partitions)

        # Nothing new: no partitions (after max_wait_ms, as there is nothing to send).
        r = sess.next()
        assert r.error_code == NONE and indexes(r) == [], r.summary()

        # A produce to partition 1: exactly that partition, with the record and its new high watermark.
        produce(broker.bootstrap, topic_name, {1: 1})
        r = sess.next(max_wait_ms=5000)
        assert indexes(r) == [1], r.summary()
        assert (r.partitions[0].records, r.partitions[0].high_watermark) == (1, 1)

        # The session still fetches partition 1 from offset 0 until told otherwise: same record again.
        r = sess.next(max_wait_ms=5000)
        assert indexes(r) == [1] and r.partitions[0].records == 1, r.summary()
        # Moved to offset 1: nothing new.
        r = sess.next([Part(t, 1, offset=1)])
        assert indexes(r) == [], r.summary()

        # Forget partition 0; a produce to 0 and 2 then shows only 2.
        r = sess.next(forgotten=[(t, [0])])
        assert indexes(r) == [], r.summary()
        produce(broker.bootstrap, topic_name, {0: 1, 2: 1})
        r = sess.next(max_wait_ms=5000)
        assert indexes(r) == [2], r.summary()
        assert r.partitions[0].high_watermark == 1
        # Partition 0 again (added back at offset 0): it comes with its record.
        r = sess.next([Part(t, 0, offset=0), Part(t, 2, offset=1)], max_wait_ms=5000)
        assert indexes(r) == [0], r.summary()
        assert (r.partitions[0].records, r.partitions[0].high_watermark) == (1, 1)


@pytest.mark.parametrize("version", VERSIONS)
def test_session_errors(broker, topic_name, version):
    create_topic(broker.bootstrap, topic_name, 2)
    with connect(broker) as s:
        t = ready(s, version, topic_name, 2)
        sess = Session(s, version)
        sess.open([Part(t, 0), Part(t, 1)])
        assert indexes(sess.next()) == []

        # A wrong epoch: 71, session id 0, nothing else; the session is unharmed.
        for bad in (sess.epoch + 1, sess.epoch + 100, sess.epoch - 1, -2):
            r = sess.send([Part(t, 0, offset=5)], epoch=bad, max_wait_ms=0)
            assert (r.error_code, r.session_id, r.partitions) == (INVALID_FETCH_SESSION_EPOCH, 0, []), \
                f"epoch {bad}: {r.summary()}"
        r = sess.next()
        assert (r.error_code, indexes(r)) == (NONE, []), r.summary()

        # An unknown session id: 70, session id 0. Id 0 with an incremental epoch too.
        for unknown in (1 if sess.id != 1 else 2, 0):
            r = sess.send([], session_id=unknown, epoch=1, max_wait_ms=0)
            assert (r.error_code, r.session_id, r.partitions) == (FETCH_SESSION_ID_NOT_FOUND, 0, []), \
                f"id {unknown}: {r.summary()}"
        assert sess.next().error_code == NONE

        # Epoch -1 closes the session: a sessionless answer (id 0) with the request's partitions ...
        r = sess.send([Part(t, 1)], epoch=-1, max_wait_ms=0)
        assert (r.error_code, r.session_id, indexes(r)) == (NONE, 0, [1]), r.summary()
        # ... after which the id is unknown.
        r = sess.send([], max_wait_ms=0)
        assert r.error_code == FETCH_SESSION_ID_NOT_FOUND, r.summary()

        # Epoch 0 naming a live session closes it and opens a new one.
        sess.open([Part(t, 0)])
        old = sess.id
        sess.open([Part(t, 0)], session_id=old)
        assert sess.id != old
        r = sess.send([], session_id=old, epoch=1, max_wait_ms=0)
        assert r.error_code == FETCH_SESSION_ID_NOT_FOUND, r.summary()
        # Forgetting the last partition ends the session: answered sessionless, and the id is gone.
        r = sess.send([], forgotten=[(t, [0])], max_wait_ms=0)
        assert (r.error_code, r.session_id, r.partitions) == (NONE, 0, []), r.summary()
        r = sess.send([], epoch=sess.epoch + 1, max_wait_ms=0)
        assert r.error_code == FETCH_SESSION_ID_NOT_FOUND, r.summary()


def test_topic_id_mismatch(broker, topic_name):
    """A session created with topic names (v12) cannot go on with topic ids (v15), nor the reverse."""
    create_topic(broker.bootstrap, topic_name, 1)
    with connect(broker) as s:
        ready(s, 12, topic_name, 1)
        tid = topic_id(s, topic_name)
        by_name = Session(s, 12)
        by_name.open([Part(topic_name, 0)])
        r = fetch(s, 15, [], session_id=by_name.id, session_epoch=1, max_wait_ms=0)
        assert (r.error_code, r.session_id, r.partitions) == (FETCH_SESSION_TOPIC_ID_ERROR, 0, []), r.summary()
        by_id = Session(s, 15)
        by_id.open([Part(tid, 0)])
        r = fetch(s, 12, [], session_id=by_id.id, session_epoch=1, max_wait_ms=0)
        assert r.error_code == FETCH_SESSION_TOPIC_ID_ERROR, r.summary()
        # Neither attempt cost the sessions their epoch.
        assert by_name.next().error_code == NONE
        assert by_id.next().error_code == NONE


@pytest.mark.parametrize("version", VERSIONS)
def test_partitions_with_records_move_to_the_end(broker, topic_name, version):
    """Kafka reads a session's partitions in the session's order and moves those that returned records to
    the end, so that with a small max_bytes no partition starves."""
    create_topic(broker.bootstrap, topic_name, 3)
    produce(broker.bootstrap, topic_name, {0: 1, 1: 1, 2: 1})
    with connect(broker) as s:
        t = ready(s, version, topic_name, 3)
        sess = Session(s, version)
        r = sess.open([Part(t, p) for p in range(3)])
        assert indexes(r) == [0, 1, 2] and all(p.records == 1 for p in r.partitions), r.summary()
        # Partition 1 moves on; 0 and 2 (still at offset 0) return their record again and move to the end.
        r = sess.next([Part(t, 1, offset=1)])
        assert indexes(r) == [0, 2], r.summary()
        # The order is now 1, 0, 2: a record on each shows it.
        produce(broker.bootstrap, topic_name, {0: 1, 1: 1, 2: 1})
        r = sess.next([Part(t, 0, offset=1), Part(t, 2, offset=1)], max_wait_ms=5000)
        assert indexes(r) == [1, 0, 2], r.summary()

    # With room for one batch per answer, a consumer that moves its positions forward is served by every
    # partition in turn, though partition 0 always has more: after the full fetch (which does not reorder),
    # 0 answers once more, then moves behind 1 and 2.
    name = f"{topic_name}-budget"
    create_topic(broker.bootstrap, name, 3)
    for _ in range(4):  # one batch per record: a flush after each
        produce(broker.bootstrap, name, {0: 1, 1: 1, 2: 1})
    with connect(broker) as s:
        t = ready(s, version, name, 3)
        sess = Session(s, version)
        r = sess.open([Part(t, p) for p in range(3)], max_bytes=1)
        positions = {0: 0, 1: 0, 2: 0}
        served = []

        def advance(resp):
            moved = []
            for pr in resp.partitions:
                if pr.records:
                    assert pr.batches == 1, pr
                    served.append(pr.index)
                    positions[pr.index] = pr.next_offset
                    moved.append(Part(t, pr.index, offset=pr.next_offset))
            return moved

        moved = advance(r)
        for _ in range(4):
            moved = advance(sess.next(moved, max_bytes=1))
        assert served == [0, 0, 1, 2, 0], served


@pytest.mark.parametrize("version", VERSIONS)
def test_unknown_partitions_come_last(broker, topic_name, version):
    """Kafka answers the partitions it could read first and those of unknown topics or partitions after
    them; a session keeps that order, and always sends the errors."""
    create_topic(broker.bootstrap, topic_name, 2)
    with connect(broker) as s:
        t = ready(s, version, topic_name, 2)
        missing = f"{topic_name}-missing" if version < 13 else bytes(range(1, 17))
        parts = [Part(missing, 0), Part(t, 0), Part(t, 99), Part(t, 1)]
        tkey = (lambda x: x if isinstance(x, str) else bytes(x))
        readable, unknown = [(tkey(t), 0), (tkey(t), 1)], [(tkey(missing), 0), (tkey(t), 99)]

        def order(resp):
            return [(p.topic, p.index) for p in resp.partitions]

        r = fetch(s, version, parts, max_wait_ms=0)
        assert order(r) == readable + unknown, r.summary()
        assert [p.error_code for p in r.partitions][:2] == [NONE, NONE]
        assert all(p.error_code != NONE for p in r.partitions[2:]), r.summary()
        sess = Session(s, version)
        r = sess.open(parts)
        assert order(r) == readable + unknown, r.summary()
        # Nothing new on the real partitions: only the errors, every time, in the session's order.
        for _ in range(2):
            r = sess.next(max_wait_ms=0)
            assert order(r) == unknown, r.summary()


# ---------------------------------------------------------------- clients


def test_java_consumer_uses_a_session_and_reads_every_record_once(broker, big_topic, kafka_run):
    topic, counts = big_topic
    with MetricWatch(broker) as watch:
        p = kafka_run(str(JAVA_CONSUMER), broker.bootstrap, topic, PARTITIONS, sum(counts.values()), 20, 4096,
                      timeout=240)
    check_exactly_once(parse_java_output(p.stdout), counts)
    if TARGET == "ringtide":
        assert watch.sessions >= 1, "no incremental fetch session seen in /metrics"
        assert watch.partitions >= PARTITIONS, f"the session held at most {watch.partitions} partitions"
        # The consumer closed its session (epoch -1) when it closed.
        wait_for(lambda: metric_sum(metrics_text(broker), SESSION_METRIC) == watch.base_sessions, 10,
                 what="the Java consumer's session to close")
        assert metric_sum(metrics_text(broker), PARTITIONS_METRIC) == watch.base_partitions


def test_kafka_python_uses_a_session_and_reads_every_record_once(broker, big_topic):
    topic, counts = big_topic
    with MetricWatch(broker) as watch:
        got = kafka_python_consume(broker.bootstrap, topic, counts)
    check_exactly_once(got, counts)
    if TARGET == "ringtide":
        assert watch.sessions >= 1, "no incremental fetch session seen in /metrics"


def test_librdkafka_reads_every_record_once_without_a_session(broker, big_topic):
    """librdkafka never asks for a session (session id 0, epoch -1): it must be served as before."""
    from confluent_kafka import Consumer, TopicPartition
    topic, counts = big_topic
    with MetricWatch(broker) as watch:
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"unused-{topic}",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 100,
                      "max.partition.fetch.bytes": 4096})
        try:
            c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
            got, deadline = [], time.monotonic() + 120
            while len(got) < sum(counts.values()) and time.monotonic() < deadline:
                for m in c.consume(num_messages=1000, timeout=0.5):
                    assert not m.error(), m.error()
                    got.append((m.partition(), m.offset(), m.value().decode()))
            # A moment more: nothing else may arrive.
            got += [(m.partition(), m.offset(), m.value().decode()) for m in c.consume(1000, timeout=1.0)
                    if not m.error()]
        finally:
            c.close()
    check_exactly_once(got, counts)
    if TARGET == "ringtide":
        assert watch.sessions == 0, "librdkafka does not use fetch sessions, yet one was made"


def kafka_python_consume(bootstrap, topic, counts, on_progress=None, max_poll_records=500, timeout=180):
    """Reads the topic with kafka-python (manual assignment, no group) until every partition is at its
    end; returns [(partition, offset, value)]. on_progress(n) is called after each poll."""
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                      max_partition_fetch_bytes=4096, request_timeout_ms=30000, max_poll_records=max_poll_records,
                      reconnect_backoff_max_ms=1000)
    try:
        tps = [TopicPartition(topic, p) for p in counts]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        total, got = sum(counts.values()), []
        deadline = time.monotonic() + timeout
        while len(got) < total:
            assert time.monotonic() < deadline, f"kafka-python read {len(got)} of {total}"
            for tp, records in c.poll(timeout_ms=500).items():
                got += [(tp.partition, r.offset, r.value.decode()) for r in records]
            if on_progress:
                on_progress(len(got))
        for tp, records in c.poll(timeout_ms=1000).items():
            got += [(tp.partition, r.offset, r.value.decode()) for r in records]
        return got
    finally:
        c.close()


# ---------------------------------------------------------------- restart


def test_sessions_do_not_survive_a_restart_and_clients_start_over(fresh_broker):
    broker = fresh_broker
    topic = "sessions-restart"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    counts = {p: PER_PARTITION for p in range(PARTITIONS)}
    produce(broker.bootstrap, topic, counts)

    # A raw session, held across the restart.
    version = 15
    s = connect(broker)
    tid = ready(s, version, topic, PARTITIONS)
    sess = Session(s, version)
    r = sess.open([Part(tid, p, partition_max_bytes=4096) for p in range(PARTITIONS)], max_bytes=64 * 1024)
    positions = {p: 0 for p in range(PARTITIONS)}
    got = []

    def take(resp):
        moved = []
        for pr in resp.partitions:
            assert pr.error_code == NONE, resp.summary()
            if pr.records:
                assert pr.first_offset == positions[pr.index], (pr.index, pr.first_offset, positions[pr.index])
                got.extend((pr.index, o, None) for o in range(pr.first_offset, pr.next_offset))
                positions[pr.index] = pr.next_offset
                moved.append(Part(tid, pr.index, offset=pr.next_offset, partition_max_bytes=4096))
        return moved

    changed = take(r)
    r = sess.next(changed, max_bytes=64 * 1024)
    changed = take(r)

    # The Java and kafka-python consumers read (slowly) while the broker restarts.
    total = sum(counts.values())
    java = subprocess.Popen(java_consumer_cmd(broker.bootstrap, topic, PARTITIONS, total, pause_ms=200,
                                              max_partition_bytes=512, max_poll_records=100),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    java_lines, java_err = [], []
    readers = [threading.Thread(target=lambda: java_lines.extend(java.stdout), daemon=True),
               threading.Thread(target=lambda: java_err.extend(java.stderr), daemon=True)]
    for t in readers:
        t.start()
    py_progress, py_result = {"n": 0}, {}

    def progress(n):
        py_progress["n"] = n
        time.sleep(0.1)

    def run_python():
        try:
            py_result["got"] = kafka_python_consume(broker.bootstrap, topic, counts, on_progress=progress,
                                                    max_poll_records=50)
        except BaseException as e:  # noqa: BLE001 - reported below
            py_result["error"] = e

    py = threading.Thread(target=run_python, daemon=True)
    py.start()
    try:
        wait_for(lambda: py_progress["n"] > 0 and len(java_lines) > 0, 90,
                 what="the Java consumer and kafka-python to start reading")
        assert py_progress["n"] < total and len(java_lines) < total, \
            f"a consumer finished before the restart (kafka-python {py_progress['n']}, Java {len(java_lines)})"

        s.close()
        broker.restart(signal.SIGTERM)

        # The raw session is gone: FETCH_SESSION_ID_NOT_FOUND, session id 0; a full fetch from the
        # positions starts over and reads the rest.
        s = connect(broker)
        r = fetch(s, version, changed, correlation_id=99, max_wait_ms=0, session_id=sess.id,
                  session_epoch=sess.epoch, max_bytes=64 * 1024)
        assert (r.error_code, r.session_id, r.partitions) == (FETCH_SESSION_ID_NOT_FOUND, 0, []), r.summary()
        sess = Session(s, version)
        r = sess.open([Part(tid, p, offset=positions[p], partition_max_bytes=4096) for p in range(PARTITIONS)],
                      max_bytes=64 * 1024)
        changed = take(r)
        deadline = time.monotonic() + 120
        while len(got) < total:
            assert time.monotonic() < deadline, f"raw session read {len(got)} of {total}"
            r = sess.next(changed, max_bytes=64 * 1024, max_wait_ms=100)
            assert r.error_code == NONE, r.summary()
            changed = take(r)
        assert sorted(got) == sorted((p, o, None) for p, n in counts.items() for o in range(n))

        assert java.wait(240) == 0, f"Java consumer exited {java.returncode}\n{''.join(java_err)[-3000:]}"
        for t in readers:
            t.join(10)
        check_exactly_once(parse_java_output("".join(java_lines)), counts)
        py.join(240)
        assert "error" not in py_result, py_result.get("error")
        check_exactly_once(py_result["got"], counts)
        if TARGET == "ringtide":
            # The sessions after the restart are new ones (the raw one is still open).
            assert metric_sum(metrics_text(broker), SESSION_METRIC) >= 1
    finally:
        s.close()
        if java.poll() is None:
            java.kill()


