"""Authorized operations in Metadata (v8+), DescribeCluster and DescribeGroups (v3+), as Apache Kafka 4.4
reports them without an authorizer: every operation the resource type supports when the request asks for
them, INT32_MIN (the schema default) when it does not.

The expected bit fields are Kafka's `AclEntry.supportedOperations` as `Utils.to32BitField` of the
`AclOperation` codes:
  topic   READ WRITE CREATE DELETE ALTER DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS        = 3576
  group   READ DELETE DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS                           = 3400
  cluster CREATE ALTER DESCRIBE CLUSTER_ACTION DESCRIBE_CONFIGS ALTER_CONFIGS IDEMPOTENT_WRITE = 8096
Raw requests, so that every version and flag is exercised; the same file runs against Kafka 4.4
(RINGTIDE_TEST_TARGET=kafka).
"""

import struct
import uuid

import pytest

import groupraw as g
from conftest import create_topic
from rawfetch import Reader, metadata, request_v2, topic_id
from test_protocol_errors import connect, recv_exact

NOT_REQUESTED = -(2**31)
TOPIC_OPS = (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11)
GROUP_OPS = (1 << 3) | (1 << 6) | (1 << 8) | (1 << 10) | (1 << 11)
CLUSTER_OPS = (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12)

DESCRIBE_CLUSTER = 60
INVALID_REQUEST = 42
MISMATCHED_ENDPOINT_TYPE = 114
UNSUPPORTED_ENDPOINT_TYPE = 115


def test_bit_fields():
    assert (TOPIC_OPS, GROUP_OPS, CLUSTER_OPS) == (3576, 3400, 8096)


@pytest.fixture(scope="module")
def topic(broker):
    name = f"authz-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, name, 2)
    return name


# ---------------------------------------------------------------- Metadata


@pytest.mark.parametrize("version", range(8, 14))
@pytest.mark.parametrize("include_cluster", [False, True])
@pytest.mark.parametrize("include_topic", [False, True])
def test_metadata(broker, topic, version, include_cluster, include_topic):
    with connect(broker) as s:
        md = metadata(s, version, [topic, "authz-no-such-topic", "not a valid name!"],
                      include_cluster_ops=include_cluster, include_topic_ops=include_topic)
    assert {n: t.error_code for n, t in md.topics.items()} == {
        topic: 0, "authz-no-such-topic": 3, "not a valid name!": 17}
    # Every topic answered by name carries the operations, errors included.
    want = TOPIC_OPS if include_topic else NOT_REQUESTED
    assert {n: t.authorized_operations for n, t in md.topics.items()} == dict.fromkeys(md.topics, want)
    if version <= 10:
        assert md.cluster_authorized_operations == (CLUSTER_OPS if include_cluster else NOT_REQUESTED)
    else:
        assert md.cluster_authorized_operations is None  # v11 dropped the field (and the request flag)


@pytest.mark.parametrize("version", [8, 10, 13])
def test_metadata_all_topics(broker, topic, version):
    with connect(broker) as s:
        md = metadata(s, version, None, include_cluster_ops=True, include_topic_ops=True)
        plain = metadata(s, version, None)
    assert md.topics[topic].authorized_operations == TOPIC_OPS
    assert all(t.authorized_operations == TOPIC_OPS for t in md.topics.values())
    assert all(t.authorized_operations == NOT_REQUESTED for t in plain.topics.values())
    if version <= 10:
        assert (md.cluster_authorized_operations, plain.cluster_authorized_operations) == (CLUSTER_OPS, NOT_REQUESTED)


@pytest.mark.parametrize("version", [12, 13])
def test_metadata_by_topic_id(broker, topic, version):
    """A topic named by a known id has its operations; an unknown id (answered without a name) has none."""
    unknown = uuid.uuid4().bytes
    with connect(broker) as s:
        tid = topic_id(s, topic)
        md = metadata(s, version, [tid, unknown], include_topic_ops=True)
    assert (md.topics[topic].error_code, md.topics[topic].authorized_operations) == (0, TOPIC_OPS)
    assert (md.topics[unknown].error_code, md.topics[unknown].authorized_operations) == (100, NOT_REQUESTED)


# ---------------------------------------------------------------- DescribeCluster


