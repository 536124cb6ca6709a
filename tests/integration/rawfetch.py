"""A raw-protocol Fetch client for tests: hand-encoded Fetch requests and a decoder for the answers.

Fetch v11 (the last non-flexible version: topic names, request header v1) and v12+ (flexible: compact
arrays and strings, tagged fields, request header v2 / response header v1; v13+ names topics by id, v15+
drops replica_id from the body). Topic ids come from Metadata v12 (`metadata_v12`); `metadata` speaks
v8..v13.

The decoder reports, for each partition of the answer: index, error_code, high_watermark,
last_stable_offset, log_start_offset, the byte length of `records`, how many whole record batches it
holds, whether it ends with a partial (truncated) batch, and the offsets the whole batches cover.

Socket helpers (`connect`, `request`, `recv_exact`) come from test_protocol_errors.
"""

import struct
import uuid
from dataclasses import dataclass, field

from test_protocol_errors import connect, recv_exact, recv_frame, request

FETCH = 1
METADATA = 3
NO_TOPIC_ID = b"\x00" * 16

# Kafka error codes used by the fetch tests
NONE = 0
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
NOT_LEADER_OR_FOLLOWER = 6
FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71
UNKNOWN_TOPIC_ID = 100
INCONSISTENT_TOPIC_ID = 103
FETCH_SESSION_TOPIC_ID_ERROR = 106


# ---------------------------------------------------------------- encoding primitives


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def compact_str(s):
    if s is None:
        return uvarint(0)
    b = s.encode() if isinstance(s, str) else s
    return uvarint(len(b) + 1) + b


def compact_array(items):
    items = list(items)
    return uvarint(len(items) + 1) + b"".join(items)


def std_str(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


def std_array(items):
    items = list(items)
    return struct.pack(">i", len(items)) + b"".join(items)


def request_v2(api_key, api_version, correlation_id, body=b"", client_id=b"ringtide-it"):
    """A frame with request header v2 (flexible requests): header v1 plus empty header tagged fields."""
    hdr = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id + b"\x00"
    msg = hdr + body
    return struct.pack(">i", len(msg)) + msg


class Reader:
    def __init__(self, buf, off=0):
        self.buf = memoryview(buf)
        self.off = off

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.buf, self.off)
        self.off += struct.calcsize(fmt)
        return v if len(v) > 1 else v[0]

    def uvarint(self):
        shift = n = 0
        while True:
            b = self.buf[self.off]
            self.off += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def raw(self, n):
        v = self.buf[self.off:self.off + n]
        self.off += n
        return v

    def std_str(self):
        n = self.take(">h")
        return None if n < 0 else bytes(self.raw(n)).decode()

    def compact_str(self):
        n = self.uvarint()
        return None if n == 0 else bytes(self.raw(n - 1)).decode()

    def compact_len(self):
        """Length of a compact array/bytes, or -1 for null."""
        return self.uvarint() - 1

    def skip_tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.raw(self.uvarint())


def round_trip(broker, api_key, version, flexible, correlation_id, body):
    """Sends one request (header v2 when `flexible`, else v1) on a new connection and returns a Reader
    past the response header (correlation id checked, tags skipped)."""
    frame = (request_v2 if flexible else request)(api_key, version, correlation_id, body)
    with connect(broker) as s:
        s.sendall(frame)
        r = Reader(recv_frame(s))
    assert r.take(">i") == correlation_id
    if flexible:
        r.skip_tags()
    return r


# ---------------------------------------------------------------- Fetch request


@dataclass
class Part:
    """One partition in a fetch request. `topic` is a name (v11/v12) or 16-byte id / uuid.UUID (v13+)."""
    topic: object
    partition: int
    offset: int = 0
    partition_max_bytes: int = 1 << 20
    log_start_offset: int = -1
    current_leader_epoch: int = -1
    last_fetched_epoch: int = -1


def _topic_key(t):
    if isinstance(t, uuid.UUID):
        return t.bytes
    return t


