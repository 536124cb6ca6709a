"""Produce answered exactly as Apache Kafka 4.4 answers it, checked with raw requests on both targets.

What Kafka 4.4 does (found by probing it; these tests pass against it):
  * Produce v0-v2: advertised in ApiVersions (0..13) but a request closes the connection.
  * v3+: a partition's records must be exactly one batch of magic 2, else INVALID_RECORD with no message,
    base_offset -1 and log_start_offset -1, and nothing is appended (so no "later batch is a duplicate"
    answer); a torn remainder after the one batch is dropped; a first size field below 14 is
    CORRUPT_MESSAGE naming the size.
  * Append checks, in order: base offset != 0 (INVALID_RECORD), size > max.message.bytes
    (MESSAGE_TOO_LARGE), batch shorter than its header (UNKNOWN_SERVER_ERROR), CRC (CORRUPT_MESSAGE),
    record count / control batch (INVALID_RECORD). No error message; log_start_offset is the log's for
    INVALID_RECORD and -1 for the others.
  * acks outside -1..1: INVALID_REQUIRED_ACKS, but only for partitions that passed the checks above.
  * acks=0: any partition's error closes the connection (no answer); success keeps it open.
  * A transactional batch without a transactional id: TRANSACTIONAL_ID_AUTHORIZATION_FAILED; a
    transactional id with plain batches is accepted.
  * A duplicate of an idempotent batch: its original offset, and its timestamp as log_append_time.
"""

import re
import time

import pytest

from conftest import create_topic
from prodraw import (CORRUPT_MESSAGE, INVALID_RECORD, MESSAGE_TOO_LARGE, UNKNOWN_TOPIC_OR_PARTITION, batch,
                     connect, init_producer_id, one, produce, produce_acks0, still_open, with_crc)
from test_protocol_errors import api_versions_v0

UNKNOWN_SERVER_ERROR = -1
INVALID_REQUIRED_ACKS = 21
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
MAX_MESSAGE_BYTES = 1000


def answer(error, base_offset=-1, log_start_offset=-1, error_message=None, log_append_time=-1):
    return {"error": error, "base_offset": base_offset, "log_append_time": log_append_time,
            "log_start_offset": log_start_offset, "record_errors": [], "error_message": error_message}


@pytest.fixture
def topic(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1, config={"max.message.bytes": str(MAX_MESSAGE_BYTES)})
    return topic_name


def patched(b, at, value):
    b = bytearray(b)
    b[at:at + len(value)] = value
    return bytes(b)


def test_api_versions_advertise_produce_from_v0(broker):
    with connect(broker) as s:
        err, apis = api_versions_v0(s, 1)
    assert err == 0 and apis[0] == (0, 13)


@pytest.mark.parametrize("version", [0, 1, 2])
@pytest.mark.parametrize("magic", [0, 1, 2])
def test_produce_v0_to_v2_closes_the_connection(broker, topic, version, magic):
    with connect(broker) as s:
        assert one(s, version, topic, 0, batch(1, magic=magic)) == "closed"
    with connect(broker) as s:
        assert one(s, 8, topic, 0, batch(1)) == answer(0, 0, 0), "nothing was appended"


@pytest.mark.parametrize("version", [3, 8])
def test_more_than_one_batch_per_partition_is_refused(broker, topic, version):
    with connect(broker) as s:
        got = one(s, version, topic, 0, batch(2) + batch(1))
        assert got["error"] == INVALID_RECORD and got["base_offset"] == -1
        if version == 8:
            assert got == answer(INVALID_RECORD)
        assert one(s, 8, topic, 0, batch(1) + batch(1) + batch(1)) == answer(INVALID_RECORD)
        assert one(s, 8, topic, 0, batch(1)) == answer(0, 0, 0), "nothing was appended"
        assert still_open(s)


def test_new_batch_with_a_duplicate_is_refused_whole(broker, topic):
    with connect(broker) as s:
        pid, epoch = init_producer_id(s)

        def b(seq, ts=None):
            return batch(1, producer_id=pid, producer_epoch=epoch, base_sequence=seq, timestamp=ts)

        ts0 = 1_700_000_000_000
        assert one(s, 8, topic, 0, b(0, ts0)) == answer(0, 0, 0)
        # a new batch then a duplicate, and a duplicate then a new batch: both refused, nothing appended
        assert one(s, 8, topic, 0, b(1) + b(0, ts0)) == answer(INVALID_RECORD)
        assert one(s, 8, topic, 0, b(0, ts0) + b(1)) == answer(INVALID_RECORD)
        # the duplicate alone: its original offset, and its timestamp as log_append_time
        assert one(s, 8, topic, 0, b(0, ts0)) == answer(0, 0, 0, log_append_time=ts0)
        assert one(s, 8, topic, 0, b(1)) == answer(0, 1, 0)