def describe_cluster(s, version, include_ops, endpoint_type=1, corr=5):
    """DescribeCluster v0..v2 (always flexible): (error_code, error_message, controller_id, broker count,
    cluster authorized operations)."""
    body = struct.pack(">?", include_ops)
    if version >= 1:
        body += struct.pack(">b", endpoint_type)
    if version >= 2:
        body += struct.pack(">?", False)  # include fenced brokers
    s.sendall(request_v2(DESCRIBE_CLUSTER, version, corr, body + b"\x00"))
    (size,) = struct.unpack(">i", recv_exact(s, 4))
    r = Reader(recv_exact(s, size))
    assert r.take(">i") == corr
    r.skip_tags()
    r.take(">i")  # throttle
    err, msg = r.take(">h"), r.compact_str()
    if version >= 1:
        r.take(">b")  # endpoint type
    r.compact_str()  # cluster id
    controller = r.take(">i")
    brokers = r.compact_len()
    for _ in range(brokers):
        r.take(">i"); r.compact_str(); r.take(">i"); r.compact_str()
        if version >= 2:
            r.take(">?")
        r.skip_tags()
    ops = r.take(">i")
    r.skip_tags()
    return err, msg, controller, brokers, ops


@pytest.mark.parametrize("version", range(0, 3))
@pytest.mark.parametrize("include", [False, True])
def test_describe_cluster(broker, version, include):
    with connect(broker) as s:
        err, _, controller, brokers, ops = describe_cluster(s, version, include)
    assert (err, brokers) == (0, 1) and controller >= 0
    assert ops == (CLUSTER_OPS if include else NOT_REQUESTED)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("endpoint_type,code", [(0, UNSUPPORTED_ENDPOINT_TYPE), (2, MISMATCHED_ENDPOINT_TYPE),
                                                (7, UNSUPPORTED_ENDPOINT_TYPE)])
def test_describe_cluster_refused_endpoint_type(broker, version, endpoint_type, code):
    """A refused endpoint type answers the error alone: no brokers, no controller, no operations."""
    with connect(broker) as s:
        err, msg, controller, brokers, ops = describe_cluster(s, version, True, endpoint_type)
    assert (err, controller, brokers, ops) == (code, -1, 0, NOT_REQUESTED)
    assert msg


# ---------------------------------------------------------------- DescribeGroups


@pytest.fixture(scope="module")
def groups(broker, topic):
    """(an Empty group with a committed offset, a Stable group with one static member)."""
    empty, stable = f"authz-empty-{uuid.uuid4().hex[:6]}", f"authz-stable-{uuid.uuid4().hex[:6]}"
    g.wait_coordinator(broker, empty, topic)
    g.wait_coordinator(broker, stable, topic)
    with connect(broker) as s:
        assert g.parse_offset_commit_v7(g.call(s, 2, g.offset_commit_v7(2, empty, topic, {0: 5}))) == {(topic, 0): 0}
    member = connect(broker)  # kept open for the module: the member stays in the group
    j = g.parse_join_group_v5(g.call(member, 3, g.join_group_v5(3, stable, instance="i-1", session_ms=60000)))
    assert j["error"] == 0, j
    err, _ = g.parse_sync_group_v3(g.call(member, 4, g.sync_group_v3(
        4, stable, j["generation"], j["member_id"], "i-1", [(j["member_id"], b"")])))
    assert err == 0
    yield empty, stable
    member.close()


@pytest.mark.parametrize("version", range(0, 7))
@pytest.mark.parametrize("include", [False, True])
def test_describe_groups(broker, groups, version, include):
    empty, stable = groups
    unknown = f"authz-unknown-{uuid.uuid4().hex[:6]}"
    with connect(broker) as s:
        got = g.parse_describe_groups(version, g.call(s, 9, g.describe_groups(9, version, [empty, stable, unknown], include)))
    assert (got[empty]["error"], got[empty]["state"]) == (0, "Empty")
    assert (got[stable]["error"], got[stable]["state"], len(got[stable]["members"])) == (0, "Stable", 1)
    # Before v6 an unknown group is described as Dead without error, and Kafka reports its operations
    # too; from v6 it is GROUP_ID_NOT_FOUND, and groups answered with an error carry none.
    assert got[unknown]["state"] == "Dead"
    assert got[unknown]["error"] == (g.GROUP_ID_NOT_FOUND if version >= 6 else 0)
    ops = {gid: d["authorized_operations"] for gid, d in got.items()}
    if version < 3:
        assert ops == dict.fromkeys(got, None)  # no such field
        return
    want = GROUP_OPS if include else NOT_REQUESTED
    assert ops == {empty: want, stable: want, unknown: want if version < 6 else NOT_REQUESTED}