def group_parts(parts, one_topic_entry_per_part=False):
    """[(topic, [Part, ...]), ...] in request order. Consecutive parts of the same topic share one topic
    entry (so the same partition named N times is one topic entry with N partition entries), unless
    one_topic_entry_per_part."""
    groups = []
    for p in parts:
        if groups and not one_topic_entry_per_part and groups[-1][0] == _topic_key(p.topic):
            groups[-1][1].append(p)
        else:
            groups.append((_topic_key(p.topic), [p]))
    return groups


def fetch_body(version, parts, max_wait_ms=0, min_bytes=1, max_bytes=2**31 - 1, isolation_level=0,
               session_id=0, session_epoch=-1, one_topic_entry_per_part=False, forgotten=()):
    """The body of a Fetch request of `version` (11, or 12..17). `forgotten` is forgotten_topics_data:
    [(topic, [partition, ...]), ...] with topics named as in Part (a name before v13, an id from v13)."""
    groups = group_parts(parts, one_topic_entry_per_part)
    forgotten = [(_topic_key(t), list(ps)) for t, ps in forgotten]
    if version == 11:
        head = struct.pack(">iiiibii", -1, max_wait_ms, min_bytes, max_bytes, isolation_level, session_id,
                           session_epoch)
        topics = std_array(
            std_str(t) + std_array(
                struct.pack(">iiqqi", p.partition, p.current_leader_epoch, p.offset, p.log_start_offset,
                            p.partition_max_bytes) for p in ps)
            for t, ps in groups)
        gone = std_array(std_str(t) + std_array(struct.pack(">i", p) for p in ps) for t, ps in forgotten)
        return head + topics + gone + std_str("")  # forgotten_topics_data, rack_id
    assert 12 <= version <= 18, version
    head = b"" if version >= 15 else struct.pack(">i", -1)  # replica_id (v15+: ReplicaState tagged field)
    head += struct.pack(">iiibii", max_wait_ms, min_bytes, max_bytes, isolation_level, session_id, session_epoch)

    def topic_field(t):
        if version >= 13:
            assert isinstance(t, (bytes, bytearray)) and len(t) == 16, f"v{version} needs a topic id, not {t!r}"
            return bytes(t)
        return compact_str(t)

    topics = compact_array(
        topic_field(t) + compact_array(
            struct.pack(">iiqiqi", p.partition, p.current_leader_epoch, p.offset, p.last_fetched_epoch,
                        p.log_start_offset, p.partition_max_bytes) + b"\x00" for p in ps) + b"\x00"
        for t, ps in groups)
    gone = compact_array(
        topic_field(t) + compact_array(struct.pack(">i", p) for p in ps) + b"\x00" for t, ps in forgotten)
    return head + topics + gone + compact_str("") + b"\x00"  # forgotten, rack_id, tags


def fetch_frame(version, correlation_id, parts, **kw):
    body = fetch_body(version, parts, **kw)
    if version >= 12:
        return request_v2(FETCH, version, correlation_id, body)
    return request(FETCH, version, correlation_id, body)


# ---------------------------------------------------------------- Fetch response


@dataclass
class PartitionResult:
    topic: object  # name (v11/v12) or 16-byte id (v13+)
    index: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    preferred_read_replica: int
    aborted: int  # number of aborted transactions, -1 if null
    records_len: int  # -1 if records is null
    batches: int = 0  # whole record batches
    records: int = 0  # records in the whole batches
    partial: bool = False  # the bytes end with a partial (truncated) batch
    partial_bytes: int = 0
    first_offset: int = -1  # base offset of the first whole batch
    next_offset: int = -1  # last offset of the last whole batch + 1
    batch_sizes: list = field(default_factory=list)


