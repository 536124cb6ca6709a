"""Hand-encoded group requests for raw-protocol tests: FindCoordinator v0, OffsetCommit v7, OffsetFetch v5,
DeleteGroups v1, OffsetDelete v0, JoinGroup v5, SyncGroup v3, Heartbeat v3 (all non-flexible: request header
v1, response header v0) and DescribeGroups v0..v6 (v5+ flexible).

`frame(...)` builds a request frame, `parse_*` decode an answer's body (after the correlation id), so a
test can send many frames at once and read the answers afterwards (pipelining).
"""

import struct
import time

from rawfetch import Reader as CompactReader
from rawfetch import compact_array, compact_str, request_v2
from test_protocol_errors import connect, recv_frame, request

FIND_COORDINATOR = 10
OFFSET_COMMIT = 8
OFFSET_FETCH = 9
DELETE_GROUPS = 42
OFFSET_DELETE = 47
JOIN_GROUP = 11
HEARTBEAT = 12
SYNC_GROUP = 14
DESCRIBE_GROUPS = 15

NONE = 0
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
UNKNOWN_MEMBER_ID = 25
REBALANCE_IN_PROGRESS = 27
GROUP_ID_NOT_FOUND = 69


def s16(v):
    if v is None:
        return struct.pack(">h", -1)
    b = v.encode()
    return struct.pack(">h", len(b)) + b


def arr(items):
    items = list(items)
    return struct.pack(">i", len(items)) + b"".join(items)


class Reader:
    def __init__(self, buf, at=0):
        self.buf, self.at = buf, at

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.buf, self.at)
        self.at += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        v = self.buf[self.at:self.at + n].decode()
        self.at += n
        return v


def offset_commit_v7(corr, group, topic, offsets, generation=-1, member=""):
    """offsets: {partition: offset}"""
    parts = [struct.pack(">iqi", p, o, -1) + s16("") for p, o in offsets.items()]
    body = s16(group) + struct.pack(">i", generation) + s16(member) + s16(None) + arr([s16(topic) + arr(parts)])
    return request(OFFSET_COMMIT, 7, corr, body)


def parse_offset_commit_v7(body):
    """-> {(topic, partition): error_code}"""
    r = Reader(body)
    r.take(">i")  # throttle
    out = {}
    for _ in range(r.take(">i")):
        t = r.string()
        for _ in range(r.take(">i")):
            p, err = r.take(">ih")
            out[(t, p)] = err
    return out


def offset_fetch_v5(corr, group, topic, partitions):
    body = s16(group) + arr([s16(topic) + arr(struct.pack(">i", p) for p in partitions)])
    return request(OFFSET_FETCH, 5, corr, body)


def parse_offset_fetch_v5(body):
    """-> ({(topic, partition): (offset, error_code)}, group error_code)"""
    r = Reader(body)
    r.take(">i")
    out = {}
    for _ in range(r.take(">i")):
        t = r.string()
        for _ in range(r.take(">i")):
            p, off, _epoch = r.take(">iqi")
            r.string()
            err = r.take(">h")
            out[(t, p)] = (off, err)
    return out, r.take(">h")


def delete_groups_v1(corr, groups):
    return request(DELETE_GROUPS, 1, corr, arr(s16(g) for g in groups))


def parse_delete_groups_v1(body):
    r = Reader(body)
    r.take(">i")
    out = {}
    for _ in range(r.take(">i")):
        g = r.string()
        out[g] = r.take(">h")
    return out


def offset_delete_v0(corr, group, topic, partitions):
    body = s16(group) + arr([s16(topic) + arr(struct.pack(">i", p) for p in partitions)])
    return request(OFFSET_DELETE, 0, corr, body)


def parse_offset_delete_v0(body):
    """-> (group error_code, {(topic, partition): error_code})"""
    r = Reader(body)
    err = r.take(">h")
    r.take(">i")
    out = {}
    for _ in range(r.take(">i")):
        t = r.string()
        for _ in range(r.take(">i")):
            p, e = r.take(">ih")
            out[(t, p)] = e
    return err, out


def b32(v):
    """Kafka BYTES: int32 length, then the bytes."""
    return struct.pack(">i", len(v)) + v


def join_group_v5(corr, group, member="", instance=None, session_ms=6000, rebalance_ms=60000,
                  protocols=(("range", b""),), protocol_type="consumer"):
    body = s16(group) + struct.pack(">ii", session_ms, rebalance_ms) + s16(member) + s16(instance)
    body += s16(protocol_type) + arr(s16(n) + b32(m) for n, m in protocols)
    return request(JOIN_GROUP, 5, corr, body)


