"""The top versions Kafka 4.4 added to six APIs (issue 11, item 8), on raw requests, answer field by field.

ApiVersions 0-5, ListOffsets 1-11, OffsetCommit 2-10, OffsetFetch 1-10, DescribeLogDirs 1-5 and
DeleteGroups 0-3 are advertised, and each new top version is answered as Kafka 4.4 answers it:

- ApiVersions v5 (KIP-1242): ClusterId and NodeId go together (else INVALID_REQUEST); naming another
  cluster or node is answered REBOOTSTRAP_REQUIRED with no API keys, and the connection stays open.
- ListOffsets v11: EARLIEST_PENDING_UPLOAD (-6) finds nothing without tiered storage.
- OffsetCommit v10 and OffsetFetch v10 name topics by id: an unknown id is UNKNOWN_TOPIC_ID. OffsetCommit
  answers the partitions it refuses first (one entry per topic, as Kafka's response builder merges them).
- DescribeLogDirs v5: IsCordoned false.
- DeleteGroups v3: ErrorMessage null (Kafka 4.4 sets it for none of these errors); each group once, in
  Kafka's order (its hash maps', fixed by the group ids and the 50 `__consumer_offsets` partitions).

Every expectation was first read from a real Kafka 4.4 (RINGTIDE_TEST_TARGET=kafka runs them there).
Encoders come from rawfetch (flexible primitives), groupraw (classic group requests) and
test_list_offsets_time (ListOffsets of any version).
"""

import os
import struct
import time
import uuid

import pytest

from conftest import create_topic
from groupraw import call, fetch_committed, offset_commit_v7, parse_offset_commit_v7, wait_coordinator
from rawfetch import Reader, compact_array, compact_str, request_v2, topic_id
from test_list_offsets_time import list_offsets_raw
from test_protocol_errors import api_versions_v0, connect, recv_frame, request

pytestmark = pytest.mark.needs_groups

LIST_OFFSETS, OFFSET_COMMIT, OFFSET_FETCH, API_VERSIONS, DESCRIBE_LOG_DIRS, DELETE_GROUPS = 2, 8, 9, 18, 35, 42

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
UNSUPPORTED_VERSION = 35
INVALID_REQUEST = 42
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
UNKNOWN_TOPIC_ID = 100
REBOOTSTRAP_REQUIRED = 129

NIL = b"\x00" * 16
UNKNOWN_ID = bytes.fromhex("00112233445566778899aabbccddeeff")


def flexible_answer(s, corr, header_v0=False):
    """A Reader on the body of the next answer on `s` (response header v1, or v0 for ApiVersions)."""
    r = Reader(recv_frame(s))
    assert r.take(">i") == corr
    if not header_v0:
        r.skip_tags()
    return r


def done(r):
    r.skip_tags()
    assert r.off == len(r.buf), "trailing bytes in the answer"


def cluster_and_node(broker):
    from confluent_kafka.admin import AdminClient
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=30)
    assert len(md.brokers) == 1
    return md.cluster_id, next(iter(md.brokers))


@pytest.fixture(scope="module")
def topic(broker):
    """A two-partition topic and its id."""
    name = f"ranges-{uuid.uuid4().hex[:6]}"
    create_topic(broker.bootstrap, name, 2)
    # Kafka's metadata names the leader before the logs exist (NOT_LEADER_OR_FOLLOWER meanwhile).
    deadline = time.monotonic() + 30
    while any(list_offsets_raw(broker, 1, name, -1, partition=p)[0] == 6 for p in (0, 1)):
        assert time.monotonic() < deadline, "the topic's logs never appeared"
        time.sleep(0.1)
    with connect(broker) as s:
        return name, topic_id(s, name)


# ---------------------------------------------------------------- ApiVersions


