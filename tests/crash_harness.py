#!/usr/bin/env python3
"""Crash-consistency harness: no acknowledged record is lost, changed or duplicated across SIGKILLs.

    python3 tests/crash_harness.py --cycles 100            # long run (report the numbers)
    python3 tests/crash_harness.py --cycles 5 --seed 7     # what CI runs (tests/integration/test_crash.py)

One broker process (target/release/ringtide, or $RINGTIDE_BIN) on a fresh data directory. An idempotent
confluent-kafka producer (acks=all) writes records with unique keys and values derived from the key, as fast
as it can, over several partitions, and records every acknowledgement: (partition, offset) -> key. Each
cycle the broker is killed with SIGKILL at a random moment under that load and restarted on the same data
directory and port; the producer keeps going (librdkafka retries what was in flight). At the end the
producer is flushed and the whole log read back, and the harness checks:

  * every acknowledged record is present at its acknowledged (partition, offset) with the same key and an
    unchanged value (hash of the bytes);
  * every partition's offsets run from 0 to the high watermark without a gap;
  * no key appears twice (the idempotent producer's retries caused no duplicates);
  * every record read, acknowledged or not, has exactly the value its key implies (no corrupt bytes).

Exit status 0 if all hold; the summary line reports cycles, records acknowledged, records read, kills.
Reproducible kill timing with --seed (the broker's scheduling is not).

    python3 tests/crash_harness.py --power-cut --cycles 20

--power-cut turns every kill into a simulated power cut. SIGKILL alone cannot catch an acknowledgement
sent before its fdatasync completed: the page cache keeps the unsynced bytes. So the broker runs with
RINGTIDE_FAULT_SYNC_JOURNAL set (src/storage/fault_journal.rs): it appends one line per completed sync of
the data directory (segment data synced through a length; a small file synced with its content; a
directory fsynced with the entries it held). After the SIGKILL the harness rewrites the data directory to
what a power cut could leave (PowerCut below): segments cut back to their last synced length, with
garbage, zeros or some real unsynced bytes after it; small files back to their last synced content (or the
newer one, or torn); files and partition directories whose directory entry was never fsynced removed
(randomly). What the broker found at start-up counts as durable. Every group-commit fdatasync is also
delayed by a few milliseconds (a slow device), so that an ack sent before its sync completed stays exposed
long enough for a kill at a random moment to land on it. Then the same checks as above.
This applies to the default durability mode only: with log.flush.interval.messages / .ms set, acks do
not wait for fdatasync (Kafka's semantics), so a power cut may take acknowledged records, by design.
"""

import argparse
import collections
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port():
    """A free port BELOW the ephemeral range: a client that keeps reconnecting to a port in the ephemeral
    range while no broker listens can connect to itself (TCP simultaneous open) and hold the port."""
    lo = 32768
    try:
        lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError):
        pass
    for _ in range(200):
        port = random.randrange(max(1024, lo - 12000), lo)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def value_of(key: int) -> bytes:
    """The value a key implies: varying length, content derived from the key."""
    n = 20 + (key * 7919) % 700
    seed = hashlib.sha256(str(key).encode()).digest()
    return (seed * (n // len(seed) + 1))[:n]


def digest(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:16]


class Broker:
    def __init__(self, data_dir: Path, port: int, log_path: Path, extra=()):
        self.data_dir, self.port, self.log_path = data_dir, port, log_path
        self.binary = os.environ.get("RINGTIDE_BIN", str(REPO / "target" / "release" / "ringtide"))
        self.extra = list(extra)
        self.proc = None
        self.starts = 0

    def start(self, timeout=None, env=None):
        # A loaded machine can stall a starting broker's I/O for tens of seconds (see RINGTIDE_START_TIMEOUT).
        timeout = timeout or float(os.environ.get("RINGTIDE_START_TIMEOUT", "30"))
        self.starts += 1
        cmd = [self.binary,
               "--override", f"listeners=PLAINTEXT://127.0.0.1:{self.port}",
               "--override", f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
               "--override", f"log.dirs={self.data_dir}",
               "--override", "ringtide.cores=2",
               "--override", "ringtide.admin.listener=none",
               *self.extra]
        log = open(self.log_path, "ab", buffering=0)
        log.write(f"=== start #{self.starts}\n".encode())
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env={**os.environ, "NO_COLOR": "1", **(env or {})})
        log.close()
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode} during start; log {self.log_path}")
            if time.monotonic() > deadline:
                self._backtrace()
                raise RuntimeError(f"broker not up within {timeout}s; log {self.log_path}")
            time.sleep(0.02)

    def _backtrace(self):
        """A broker that does not come up: append every thread's stack to its log (if gdb is there)."""
        if shutil.which("gdb"):
            out = subprocess.run(["gdb", "-p", str(self.proc.pid), "-batch", "-ex", "thread apply all bt 40"],
                                 capture_output=True, text=True, timeout=60).stdout
            with open(self.log_path, "a") as log:
                log.write(f"=== broker did not come up; its threads:\n{out}")

    def kill(self, sig=signal.SIGKILL, timeout=60):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + 30
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.proc.returncode if self.proc else None


