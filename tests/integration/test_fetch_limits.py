"""Hostile Fetch requests, raw on the wire (rawfetch.py): the answers must mean what Kafka 4.4's mean, stay
bounded, and leave everyone else served.

What Kafka 4.4 answers (measured with fetch_probe.py; v11, v12 and v15 alike):
  * the same partition named N times (in one topic entry or in N topic entries): ONE partition entry
    (the last occurrence's fetch offset is used), sized as for one;
  * request max_bytes 0 or 1: only the first non-empty partition returns data, its first batch whole
    (KIP-74), nothing after it; max_bytes -1: the first partition gets UNKNOWN_SERVER_ERROR (-1) and the
    next one its first batch (treated here as "at most one first batch, errors 0 or -1");
  * partition_max_bytes 0 / 1 / 1000 (below the first batch): the first partition's first batch whole,
    the others empty, error 0; partition_max_bytes -1: UNKNOWN_SERVER_ERROR (-1) on every partition;
  * one answer carries at most fetch.max.bytes (55 MiB = 57671680) record bytes however big max_bytes is;
  * min_bytes beyond the data: waits max_wait_ms, then answers with what there is; max_wait_ms <= 0 or
    min_bytes <= 0: answers at once;
  * fetch offset past the high watermark or negative: OFFSET_OUT_OF_RANGE (1);
  * 5000 partitions of a missing topic: 5000 entries UNKNOWN_TOPIC_OR_PARTITION (3) (v13+: unknown topic
    id, UNKNOWN_TOPIC_ID (100)); 5000 missing partitions of a real topic: 5000 entries error 3;
  * read_committed on a non-transactional topic: last_stable_offset == high watermark;
  * partition_max_bytes cutting inside a batch: Kafka returns the bytes up to the cut (a trailing partial
    batch). Ringtide returns only whole batches, so sizes are compared as bounds and whole batches /
    offsets covered are counted, never bytes exactly.

After each hostile request a bystander connection (opened before any of them) must still get an
ApiVersions answer; against Ringtide the broker's RSS must not grow by 300 MB or more during one.
"""

import os
import threading
import time
import uuid

import pytest

from conftest import TARGET, create_topic
from rawfetch import (NONE, OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_ID, UNKNOWN_TOPIC_OR_PARTITION, Part, fetch,
                      fetch_frame, recv_fetch, topic_id)
from test_hostile import bystander, still_serving  # noqa: F401  (bystander is a module-scoped fixture)
from test_limits import rss_kib
from test_protocol_errors import connect

MiB = 1 << 20
MAXI = 2**31 - 1
UNKNOWN_SERVER_ERROR = -1
KAFKA_FETCH_MAX_BYTES = 55 * MiB  # Kafka's fetch.max.bytes default: the most record bytes in one answer
FRAME_LIMIT = 96 * MiB  # larger answers are drained, not decoded (and fail the test)
RSS_GROWTH_MAX_KIB = 300 * 1024
VERSIONS = [11, 12, 15]  # v11: last non-flexible; v12: flexible with names; v15: topic ids, no replica_id

VALUE = 10_000
ONE_RECORDS = 4000  # 1 partition, ~40 MB
THREE_RECORDS = 700  # per partition of the 3-partition topic, ~7 MB each: 61 MB in all, above 55 MiB


class Data:
    pass


def produce(bootstrap, topic, partitions, per_partition, size=VALUE):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                  "queue.buffering.max.kbytes": 256 * 1024})
    v = b"x" * size
    for _ in range(per_partition):
        for part in range(partitions):
            while True:
                try:
                    p.produce(topic, value=v, partition=part)
                    break
                except BufferError:
                    p.poll(0.1)
        p.poll(0)
    assert p.flush(180) == 0