def api_versions_v5(broker, cluster_id, node_id, name="probe", version="1.0", api_version=5):
    """-> (error, {key: (min, max)}, throttle, raw body); checks the connection still answers after."""
    body = compact_str(name) + compact_str(version)
    if api_version >= 5:
        body += compact_str(cluster_id) + struct.pack(">i", node_id)
    with connect(broker) as s:
        s.sendall(request_v2(API_VERSIONS, api_version, 9, body + b"\x00"))
        raw = recv_frame(s)
        r = Reader(raw)
        assert r.take(">i") == 9
        err = r.take(">h")
        keys = {}
        for _ in range(r.compact_len()):
            k, lo, hi = r.take(">hhh")
            r.skip_tags()
            keys[k] = (lo, hi)
        throttle = r.take(">i")
        done(r)
        assert api_versions_v0(s, 10)[0] == NONE, "connection closed after the answer"
    return err, keys, throttle, bytes(raw[4:])


def test_advertised_ranges(broker):
    with connect(broker) as s:
        err, apis = api_versions_v0(s, 1)
    assert err == NONE
    want = {LIST_OFFSETS: (1, 11), OFFSET_COMMIT: (2, 10), OFFSET_FETCH: (1, 10), API_VERSIONS: (0, 5),
            DESCRIBE_LOG_DIRS: (1, 5), DELETE_GROUPS: (0, 3)}
    assert {k: apis[k] for k in want} == want


def test_api_versions_v5_cluster_and_node(broker):
    cluster, node = cluster_and_node(broker)
    err, keys, throttle, _ = api_versions_v5(broker, None, -1)
    assert (err, throttle, keys[API_VERSIONS]) == (NONE, 0, (0, 5))
    assert api_versions_v5(broker, cluster, node)[:3] == (NONE, keys, 0)
    # Error answers: the code, no API keys, throttle 0, no tagged fields.
    error_body = lambda code: struct.pack(">hbib", code, 1, 0, 0)
    for wrong in [(cluster, node + 1), ("another-cluster", node), ("", node)]:
        assert api_versions_v5(broker, *wrong)[3] == error_body(REBOOTSTRAP_REQUIRED), wrong
    # One of the two without the other is invalid, whether it matches or not.
    for half in [(cluster, -1), (None, node), ("another-cluster", -1), ("", -1)]:
        assert api_versions_v5(broker, *half)[3] == error_body(INVALID_REQUEST), half
    # v3+: client software name and version must match [a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?
    assert api_versions_v5(broker, None, -1, name="a.b-c", version="1.0-rc1")[0] == NONE
    for name, version in [("-x", "1"), ("x-", "1"), ("", "1"), ("a_b", "1"), ("x", "1 0")]:
        assert api_versions_v5(broker, None, -1, name, version)[3] == error_body(INVALID_REQUEST)
        assert api_versions_v5(broker, None, -1, name, version, api_version=3)[3] == error_body(INVALID_REQUEST)


def test_api_versions_above_5_lists_only_api_versions(broker):
    """KIP-511: an unsupported ApiVersions version gets a v0 answer with UNSUPPORTED_VERSION and only
    ApiVersions' own range."""
    body = compact_str("probe") + compact_str("1.0") + compact_str(None) + struct.pack(">i", -1) + b"\x00"
    with connect(broker) as s:
        s.sendall(request_v2(API_VERSIONS, 6, 11, body))
        assert recv_frame(s) == struct.pack(">ihihhh", 11, UNSUPPORTED_VERSION, 1, API_VERSIONS, 0, 5)


# ---------------------------------------------------------------- ListOffsets


def test_list_offsets_v11_earliest_pending_upload(broker, topic):
    name, _ = topic
    assert list_offsets_raw(broker, 11, name, -6) == (NONE, -1, -1, -1)
    assert list_offsets_raw(broker, 10, name, -6) == (UNSUPPORTED_VERSION, -1, -1, -1)
    assert list_offsets_raw(broker, 11, name, -1)[:3] == (NONE, -1, 0)


# ---------------------------------------------------------------- DescribeLogDirs


