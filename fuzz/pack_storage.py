#!/usr/bin/env python3
"""Seeds for the `storage` fuzz target from a real broker's files.

    python3 fuzz/pack_storage.py pack <log_dir> <topic> <partition> <out_file>
        packs one partition directory of a log directory (segments, indexes, transaction indexes, producer snapshots, the
        DeleteRecords start offset), the log directory's recovery-point checkpoint (its line for this
        partition renamed to `fuzz 0`, the partition the fuzz target opens) and whether the clean-shutdown
        marker is present, in the input layout described in src/storage/fuzz.rs.

    python3 fuzz/pack_storage.py capture [--broker target/release/ringtide] [--out fuzz/corpus/storage]
        starts the broker (small segments and index intervals so that a few KiB of records give several
        segments with index entries), produces with kafka-python (plain and idempotent producers), then
        packs the partitions after a clean stop (SIGTERM) and after `kill -9` under load.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KIND_LOG, KIND_INDEX, KIND_TIME_INDEX, KIND_SNAPSHOT, KIND_CHECKPOINT, KIND_LOG_START, KIND_TXN_INDEX = range(7)
NAME = re.compile(r"^(\d{20})\.(log|index|timeindex|snapshot|txnindex)$")
KINDS = {"log": KIND_LOG, "index": KIND_INDEX, "timeindex": KIND_TIME_INDEX, "snapshot": KIND_SNAPSHOT,
         "txnindex": KIND_TXN_INDEX}


def section(kind, content, name=None):
    out = bytes([kind])
    if name is not None:
        out += struct.pack(">Q", name)
    return out + struct.pack(">I", len(content)) + content


def pack(log_dir, topic, partition):
    log_dir = Path(log_dir)
    part = log_dir / f"{topic}-{partition}"
    clean = (log_dir / ".kafka_cleanshutdown").exists()
    out = bytes([1 if clean else 0])
    for f in sorted(part.iterdir()):
        m = NAME.match(f.name)
        if m:
            out += section(KINDS[m.group(2)], f.read_bytes(), int(m.group(1)))
        elif f.name == "ringtide-log-start-offset":
            out += section(KIND_LOG_START, f.read_bytes())
    cp = log_dir / "recovery-point-offset-checkpoint"
    if cp.exists():
        lines = cp.read_text().split("\n")
        # version, count, entries: keep this partition's entry only, under the fuzz target's name
        mine = [l for l in lines[2:] if l.split(" ")[:2] == [topic, str(partition)]]
        text = "0\n%d\n" % len(mine) + "".join(
            "fuzz 0 %s\n" % l.split(" ")[2] for l in mine)
        out += section(KIND_CHECKPOINT, text.encode())
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"broker exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("broker did not start")


def capture(broker, out_dir):
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ringtide-seed-"))
    data = tmp / "data"
    port, admin_port = free_port(), free_port()
    cmd = [broker, "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
           "--override", f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
           "--override", f"log.dirs={data}", "--override", "ringtide.cores=2",
           "--override", f"ringtide.admin.listener=127.0.0.1:{admin_port}",
           "--override", "log.flush.offset.checkpoint.interval.ms=500",
           # Kafka refuses a topic-level segment.bytes below 1 MiB, but not the broker default.
           "--override", "log.segment.bytes=8192", "--override", "log.index.interval.bytes=512"]
    log = open(tmp / "broker.log", "ab")
    procs = []

    def start():
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(p)
        wait_port(port, p)
        return p

    def produce(topic, n, size, idempotent):
        kw = {"enable_idempotence": True, "acks": "all"} if idempotent else {"acks": 1}
        p = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", linger_ms=2, **kw)
        for i in range(n):
            p.send(topic, key=b"k%d" % (i % 7), value=os.urandom(size // 2).hex().encode(),
                   timestamp_ms=1_700_000_000_000 + i * 10)
            if i % 25 == 24:
                p.flush()
        p.flush()
        p.close()

    def save(name, topic):
        for part in range(2):
            if (data / f"{topic}-{part}").is_dir():
                blob = pack(data, topic, part)
                (out_dir / f"broker-{name}-{topic}-p{part}").write_bytes(blob)
                print(f"{name}-{topic}-p{part}: {len(blob)} bytes")

    try:
        broker_p = start()
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        admin.create_topics([NewTopic("plain", 1, 1), NewTopic("idem", 2, 1)])
        admin.close()
        produce("plain", 120, 60, False)
        produce("idem", 120, 40, True)
        time.sleep(1.2)  # a recovery-point checkpoint: producer snapshots, index files of active segments
        produce("idem", 30, 40, True)
        broker_p.send_signal(signal.SIGTERM)
        broker_p.wait(60)
        save("clean", "plain")
        save("clean", "idem")

        broker_p = start()
        produce("idem", 60, 40, True)
        time.sleep(1.2)
        produce("plain", 40, 60, False)
        broker_p.kill()  # kill -9: no marker, whatever the last writes left
        broker_p.wait()
        save("kill9", "plain")
        save("kill9", "idem")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("log_dir")
    p.add_argument("topic")
    p.add_argument("partition", type=int)
    p.add_argument("out")
    c = sub.add_parser("capture")
    c.add_argument("--broker", default="target/release/ringtide")
    c.add_argument("--out", default="fuzz/corpus/storage")
    a = ap.parse_args()
    if a.cmd == "pack":
        Path(a.out).write_bytes(pack(a.log_dir, a.topic, a.partition))
    else:
        capture(a.broker, a.out)


if __name__ == "__main__":
    main()
