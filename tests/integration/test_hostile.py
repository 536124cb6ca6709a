"""Hostile input over the wire: each bad request gets Kafka's error code, or a close of that connection
only; the broker keeps serving everyone else (a bystander connection opened first stays usable, and a real
client still produces and consumes at the end)."""

import os
import random
import struct

import pytest
from kafka.record.memory_records import MemoryRecordsBuilder

from conftest import TARGET, consume_all, create_topic
from test_protocol_errors import api_versions_v0, closed_or_answered, connect, recv_frame, request

pytestmark = pytest.mark.skipif(TARGET != "ringtide" and os.environ.get("RINGTIDE_HOSTILE_ON_KAFKA") != "1",
                                reason="Kafka answers some malformed requests differently (it is checked by hand)")


@pytest.fixture(scope="module")
def bystander(broker):
    s = connect(broker)
    assert api_versions_v0(s, 1)[0] == 0
    yield s
    s.close()


def still_serving(broker, bystander):
    corr = random.randrange(1 << 30)
    assert api_versions_v0(bystander, corr)[0] == 0, "the bystander connection was affected"
    with connect(broker) as s:
        assert api_versions_v0(s, 7)[0] == 0, "new connections are not served"


def send_raw(broker, payload, correlation_id=-1):
    with connect(broker) as s:
        s.sendall(payload)
        return closed_or_answered(s, correlation_id)


# ---------------------------------------------------------------- framing


@pytest.mark.parametrize("seed", range(5))
def test_garbage_bytes(broker, bystander, seed):
    rng = random.Random(seed)
    junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096)))
    with connect(broker) as s:
        try:
            s.sendall(junk)
            s.shutdown(1)  # no more bytes: the broker must not wait forever for the rest of a frame
            while s.recv(65536):
                pass
        except OSError:
            pass  # already closed by the broker: fine
    still_serving(broker, bystander)


@pytest.mark.parametrize("length", [-(2**31), -1, 0, 3, 100 * 1024 * 1024 + 1, 2**31 - 1],
                         ids=["min-int", "minus-one", "zero", "shorter-than-header", "above-max", "max-int"])
def test_bad_frame_lengths(broker, bystander, length):
    assert send_raw(broker, struct.pack(">i", length) + b"\x00" * 16) == "closed"
    still_serving(broker, bystander)


def test_truncated_frame_then_silence_does_not_block_others(broker, bystander):
    # Half a frame, connection left open: only that connection waits.
    s = connect(broker)
    s.sendall(struct.pack(">i", 500) + b"\x00\x03\x00\x01\x00\x00")
    still_serving(broker, bystander)
    s.close()


@pytest.mark.parametrize("key,version", [(31999, 0), (-5, 0), (0, 99), (3, 999), (1, -1)],
                         ids=["unknown-key", "negative-key", "produce-v99", "metadata-v999", "fetch-v-1"])
def test_unknown_api_key_or_version(broker, bystander, key, version):
    assert send_raw(broker, request(key, version, 11, body=b"\x00" * 32), 11) == "closed"
    still_serving(broker, bystander)


# ---------------------------------------------------------------- malformed bodies

# Produce v3: transactional_id (nullable string), acks int16, timeout int32, topics array.
HUGE_COUNT = struct.pack(">h", -1) + struct.pack(">hi", 1, 1000) + struct.pack(">i", 2**31 - 1)


@pytest.mark.parametrize("key,version,body", [
    # A 2^31-1 element array in 22 bytes: kafka-protocol 0.18 pre-allocated 200 GB for it and the broker
    # aborted (found by this test; fixed in vendor/kafka-protocol).
    (0, 3, HUGE_COUNT),
    # Metadata v1: topics array count 2^31-1, no elements.
    (3, 1, struct.pack(">i", 2**31 - 1)),
    # Metadata v12 (flexible): header tagged fields, then a compact array whose varint count is 2^32-1.
    (3, 12, b"\x00" + b"\xff\xff\xff\xff\x0f"),
    # Produce v3 with a topic name of length 32767 and 3 bytes of it.
    (0, 3, struct.pack(">h", -1) + struct.pack(">hi", 1, 1000) + struct.pack(">i", 1) + struct.pack(">h", 32767) + b"abc"),
    # CreateTopics v2: a records-sized byte string claimed as 2^31-1 long.
    (19, 2, struct.pack(">i", 1) + struct.pack(">h", 1) + b"t" + struct.pack(">ih", 1, 1) + struct.pack(">i", 2**31 - 1)),
    # A request that stops in the middle of a field.
    (1, 4, struct.pack(">iii", -1, 500, 1)),
], ids=["produce-array-2^31", "metadata-array-2^31", "metadata-compact-array-2^32", "string-past-end",
        "create-topics-assignments-2^31", "fetch-cut-short"])