def describe_log_dirs(broker, topics, version):
    body = compact_array(compact_str(t) + compact_array(struct.pack(">i", p) for p in ps) + b"\x00"
                         for t, ps in topics)
    with connect(broker) as s:
        s.sendall(request_v2(DESCRIBE_LOG_DIRS, version, 5, body + b"\x00"))
        r = flexible_answer(s, 5)
    throttle, err = r.take(">ih")
    results = []
    for _ in range(r.compact_len()):
        res = {"error": r.take(">h"), "dir": r.compact_str(), "topics": {}}
        for _ in range(r.compact_len()):
            t = r.compact_str()
            parts = set()
            for _ in range(r.compact_len()):
                parts.add(r.take(">iqq?"))
                r.skip_tags()
            r.skip_tags()
            res["topics"][t] = parts
        res["total"], res["usable"] = r.take(">qq")
        if version >= 5:
            res["cordoned"] = r.take(">?")
        r.skip_tags()
        results.append(res)
    done(r)
    return throttle, err, results


def test_describe_log_dirs_v5(broker, topic):
    name, _ = topic
    for version in (4, 5):
        throttle, err, results = describe_log_dirs(broker, [(name, [0, 1, 5]), (f"{name}-none", [0])], version)
        assert (throttle, err, len(results)) == (0, NONE, 1)
        res = results[0]
        assert os.path.realpath(res.pop("dir")) == os.path.realpath(broker.data_dir)
        total, usable = res.pop("total"), res.pop("usable")
        assert 0 < usable <= total
        # Empty partitions: size 0, lag 0, not a future replica; the missing partition and topic left out.
        want = {"error": NONE, "topics": {name: {(0, 0, 0, False), (1, 0, 0, False)}}}
        if version >= 5:
            want["cordoned"] = False
        assert res == want


# ---------------------------------------------------------------- OffsetCommit v10


def offset_commit_v10(corr, group, topics, generation=-1, member=""):
    """topics: [(topic id, [(partition, offset, metadata or None)])]; leader epoch 7 everywhere."""
    def topic_entry(tid, parts):
        rows = [struct.pack(">iqi", p, o, 7) + compact_str(md) + b"\x00" for p, o, md in parts]
        return tid + compact_array(rows) + b"\x00"
    body = (compact_str(group) + struct.pack(">i", generation) + compact_str(member) + compact_str(None)
            + compact_array(topic_entry(t, ps) for t, ps in topics) + b"\x00")
    return request_v2(OFFSET_COMMIT, 10, corr, body)


def parse_offset_commit_v10(r):
    """-> [(topic id, [(partition, error)])] in answer order (throttle must be 0)."""
    assert r.take(">i") == 0
    out = []
    for _ in range(r.compact_len()):
        tid = bytes(r.raw(16))
        parts = []
        for _ in range(r.compact_len()):
            parts.append(r.take(">ih"))
            r.skip_tags()
        r.skip_tags()
        out.append((tid, parts))
    done(r)
    return out


def commit_v10(broker, group, topics, **kw):
    with connect(broker) as s:
        s.sendall(offset_commit_v10(3, group, topics, **kw))
        return parse_offset_commit_v10(flexible_answer(s, 3))