@pytest.fixture(scope="module")
def data(broker, bystander):  # noqa: F811
    d = Data()
    tag = uuid.uuid4().hex[:6]
    d.one, d.three = f"fl-one-{tag}", f"fl-three-{tag}"
    create_topic(broker.bootstrap, d.one, 1)
    create_topic(broker.bootstrap, d.three, 3)
    produce(broker.bootstrap, d.one, 1, ONE_RECORDS)
    produce(broker.bootstrap, d.three, 3, THREE_RECORDS)
    with connect(broker) as s:
        s.settimeout(60)
        d.ids = {d.one: topic_id(s, d.one), d.three: topic_id(s, d.three)}
        # the size of each partition's first batch (what KIP-74 returns whole)
        d.first_batch = {}
        for parts in ([Part(d.one, 0, 0, 2 * MiB)], [Part(d.three, i, 0, MAXI) for i in range(3)]):
            r = fetch(s, 12, parts, max_bytes=MAXI, frame_limit=FRAME_LIMIT)
            for p in r.partitions:
                assert p.error_code == NONE and p.batches >= 1, p
                d.first_batch[(p.topic, p.index)] = p.batch_sizes[0]
        assert [p.next_offset for p in r.partitions] == [THREE_RECORDS] * 3, r.partitions
    d.max_first_batch = max(d.first_batch.values())
    d.rss_baseline_kib = rss_kib(broker.proc.pid) if TARGET == "ringtide" else None
    return d


def key(d, name, version):
    return name if version < 13 else d.ids[name]


# ---------------------------------------------------------------- one hostile request