JOURNAL_ENV = "RINGTIDE_FAULT_SYNC_JOURNAL"  # src/limits.rs FAULT_SYNC_JOURNAL_ENV
# A slow device: every group-commit fdatasync takes this much longer, so that an ack sent before its sync
# completed stays exposed long enough for a kill at a random moment to land on it.
SYNC_DELAY_ENV = "RINGTIDE_FAULT_SYNC_DELAY_MS"  # src/limits.rs FAULT_SYNC_DELAY_ENV
# Files rewritten by "write, truncate, sync" in place (a power cut may tear them); the others are replaced
# whole by a rename (old or new content, never a mix).
TORN_SUFFIXES = (".index", ".timeindex", ".snapshot")


class PowerCut:
    """Rewrites a killed broker's data directory to what a power cut could have left on the device.

    The model (a device that honours fsync and nothing more): bytes of a segment up to its last journaled
    fdatasync length are there; after it anything may be (nothing, zeros, garbage, part of what was
    written). A small file holds its last synced content, or what was written after it (whole or torn).
    A file or directory created since start-up exists only if a journaled directory fsync listed it
    (otherwise it may be gone). Removals are not undone (the harness cannot bring back deleted bytes)."""

    def __init__(self, data_dir: Path, journal_dir: Path, rng: random.Random):
        self.data_dir, self.journal_dir, self.rng = data_dir, journal_dir, rng
        self.starts = 0
        self.journal = None
        self.base_sizes = {}     # segment path -> size at start-up
        self.base_content = {}   # other file path -> bytes at start-up
        self.base_dirs = set()
        self.stats = collections.Counter()

    @staticmethod
    def is_segment(path: str) -> bool:
        return path.endswith(".log")

    def _walk(self):
        dirs, files = [], []
        if self.data_dir.exists():
            for root, dnames, fnames in os.walk(self.data_dir):
                dirs += [os.path.join(root, d) for d in dnames]
                files += [os.path.join(root, f) for f in fnames]
        return dirs, files

    def before_start(self):
        """Takes the data directory as durable (it is what the device holds after the cut) and returns the
        environment that turns the broker's sync journal on, with a fresh journal."""
        dirs, files = self._walk()
        self.base_dirs = set(dirs)
        self.base_sizes, self.base_content = {}, {}
        for f in files:
            if self.is_segment(f):
                self.base_sizes[f] = os.path.getsize(f)
            else:
                self.base_content[f] = Path(f).read_bytes()
        self.starts += 1
        self.journal = self.journal_dir / f"sync-journal-{self.starts}.txt"
        self.journal.write_bytes(b"")
        return {JOURNAL_ENV: str(self.journal), SYNC_DELAY_ENV: str(self.rng.choice([3, 10, 20]))}

    def _read_journal(self):
        data, content, listed = {}, {}, set()
        for line in self.journal.read_text().splitlines():
            kind, path, arg = line.split("\t")
            path = os.path.normpath(path)
            if kind == "data":
                data[path] = int(arg)
            elif kind == "file":
                content[path] = bytes.fromhex(arg)
            elif kind == "dir":
                listed |= {os.path.join(path, n) for n in arg.split("/") if n}
            else:
                raise RuntimeError(f"unknown journal line {line!r}")
        return data, content, listed

    def cut(self):
        """Call after the broker was SIGKILLed and reaped."""
        rng, st = self.rng, self.stats
        data, content, listed = self._read_journal()
        durable_entry = lambda p: p in self.base_dirs or p in self.base_sizes or p in self.base_content or p in listed
        st["cuts"] += 1
        self.touched = set()
        dirs, _ = self._walk()
        for d in sorted(dirs):  # parents first
            if os.path.isdir(d) and not durable_entry(d) and rng.random() < 0.5:
                shutil.rmtree(d)
                self.touched.add(os.path.dirname(d))
                st["dirs_removed"] += 1
        _, files = self._walk()
        for f in files:
            if not durable_entry(f) and rng.random() < 0.5:
                os.remove(f)
                self.touched.add(os.path.dirname(f))
                st["files_removed"] += 1
                continue
            if self.is_segment(f):
                self._cut_segment(f, data.get(f, self.base_sizes.get(f, 0)))
            else:
                self._cut_small(f, content.get(f, self.base_content.get(f)))
        # After a real power cut nothing sits dirty in the page cache: write the rewritten files back now,
        # so the broker's direct I/O does not first have to flush the harness's buffered writes.
        for p in sorted(self.touched, key=lambda p: (os.path.isdir(p), p)):
            if os.path.exists(p):
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def _cut_segment(self, f, durable):
        rng, st = self.rng, self.stats
        size = os.path.getsize(f)
        if size <= durable:
            return  # a truncation not yet synced, or nothing unsynced
        st["segments_cut"] += 1
        self.touched.add(f)
        st["unsynced_bytes"] += size - durable
        keep = durable
        mode = rng.choice(["cut", "cut", "real", "zeros", "garbage", "real+garbage"])
        if mode.startswith("real"):  # write-back persisted part of the unsynced bytes
            keep = rng.randint(durable, size)
        with open(f, "r+b") as fh:
            fh.truncate(keep)
            if mode.endswith("zeros") or mode.endswith("garbage"):
                end = rng.randint(keep, size)
                fh.seek(keep)
                fh.write(bytes(end - keep) if mode == "zeros" else rng.randbytes(end - keep))
        st[f"tail_{mode}"] += 1

    def _cut_small(self, f, durable):
        rng, st = self.rng, self.stats
        now = Path(f).read_bytes()
        if now == durable:
            return
        torn = f.endswith(TORN_SUFFIXES)
        choices = ["new"]
        if durable is not None:
            choices += ["old", "old"]
        else:
            choices += ["remove", "empty"]
        if torn:
            choices += ["empty", "torn"]
        choice = rng.choice(choices)
        st[f"small_{choice}"] += 1
        self.touched.add(os.path.dirname(f) if choice == "remove" else f)
        if choice == "old":
            Path(f).write_bytes(durable)
        elif choice == "remove":
            os.remove(f)
        elif choice == "empty":
            Path(f).write_bytes(b"")
        elif choice == "torn":
            Path(f).write_bytes(now[:rng.randint(0, len(now))])


