"""Leader epochs as Kafka 4.4 keeps and answers them (KIP-101, KIP-320): the partition's
`leader-epoch-checkpoint` file, OffsetForLeaderEpoch v3/v4, and the `current_leader_epoch` that Fetch,
ListOffsets and OffsetForLeaderEpoch check (FENCED_LEADER_EPOCH when older, UNKNOWN_LEADER_EPOCH when
newer). On one broker every partition is in epoch 0 from its creation, on both targets."""

import signal
import struct

import pytest

from conftest import TARGET, create_topic, wait_for
from rawfetch import Part, compact_array, compact_str, fetch, round_trip, std_array, std_str
from test_list_offsets_time import list_offsets_raw
from test_protocol_errors import connect

OFFSET_FOR_LEADER_EPOCH = 23
NONE, UNKNOWN_TOPIC_OR_PARTITION, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH = 0, 3, 74, 75
LATEST, EARLIEST = -1, -2


def offset_for_leader_epoch(broker, version, topics, correlation_id=11):
    """topics: [(name, [(partition, current_leader_epoch, leader_epoch), ...]), ...] ->
    {(name, partition): (error, leader_epoch, end_offset)}, in answer order."""
    flexible = version >= 4
    body = struct.pack(">i", -1) if version >= 3 else b""  # replica id (v3+): a consumer
    if flexible:
        body += compact_array([
            compact_str(t) + compact_array([struct.pack(">iii", *p) + b"\x00" for p in ps]) + b"\x00"
            for t, ps in topics]) + b"\x00"
    else:
        body += std_array([std_str(t) + std_array([struct.pack(">iii", *p) for p in ps]) for t, ps in topics])
    r = round_trip(broker, OFFSET_FOR_LEADER_EPOCH, version, flexible, correlation_id, body)
    r.take(">i")  # throttle
    out = {}
    for _ in range(r.compact_len() if flexible else r.take(">i")):
        name = r.compact_str() if flexible else r.std_str()
        for _ in range(r.compact_len() if flexible else r.take(">i")):
            err, index, epoch, end = r.take(">hiiq")
            if flexible:
                r.skip_tags()
            out[(name, index)] = (err, epoch, end)
        if flexible:
            r.skip_tags()
    if flexible:
        r.skip_tags()
    assert r.off == len(r.buf), "trailing bytes in the OffsetForLeaderEpoch answer"
    return out


def produce(bootstrap, topic, n, partition=0):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(n):
        p.produce(topic, value=f"v{i}".encode(), partition=partition)
    assert p.flush(30) == 0


def checkpoint(broker, topic, partition):
    return (broker.data_dir / f"{topic}-{partition}" / "leader-epoch-checkpoint").read_text()