@pytest.mark.parametrize("version", [3, 8])
@pytest.mark.parametrize("magic", [0, 1])
def test_magic_v0_v1_message_sets_are_refused(broker, topic, version, magic):
    with connect(broker) as s:
        got = one(s, version, topic, 0, batch(1, magic=magic))
        expected = answer(INVALID_RECORD)
        assert got == ({k: expected[k] for k in got} if version < 8 else expected)
        assert one(s, 8, topic, 0, batch(1, magic=magic) + batch(1)) == answer(INVALID_RECORD)
        assert one(s, 8, topic, 0, batch(1) + batch(1, magic=magic)) == answer(INVALID_RECORD)


def _cases():
    good = batch(3, value=b"x" * 50)
    big = batch(1, value=b"y" * 2000)
    control = with_crc(patched(batch(1), 22, bytes([batch(1)[22] | 0x20])))
    flip = lambda b: b[:-1] + bytes([b[-1] ^ 1])  # noqa: E731
    base5 = (5).to_bytes(8, "big")
    return {
        "empty": (b"", answer(INVALID_RECORD)),
        "truncated": (good[:40], answer(INVALID_RECORD)),
        "size-5": (patched(good, 8, (5).to_bytes(4, "big")),
                   answer(CORRUPT_MESSAGE, error_message="Record size 5 is less than the minimum record overhead (14)")),
        "trailing-zeros": (good + bytes(20), answer(CORRUPT_MESSAGE)),
        "size-30": (patched(good, 8, (30).to_bytes(4, "big"))[:42], answer(UNKNOWN_SERVER_ERROR)),
        "bad-crc": (flip(good), answer(CORRUPT_MESSAGE)),
        "too-large": (big, answer(MESSAGE_TOO_LARGE)),
        "too-large-bad-crc": (flip(big), answer(MESSAGE_TOO_LARGE)),
        "base-offset-5": (patched(good, 0, base5), answer(INVALID_RECORD, log_start_offset=0)),
        "base-offset-5-too-large": (patched(big, 0, base5), answer(INVALID_RECORD, log_start_offset=0)),
        "base-offset-5-bad-crc": (flip(patched(good, 0, base5)), answer(INVALID_RECORD, log_start_offset=0)),
        "control": (control, answer(INVALID_RECORD, log_start_offset=0)),
        "control-bad-crc": (flip(control), answer(CORRUPT_MESSAGE)),
        "count": (with_crc(patched(batch(2), 57, (5).to_bytes(4, "big"))), answer(INVALID_RECORD, log_start_offset=0)),
    }


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_refused_records(broker, topic, case):
    records, expected = CASES[case]
    with connect(broker) as s:
        assert one(s, 8, topic, 0, records) == expected
        assert still_open(s)
        assert one(s, 8, topic, 0, batch(1)) == answer(0, 0, 0), "nothing was appended"


def test_torn_remainder_after_the_batch_is_dropped(broker, topic):
    good = batch(3, value=b"x" * 50)
    with connect(broker) as s:
        assert one(s, 8, topic, 0, good + good[:30]) == answer(0, 0, 0)
        assert one(s, 8, topic, 0, batch(1)) == answer(0, 3, 0)


@pytest.mark.parametrize("case", list(CASES) + ["unknown-topic", "unknown-partition", "two-batches", "magic-1"])
def test_acks0_error_closes_the_connection(broker, topic, case):
    topic_, partition, records = topic, 0, None
    if case == "unknown-topic":
        topic_, records = topic + "-nope", batch(1)
    elif case == "unknown-partition":
        partition, records = 5, batch(1)
    elif case == "two-batches":
        records = batch(1) + batch(1)
    elif case == "magic-1":
        records = batch(1, magic=1)
    else:
        records = CASES[case][0]
    with connect(broker) as s:
        assert one(s, 8, topic_, partition, records, acks=0) == "closed"


@pytest.mark.parametrize("version", [3, 8])
def test_acks0_success_keeps_the_connection(broker, topic, version):
    with connect(broker) as s:
        assert one(s, version, topic, 0, batch(1), acks=0) == "open"
        assert one(s, 8, topic, 0, batch(1)) == answer(0, 1, 0)


def test_acks0_one_failed_partition_closes_the_connection(broker, topic):
    with connect(broker) as s:
        assert produce_acks0(s, 8, [(topic, [(0, batch(1))]), (topic + "-nope", [(0, batch(1))])]) == "closed"


