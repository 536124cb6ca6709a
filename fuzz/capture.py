#!/usr/bin/env python3
"""Records a fuzzing seed corpus from real clients.

    python3 fuzz/capture.py          # needs target/release/ringtide, kafka-python, confluent-kafka; Java
                                     # tools too if tests/run has downloaded the Kafka jars

Starts a broker whose advertised listener is a tiny recording TCP proxy, runs kafka-python, librdkafka
(confluent-kafka) and the Java client (Kafka's console producer/consumer and kafka-topics) through it, and
saves every client->broker frame (4-byte length included) as fuzz/corpus/requests/<client>-<api>-v<ver>-<hash>.
Then splits the broker's segment files into single record batches as fuzz/corpus/records/<client>-<hash>
(batches exactly as each client built them, with the offsets the broker assigned). Duplicates (same bytes)
are kept once; at most PER_KIND files per (client, api, version)."""

import hashlib
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from crash_harness import Broker, free_port  # noqa: E402

OUT = REPO / "fuzz" / "corpus"
PER_KIND = 6


class Recorder:
    def __init__(self, listen_port, broker_port):
        self.listen_port, self.broker_port = listen_port, broker_port
        self.client = "unknown"
        self.frames = []  # (client, bytes)
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", listen_port))
        self.sock.listen(128)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            c, _ = self.sock.accept()
            b = socket.create_connection(("127.0.0.1", self.broker_port))
            threading.Thread(target=self._up, args=(c, b, self.client), daemon=True).start()
            threading.Thread(target=self._down, args=(b, c), daemon=True).start()

    def _up(self, c, b, client):
        buf = b""
        try:
            while True:
                d = c.recv(1 << 16)
                if not d:
                    break
                b.sendall(d)
                buf += d
                while len(buf) >= 4:
                    (n,) = struct.unpack(">i", buf[:4])
                    if n < 0 or len(buf) < 4 + n:
                        break
                    with self.lock:
                        self.frames.append((client, buf[:4 + n]))
                    buf = buf[4 + n:]
        except OSError:
            pass
        finally:
            for s in (b, c):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _down(self, b, c):
        try:
            while True:
                d = b.recv(1 << 16)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        finally:
            for s in (b, c):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def run_kafka_python(bootstrap):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("kp-topic", 2, 1)])
    admin.close()
    for comp in (None, "gzip"):
        p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=comp, linger_ms=5)
        for i in range(300):
            p.send("kp-topic", key=b"k%d" % i, value=b"kafka-python-%d" % i, headers=[("h", b"v")])
        p.flush()
        p.close()
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                      consumer_timeout_ms=2000)
    c.assign([TopicPartition("kp-topic", 0), TopicPartition("kp-topic", 1)])
    sum(1 for _ in c)
    c.close()


def run_librdkafka(bootstrap):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic("rd-topic", 2, 1, config={"segment.bytes": "1048576"})])["rd-topic"].result(10)
    a.describe_configs([ConfigResource("topic", "rd-topic")])
    time.sleep(0.3)
    a.create_partitions([NewPartitions("rd-topic", 3)])["rd-topic"].result(10)
    for comp in ("none", "lz4", "zstd", "snappy"):
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                      "compression.type": comp, "linger.ms": 5})
        for i in range(300):
            p.produce("rd-topic", key=b"k%d" % i, value=b"librdkafka-%s-%d" % (comp.encode(), i),
                      headers={"hdr": b"x"}, timestamp=1700000000000 + i)
        p.flush(10)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition("rd-topic", p, 0) for p in range(3)])
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        c.poll(0.2)
    c.close()
    a.delete_topics(["rd-topic-unused"])


def run_java(bootstrap):
    kafka_run = REPO / "tests" / "kafka" / "kafka-run"
    cache = Path(os.environ.get("RINGTIDE_CACHE", Path.home() / ".cache" / "ringtide"))
    if not any((p / "libs" / ".complete").exists() for p in cache.glob("kafka-4.*")):
        print("no Kafka jars: skipping the Java client")
        return
    run = lambda *a, **kw: subprocess.run([str(kafka_run), *a], capture_output=True, text=True, timeout=120, **kw)
    run("topics", "--bootstrap-server", bootstrap, "--create", "--topic", "java-topic", "--partitions", "2")
    run("topics", "--bootstrap-server", bootstrap, "--describe", "--topic", "java-topic")
    lines = "".join(f"java-value-{i}\n" for i in range(300))
    run("console-producer", "--bootstrap-server", bootstrap, "--topic", "java-topic", input=lines)
    run("console-consumer", "--bootstrap-server", bootstrap, "--topic", "java-topic", "--from-beginning",
        "--max-messages", "300", "--timeout-ms", "5000")


def api_of(frame):
    key, ver = struct.unpack(">hh", frame[4:8])
    return key, ver


def main():
    tmp = Path(tempfile.mkdtemp(prefix="ringtide-capture-"))
    bport, pport = free_port(), free_port()
    rec = Recorder(pport, bport)
    broker = Broker(tmp / "data", bport, tmp / "broker.log",
                    extra=["--override", f"advertised.listeners=PLAINTEXT://127.0.0.1:{pport}"])
    broker.start()
    bootstrap = f"127.0.0.1:{pport}"
    try:
        for name, fn in (("kafka-python", run_kafka_python), ("librdkafka", run_librdkafka), ("java", run_java)):
            rec.client = name
            try:
                fn(bootstrap)
            except Exception as e:  # a client's failure should not lose the others' frames
                print(f"{name}: {e!r}")
            time.sleep(0.5)
    finally:
        broker.kill()

    req_dir, rec_dir = OUT / "requests", OUT / "records"
    req_dir.mkdir(parents=True, exist_ok=True)
    rec_dir.mkdir(parents=True, exist_ok=True)
    kinds, saved = {}, 0
    for client, frame in rec.frames:
        key, ver = api_of(frame)
        k = (client, key, ver)
        if kinds.get(k, 0) >= PER_KIND:
            continue
        h = hashlib.sha256(frame).hexdigest()[:12]
        path = req_dir / f"{client}-api{key}-v{ver}-{h}"
        if not path.exists():
            path.write_bytes(frame)
            saved += 1
        kinds[k] = kinds.get(k, 0) + 1
    batches = 0
    for log in sorted((tmp / "data").glob("*-*/*.log")):
        client = {"kp": "kafka-python", "rd": "librdkafka", "java": "java"}.get(log.parent.name.split("-")[0], "x")
        data = log.read_bytes()
        pos, n = 0, 0
        while pos + 12 <= len(data) and n < 8:
            base, length = struct.unpack(">qi", data[pos:pos + 12])
            if length <= 0 or pos + 12 + length > len(data):
                break
            b = data[pos:pos + 12 + length]
            (rec_dir / f"{client}-{hashlib.sha256(b).hexdigest()[:12]}").write_bytes(b)
            pos += 12 + length
            n += 1
            batches += 1
    print(f"{len(rec.frames)} frames seen, {saved} request files saved "
          f"({len(kinds)} client/api/version kinds), {batches} record batches saved under {OUT}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