class Load:
    """An idempotent acks=all producer in a thread, recording every acknowledgement."""

    def __init__(self, bootstrap, topic):
        from confluent_kafka import Producer
        self.topic = topic
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "batch.num.messages": 500,
            "message.timeout.ms": 120000,
            "retry.backoff.ms": 20,
            "retry.backoff.max.ms": 200,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            "queue.buffering.max.messages": 20000,
            "topic.metadata.refresh.interval.ms": 1000,
        })
        self.acked = {}  # (partition, offset) -> (key, value digest)
        self.failed = []  # (key, error) of records whose delivery failed (never acknowledged)
        self.fatal = None
        self.next_key = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _cb(self, err, msg):
        key = int(msg.key())
        if err is not None:
            if err.fatal():
                self.fatal = err
            self.failed.append((key, str(err)))
            return
        with self.lock:
            where = (msg.partition(), msg.offset())
            if where in self.acked:
                self.fatal = f"two acknowledgements for {where}: {self.acked[where]} and {key}"
            self.acked[where] = (key, digest(msg.value()))

    def _run(self):
        from confluent_kafka import KafkaException
        while not self.stopping.is_set():
            key = self.next_key
            try:
                self.producer.produce(self.topic, key=str(key).encode(), value=value_of(key), on_delivery=self._cb)
                self.next_key += 1
            except BufferError:
                self._poll(0.05)
                continue
            except KafkaException as e:  # fatal: the producer refuses new records
                self.fatal = self.fatal or str(e)
                return
            if key % 64 == 0:
                self._poll(0)
            if self.fatal:
                return

    def _poll(self, timeout):
        from confluent_kafka import KafkaException
        try:
            self.producer.poll(timeout)
        except KafkaException as e:  # a fatal error raised from poll (idempotence desynchronized)
            self.fatal = str(e)

    def start(self):
        self.thread.start()

    def stop(self, timeout=120):
        self.stopping.set()
        self.thread.join()
        left = self.producer.flush(timeout)
        return left