@dataclass
class FetchResponse:
    correlation_id: int
    frame_size: int
    throttle_time_ms: int = 0
    error_code: int = 0
    session_id: int = 0
    partitions: list = field(default_factory=list)  # [PartitionResult] in answer order
    topic_entries: int = 0
    oversize: bool = False  # the frame was larger than the reader's limit: drained, not decoded

    @property
    def total_records_bytes(self):
        return sum(max(p.records_len, 0) for p in self.partitions)

    def summary(self):
        return (f"frame={self.frame_size} err={self.error_code} session={self.session_id} "
                f"topics={self.topic_entries} parts={len(self.partitions)} bytes={self.total_records_bytes}")


def scan_batches(pr, rec):
    """Count the whole v2 record batches in `rec` (a memoryview) and note a trailing partial one."""
    off, n = 0, len(rec)
    while off < n:
        if n - off < 12:
            pr.partial, pr.partial_bytes = True, n - off
            return
        base, length = struct.unpack_from(">qi", rec, off)
        if length < 0 or off + 12 + length > n:
            pr.partial, pr.partial_bytes = True, n - off
            return
        last_delta = struct.unpack_from(">i", rec, off + 23)[0] if length >= 15 else 0
        count = struct.unpack_from(">i", rec, off + 57)[0] if length >= 49 else 0
        if pr.first_offset < 0:
            pr.first_offset = base
        pr.next_offset = base + last_delta + 1
        pr.batches += 1
        pr.records += count
        pr.batch_sizes.append(12 + length)
        off += 12 + length


def decode_fetch(version, frame):
    r = Reader(frame)
    resp = FetchResponse(correlation_id=r.take(">i"), frame_size=len(frame))
    flexible = version >= 12
    if flexible:
        r.skip_tags()  # response header v1
    resp.throttle_time_ms, resp.error_code, resp.session_id = r.take(">ihi")
    n_topics = r.compact_len() if flexible else r.take(">i")
    resp.topic_entries = n_topics
    for _ in range(n_topics):
        if version >= 13:
            topic = bytes(r.raw(16))
        else:
            topic = r.compact_str() if flexible else r.std_str()
        n_parts = r.compact_len() if flexible else r.take(">i")
        for _ in range(n_parts):
            index, err, hw, lso, lstart = r.take(">ihqqq")
            n_aborted = r.compact_len() if flexible else r.take(">i")
            for _ in range(max(n_aborted, 0)):
                r.take(">qq")
                if flexible:
                    r.skip_tags()
            preferred = r.take(">i")
            rec_len = r.compact_len() if flexible else r.take(">i")
            pr = PartitionResult(topic, index, err, hw, lso, lstart, preferred, n_aborted, rec_len)
            if rec_len > 0:
                scan_batches(pr, r.raw(rec_len))
            if flexible:
                r.skip_tags()
            resp.partitions.append(pr)
        if flexible:
            r.skip_tags()
    if flexible:
        r.skip_tags()
    assert r.off == len(frame), f"{len(frame) - r.off} bytes left over after the fetch response"
    return resp


DEFAULT_FRAME_LIMIT = 512 * 1024 * 1024


def recv_fetch(s, version, frame_limit=DEFAULT_FRAME_LIMIT):
    """Read one Fetch response. A frame larger than frame_limit is drained (not kept) and returned as
    FetchResponse(oversize=True) with only frame_size and correlation_id set."""
    (size,) = struct.unpack(">i", recv_exact(s, 4))
    assert size >= 4, size
    if size > frame_limit:
        (corr,) = struct.unpack(">i", recv_exact(s, 4))
        left = size - 4
        while left:
            chunk = s.recv(min(left, 1 << 20))
            if not chunk:
                raise EOFError(f"connection closed with {left} bytes of a {size}-byte answer left")
            left -= len(chunk)
        return FetchResponse(correlation_id=corr, frame_size=size, oversize=True)
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = s.recv_into(view[got:], size - got)
        if not n:
            raise EOFError(f"connection closed after {got} of {size} bytes")
        got += n
    return decode_fetch(version, buf)


