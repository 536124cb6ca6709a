"""Malformed or unexpected requests on a raw socket: the broker must close
(or answer) the offending connection only, and keep serving everyone else."""

import socket
import struct

import pytest

TIMEOUT = 10


def connect(broker):
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def request(api_key, api_version, correlation_id, body=b"", client_id=b"ringtide-it"):
    # request header v1: api_key int16, api_version int16, correlation_id int32, client_id nullable string
    hdr = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id
    msg = hdr + body
    return struct.pack(">i", len(msg)) + msg


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def recv_frame(s):
    (size,) = struct.unpack(">i", recv_exact(s, 4))
    assert 0 <= size < 64 * 1024 * 1024, size
    return recv_exact(s, size)


def api_versions_v0(s, correlation_id):
    """Send ApiVersions v0 and parse the response: (error_code, {api_key: (min, max)})."""
    s.sendall(request(18, 0, correlation_id))
    resp = recv_frame(s)
    corr, err, n = struct.unpack(">ihi", resp[:10])
    assert corr == correlation_id
    apis, off = {}, 10
    for _ in range(n):
        k, lo, hi = struct.unpack(">hhh", resp[off:off + 6])
        apis[k] = (lo, hi)
        off += 6
    return err, apis


def closed_or_answered(s, correlation_id):
    """Wait for the broker's reaction on `s`: 'closed' or 'answered'."""
    try:
        data = s.recv(4)
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    except socket.timeout:
        pytest.fail(f"broker neither answered nor closed the connection within {TIMEOUT}s")
    if not data:
        return "closed"
    data += recv_exact(s, 4 - len(data))
    (size,) = struct.unpack(">i", data)
    body = recv_exact(s, size)
    (corr,) = struct.unpack(">i", body[:4])
    assert corr == correlation_id, "response to a request that was not sent"
    return "answered"


def assert_serving(broker):
    with connect(broker) as s:
        err, apis = api_versions_v0(s, 4242)
        assert err == 0
        for key in (0, 1, 3, 18):  # Produce, Fetch, Metadata, ApiVersions
            assert key in apis, f"api key {key} missing from {sorted(apis)}"


def test_api_versions_raw(broker):
    assert_serving(broker)


def test_unsupported_api_versions_version(broker):
    """A too-new ApiVersions request gets UNSUPPORTED_VERSION (35) plus the
    supported range, in a v0 response (what clients rely on to downgrade)."""
    with connect(broker) as s:
        # ApiVersions v3+ uses request header v2 (header tagged fields: 0x00)
        # and a flexible body: compact strings client_software_name and
        # client_software_version, then empty tagged fields.
        body = b"\x00" + b"\x06probe" + b"\x041.0" + b"\x00"
        s.sendall(request(18, 127, 7, body=body))
        resp = recv_frame(s)
        corr, err = struct.unpack(">ih", resp[:6])
        assert corr == 7 and err == 35
    assert_serving(broker)


def test_unknown_api_key(broker):
    with connect(broker) as bystander:
        assert api_versions_v0(bystander, 1)[0] == 0
        with connect(broker) as s:
            s.sendall(request(31999, 0, 99, body=b"\x00" * 16))
            closed_or_answered(s, 99)
        # the other connection and new ones still work
        assert api_versions_v0(bystander, 2)[0] == 0
    assert_serving(broker)


@pytest.mark.parametrize("size", [2**31 - 1, -1], ids=["2^31-1", "negative"])
def test_bad_frame_length_closes_only_that_connection(broker, size):
    with connect(broker) as bystander:
        assert api_versions_v0(bystander, 1)[0] == 0
        with connect(broker) as s:
            s.sendall(struct.pack(">i", size) + b"\x00\x12\x00\x00\x00\x00\x00\x01" * 8)
            assert closed_or_answered(s, -1) == "closed"
        assert api_versions_v0(bystander, 2)[0] == 0
    assert_serving(broker)


def test_client_disconnects_mid_frame(broker):
    with connect(broker) as s:
        s.sendall(struct.pack(">i", 1000) + b"\x00\x12\x00\x00")  # half a request, then gone
    assert_serving(broker)