def read_all(bootstrap, topic, partitions, timeout=120):
    """Every record of every partition: {partition: [(offset, key bytes, value bytes)]}, read up to the
    high watermark."""
    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-harness-unused",
                  "enable.auto.commit": False, "fetch.max.bytes": 8 << 20,
                  "check.crcs": True, "enable.partition.eof": True})
    out = {}
    try:
        hw = {}
        for p in range(partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            hw[p] = hi
            out[p] = []
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        done = {p for p in range(partitions) if hw[p] == 0}
        deadline = time.monotonic() + timeout
        while len(done) < partitions:
            if time.monotonic() > deadline:
                raise RuntimeError(f"reading back timed out: {[(p, len(out[p]), hw[p]) for p in out]}")
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    if out[m.partition()] and out[m.partition()][-1][0] + 1 >= hw[m.partition()]:
                        done.add(m.partition())
                    continue
                raise RuntimeError(f"consumer error: {m.error()}")
            out[m.partition()].append((m.offset(), m.key(), m.value()))
            if m.offset() + 1 >= hw[m.partition()]:
                done.add(m.partition())
        return out, hw
    finally:
        c.close()


def verify(acked, records, hw):
    """Returns a list of violations (empty = all good) and counts."""
    problems = []
    seen_keys = {}
    total = 0
    for p, recs in records.items():
        offsets = [o for o, _, _ in recs]
        if offsets != list(range(hw[p])):
            missing = sorted(set(range(hw[p])) - set(offsets))
            problems.append(f"partition {p}: offsets are not 0..{hw[p] - 1} without gaps "
                            f"(read {len(offsets)}, first missing {missing[:5]})")
        for o, k, v in recs:
            total += 1
            key = int(k)
            if v != value_of(key):
                problems.append(f"partition {p} offset {o}: value of key {key} is corrupt")
            if key in seen_keys:
                problems.append(f"key {key} duplicated at {seen_keys[key]} and {(p, o)}")
            seen_keys[key] = (p, o)
    index = {(p, o): (int(k), digest(v)) for p, recs in records.items() for o, k, v in recs}
    lost = 0
    for where, (key, d) in acked.items():
        got = index.get(where)
        if got is None:
            lost += 1
            if lost <= 10:
                problems.append(f"acknowledged key {key} at {where} is missing")
        elif got != (key, d):
            problems.append(f"acknowledged key {key} at {where} reads back as key {got[0]} (changed)")
    if lost > 10:
        problems.append(f"... {lost} acknowledged records missing in all")
    return problems, total


def run(cycles, seed, partitions=3, kill_min=0.15, kill_max=1.2, keep=False, log=print, power_cut=False):
    from confluent_kafka.admin import AdminClient, NewTopic
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="ringtide-crash-"))
    logs = Path(os.environ.get("RINGTIDE_TEST_LOGS", REPO / "target" / "integration-logs"))
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{time.strftime('%Y%m%d-%H%M%S')}-crash-harness-{os.getpid()}.log"
    # Small segments and frequent recovery-point checkpoints, so kills land before, during and after rolls
    # and checkpoints (recovery then trusts index files and producer snapshots up to the recovery point).
    broker = Broker(tmp / "data", free_port(), log_path, extra=[
        "--override", "log.segment.bytes=262144",
        "--override", f"log.flush.offset.checkpoint.interval.ms={rng.choice([50, 200, 700])}",
    ])
    topic = "crash"
    t0 = time.monotonic()
    kills = 0
    cutter = PowerCut(tmp / "data", tmp, rng) if power_cut else None

    def start():
        broker.start(env=cutter.before_start() if cutter else None)

    def crash():
        broker.kill(signal.SIGKILL)
        if cutter:
            cutter.cut()

    try:
        start()
        bootstrap = f"127.0.0.1:{broker.port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)
        load = Load(bootstrap, topic)
        load.start()
        acks_at_start = 0
        for cycle in range(cycles):
            # Let the load run (the producer has to reconnect first), then crash at a random moment.
            time.sleep(rng.uniform(kill_min, kill_max))
            if cutter and rng.random() < 0.75:
                # Most power cuts land while acknowledgements flow: only then can an early ack be exposed.
                deadline = time.monotonic() + 10
                while len(load.acked) == acks_at_start and time.monotonic() < deadline and not load.fatal:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.1))
            before = len(load.acked)
            crash()
            kills += 1
            time.sleep(rng.uniform(0.0, 0.3))
            start()
            acks_at_start = len(load.acked)
            log(f"cycle {cycle + 1}/{cycles}: killed at {before} acks; produced {load.next_key}, "
                f"failed deliveries {len(load.failed)}")
            if load.fatal:
                # Check what is there: a fatal idempotence error usually means acknowledged records were lost.
                log(f"producer fatal error: {load.fatal}")
                break
        # Let the producer catch up with a live broker, then stop it.
        time.sleep(1.0)
        left = load.stop(timeout=5 if load.fatal else 120)
        if left and not load.fatal:
            raise RuntimeError(f"{left} records still undelivered after flush")
        # One more crash after the last acknowledgement: what was acknowledged must survive it too.
        crash()
        kills += 1
        start()
        records, hw = read_all(bootstrap, topic, partitions)
        problems, total = verify(load.acked, records, hw)
        if load.fatal:
            problems.append(f"producer fatal error: {load.fatal}")
        summary = {
            "cycles": cycles, "kills": kills, "produced": load.next_key, "acked": len(load.acked),
            "failed_deliveries": len(load.failed), "read": total, "high_watermarks": hw,
            "seconds": round(time.monotonic() - t0, 1), "problems": len(problems), "broker_log": str(log_path),
        }
        if cutter:
            summary["power_cut"] = dict(cutter.stats)
        return problems, summary
    except BaseException:
        keep = True  # for the post-mortem
        log(f"data directory kept: {tmp}")
        raise
    finally:
        broker.kill(signal.SIGKILL)
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--power-cut", action="store_true",
                    help="every kill is a simulated power cut: unsynced bytes are dropped (see above)")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    print(f"seed {seed}")
    problems, summary = run(a.cycles, seed, a.partitions, keep=a.keep, power_cut=a.power_cut)
    for p in problems[:50]:
        print("VIOLATION:", p)
    print("summary:", summary)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