def fetch(s, version, parts, correlation_id=1, frame_limit=DEFAULT_FRAME_LIMIT, **kw):
    """Send one Fetch request on socket `s` and decode the answer (see fetch_body for the keywords)."""
    s.sendall(fetch_frame(version, correlation_id, parts, **kw))
    resp = recv_fetch(s, version, frame_limit)
    assert resp.correlation_id == correlation_id, (resp.correlation_id, correlation_id)
    return resp


# ---------------------------------------------------------------- Metadata (v8..v13)


@dataclass
class TopicMeta:
    name: str
    error_code: int
    topic_id: bytes
    partitions: dict  # index -> (error_code, leader)
    authorized_operations: int = -2**31


@dataclass
class MetadataAnswer:
    topics: dict  # name (None for an unknown id) -> TopicMeta
    cluster_authorized_operations: object  # int for v8..v10, None where the field does not exist


def metadata(s, version, topics, correlation_id=3, allow_auto_create=False,
             include_cluster_ops=False, include_topic_ops=False):
    """Metadata v8..v13 for `topics` (names, or from v12 16-byte topic ids; None asks for every topic): a
    MetadataAnswer whose topics are keyed by name, or by id for an answer without a name.

    v8 is the last non-flexible version; v9+ use compact encodings, v10+ carry topic ids, v11 drops the
    cluster's authorized operations, v13 adds a top-level error code (checked to be 0)."""
    assert 8 <= version <= 13, version
    flexible = version >= 9
    tags = b"\x00" if flexible else b""
    string = compact_str if flexible else std_str

    def array(items):
        return (compact_array if flexible else std_array)(items)

    if topics is None:
        body = uvarint(0) if flexible else struct.pack(">i", -1)
    else:
        def entry(t):
            if isinstance(t, bytes):  # a topic id (v12+)
                return t + string(None) + tags
            return (NO_TOPIC_ID if version >= 10 else b"") + string(t) + tags
        body = array(entry(t) for t in topics)
    body += struct.pack(">?", allow_auto_create)
    if version <= 10:
        body += struct.pack(">?", include_cluster_ops)
    body += struct.pack(">?", include_topic_ops) + tags
    s.sendall((request_v2 if flexible else request)(METADATA, version, correlation_id, body))
    (size,) = struct.unpack(">i", recv_exact(s, 4))
    r = Reader(recv_exact(s, size))
    rstr = r.compact_str if flexible else r.std_str

    def rlen():
        return r.compact_len() if flexible else r.take(">i")

    def rtags():
        if flexible:
            r.skip_tags()

    assert r.take(">i") == correlation_id
    rtags()
    r.take(">i")  # throttle
    for _ in range(rlen()):  # brokers
        r.take(">i"); rstr(); r.take(">i"); rstr(); rtags()
    rstr()  # cluster id
    r.take(">i")  # controller id
    out = {}
    for _ in range(rlen()):
        err = r.take(">h")
        name = rstr()
        tid = bytes(r.raw(16)) if version >= 10 else NO_TOPIC_ID
        r.take(">?")
        parts = {}
        for _ in range(rlen()):
            perr, idx, leader, _epoch = r.take(">hiii")
            for _ in range(3):  # replicas, isr, offline
                for _ in range(rlen()):
                    r.take(">i")
            rtags()
            parts[idx] = (perr, leader)
        ops = r.take(">i")
        rtags()
        out[name if name is not None else tid] = TopicMeta(name, err, tid, parts, ops)
    cluster_ops = r.take(">i") if version <= 10 else None
    if version >= 13:
        assert r.take(">h") == 0
    rtags()
    return MetadataAnswer(out, cluster_ops)


def metadata_v12(s, topics, correlation_id=3, allow_auto_create=False):
    """Metadata v12 for `topics` (names): {name: TopicMeta}."""
    return metadata(s, 12, topics, correlation_id, allow_auto_create).topics


def topic_id(s, name):
    md = metadata_v12(s, [name])[name]
    assert md.error_code == 0 and md.topic_id != NO_TOPIC_ID, md
    return md.topic_id
