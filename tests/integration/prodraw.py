"""Raw Produce requests (v0-v8, the non-flexible versions) and a decoder of their answers, for checking
Ringtide's Produce answers byte for byte against Kafka 4.4's."""

import socket
import time
import struct

from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.record.util import calc_crc32c

from test_protocol_errors import TIMEOUT, connect, recv_exact, recv_frame, request

UNKNOWN_TOPIC_OR_PARTITION = 3
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
INVALID_RECORD = 87
UNSUPPORTED_VERSION = 35


def string(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def batch(records=1, value=b"v", magic=2, producer_id=-1, producer_epoch=-1, base_sequence=-1, timestamp=None):
    """One record batch (magic 2) or message set (magic 0/1) of `records` records, timestamped now."""
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    b = MemoryRecordsBuilder(magic=magic, compression_type=0, batch_size=len(value) * records + (1 << 16),
                             producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=base_sequence)
    for i in range(records):
        b.append(None if magic == 0 else ts, f"k{i}".encode(), value, headers=[])
    b.close()
    return bytes(b.buffer())


def with_crc(b):
    """A magic-2 batch with its CRC recomputed after an edit."""
    b = bytearray(b)
    b[17:21] = struct.pack(">I", calc_crc32c(bytes(b[21:])))
    return bytes(b)


def produce_body(version, topics, acks=-1, timeout_ms=10000, transactional_id=None):
    """topics: [(name, [(partition, records_or_None), ...]), ...]"""
    body = b""
    if version >= 3:
        body += string(transactional_id)
    body += struct.pack(">hii", acks, timeout_ms, len(topics))
    for name, parts in topics:
        body += string(name) + struct.pack(">i", len(parts))
        for index, records in parts:
            body += struct.pack(">i", index)
            body += struct.pack(">i", -1) if records is None else struct.pack(">i", len(records)) + records
    return body


class Reader:
    def __init__(self, buf):
        self.buf, self.off = buf, 0

    def take(self, fmt):
        vals = struct.unpack_from(">" + fmt, self.buf, self.off)
        self.off += struct.calcsize(">" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def string(self):
        n = self.take("h")
        if n < 0:
            return None
        s = self.buf[self.off:self.off + n].decode()
        self.off += n
        return s


def decode_produce(version, frame):
    """{(topic, partition): {error, base_offset, log_append_time, log_start_offset, record_errors,
    error_message}} from a response frame (header v0)."""
    r = Reader(frame)
    r.take("i")  # correlation id
    out = {}
    for _ in range(r.take("i")):
        name = r.string()
        for _ in range(r.take("i")):
            index, error, base = r.take("ihq")
            p = {"error": error, "base_offset": base}
            if version >= 2:
                p["log_append_time"] = r.take("q")
            if version >= 5:
                p["log_start_offset"] = r.take("q")
            if version >= 8:
                p["record_errors"] = [(r.take("i"), r.string()) for _ in range(r.take("i"))]
                p["error_message"] = r.string()
            out[(name, index)] = p
    if version >= 1:
        r.take("i")  # throttle time
    assert r.off == len(frame), "trailing bytes in the Produce answer"
    return out


def answer_or_close(s, correlation_id):
    """The next frame on `s`, or "closed" if the broker closed the connection."""
    try:
        head = s.recv(4)
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    except socket.timeout:
        raise AssertionError(f"broker neither answered nor closed within {TIMEOUT}s")
    if not head:
        return "closed"
    head += recv_exact(s, 4 - len(head))
    (size,) = struct.unpack(">i", head)
    frame = recv_exact(s, size)
    assert struct.unpack(">i", frame[:4])[0] == correlation_id
    return frame


def produce(s, version, topics, correlation_id=7, **kw):
    """Sends a Produce request; returns the decoded answer or "closed"."""
    s.sendall(request(0, version, correlation_id, body=produce_body(version, topics, **kw)))
    frame = answer_or_close(s, correlation_id)
    return frame if frame == "closed" else decode_produce(version, frame)


def produce_acks0(s, version, topics, correlation_id=7, **kw):
    """Sends an acks=0 Produce request and then an ApiVersions request: "open" if the ApiVersions request
    is answered (and nothing else is), "closed" if the broker closed the connection instead."""
    s.sendall(request(0, version, correlation_id, body=produce_body(version, topics, acks=0, **kw)))
    return "open" if still_open(s) else "closed"


def one(s, version, topic, partition, records, **kw):
    """Produce to one partition; its answer (a dict) or "closed" (with acks=0: "open" or "closed")."""
    if kw.get("acks") == 0:
        kw.pop("acks")
        return produce_acks0(s, version, [(topic, [(partition, records)])], **kw)
    r = produce(s, version, [(topic, [(partition, records)])], **kw)
    return r if r == "closed" else r[(topic, partition)]


def still_open(s, correlation_id=99):
    """True if `s` still answers an ApiVersions v0 request, False if the broker closed it."""
    try:
        s.sendall(request(18, 0, correlation_id))
        return answer_or_close(s, correlation_id) != "closed"
    except (ConnectionResetError, BrokenPipeError):
        return False


def init_producer_id(s, correlation_id=5):
    """A producer id for an idempotent producer (retried while the broker is not ready to give one)."""
    deadline = time.monotonic() + 30
    while True:
        s.sendall(request(22, 0, correlation_id, body=string(None) + struct.pack(">i", 60000)))
        r = Reader(recv_frame(s))
        r.take("i")
        _throttle, error, pid, epoch = r.take("ihqh")
        if error == 0:
            return pid, epoch
        assert error in (14, 15) and time.monotonic() < deadline, error
        time.sleep(0.2)