class RssSampler:
    """Peak VmRSS of the broker while a request runs (sampled every few ms), plus its VmHWM change."""

    def __init__(self, pid):
        self.pid = pid
        self.before = rss_kib(pid)
        self.hwm_before = self._hwm()
        self.peak = self.before
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _hwm(self):
        for line in open(f"/proc/{self.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, AssertionError):
                return
            time.sleep(0.005)

    def stop(self):
        self._stop.set()
        self._t.join()
        try:
            self.peak = max(self.peak, rss_kib(self.pid))
            return max(self.peak - self.before, self._hwm() - self.hwm_before)
        except (OSError, AssertionError):
            return 0


def hostile(broker, bystander, version, parts, **kw):  # noqa: F811
    """Send one Fetch on a new connection; return (answer, seconds). Afterwards the bystander and a new
    connection must be served, and (Ringtide) the RSS must not have grown by 300 MB during it."""
    sampler = RssSampler(broker.proc.pid) if TARGET == "ringtide" else None
    resp = None
    try:
        with connect(broker) as s:
            s.settimeout(120)
            t = time.monotonic()
            resp = fetch(s, version, parts, correlation_id=77, frame_limit=FRAME_LIMIT, **kw)
            elapsed = time.monotonic() - t
    finally:
        growth = sampler.stop() if sampler else 0
        still_serving(broker, bystander)
    assert growth < RSS_GROWTH_MAX_KIB, \
        f"broker RSS grew by {growth / 1024:.0f} MiB during one fetch (answer: {resp and resp.summary()})"
    assert not resp.oversize, \
        f"answer of {resp.frame_size} bytes; Kafka never answers more than {KAFKA_FETCH_MAX_BYTES} record bytes"
    return resp, elapsed


def whole_from(p, offset):
    """p holds data that starts with the batch containing `offset` (whole batches, maybe a partial tail)."""
    assert p.error_code == NONE, p
    assert p.batches >= 1, f"no whole batch: {p}"
    assert p.first_offset <= offset < p.next_offset, f"data does not start at offset {offset}: {p}"


def empty(p, error=NONE):
    assert p.error_code == error, f"error {p.error_code}, Kafka answers {error}: {p}"
    assert p.records_len <= 0, f"{p.records_len} record bytes where Kafka answers none: {p}"


# ---------------------------------------------------------------- the same partition many times


@pytest.mark.parametrize("version,shape,pmb", [
    (11, "one-topic-entry", MiB), (12, "one-topic-entry", MiB), (15, "one-topic-entry", MiB),
    (11, "100-topic-entries", MiB), (15, "100-topic-entries", MiB),
    (12, "one-topic-entry", 20 * MiB),
])
def test_same_partition_100_times(broker, bystander, data, version, shape, pmb):  # noqa: F811
    k = key(data, data.one, version)
    r, _ = hostile(broker, bystander, version, [Part(k, 0, 0, pmb)] * 100, max_bytes=MAXI,
                   one_topic_entry_per_part=shape == "100-topic-entries")
    assert len(r.partitions) == 1, f"Kafka answers one entry for a partition named 100 times: {r.summary()}"
    p = r.partitions[0]
    assert (p.topic, p.index) == (k, 0)
    whole_from(p, 0)
    assert r.total_records_bytes <= max(pmb, data.first_batch[(data.one, 0)]), r.summary()


@pytest.mark.parametrize("version", VERSIONS)
def test_same_partition_twice_with_different_offsets(broker, bystander, data, version):  # noqa: F811
    k = key(data, data.one, version)
    r, _ = hostile(broker, bystander, version, [Part(k, 0, 0, MiB), Part(k, 0, 2000, MiB)])
    assert len(r.partitions) == 1, r.summary()
    p = r.partitions[0]
    assert p.error_code == NONE and p.batches >= 1, p
    # Kafka uses the last occurrence (offset 2000); either requested offset means the same to a client
    assert any(p.first_offset <= o < p.next_offset for o in (0, 2000)), p


@pytest.mark.parametrize("version", VERSIONS)
def test_same_missing_partition_5000_times(broker, bystander, data, version):  # noqa: F811
    r, _ = hostile(broker, bystander, version, [Part(key(data, data.three, version), -1, 0, MiB)] * 5000)
    assert len(r.partitions) == 1, r.summary()
    empty(r.partitions[0], UNKNOWN_TOPIC_OR_PARTITION)


# ---------------------------------------------------------------- request max_bytes


@pytest.mark.parametrize("max_bytes", [0, 1])
@pytest.mark.parametrize("version", VERSIONS)
def test_request_max_bytes_tiny_returns_first_batch_only(broker, bystander, data, version, max_bytes):  # noqa: F811
    k = key(data, data.three, version)
    r, _ = hostile(broker, bystander, version, [Part(k, i, 0, MiB) for i in range(3)], max_bytes=max_bytes)
    assert [p.index for p in r.partitions] == [0, 1, 2], r.summary()
    p0 = r.partitions[0]
    whole_from(p0, 0)
    assert p0.batches == 1 and not p0.partial, f"KIP-74: exactly the first batch, whole: {p0}"
    assert p0.records_len == data.first_batch[(data.three, 0)]
    empty(r.partitions[1])
    empty(r.partitions[2])


@pytest.mark.parametrize("version", VERSIONS)
def test_request_max_bytes_tiny_first_nonempty_partition_gets_the_batch(broker, bystander, data, version):  # noqa: F811
    k = key(data, data.three, version)
    parts = [Part(k, 0, THREE_RECORDS, MiB), Part(k, 1, 0, MiB), Part(k, 2, 0, MiB)]  # p0 at its end
    r, _ = hostile(broker, bystander, version, parts, max_bytes=1)
    p0, p1, p2 = r.partitions
    empty(p0)
    assert p0.high_watermark == THREE_RECORDS, p0
    whole_from(p1, 0)
    assert p1.batches == 1 and not p1.partial, f"KIP-74: exactly the first batch, whole: {p1}"
    empty(p2)


@pytest.mark.parametrize("max_bytes", [-1, -(2**31)], ids=["minus-one", "min-int"])
@pytest.mark.parametrize("version", VERSIONS)
def test_request_max_bytes_negative(broker, bystander, data, version, max_bytes):  # noqa: F811
    # Kafka: partition 0 gets UNKNOWN_SERVER_ERROR (its log read is refused), then the budget left is 0,
    # so partition 1 gets only its first batch (KIP-74) and partition 2 nothing.
    k = key(data, data.three, version)
    r, _ = hostile(broker, bystander, version, [Part(k, i, 0, MiB) for i in range(3)], max_bytes=max_bytes)
    assert [p.index for p in r.partitions] == [0, 1, 2], r.summary()
    p0, p1, p2 = r.partitions
    empty(p0, UNKNOWN_SERVER_ERROR)
    whole_from(p1, 0)
    assert p1.batches == 1 and not p1.partial, p1
    empty(p2)


@pytest.mark.parametrize("version", VERSIONS)
def test_request_max_bytes_huge_partition_limits_apply(broker, bystander, data, version):  # noqa: F811
    k = key(data, data.three, version)
    r, _ = hostile(broker, bystander, version, [Part(k, i, 0, MiB) for i in range(3)], max_bytes=MAXI)
    assert [p.index for p in r.partitions] == [0, 1, 2], r.summary()
    for p in r.partitions:
        whole_from(p, 0)
        assert p.records_len <= MiB, p


@pytest.mark.parametrize("version", VERSIONS)
def test_answer_capped_at_fetch_max_bytes(broker, bystander, data, version):  # noqa: F811
    """61 MB in 4 partitions, every limit 2^31-1: Kafka answers fetch.max.bytes (55 MiB) of records."""
    k1, k3 = key(data, data.one, version), key(data, data.three, version)
    parts = [Part(k1, 0, 0, MAXI)] + [Part(k3, i, 0, MAXI) for i in range(3)]
    r, _ = hostile(broker, bystander, version, parts, max_bytes=MAXI)
    assert r.total_records_bytes <= KAFKA_FETCH_MAX_BYTES, \
        f"{r.total_records_bytes} record bytes in one answer; Kafka's cap is {KAFKA_FETCH_MAX_BYTES}: {r.summary()}"
    assert len(r.partitions) == 4, r.summary()
    first = r.partitions[0]
    whole_from(first, 0)
    assert first.next_offset == ONE_RECORDS, f"the first partition (40 MB < cap) comes whole: {first}"
    for p in r.partitions[1:]:
        assert p.error_code == NONE, p
        if p.records_len > 0:
            whole_from(p, 0)


# ---------------------------------------------------------------- partition_max_bytes


@pytest.mark.parametrize("pmb", [0, 1, 1000])
@pytest.mark.parametrize("version", VERSIONS)
def test_partition_max_bytes_below_first_batch(broker, bystander, data, version, pmb):  # noqa: F811
    k = key(data, data.three, version)
    r, _ = hostile(broker, bystander, version, [Part(k, i, 0, pmb) for i in range(3)], max_bytes=MAXI)
    p0, p1, p2 = r.partitions
    whole_from(p0, 0)
    assert p0.batches == 1 and not p0.partial, f"KIP-74: the first partition's first batch, whole: {p0}"
    empty(p1)
    empty(p2)


@pytest.mark.parametrize("pmb", [-1, -(2**31)], ids=["minus-one", "min-int"])
@pytest.mark.parametrize("version", VERSIONS)
def test_partition_max_bytes_negative(broker, bystander, data, version, pmb):  # noqa: F811
    k = key(data, data.three, version)
    r, _ = hostile(broker, bystander, version, [Part(k, i, 0, pmb) for i in range(3)], max_bytes=MAXI)
    assert [p.index for p in r.partitions] == [0, 1, 2], r.summary()
    for p in r.partitions:
        empty(p, UNKNOWN_SERVER_ERROR)


# ---------------------------------------------------------------- min_bytes / max_wait_ms


@pytest.mark.parametrize("version", VERSIONS)
def test_min_bytes_beyond_data_waits_then_answers(broker, bystander, data, version):  # noqa: F811
    k = key(data, data.three, version)
    r, took = hostile(broker, bystander, version, [Part(k, i, THREE_RECORDS, MiB) for i in range(3)],
                      min_bytes=100_000_000, max_wait_ms=1000)
    assert 0.8 <= took < 8, f"answered after {took:.2f}s; Kafka waits max_wait_ms (1 s)"
    for p in r.partitions:
        empty(p)
        assert p.high_watermark == THREE_RECORDS, p
    # with data there (but less than min_bytes) Kafka also waits, then returns what there is
    r, took = hostile(broker, bystander, version, [Part(k, i, 0, MiB) for i in range(3)],
                      min_bytes=100_000_000, max_wait_ms=1000)
    assert 0.8 <= took < 8, f"answered after {took:.2f}s; Kafka waits max_wait_ms (1 s)"
    for p in r.partitions:
        whole_from(p, 0)


@pytest.mark.parametrize("min_bytes,max_wait_ms", [(1, 0), (1, -1), (100_000_000, -1000),
                                                   (100_000_000, -(2**31)), (-1, 1000), (-(2**31), 1000)])
@pytest.mark.parametrize("version", [11, 15])
def test_no_wait_when_max_wait_or_min_bytes_not_positive(broker, bystander, data, version, min_bytes,
                                                          max_wait_ms):  # noqa: F811
    k = key(data, data.three, version)
    r, took = hostile(broker, bystander, version, [Part(k, 0, THREE_RECORDS, MiB)], min_bytes=min_bytes,
                      max_wait_ms=max_wait_ms)
    assert took < 0.9, f"answered after {took:.2f}s; Kafka answers at once"
    empty(r.partitions[0])


# ---------------------------------------------------------------- thousands of partitions


@pytest.mark.parametrize("kind", ["missing-topic", "missing-partitions", "one-real-then-missing"])
@pytest.mark.parametrize("version", VERSIONS)
def test_5000_partitions_in_one_request(broker, bystander, data, version, kind):  # noqa: F811
    k = key(data, data.three, version)
    if kind == "missing-topic":
        missing = f"no-such-topic-{uuid.uuid4().hex[:6]}" if version < 13 else uuid.uuid4().bytes
        parts = [Part(missing, i, 0, MiB) for i in range(5000)]
        code = UNKNOWN_TOPIC_OR_PARTITION if version < 13 else UNKNOWN_TOPIC_ID
    elif kind == "missing-partitions":
        parts = [Part(k, i, 0, MiB) for i in range(3, 5003)]
        code = UNKNOWN_TOPIC_OR_PARTITION
    else:
        parts = [Part(k, 0, 0, MiB)] + [Part(k, i, 0, MiB) for i in range(3, 5002)]
        code = UNKNOWN_TOPIC_OR_PARTITION
    r, _ = hostile(broker, bystander, version, parts)
    assert r.error_code == NONE, r.summary()
    assert len(r.partitions) == 5000, r.summary()
    assert [p.index for p in r.partitions] == [p.partition for p in parts]
    rest = r.partitions
    if kind == "one-real-then-missing":
        whole_from(r.partitions[0], 0)
        rest = r.partitions[1:]
    bad = [p for p in rest if p.error_code != code or p.records_len > 0]
    assert not bad, f"{len(bad)} entries differ from Kafka's error {code}, e.g. {bad[:2]}"
    if kind == "missing-topic" and version < 13:
        # a Fetch never creates a topic (even with auto.create.topics.enable=true)
        r2, _ = hostile(broker, bystander, version, parts[:1])
        assert r2.partitions[0].error_code == UNKNOWN_TOPIC_OR_PARTITION


# ---------------------------------------------------------------- offsets, isolation


@pytest.mark.parametrize("offset", ["hw+1", -1, -5])
@pytest.mark.parametrize("version", VERSIONS)
def test_offset_out_of_range(broker, bystander, data, version, offset):  # noqa: F811
    off = ONE_RECORDS + 1 if offset == "hw+1" else offset
    r, _ = hostile(broker, bystander, version, [Part(key(data, data.one, version), 0, off, MiB)])
    empty(r.partitions[0], OFFSET_OUT_OF_RANGE)


@pytest.mark.parametrize("version", VERSIONS)
def test_fetch_at_high_watermark_is_empty(broker, bystander, data, version):  # noqa: F811
    r, _ = hostile(broker, bystander, version, [Part(key(data, data.one, version), 0, ONE_RECORDS, MiB)])
    p = r.partitions[0]
    empty(p)
    assert p.high_watermark == ONE_RECORDS and p.log_start_offset == 0, p


@pytest.mark.parametrize("version", VERSIONS)
def test_read_committed_on_plain_topic(broker, bystander, data, version):  # noqa: F811
    k = key(data, data.three, version)
    r, _ = hostile(broker, bystander, version, [Part(k, i, 0, 1000) for i in range(3)], isolation_level=1)
    for p in r.partitions:
        assert p.error_code == NONE, p
        assert p.high_watermark == THREE_RECORDS and p.last_stable_offset == THREE_RECORDS, p
    whole_from(r.partitions[0], 0)


# ---------------------------------------------------------------- long polls


def test_long_polls_do_not_hold_back_produce_acks(broker, bystander, data, topic_name):  # noqa: F811
    """4 connections long-poll (min_bytes 50 MB, max_wait 3 s, two rounds each) while a producer on its own
    connections sends small acks=all records: acks keep arriving while the polls are parked."""
    from confluent_kafka import Producer
    create_topic(broker.bootstrap, topic_name, 2)
    with connect(broker) as s:
        tid = topic_id(s, topic_name)
    acks = [0]
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acks[0] += 1

    stop = threading.Event()
    polls = []  # (connection, round, acks at send, acks at answer, seconds, answer summary)
    poll_errors = []

    def poller(n):
        try:
            with connect(broker) as s:
                s.settimeout(30)
                version = 12 if n % 2 else 15
                k = topic_name if version < 13 else tid
                for rnd in range(2):
                    before, t = acks[0], time.monotonic()
                    r = fetch(s, version, [Part(k, 0, 0, MiB)], correlation_id=rnd + 1,
                              min_bytes=50_000_000, max_wait_ms=3000)
                    polls.append((n, rnd, before, acks[0], time.monotonic() - t, r.summary(),
                                  r.partitions[0].error_code))
        except Exception as e:  # reported by the main thread
            poll_errors.append(repr(e))

    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0,
                  "enable.idempotence": False})
    # a first record so that the producer's connections are up before the polls start
    p.produce(topic_name, value=b"warm-up", partition=1, on_delivery=delivered)
    assert p.flush(30) == 0
    threads = [threading.Thread(target=poller, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    sent = 0
    while any(t.is_alive() for t in threads):
        p.produce(topic_name, value=b"small-%d" % sent, partition=sent % 2, on_delivery=delivered)
        sent += 1
        p.poll(0.02)
    for t in threads:
        t.join()
    assert p.flush(30) == 0
    assert not poll_errors, poll_errors
    assert not errors, errors[:3]
    assert len(polls) == 8
    print(f"{sent} records sent; acks during each poll: {sorted(a - b for _, _, b, a, _, _, _ in polls)}")
    for n, rnd, before, after, took, summary, err in polls:
        assert err == NONE, summary
        # the poll really waited: the partition never held 50 MB (a timing sanity check, not the point)
        assert took >= 1.5, f"poll {n}/{rnd} answered after {took:.2f}s although min_bytes was not reached"
        assert after - before >= 20, \
            f"only {after - before} acks arrived during poll {n}/{rnd} ({took:.1f}s); {sent} records were sent"


def proc_cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@pytest.mark.skipif(TARGET != "ringtide", reason="CPU time of the Ringtide process")
def test_parked_long_polls_do_not_spin(broker, bystander, data, topic_name):  # noqa: F811
    """20 connections long-poll (min_bytes 1 MB, max_wait 3 s) a partition holding 10 small records: waiting
    must cost next to no CPU."""
    from confluent_kafka import Producer
    create_topic(broker.bootstrap, topic_name, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(10):
        p.produce(topic_name, value=b"r%d" % i, partition=0)
    assert p.flush(30) == 0
    pid = broker.proc.pid
    socks = [connect(broker) for _ in range(20)]
    try:
        for s in socks:
            s.settimeout(30)
        idle0 = proc_cpu_seconds(pid)
        time.sleep(1.0)
        idle = proc_cpu_seconds(pid) - idle0
        cpu0, t0 = proc_cpu_seconds(pid), time.monotonic()
        for n, s in enumerate(socks):
            s.sendall(fetch_frame(12, n + 1, [Part(topic_name, 0, 0, MiB)], min_bytes=1_000_000,
                                  max_wait_ms=3000))
        answers = [recv_fetch(s, 12) for s in socks]
        took = time.monotonic() - t0
        cpu = proc_cpu_seconds(pid) - cpu0
    finally:
        for s in socks:
            s.close()
    for r in answers:
        assert r.partitions[0].error_code == NONE and r.partitions[0].records == 10, r.summary()
    print(f"20 parked long polls: {cpu:.2f}s broker CPU in {took:.1f}s (idle {idle:.2f}s/s)")
    assert took >= 2.5, f"the polls were answered after {took:.2f}s, before max_wait_ms"
    assert cpu < 1.0, (f"the broker used {cpu:.2f}s of CPU while 20 long polls waited {took:.1f}s "
                       f"(idle: {idle:.2f}s per second)")
    still_serving(broker, bystander)


def test_a_real_consumer_still_reads_everything(broker, data):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"unused-{data.three}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    try:
        c.assign([TopicPartition(data.three, i, 0) for i in range(3)])
        n, deadline = 0, time.monotonic() + 60
        while n < 3 * THREE_RECORDS and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                assert not m.error(), m.error()
                n += 1
        assert n == 3 * THREE_RECORDS
    finally:
        c.close()


@pytest.mark.skipif(TARGET != "ringtide", reason="RSS of the Ringtide process")
def test_rss_after_all_hostile_fetches(broker, data):
    """Runs last in the module: what the hostile fetches left behind."""
    growth = rss_kib(broker.proc.pid) - data.rss_baseline_kib
    assert growth < RSS_GROWTH_MAX_KIB, f"RSS grew by {growth / 1024:.0f} MiB over this module's fetches"