def test_offset_commit_v10(broker, topic):
    name, tid = topic
    group = f"ranges-commit-{uuid.uuid4().hex[:6]}"
    wait_coordinator(broker, group, name)
    # Refused partitions come first: a missing partition, then unknown ids (the zero id too).
    got = commit_v10(broker, group, [(tid, [(0, 5, "a"), (1, 6, None), (7, 1, "x")]), (UNKNOWN_ID, [(0, 3, "")]),
                                     (NIL, [(0, 1, "")])])
    assert got == [(tid, [(7, UNKNOWN_TOPIC_OR_PARTITION), (0, NONE), (1, NONE)]),
                   (UNKNOWN_ID, [(0, UNKNOWN_TOPIC_ID)]), (NIL, [(0, UNKNOWN_TOPIC_ID)])]
    assert fetch_committed(broker, group, name, [0, 1]) == {0: 5, 1: 6}
    # Every entry of a topic joins the first refused one; the coordinator's answers are appended to it.
    got = commit_v10(broker, group, [(tid, [(0, 8, ""), (9, 1, ""), (1, 9, ""), (8, 1, "")]), (UNKNOWN_ID, [(0, 3, "")]),
                                     (tid, [(9, 1, "")]), (NIL, [(0, 1, "")]), (tid, [(1, 11, "")])])
    missing = UNKNOWN_TOPIC_OR_PARTITION
    assert got == [(tid, [(9, missing), (8, missing), (9, missing), (0, NONE), (1, NONE), (1, NONE)]),
                   (UNKNOWN_ID, [(0, UNKNOWN_TOPIC_ID)]), (NIL, [(0, UNKNOWN_TOPIC_ID)])]
    assert fetch_committed(broker, group, name, [0, 1]) == {0: 8, 1: 11}
    # Nothing refused: the coordinator's answer as it is, one entry per request topic.
    got = commit_v10(broker, group, [(tid, [(0, 12, "")]), (tid, [(1, 13, "")])])
    assert got == [(tid, [(0, NONE)]), (tid, [(1, NONE)])]
    assert commit_v10(broker, group, []) == []
    # A generation for a group that does not exist: GROUP_ID_NOT_FOUND, after the refused partitions;
    # with nothing left for the coordinator it is not asked.
    nobody = f"{group}-none"
    got = commit_v10(broker, nobody, [(tid, [(0, 5, "")]), (UNKNOWN_ID, [(0, 1, "")])], generation=3, member="m")
    assert got == [(UNKNOWN_ID, [(0, UNKNOWN_TOPIC_ID)]), (tid, [(0, GROUP_ID_NOT_FOUND)])]
    got = commit_v10(broker, nobody, [(UNKNOWN_ID, [(0, 1, "")])], generation=3, member="m")
    assert got == [(UNKNOWN_ID, [(0, UNKNOWN_TOPIC_ID)])]


def test_offset_commit_empty_group_id(broker, topic):
    """Kafka refuses only a null group id: "" is a group like any other, in every version."""
    name, tid = topic
    wait_coordinator(broker, "", name)
    assert commit_v10(broker, "", [(tid, [(0, 21, "e")])]) == [(tid, [(0, NONE)])]
    with connect(broker) as s:
        assert parse_offset_commit_v7(call(s, 4, offset_commit_v7(4, "", name, {1: 22}))) == {(name, 1): NONE}
    assert fetch_committed(broker, "", name, [0, 1]) == {0: 21, 1: 22}


# ---------------------------------------------------------------- OffsetFetch v10


def offset_fetch_v10(corr, groups, require_stable=False):
    """groups: [(group, [(topic id, [partitions])] or None for every topic)]."""
    def group_entry(g, topics):
        ts = b"\x00" if topics is None else compact_array(
            t + compact_array(struct.pack(">i", p) for p in ps) + b"\x00" for t, ps in topics)
        return compact_str(g) + compact_str(None) + struct.pack(">i", -1) + ts + b"\x00"
    body = compact_array(group_entry(g, ts) for g, ts in groups) + struct.pack(">?", require_stable) + b"\x00"
    return request_v2(OFFSET_FETCH, 10, corr, body)


def fetch_v10(broker, groups):
    """-> [(group, [(topic id, [(partition, offset, leader epoch, metadata, error)])], group error)]."""
    with connect(broker) as s:
        s.sendall(offset_fetch_v10(5, groups))
        r = flexible_answer(s, 5)
    assert r.take(">i") == 0
    out = []
    for _ in range(r.compact_len()):
        g = r.compact_str()
        topics = []
        for _ in range(r.compact_len()):
            tid = bytes(r.raw(16))
            parts = []
            for _ in range(r.compact_len()):
                p, offset, epoch = r.take(">iqi")
                parts.append((p, offset, epoch, r.compact_str(), r.take(">h")))
                r.skip_tags()
            r.skip_tags()
            topics.append((tid, parts))
        out.append((g, topics, r.take(">h")))
        r.skip_tags()
    done(r)
    return out