def test_malformed_bodies_close_only_that_connection(broker, bystander, key, version, body):
    if version >= 12 and key == 3:
        # flexible header v2: client id (int16 string) then tagged fields; `body` starts with the tags
        hdr = struct.pack(">hhih", key, version, 21, 2) + b"it"
        payload = hdr + body
        frame = struct.pack(">i", len(payload)) + payload
    else:
        frame = request(key, version, 21, body=body)
    assert send_raw(broker, frame, 21) in ("closed", "answered")
    still_serving(broker, bystander)


# ---------------------------------------------------------------- Kafka error codes


def batch(value_bytes, records=1):
    b = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=value_bytes * records + (1 << 16))
    for i in range(records):
        b.append(0, f"k{i}".encode(), b"v" * value_bytes, headers=[])
    b.close()
    return bytes(b.buffer())


def produce_v3(s, correlation_id, topic, partition, records):
    name = topic.encode()
    body = (struct.pack(">h", -1) + struct.pack(">hi", -1, 10000) + struct.pack(">i", 1)
            + struct.pack(">h", len(name)) + name + struct.pack(">i", 1)
            + struct.pack(">i", partition) + struct.pack(">i", len(records)) + records)
    s.sendall(request(0, 3, correlation_id, body=body))
    resp = recv_frame(s)
    (corr, n_topics) = struct.unpack(">ii", resp[:8])
    assert corr == correlation_id and n_topics == 1
    (name_len,) = struct.unpack(">h", resp[8:10])
    off = 10 + name_len
    (n_parts,) = struct.unpack(">i", resp[off:off + 4])
    assert n_parts == 1
    part, err, base = struct.unpack(">ihq", resp[off + 4:off + 18])
    assert part == partition
    return err, base


def test_record_batch_over_message_max_bytes(broker, bystander, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    with connect(broker) as s:
        err, _ = produce_v3(s, 31, topic_name, 0, batch(1_100_000))
        assert err == 10, f"MESSAGE_TOO_LARGE expected, got {err}"
        # the same connection still works, and a batch within the limit is taken
        err, base = produce_v3(s, 32, topic_name, 0, batch(1000))
        assert (err, base) == (0, 0)
    still_serving(broker, bystander)


def test_unknown_partition(broker, bystander, topic_name):
    create_topic(broker.bootstrap, topic_name, 2)
    with connect(broker) as s:
        err, _ = produce_v3(s, 41, topic_name, 7, batch(10))
        assert err == 3, f"UNKNOWN_TOPIC_OR_PARTITION expected, got {err}"
        err, _ = produce_v3(s, 42, topic_name, -1, batch(10))
        assert err == 3, f"UNKNOWN_TOPIC_OR_PARTITION expected, got {err}"
    still_serving(broker, bystander)


def test_corrupt_record_batch_is_refused(broker, bystander, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    good = bytearray(batch(100, records=3))
    bad_crc = bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with connect(broker) as s:
        err, _ = produce_v3(s, 51, topic_name, 0, bad_crc)
        assert err == 2, f"CORRUPT_MESSAGE expected, got {err}"
        err, _ = produce_v3(s, 52, topic_name, 0, bytes(good[:40]))
        assert err in (2, 87), f"CORRUPT_MESSAGE or INVALID_RECORD expected, got {err}"
        err, base = produce_v3(s, 53, topic_name, 0, bytes(good))
        assert (err, base) == (0, 0)
    got = consume_all(broker.bootstrap, topic_name, 1, expected_counts={0: 3})[0]
    assert [m.value() for m in got] == [b"v" * 100] * 3


@pytest.mark.parametrize("name", ["bad name", "a/b", "..", "x" * 250, ""])
def test_invalid_topic_name(broker, bystander, name):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    if name == "":
        pytest.skip("librdkafka refuses an empty name itself")
    fut = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)],
                              operation_timeout=10)[name]
    with pytest.raises(Exception) as e:
        fut.result(timeout=30)
    code = e.value.args[0].code()
    assert code == 17, f"INVALID_TOPIC_EXCEPTION expected, got {e.value}"
    still_serving(broker, bystander)


def test_a_real_client_still_works_afterwards(broker, bystander, topic_name):
    from confluent_kafka import Producer
    create_topic(broker.bootstrap, topic_name, 2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(200):
        p.produce(topic_name, key=str(i).encode(), value=b"after-%d" % i, partition=i % 2)
    assert p.flush(30) == 0
    got = consume_all(broker.bootstrap, topic_name, 2, expected_counts={0: 100, 1: 100})
    assert sum(len(v) for v in got.values()) == 200
    assert broker.alive()