def parse_join_group_v5(body):
    """-> dict(error, generation, protocol, leader, member_id, members=[(member_id, instance_id, metadata)])"""
    r = Reader(body)
    r.take(">i")  # throttle
    err, gen = r.take(">hi")
    out = dict(error=err, generation=gen, protocol=r.string(), leader=r.string(), member_id=r.string())
    members = []
    for _ in range(r.take(">i")):
        mid, inst = r.string(), r.string()
        n = r.take(">i")
        members.append((mid, inst, r.buf[r.at:r.at + n]))
        r.at += n
    out["members"] = members
    return out


def sync_group_v3(corr, group, generation, member, instance=None, assignments=()):
    """assignments: [(member_id, bytes)] (only the leader sends them)"""
    body = s16(group) + struct.pack(">i", generation) + s16(member) + s16(instance)
    body += arr(s16(m) + b32(a) for m, a in assignments)
    return request(SYNC_GROUP, 3, corr, body)


def parse_sync_group_v3(body):
    """-> (error_code, assignment bytes)"""
    r = Reader(body)
    r.take(">i")
    err = r.take(">h")
    n = r.take(">i")
    return err, r.buf[r.at:r.at + max(n, 0)]


def heartbeat_v3(corr, group, generation, member, instance=None):
    body = s16(group) + struct.pack(">i", generation) + s16(member) + s16(instance)
    return request(HEARTBEAT, 3, corr, body)


def parse_heartbeat_v3(body):
    r = Reader(body)
    r.take(">i")
    return r.take(">h")


def describe_groups(corr, version, groups, include_authorized_operations=False):
    """DescribeGroups v0..v6 (v3+ may ask for the authorized operations, v5+ is flexible)."""
    assert 0 <= version <= 6
    flag = struct.pack(">?", include_authorized_operations) if version >= 3 else b""
    if version >= 5:
        return request_v2(DESCRIBE_GROUPS, version, corr, compact_array(compact_str(g) for g in groups) + flag + b"\x00")
    return request(DESCRIBE_GROUPS, version, corr, arr(s16(g) for g in groups) + flag)


def parse_describe_groups(version, body):
    """-> {group_id: dict(error, state, protocol_type, protocol, members=[member_id], authorized_operations)};
    authorized_operations is None before v3 (no such field)."""
    flexible = version >= 5
    r = CompactReader(body)
    if flexible:
        r.skip_tags()  # response header v1
    string = r.compact_str if flexible else r.std_str

    def count():
        return r.compact_len() if flexible else r.take(">i")

    def skip_bytes():
        n = count()
        r.raw(max(n, 0))

    if version >= 1:
        r.take(">i")  # throttle
    out = {}
    for _ in range(count()):
        g = dict(error=r.take(">h"))
        if version >= 6:
            g["error_message"] = string()
        gid = string()
        g.update(state=string(), protocol_type=string(), protocol=string())
        members = []
        for _ in range(count()):
            members.append(string())
            if version >= 4:
                string()  # group instance id
            string(), string()  # client id, client host
            skip_bytes(), skip_bytes()  # metadata, assignment
            if flexible:
                r.skip_tags()
        g["members"] = members
        g["authorized_operations"] = r.take(">i") if version >= 3 else None
        if flexible:
            r.skip_tags()
        out[gid] = g
    return out


def answer(sock, corr):
    """The next answer on `sock`, which must be the one to `corr`; returns its body."""
    resp = recv_frame(sock)
    (got,) = struct.unpack(">i", resp[:4])
    assert got == corr, f"answer to correlation id {got}, expected {corr}"
    return resp[4:]


def call(sock, corr, frame):
    sock.sendall(frame)
    return answer(sock, corr)


def wait_coordinator(broker, group, topic, timeout=60):
    """FindCoordinator v0 until the group has a coordinator (Kafka creates __consumer_offsets on first use,
    then loads it), then OffsetFetch until the coordinator serves the group (Kafka names the coordinator
    before it has loaded its partition: NOT_COORDINATOR meanwhile)."""
    deadline = time.monotonic() + timeout
    corr = 1
    while True:
        with connect(broker) as s:
            body = call(s, corr, request(FIND_COORDINATOR, 0, corr, s16(group)))
        err = struct.unpack(">h", body[:2])[0]
        if err == NONE:
            fetch_committed(broker, group, topic, [0], timeout)
            return
        assert err in (COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR), err
        if time.monotonic() > deadline:
            raise TimeoutError(f"no coordinator for {group}: error {err}")
        corr += 1
        time.sleep(0.2)


def fetch_committed(broker, group, topic, partitions, timeout=60):
    """OffsetFetch on a new connection, retried while the coordinator loads: {partition: offset}."""
    deadline = time.monotonic() + timeout
    while True:
        with connect(broker) as s:
            got, err = parse_offset_fetch_v5(call(s, 7, offset_fetch_v5(7, group, topic, partitions)))
        if err == NONE:
            return {p: got[(topic, p)][0] for p in partitions}
        assert err in (COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR), err
        if time.monotonic() > deadline:
            raise TimeoutError(f"OffsetFetch of {group}: error {err}")
        time.sleep(0.2)
