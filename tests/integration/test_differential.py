"""Differential test (issue 11): one scripted sequence of admin, produce, fetch, list-offsets, config and
group requests goes to the broker under test and to a real Kafka 4.4 started beside it; every answer is
decoded field by field (kafka-python's generated protocol classes) and the two must be equal, except for
the fields that must differ between two clusters (ids, hosts, ports, throttle times).

With RINGTIDE_TEST_TARGET=kafka both brokers are Kafka: the script itself is then checked to be
deterministic.
"""

import importlib
import socket
import struct
import time

import pytest

import prodraw
from conftest import Broker

from kafka.protocol.admin import (
    CreateTopicsRequest, DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, DescribeGroupsRequest, IncrementalAlterConfigsRequest, ListGroupsRequest,
)
from kafka.protocol.consumer import FetchRequest, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest
from kafka.protocol.metadata import FindCoordinatorRequest, MetadataRequest
from kafka.protocol.producer import ProduceRequest

TOPIC = "diff-a"
GROUP = "diff-g"
T0 = 1_700_000_000_000  # record timestamps: fixed, so that answers do not depend on the clock

# Fields whose values must differ between two clusters.
MASKED = {"topic_id", "cluster_id", "host", "port", "throttle_time_ms", "member_id"}


def build(cls, fields, version):
    """A kafka-python request object from nested dicts."""
    kw = {}
    for k, v in fields.items():
        f = cls.fields[k]
        if isinstance(v, list) and v and isinstance(v[0], dict):
            kw[k] = [build(f.data_class, x, version) for x in v]
        elif isinstance(v, dict):
            kw[k] = build(f.data_class, v, version)
        else:
            kw[k] = v
    return cls(version=version, **kw)


class Conn:
    def __init__(self, broker):
        self.sock = socket.create_connection(("127.0.0.1", broker.port), timeout=30)
        self.corr = 0

    def call(self, cls, version, fields):
        self.corr += 1
        req = build(cls, fields, version)
        req.with_header(correlation_id=self.corr, client_id="differential")
        self.sock.sendall(req.encode(header=True, framed=True))
        (n,) = struct.unpack(">i", self._exact(4))
        frame = self._exact(n)
        mod = importlib.import_module(cls.__module__)
        resp_cls = getattr(mod, cls.__name__.replace("Request", "Response"))
        return resp_cls.decode(frame, version=version, header=True).to_dict()

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return buf

    def close(self):
        self.sock.close()


# Keys that name an element of a list. Kafka builds many answers from hash maps, so the order of their
# elements is not defined (it changes from run to run): such lists are compared sorted by these keys.
IDENTITY = ("name", "topic", "group_id", "index", "partition_index", "partition", "resource_name")


def identity(x):
    return tuple(str(x.get(k)) for k in IDENTITY) if isinstance(x, dict) else ()


def normalize(v):
    if isinstance(v, dict):
        return {k: "<differs>" if k in MASKED else normalize(x) for k, x in v.items()}
    if isinstance(v, list):
        items = [normalize(x) for x in v]
        if items and all(isinstance(x, dict) and identity(x) != ("None",) * len(IDENTITY) for x in items):
            items.sort(key=identity)
        return items
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return v