def test_invalid_acks_only_for_partitions_that_pass_the_checks(broker, topic):
    with connect(broker) as s:
        got = produce(s, 8, [(topic, [(0, batch(1)), (3, batch(1))]), (topic + "-nope", [(0, batch(1))])], acks=2)
        assert got == {(topic, 0): answer(INVALID_REQUIRED_ACKS), (topic, 3): answer(UNKNOWN_TOPIC_OR_PARTITION),
                       (topic + "-nope", 0): answer(UNKNOWN_TOPIC_OR_PARTITION)}
        assert one(s, 8, topic, 0, batch(1) + batch(1), acks=2) == answer(INVALID_RECORD)


def test_transactional_id_with_plain_batches_is_accepted(broker, topic):
    with connect(broker) as s:
        assert one(s, 8, topic, 0, batch(1), transactional_id="tx") == answer(0, 0, 0)


def test_transactional_batch_without_transactional_id(broker, topic):
    txn = bytearray(batch(1, producer_id=1, producer_epoch=0, base_sequence=0))
    txn[22] |= 0x10
    with connect(broker) as s:
        got = produce(s, 8, [(topic, [(0, with_crc(txn))]), (topic + "-nope", [(0, batch(1))])])
        assert got == {(topic, 0): answer(TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
                       (topic + "-nope", 0): answer(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)}
        assert one(s, 8, topic, 0, batch(1)) == answer(0, 0, 0)


def _timed_batch(timestamps, codec=0):
    from kafka.record.memory_records import MemoryRecordsBuilder
    b = MemoryRecordsBuilder(magic=2, compression_type=codec, batch_size=1 << 16)
    for i, t in enumerate(timestamps):
        b.append(t, b"k%d" % i, b"v", headers=[])
    b.close()
    return bytes(b.buffer())


def test_create_time_out_of_range_is_refused(broker):
    """KIP-937 as Kafka 4.4 applies it: a CreateTime record more than message.timestamp.after.max.ms (default
    1 hour) ahead of the broker's clock, or more than message.timestamp.before.max.ms behind it, refuses
    the batch with INVALID_TIMESTAMP naming each record (v8+); LogAppendTime topics take any timestamp."""
    suffix = int(time.time() * 1000) % 1_000_000
    ahead, behind, lat = f"ts-ahead-{suffix}", f"ts-behind-{suffix}", f"ts-lat-{suffix}"
    create_topic(broker.bootstrap, ahead)
    create_topic(broker.bootstrap, behind, config={"message.timestamp.before.max.ms": "60000"})
    create_topic(broker.bootstrap, lat, config={"message.timestamp.type": "LogAppendTime"})
    pattern = re.compile(r"Timestamp (-?\d+) of message with offset (\d+) is out of range\. "
                         r"The timestamp should be within \[(-?\d+), (-?\d+)\]")
    s = connect(broker)
    try:
        now = int(time.time() * 1000)
        for codec in (0, 1):
            r = produce(s, 8, [(ahead, [(0, _timed_batch([now, now + 2 * 3600_000, now], codec))])])[(ahead, 0)]
            assert (r["error"], r["base_offset"], r["log_start_offset"]) == (32, -1, 0)
            assert r["error_message"] == "One or more records have been rejected due to invalid timestamp"
            assert [i for i, _ in r["record_errors"]] == [1]
            ts, off, lo, hi = map(int, pattern.fullmatch(r["record_errors"][0][1]).groups())
            assert (ts, off) == (now + 2 * 3600_000, 1)
            assert lo < -(2 ** 62) and 0 <= hi - (now + 3600_000) < 60_000  # no lower bound by default
        r = produce(s, 8, [(behind, [(0, _timed_batch([now - 120_000, now, now - 3600_000]))])])[(behind, 0)]
        assert r["error"] == 32 and [i for i, _ in r["record_errors"]] == [0, 2]
        ts, off, lo, hi = map(int, pattern.fullmatch(r["record_errors"][1][1]).groups())
        assert (ts, off) == (now - 3600_000, 2) and hi - lo == 60_000 + 3600_000
        # Within range: taken. LogAppendTime: the broker's clock replaces the producer's.
        assert produce(s, 8, [(ahead, [(0, _timed_batch([now, now + 60_000]))])])[(ahead, 0)]["error"] == 0
        r = produce(s, 8, [(lat, [(0, _timed_batch([now + 2 * 3600_000]))])])[(lat, 0)]
        assert r["error"] == 0 and r["log_append_time"] >= now
        # v3 has no per-record errors: the code alone.
        r = produce(s, 3, [(ahead, [(0, _timed_batch([now + 2 * 3600_000]))])])[(ahead, 0)]
        assert (r["error"], r["base_offset"]) == (32, -1)
    finally:
        s.close()