def test_offset_fetch_v10(broker, topic):
    name, tid = topic
    group = f"ranges-fetch-{uuid.uuid4().hex[:6]}"
    wait_coordinator(broker, group, name)
    assert commit_v10(broker, group, [(tid, [(0, 5, "a"), (1, 6, None)])]) == [(tid, [(0, NONE), (1, NONE)])]
    unknown = [(0, -1, -1, "", UNKNOWN_TOPIC_ID)]
    # Known topics first, one entry per request topic (a partition the topic lacks has no offset), then
    # the unknown ids; a null metadata was stored as "".
    got = fetch_v10(broker, [(group, [(UNKNOWN_ID, [0]), (tid, [1, 0]), (NIL, [0]), (tid, [7])])])
    assert got == [(group, [(tid, [(1, 6, 7, "", NONE), (0, 5, 7, "a", NONE)]), (tid, [(7, -1, -1, "", NONE)]),
                            (UNKNOWN_ID, unknown), (NIL, unknown)], NONE)]
    nobody = f"{group}-none"
    got = fetch_v10(broker, [(group, None), (nobody, [(tid, [0])]), (nobody, None), (group, [])])
    assert got == [(group, [(tid, [(0, 5, 7, "a", NONE), (1, 6, 7, "", NONE)])], NONE),
                   (nobody, [(tid, [(0, -1, -1, "", NONE)])], NONE),
                   (nobody, [], NONE),
                   (group, [], NONE)]


# ---------------------------------------------------------------- DeleteGroups v3


def delete_groups(broker, groups, version=3):
    """-> [(group, error, error message)] in answer order ("-" for the message below v3)."""
    with connect(broker) as s:
        s.sendall(request_v2(DELETE_GROUPS, version, 6, compact_array(compact_str(g) for g in groups) + b"\x00"))
        r = flexible_answer(s, 6)
    assert r.take(">i") == 0
    out = []
    for _ in range(r.compact_len()):
        g, err = r.compact_str(), r.take(">h")
        out.append((g, err, r.compact_str() if version >= 3 else "-"))
        r.skip_tags()
    done(r)
    return out


# Six group ids of `__consumer_offsets` partition 7 and three of partition 23 (whose Java TopicPartition
# hashes share a bucket of a 16-bucket HashMap). Fixed names: the order depends on them. The module's
# broker is new, so none of them exists before this test.
P7 = ["dg-85", "dg-106", "dg-151", "dg-188", "dg-232", "dg-269"]
P23 = ["dh-44", "dh-127", "dh-172"]


def test_delete_groups_v3(broker, topic):
    from confluent_kafka import Consumer
    name, _ = topic
    with connect(broker) as s:
        for g in P7[:3] + P23[:1]:
            wait_coordinator(broker, g, name)
            assert parse_offset_commit_v7(call(s, 3, offset_commit_v7(3, g, name, {0: 1}))) == {(name, 0): NONE}
    request = ["dg-269", "dg-85", "dh-172", "dg-232", "dg-106", "dh-44", "dg-85", "dg-188", "dg-151"]
    # Each group once; partition 23 before 7; within a partition the order of Java's HashSet<String>.
    assert delete_groups(broker, request) == [
        ("dh-172", GROUP_ID_NOT_FOUND, None), ("dh-44", NONE, None), ("dg-232", GROUP_ID_NOT_FOUND, None),
        ("dg-188", GROUP_ID_NOT_FOUND, None), ("dg-151", NONE, None), ("dg-85", NONE, None),
        ("dg-106", NONE, None), ("dg-269", GROUP_ID_NOT_FOUND, None)]
    assert delete_groups(broker, request, version=2) == [
        (g, GROUP_ID_NOT_FOUND, "-") for g in ["dh-172", "dh-44", "dg-232", "dg-188", "dg-151", "dg-85", "dg-106",
                                             "dg-269"]]
    # A group with a member is not empty: NON_EMPTY_GROUP, still without a message.
    busy = f"ranges-busy-{uuid.uuid4().hex[:6]}"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": busy, "session.timeout.ms": 30000})
    try:
        c.subscribe([name])
        deadline = time.monotonic() + 60
        while not c.assignment():
            assert time.monotonic() < deadline, "the consumer never got its partitions"
            c.poll(0.2)
        assert delete_groups(broker, [busy]) == [(busy, NON_EMPTY_GROUP, None)]
    finally:
        c.close()
    assert delete_groups(broker, [busy]) == [(busy, NONE, None)]