@pytest.mark.parametrize("version", [2, 3, 4])
def test_offset_for_leader_epoch(fresh_broker, topic_name, version):
    b = fresh_broker
    create_topic(b.bootstrap, topic_name, partitions=2)
    produce(b.bootstrap, topic_name, 10)
    asks = [(0, -1, 0), (1, -1, 0), (0, -1, 1), (0, -1, -1), (0, 0, 0), (0, 1, 0), (5, -1, 0)]
    got = offset_for_leader_epoch(b, version, [(topic_name, [asks[0]]), (topic_name, [asks[1]])])
    assert got == {(topic_name, 0): (NONE, 0, 10), (topic_name, 1): (NONE, 0, 0)}
    answers = [offset_for_leader_epoch(b, version, [(topic_name, [a])])[(topic_name, a[0])] for a in asks]
    assert answers == [
        (NONE, 0, 10),                     # the latest epoch ends at the log end
        (NONE, 0, 0),                      # an empty partition
        (NONE, -1, -1),                    # a later epoch than any
        (NONE, -1, -1),                    # no epoch
        (NONE, 0, 10),                     # current_leader_epoch equal to the leader's
        (UNKNOWN_LEADER_EPOCH, -1, -1),    # newer than the leader's
        (UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
    ]
    assert offset_for_leader_epoch(b, version, [("no-such-topic-at-all", [(0, -1, 0)])]) == {
        ("no-such-topic-at-all", 0): (UNKNOWN_TOPIC_OR_PARTITION, -1, -1)}


def test_current_leader_epoch_is_checked_by_fetch_and_list_offsets(broker, topic_name):
    create_topic(broker.bootstrap, topic_name)
    produce(broker.bootstrap, topic_name, 5)
    with connect(broker) as s:
        for epoch, code, records in [(-1, NONE, 5), (0, NONE, 5), (1, UNKNOWN_LEADER_EPOCH, 0)]:
            r = fetch(s, 12, [Part(topic_name, 0, current_leader_epoch=epoch)])
            (p,) = r.partitions
            assert (p.error_code, p.records) == (code, records), (epoch, p)
            if code != NONE:
                assert (p.high_watermark, p.log_start_offset) == (-1, -1), p
    for version in (4, 6, 9):
        assert list_offsets_raw(broker, version, topic_name, LATEST, current_leader_epoch=0) == (NONE, -1, 5, 0)
        assert list_offsets_raw(broker, version, topic_name, EARLIEST, current_leader_epoch=-1) == (NONE, -1, 0, 0)
        err, _, offset, _ = list_offsets_raw(broker, version, topic_name, LATEST, current_leader_epoch=3)
        assert (err, offset) == (UNKNOWN_LEADER_EPOCH, -1)


def test_leader_epoch_checkpoint_file(fresh_broker, topic_name):
    """Kafka's file and format in the partition directory: version 0, then `epoch start-offset` lines;
    a new partition starts in epoch 0 at offset 0. After kill -9 and restart the history is kept (Kafka's
    controller moves the epoch on when the broker comes back, Ringtide's single broker does not) and the
    answers follow it: epoch 0 ends where the next one starts, the latest at the log end."""
    b = fresh_broker
    create_topic(b.bootstrap, topic_name, partitions=2)
    produce(b.bootstrap, topic_name, 20)
    for p in (0, 1):  # Kafka writes the file in the background
        wait_for(lambda: (b.data_dir / f"{topic_name}-{p}" / "leader-epoch-checkpoint").exists() and
                 checkpoint(b, topic_name, p) == "0\n1\n0 0\n", 30, what=f"partition {p}'s epoch file")
    b.restart(signal.SIGKILL)

    def entries():
        lines = checkpoint(b, topic_name, 0).splitlines()
        assert lines[0] == "0" and int(lines[1]) == len(lines) - 2, lines
        return [tuple(map(int, line.split())) for line in lines[2:]]
    want_epoch = wait_for(lambda: list_offsets_raw(b, 4, topic_name, LATEST)[0] == NONE and
                          list_offsets_raw(b, 4, topic_name, LATEST)[3] == entries()[-1][0] and
                          entries()[-1][0], 60, interval=0.5, what="the epoch after the restart") \
        if TARGET == "kafka" else 0
    history = entries()
    assert history[0] == (0, 0) and all(offset == 20 for _, offset in history[1:]), history
    latest = history[-1][0]
    assert latest == want_epoch
    got = offset_for_leader_epoch(b, 3, [(topic_name, [(0, -1, latest), (1, -1, latest)])])
    assert got[(topic_name, 0)] == (NONE, latest, 20) and got[(topic_name, 1)] == (NONE, latest, 0), got
    assert offset_for_leader_epoch(b, 3, [(topic_name, [(0, -1, 0)])])[(topic_name, 0)] == (NONE, 0, 20)
    assert list_offsets_raw(b, 4, topic_name, LATEST, current_leader_epoch=latest) == (NONE, -1, 20, latest)
    assert list_offsets_raw(b, 4, topic_name, EARLIEST) == (NONE, -1, 0, 0)
