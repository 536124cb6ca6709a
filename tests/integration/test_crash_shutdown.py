"""Clean shutdown versus crash. SIGTERM under load: the broker stops accepting, answers what is in flight,
syncs, closes, writes `.kafka_cleanshutdown` and exits 0 within the declared bound (limits.rs
SHUTDOWN_MS_MAX); the next start finds the marker, removes it before serving, and every acknowledged record
is there. SIGKILL leaves no marker and the next start recovers fully."""

import signal
import threading
import time

import pytest
from confluent_kafka import Producer

from conftest import TARGET, consume_all, create_topic

pytestmark = pytest.mark.skipif(TARGET != "ringtide", reason="Ringtide's marker handling and log lines")

SHUTDOWN_MS_MAX = 30_000  # src/limits.rs
MARKER = ".kafka_cleanshutdown"


def value(i):
    return f"shutdown-{i}-".encode() + b"s" * (i % 300)


class Load(threading.Thread):
    def __init__(self, bootstrap, topic):
        super().__init__(daemon=True)
        self.p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                           "linger.ms": 2, "message.timeout.ms": 10000,
                           "reconnect.backoff.max.ms": 200})
        self.topic, self.acked, self.stop = topic, {}, threading.Event()
        self.i = 0

    def cb(self, err, msg):
        if err is None:
            self.acked[(msg.partition(), msg.offset())] = int(msg.key())

    def run(self):
        while not self.stop.is_set():
            try:
                self.p.produce(self.topic, key=str(self.i).encode(), value=value(self.i), on_delivery=self.cb)
                self.i += 1
            except BufferError:
                self.p.poll(0.01)
            self.p.poll(0)

    def finish(self):
        self.stop.set()
        self.join()
        self.p.flush(15)


def check(bootstrap, topic, acked, partitions):
    got = consume_all(bootstrap, topic, partitions)
    have = {(p, m.offset()): m for p, msgs in got.items() for m in msgs}
    for where, i in acked.items():
        m = have.get(where)
        assert m is not None and int(m.key()) == i and m.value() == value(i), f"acknowledged {where} lost"
    keys = [int(m.key()) for m in have.values()]
    assert len(keys) == len(set(keys)), "duplicates"


def test_sigterm_under_load_is_clean_and_bounded(fresh_broker, topic_name):
    b = fresh_broker
    create_topic(b.bootstrap, topic_name, 4)
    load = Load(b.bootstrap, topic_name)
    load.start()
    time.sleep(1.5)
    assert len(load.acked) > 100
    t0 = time.monotonic()
    b.stop(signal.SIGTERM, timeout=SHUTDOWN_MS_MAX / 1000 + 10)
    took = time.monotonic() - t0
    acked_before = dict(load.acked)
    load.stop.set()
    assert b.last_exit_code == 0, f"clean shutdown exited {b.last_exit_code}"
    assert took < SHUTDOWN_MS_MAX / 1000, f"clean shutdown took {took:.1f}s"
    assert (b.data_dir / MARKER).exists(), "no clean-shutdown marker after SIGTERM"
    log = b.log_path.read_text(errors="replace")
    assert "clean shutdown marker written" in log

    before = len(log)
    b.start()
    # The marker is gone as soon as the broker serves (it is removed before the partitions open).
    assert not (b.data_dir / MARKER).exists(), "marker still there while serving"
    new = b.log_path.read_text(errors="replace")[before:]
    assert "clean shutdown marker found" in new
    load.finish()
    check(b.bootstrap, topic_name, acked_before, 4)
    check(b.bootstrap, topic_name, load.acked, 4)

    # A crash writes no marker, and the next start says it recovers fully.
    b.stop(signal.SIGKILL)
    assert not (b.data_dir / MARKER).exists()
    before = len(b.log_path.read_text(errors="replace"))
    b.start()
    new = b.log_path.read_text(errors="replace")[before:]
    assert "no clean shutdown marker" in new
    check(b.bootstrap, topic_name, load.acked, 4)


def test_sigterm_when_idle_exits_fast(fresh_broker):
    b = fresh_broker
    t0 = time.monotonic()
    b.stop(signal.SIGTERM)
    assert b.last_exit_code == 0
    assert time.monotonic() - t0 < 3, "an idle broker should stop at once"
    assert (b.data_dir / MARKER).exists()