def diff(a, b, path=""):
    """Every (path, a, b) where the two answers differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [(path, a, b)]


@pytest.fixture(scope="module")
def kafka_beside():
    b = Broker("differential-kafka", kind="kafka")
    b.start()
    yield b
    b.stop()


def batch(n, first_ts):
    return prodraw.batch(n, timestamp=first_ts)


def wait_until(conn, cls, version, fields, ok, timeout=60):
    """Repeats a request on one broker until `ok(answer)` (a broker that is still getting ready)."""
    deadline = time.monotonic() + timeout
    while True:
        r = conn.call(cls, version, fields)
        if ok(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def metadata_ready(r):
    return all(t["error_code"] == 0 and t["partitions"] and all(p["leader_id"] >= 0 for p in t["partitions"])
               for t in r["topics"])


def script():
    """(name, request class, version, fields, settle) steps; `settle` is a predicate the answer must meet
    on each broker before it is compared (for what a broker does asynchronously), or None."""
    topic_req = {"topics": [{"name": TOPIC}], "allow_auto_topic_creation": False,
                 "include_topic_authorized_operations": False}
    p0, p1 = batch(3, T0), batch(1, T0 + 5000)
    return [
        ("create topics", CreateTopicsRequest, 7, {"topics": [
            {"name": TOPIC, "num_partitions": 2, "replication_factor": 1, "assignments": [],
             "configs": [{"name": "retention.ms", "value": "3600000"}]},
            {"name": "diff-zero", "num_partitions": 0, "replication_factor": 1, "assignments": [], "configs": []},
            {"name": "diff-badcfg", "num_partitions": 1, "replication_factor": 1, "assignments": [],
             "configs": [{"name": "no.such.key", "value": "1"}]},
        ], "timeout_ms": 30000, "validate_only": False}, None),
        ("metadata", MetadataRequest, 12, topic_req, metadata_ready),
        ("metadata unknown topic", MetadataRequest, 12, {"topics": [{"name": "diff-missing"}],
                                                         "allow_auto_topic_creation": False,
                                                         "include_topic_authorized_operations": False}, None),
        # A partition a Kafka broker has just been told it leads answers NOT_LEADER_OR_FOLLOWER for a moment.
        ("list offsets when ready", ListOffsetsRequest, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": TOPIC, "partitions": [{"partition_index": p, "current_leader_epoch": -1, "timestamp": -2}
                                           for p in (0, 1)]}]},
         lambda r: all(p["error_code"] == 0 for p in r["topics"][0]["partitions"])),
        ("produce", ProduceRequest, 9, {"transactional_id": None, "acks": -1, "timeout_ms": 30000, "topic_data": [
            {"name": TOPIC, "partition_data": [{"index": 0, "records": p0}, {"index": 1, "records": p1},
                                               {"index": 7, "records": p1}]}]}, None),
        ("produce more", ProduceRequest, 9, {"transactional_id": None, "acks": 1, "timeout_ms": 30000,
                                             "topic_data": [{"name": TOPIC, "partition_data": [
                                                 {"index": 0, "records": batch(2, T0 + 3000)}]}]}, None),
        ("fetch", FetchRequest, 12, {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
                                     "isolation_level": 0, "session_id": 0, "session_epoch": -1, "topics": [
                                         {"topic": TOPIC, "partitions": [
                                             {"partition": 0, "current_leader_epoch": -1, "fetch_offset": 0,
                                              "last_fetched_epoch": -1, "log_start_offset": -1,
                                              "partition_max_bytes": 1 << 20},
                                             {"partition": 1, "current_leader_epoch": -1, "fetch_offset": 100,
                                              "last_fetched_epoch": -1, "log_start_offset": -1,
                                              "partition_max_bytes": 1 << 20}]}],
                                     "forgotten_topics_data": [], "rack_id": ""}, None),
        ("list offsets", ListOffsetsRequest, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": TOPIC, "partitions": [
                {"partition_index": 0, "current_leader_epoch": -1, "timestamp": -2},
            ]}]}, None),
        ("list offsets latest", ListOffsetsRequest, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": TOPIC, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]},
         None),
        ("list offsets latest p1", ListOffsetsRequest, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": TOPIC, "partitions": [{"partition_index": 1, "current_leader_epoch": -1, "timestamp": -1}]}]},
         None),
        ("list offsets max timestamp", ListOffsetsRequest, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": TOPIC, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -3}]}]},
         None),
        ("list offsets by time", ListOffsetsRequest, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": TOPIC, "partitions": [{"partition_index": 0, "current_leader_epoch": -1,
                                            "timestamp": T0 + 1500}]}]}, None),
        ("describe configs", DescribeConfigsRequest, 4, {"resources": [
            {"resource_type": 2, "resource_name": TOPIC,
             "configuration_keys": ["retention.ms", "segment.bytes", "cleanup.policy", "min.insync.replicas"]}],
            "include_synonyms": True, "include_documentation": False}, None),
        ("alter configs", IncrementalAlterConfigsRequest, 1, {"resources": [
            {"resource_type": 2, "resource_name": TOPIC,
             "configs": [{"name": "retention.bytes", "config_operation": 0, "value": "1000000"}]}],
            "validate_only": False}, None),
        ("describe altered", DescribeConfigsRequest, 4, {"resources": [
            {"resource_type": 2, "resource_name": TOPIC, "configuration_keys": ["retention.bytes"]}],
            "include_synonyms": True, "include_documentation": False},
         lambda r: r["results"][0]["configs"][0]["value"] == "1000000"),
        ("find coordinator", FindCoordinatorRequest, 4, {"key_type": 0, "coordinator_keys": [GROUP]},
         lambda r: r["coordinators"][0]["error_code"] == 0),
        ("offset commit", OffsetCommitRequest, 8, {"group_id": GROUP, "generation_id_or_member_epoch": -1,
                                                   "member_id": "", "group_instance_id": None, "topics": [
                                                       {"name": TOPIC, "partitions": [
                                                           {"partition_index": 0, "committed_offset": 3,
                                                            "committed_leader_epoch": -1,
                                                            "committed_metadata": "m"}]}]},
         lambda r: r["topics"][0]["partitions"][0]["error_code"] == 0),
        ("offset fetch", OffsetFetchRequest, 8, {"groups": [{"group_id": GROUP, "topics": None}],
                                                 "require_stable": False}, None),
        ("describe groups", DescribeGroupsRequest, 5, {"groups": [GROUP],
                                                       "include_authorized_operations": False}, None),
        ("list groups", ListGroupsRequest, 4, {"states_filter": []}, None),
        ("delete records", DeleteRecordsRequest, 2, {"topics": [{"name": TOPIC, "partitions": [
            {"partition_index": 0, "offset": 1}]}], "timeout_ms": 30000}, None),
        ("list offsets after delete records", ListOffsetsRequest, 7, {"replica_id": -1, "isolation_level": 0,
                                                                      "topics": [{"name": TOPIC, "partitions": [
                                                                          {"partition_index": 0,
                                                                           "current_leader_epoch": -1,
                                                                           "timestamp": -2}]}]}, None),
        ("delete groups", DeleteGroupsRequest, 2, {"groups_names": [GROUP, "diff-nogroup"]}, None),
        ("delete topics", DeleteTopicsRequest, 6, {"topics": [{"name": TOPIC, "topic_id": None},
                                                              {"name": "diff-missing", "topic_id": None}],
                                                   "timeout_ms": 30000}, None),
        ("metadata after delete", MetadataRequest, 12, topic_req,
         lambda r: r["topics"][0]["error_code"] != 0),
    ]


def test_same_answers_as_kafka(broker, kafka_beside):
    ours, theirs = Conn(broker), Conn(kafka_beside)
    problems = []
    try:
        for name, cls, version, fields, settle in script():
            if settle is None:
                a, b = ours.call(cls, version, fields), theirs.call(cls, version, fields)
            else:
                a = wait_until(ours, cls, version, fields, settle)
                b = wait_until(theirs, cls, version, fields, settle)
            for path, x, y in diff(normalize(a), normalize(b)):
                problems.append(f"{name} (v{version}){path}: ringtide={x!r} kafka={y!r}")
    finally:
        ours.close()
        theirs.close()
    assert not problems, f"{len(problems)} fields differ:\n" + "\n".join(problems[:40])
