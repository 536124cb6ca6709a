"""Resource limits: max.connections, connections.max.idle.ms, queued.max.request.bytes (per core, with
backpressure), a client that stops reading its responses, and the memory cost of 10,000 idle connections."""

import os
import resource
import socket
import struct
import time

import pytest

from conftest import TARGET, Broker, consume_all, create_topic
from test_protocol_errors import api_versions_v0, connect, request

pytestmark = pytest.mark.skipif(TARGET != "ringtide", reason="Ringtide's limits and their Ringtide defaults")


class LimitedBroker(Broker):
    def __init__(self, name, overrides):
        super().__init__(name)
        self.overrides = overrides

    def _command(self):
        cmd = super()._command()
        for kv in self.overrides:
            cmd += ["--override", kv]
        return cmd


@pytest.fixture
def limited(request):
    made = []

    def make(*overrides):
        b = LimitedBroker(request.node.name, list(overrides))
        made.append(b)
        request.node._ringtide_broker = b
        return b.start()

    yield make
    for b in made:
        b.cleanup()


def closed_by_broker(s, timeout=5.0):
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_max_connections(limited):
    b = limited("max.connections=4")
    time.sleep(0.5)  # the fixture's readiness probe connection must be gone from the count first
    conns = [connect(b) for _ in range(4)]
    for i, s in enumerate(conns):
        assert api_versions_v0(s, i)[0] == 0
    extra = connect(b)  # the kernel accepts it; the broker closes it at once
    assert closed_by_broker(extra), "a connection past max.connections was served"
    extra.close()
    conns.pop().close()
    time.sleep(0.2)
    with connect(b) as s:
        assert api_versions_v0(s, 9)[0] == 0, "a slot freed by a close is usable again"
    for s in conns:
        assert api_versions_v0(s, 10)[0] == 0
        s.close()


def test_idle_connections_are_closed(limited):
    b = limited("connections.max.idle.ms=1000")
    idle = connect(b)
    busy = connect(b)
    t0 = time.monotonic()
    for i in range(8):  # 2.4 s of activity, a request every 300 ms
        assert api_versions_v0(busy, i)[0] == 0
        time.sleep(0.3)
    assert closed_by_broker(idle, timeout=3), "an idle connection was kept past connections.max.idle.ms"
    assert time.monotonic() - t0 < 5
    assert api_versions_v0(busy, 99)[0] == 0, "an active connection was closed"
    # half a frame, then silence, is idleness too
    stalled = connect(b)
    stalled.sendall(struct.pack(">i", 100) + b"\x00\x12")
    assert closed_by_broker(stalled, timeout=4)
    for s in (idle, busy, stalled):
        s.close()


def test_queued_max_request_bytes_backpressure(limited):
    # One core, budget 1 MiB: a half-sent 1 MB request holds it; another client's request waits (it is
    # not buffered beyond the budget) and is answered as soon as the budget frees.
    b = limited("ringtide.cores=1", "queued.max.request.bytes=1048576", "connections.max.idle.ms=30000")
    hog = connect(b)
    hog.sendall(struct.pack(">i", 1_048_576) + b"\x00\x00\x00\x03")
    time.sleep(0.3)
    other = connect(b)
    other.sendall(request(18, 0, 5))
    other.settimeout(1.0)
    with pytest.raises(socket.timeout):
        other.recv(4)
    hog.close()  # frees the budget
    other.settimeout(10)
    assert len(other.recv(4)) == 4, "the waiting request was not answered once the budget freed"
    other.close()


def fetch_v4(correlation_id, topic, partition_max_bytes=1 << 20):
    name = topic.encode()
    body = (struct.pack(">iiiib", -1, 0, 1, 50 << 20, 0) + struct.pack(">i", 1) + struct.pack(">h", len(name))
            + name + struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, partition_max_bytes))
    return request(1, 4, correlation_id, body=body)


def test_client_that_stops_reading_does_not_block_others(limited):
    from confluent_kafka import Producer
    b = limited("connections.max.idle.ms=2000")
    topic = "slow-reader"
    create_topic(b.bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(2000):
        p.produce(topic, value=bytes([i % 256]) * 2000)
    assert p.flush(30) == 0
    # Ask for ~1 MiB responses again and again and never read them (a tiny receive window).
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", b.port))
    slow.setblocking(False)
    for i in range(200):
        try:
            slow.sendall(fetch_v4(i, topic))
        except (BlockingIOError, OSError):
            break
    # Everyone else is served promptly meanwhile.
    for i in range(20):
        t = time.monotonic()
        with connect(b) as s:
            assert api_versions_v0(s, i)[0] == 0
        assert time.monotonic() - t < 1.0
    got = consume_all(b.bootstrap, topic, 1, expected_counts={0: 2000})
    assert len(got[0]) == 2000
    # And the broker gives up on the stalled connection after the idle time: its side of the socket
    # leaves ESTABLISHED (FIN queued behind the unread bytes).
    client_port = slow.getsockname()[1]
    assert broker_side_state(b.port, client_port) is not None, "cannot see the broker's end of the socket"
    deadline = time.monotonic() + 10
    while broker_side_state(b.port, client_port) == "01":
        assert time.monotonic() < deadline, "a connection that read nothing for connections.max.idle.ms was kept"
        time.sleep(0.2)
    slow.close()
    assert b.alive()


def broker_side_state(broker_port, client_port):
    """TCP state (hex, as in /proc/net/tcp: 01 = ESTABLISHED) of the broker's end of a connection."""
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        cols = line.split()
        local, remote, state = cols[1], cols[2], cols[3]
        if int(local.split(":")[1], 16) == broker_port and int(remote.split(":")[1], 16) == client_port:
            return state
    return None


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


CONNECTIONS = int(os.environ.get("RINGTIDE_IDLE_CONNECTIONS", "10000"))


def test_rss_with_many_idle_connections(limited, record_property):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = CONNECTIONS + 1000
    if hard < want:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    try:
        b = limited()  # inherits the raised limit
        time.sleep(0.5)
        before = rss_kib(b.proc.pid)
        socks = []
        t0 = time.monotonic()
        for i in range(CONNECTIONS):
            socks.append(socket.create_connection(("127.0.0.1", b.port), timeout=10))
        # every one of them is really served
        for s in socks[:: max(1, CONNECTIONS // 50)]:
            assert api_versions_v0(s, 1)[0] == 0
        time.sleep(1.0)
        after = rss_kib(b.proc.pid)
        per_conn = (after - before) * 1024 / CONNECTIONS
        msg = (f"RSS with {CONNECTIONS} idle connections: {after / 1024:.1f} MiB "
               f"(before {before / 1024:.1f} MiB, {per_conn:.0f} B per connection, "
               f"opened in {time.monotonic() - t0:.1f} s)")
        print(msg)
        record_property("rss_idle_connections", msg)
        with open(b.log_path, "a") as f:
            f.write(f"=== {msg}\n")
        assert per_conn < 64 * 1024, msg
        with connect(b) as s:
            assert api_versions_v0(s, 2)[0] == 0
        for s in socks:
            s.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
