"""Kafka Connect on the broker (issue 13): FileStreamSource -> topic -> FileStreamSink.

Connect is Kafka's own connect-runtime + connect-file 4.3.1 (with kafka-clients 4.3.1), fetched by
tests/run into $RINGTIDE_CACHE/connect-4.3.1/libs (tests/kafka/connect-pom.xml): Maven Central serves
connect-file only up to 4.3.1 and it does not load in the 4.4.0 runtime, so Connect runs as one matching
4.3.1 set. Each worker is a JVM of its own (`ConnectStandalone` or `ConnectDistributed`) whose log goes to
connect-*.log under the test's tmp_path; the tail of it is in every assertion message.

- standalone: a 100,000-line file is copied exactly (same lines, same order).
- distributed, one worker, its config/offset/status topics created by the worker (compacted,
  replication factor 1), source and sink created over the REST API; the worker is killed with SIGKILL
  mid-copy and started again. Connect's delivery is at-least-once on both sides (the source's file
  position and the sink's consumer offsets are committed periodically, after the records they cover),
  and the worker's producer keeps order (max.in.flight.requests.per.connection=1, acks=all) on a
  one-partition topic. So the sink file is the source file with at most two rewinds for the one crash
  (the source re-reading from its last committed position, the sink re-consuming from its last committed
  offset): it starts at line 0, ends with the last line, and each line is either the one after the
  previous line or an earlier one (a rewind), never a later one (nothing skipped).
- distributed with exactly.once.source.support=enabled (transactional source producer, offsets in the
  same transactions, zombie fencing through Admin.fenceProducers), one transaction a second: killed
  mid-copy, inside a transaction whose records are in the log, and restarted, a read_committed consumer
  of the topic reads every line exactly once, in order (a read_uncommitted one sees the aborted records
  too).

In both distributed tests the source file grows while the worker runs (the source tails it), and the
worker is killed once 40% of it has been copied and started again at once.

Runs against both targets (RINGTIDE_TEST_TARGET=kafka proves the expectations on Kafka 4.4).
"""

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from conftest import TESTS, create_topic, free_port, port_open

pytestmark = pytest.mark.needs_groups

CONNECT_VERSION = os.environ.get("CONNECT_VERSION", "4.3.1")
STRING_CONVERTER = "org.apache.kafka.connect.storage.StringConverter"


def connect_libs():
    """$CONNECT_HOME/libs (tests/run exports it), else $RINGTIDE_CACHE/connect-$CONNECT_VERSION/libs."""
    cache = Path(os.environ.get("RINGTIDE_CACHE", Path.home() / ".cache" / "ringtide"))
    libs = Path(os.environ.get("CONNECT_HOME", cache / f"connect-{CONNECT_VERSION}")) / "libs"
    if not (libs / ".complete").exists():
        pytest.fail(f"Kafka Connect jars missing in {libs}; run tests/run (it downloads them)")
    return libs


def make_lines(start, n):
    """ASCII lines of varying length, each naming its index: 'line 000042 ...'."""
    return [f"line {i:06d} {'abcdefghij' * (i % 7)}{i % 13}" for i in range(start, start + n)]


def line_index(line):
    assert line.startswith("line ") and line[5:11].isdigit(), f"not a source line: {line!r}"
    return int(line[5:11])


def append_lines(path, lines):
    with open(path, "a") as f:
        f.write("".join(l + "\n" for l in lines))


class Writer(threading.Thread):
    """Appends make_lines(0, n) to `path` in chunks, one chunk every `pause` seconds, so that the source
    (which tails the file) copies while the test kills and restarts the worker."""

    def __init__(self, path, n, chunk=1000, pause=0.05):
        super().__init__(daemon=True)
        self.path, self.n, self.chunk, self.pause = path, n, chunk, pause
        self.written = 0

    def run(self):
        while self.written < self.n:
            k = min(self.chunk, self.n - self.written)
            append_lines(self.path, make_lines(self.written, k))
            self.written += k
            time.sleep(self.pause)


def read_lines(path):
    """Complete lines of a file (a last line without its newline is left out)."""
    try:
        data = Path(path).read_text()
    except FileNotFoundError:
        return []
    return data.split("\n")[:-1]


def props_text(props):
    return "".join(f"{k}={v}\n" for k, v in props.items())


class Worker:
    """One Kafka Connect worker JVM (standalone or distributed) logging to tmp_path/connect-NAME.log."""

    def __init__(self, tmp_path, name, mode, worker_props, connector_props=()):
        assert mode in ("standalone", "distributed")
        self.mode = mode
        self.rest_port = free_port()
        props = {
            "key.converter": STRING_CONVERTER,
            "value.converter": STRING_CONVERTER,
            "listeners": f"http://127.0.0.1:{self.rest_port}",
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": str(self.rest_port),
            # connect-file's connectors and the converters are found through their service manifests
            "plugin.discovery": "service_load",
            **worker_props,
        }
        self.props_path = tmp_path / f"{name}-worker.properties"
        self.props_path.write_text(props_text(props))
        self.connector_paths = []
        for i, cp in enumerate(connector_props):
            p = tmp_path / f"{name}-connector-{i}.properties"
            p.write_text(props_text(cp))
            self.connector_paths.append(p)
        self.log_path = tmp_path / f"connect-{name}.log"
        self.proc = None
        self.starts = 0

    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        cls = ("org.apache.kafka.connect.cli.ConnectStandalone" if self.mode == "standalone"
               else "org.apache.kafka.connect.cli.ConnectDistributed")
        cmd = ["java", "-Xms128M", "-Xmx768M", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={TESTS / 'kafka' / 'log4j2-connect.properties'}",
               "-cp", f"{connect_libs()}/*", cls, str(self.props_path), *map(str, self.connector_paths)]
        with open(self.log_path, "ab") as log:
            log.write(f"=== start #{self.starts}: {' '.join(cmd)}\n".encode())
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        if self.proc is not None:
            with open(self.log_path, "ab") as log:
                log.write(f"=== stopped with signal {int(sig)}, exit code {self.proc.returncode}\n".encode())
        # the REST port must be free before a restart binds it again
        deadline = time.monotonic() + 30
        while port_open(self.rest_port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n=60):
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return f"--- {self.log_path} (tail) ---\n" + "\n".join(lines[-n:])

    def check_alive(self):
        assert self.alive(), f"Connect worker exited with code {self.proc.returncode}\n{self.tail()}"

    # -- REST ----------------------------------------------------------------
    def rest(self, method, path, body=None, timeout=10):
        """(status, decoded JSON or text) of one REST call; (None, error) if it could not connect."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.rest_port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode(errors="replace")
        except OSError as e:
            return None, str(e)
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    def wait_rest(self, timeout=90):
        """Until GET /connectors answers 200 (a distributed worker answers once it has joined its group
        and read the config topic)."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            status, body = self.rest("GET", "/connectors")
            if status == 200:
                return body
            assert time.monotonic() < deadline, f"REST not ready: {status} {body}\n{self.tail()}"
            time.sleep(0.3)

    def create_connector(self, name, config, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            status, body = self.rest("POST", "/connectors", {"name": name, "config": config})
            if status == 201:
                return body
            # 409: a rebalance is in progress; 5xx: the worker is not ready yet (no leader known)
            assert status is None or status == 409 or status >= 500, \
                f"POST /connectors {name}: {status} {body}\n{self.tail()}"
            assert time.monotonic() < deadline, f"POST /connectors {name}: {status} {body}\n{self.tail()}"
            time.sleep(0.5)

    def wait_running(self, name, tasks=1, timeout=90):
        """Until the connector and its tasks report RUNNING; a FAILED one fails the test with its trace."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            status, body = self.rest("GET", f"/connectors/{name}/status")
            if status == 200:
                states = [body["connector"]["state"]] + [t["state"] for t in body.get("tasks", [])]
                assert "FAILED" not in states, f"connector {name} failed: {json.dumps(body, indent=1)}\n{self.tail()}"
                if len(body.get("tasks", [])) == tasks and all(s == "RUNNING" for s in states):
                    return body
            assert time.monotonic() < deadline, f"connector {name} not running: {status} {body}\n{self.tail()}"
            time.sleep(0.3)


@pytest.fixture
def workers():
    started = []
    yield started
    for w in started:
        w.kill()


def distributed_props(bootstrap, tag, **extra):
    return {
        "bootstrap.servers": bootstrap,
        "group.id": f"connect-{tag}",
        # the worker creates its topics (compacted) with these settings
        "config.storage.topic": f"connect-configs-{tag}",
        "offset.storage.topic": f"connect-offsets-{tag}",
        "status.storage.topic": f"connect-status-{tag}",
        "config.storage.replication.factor": "1",
        "offset.storage.replication.factor": "1",
        "status.storage.replication.factor": "1",
        "offset.flush.interval.ms": "1000",
        # a worker killed with SIGKILL leaves its member in the worker group and its sink task's member in
        # the connector's consumer group until their sessions expire: keep those short (6 s is Kafka's
        # group.min.session.timeout.ms), and reassign the dead worker's connectors at once
        "session.timeout.ms": "6000",
        "heartbeat.interval.ms": "1000",
        "scheduled.rebalance.max.delay.ms": "0",
        "consumer.session.timeout.ms": "6000",
        "consumer.heartbeat.interval.ms": "1000",
        **extra,
    }


def check_internal_topics(bootstrap, tag):
    """The worker created its three topics compacted, with one replica."""
    from confluent_kafka.admin import AdminClient, ConfigResource
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [f"connect-{kind}-{tag}" for kind in ("configs", "offsets", "status")]
    md = admin.list_topics(timeout=10).topics
    for name in names:
        assert name in md, f"{name} missing: {sorted(md)}"
        assert all(len(p.replicas) == 1 for p in md[name].partitions.values()), f"{name}: replicas"
        res = ConfigResource(ConfigResource.Type.TOPIC, name)
        cfg = admin.describe_configs([res])[res].result(timeout=10)
        assert cfg["cleanup.policy"].value == "compact", f"{name}: cleanup.policy={cfg['cleanup.policy'].value}"
    # Connect's defaults: 1 partition for configs, 25 for offsets, 5 for status
    assert [len(md[n].partitions) for n in names] == [1, 25, 5]


def wait_sink(worker, path, n, timeout):
    """Until the sink file holds line n-1 (the last one) and at least n lines."""
    deadline = time.monotonic() + timeout
    while True:
        lines = read_lines(path)
        if len(lines) >= n and lines[-1] == make_lines(n - 1, 1)[0]:
            return lines
        worker.check_alive()
        assert time.monotonic() < deadline, \
            f"sink file has {len(lines)} of {n} lines after {timeout}s (last: {lines[-1:]})\n{worker.tail()}"
        time.sleep(0.2)


def end_offset(bootstrap, topic, isolation="read_uncommitted"):
    """The end of partition 0 from ListOffsets: the high watermark, or with read_committed the last
    stable offset (the first offset of the oldest open transaction)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-watermarks", "isolation.level": isolation})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1]
    finally:
        c.close()


def read_topic(bootstrap, topic, isolation, last, times=1, timeout=90, worker=None):
    """Values of partition 0 of `topic` from offset 0 (manual assignment, no group), read with
    `isolation` until `last` has been read `times` times and the end is reached, plus 2 s more there."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"unused-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "isolation.level": isolation, "enable.partition.eof": True,
                  "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, 0, 0)])
    got, seen_last, quiet_until = [], 0, None
    deadline = time.monotonic() + timeout
    try:
        while True:
            for m in c.consume(num_messages=5000, timeout=0.3):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        if seen_last >= times and quiet_until is None:
                            quiet_until = time.monotonic() + 2
                        continue
                    raise AssertionError(f"consumer error: {m.error()}")
                v = m.value().decode()
                got.append(v)
                seen_last += v == last
            if quiet_until is not None and time.monotonic() > quiet_until:
                return got
            if time.monotonic() > deadline:
                tail = worker.tail() if worker else ""
                raise AssertionError(f"{isolation} read of {topic}: {len(got)} records, last line seen "
                                     f"{seen_last} of {times} times after {timeout}s\n{tail}")
    finally:
        c.close()


def describe_runs(indexes):
    """Where a sequence of line indexes jumps: [(position, from, to)]."""
    return [(i, indexes[i - 1], indexes[i]) for i in range(1, len(indexes)) if indexes[i] != indexes[i - 1] + 1]


# --------------------------------------------------------------------------- tests


def test_standalone_copies_a_file_exactly(broker, tmp_path, workers):
    n = 100_000
    tag = uuid.uuid4().hex[:6]
    topic = f"connect-standalone-{tag}"
    create_topic(broker.bootstrap, topic, 1)
    src, dst = tmp_path / "source.txt", tmp_path / "sink.txt"
    lines = make_lines(0, n)
    append_lines(src, lines)
    w = Worker(tmp_path, "standalone", "standalone", {
        "bootstrap.servers": broker.bootstrap,
        "offset.storage.file.filename": str(tmp_path / "standalone.offsets"),
        "offset.flush.interval.ms": "1000",
    }, [
        {"name": f"file-source-{tag}", "connector.class": "FileStreamSource", "tasks.max": "1",
         "file": str(src), "topic": topic},
        {"name": f"file-sink-{tag}", "connector.class": "FileStreamSink", "tasks.max": "1",
         "file": str(dst), "topics": topic},
    ])
    workers.append(w)
    t0 = time.monotonic()
    w.start()
    got = wait_sink(w, dst, n, timeout=120)
    print(f"standalone: {n} lines copied in {time.monotonic() - t0:.1f}s (JVM start included)")
    assert len(got) == n and got == lines, \
        f"sink has {len(got)} lines; first difference at {next((i for i, (a, b) in enumerate(zip(got, lines)) if a != b), min(len(got), n))}\n{w.tail()}"
    assert end_offset(broker.bootstrap, topic) == n


def test_distributed_worker_killed_mid_copy(broker, tmp_path, workers):
    n = 100_000
    tag = uuid.uuid4().hex[:6]
    topic = f"connect-dist-{tag}"
    create_topic(broker.bootstrap, topic, 1)
    src, dst = tmp_path / "source.txt", tmp_path / "sink.txt"
    src.touch()
    w = Worker(tmp_path, "distributed", "distributed", distributed_props(broker.bootstrap, tag))
    workers.append(w)
    w.start()
    w.wait_rest()
    src_name, sink_name = f"file-source-{tag}", f"file-sink-{tag}"
    w.create_connector(src_name, {"connector.class": "FileStreamSource", "tasks.max": "1",
                                  "file": str(src), "topic": topic})
    w.create_connector(sink_name, {"connector.class": "FileStreamSink", "tasks.max": "1",
                                   "file": str(dst), "topics": topic})
    w.wait_running(src_name)
    w.wait_running(sink_name)
    check_internal_topics(broker.bootstrap, tag)

    # The source tails the file while it grows (20,000 lines/s); the worker is killed with records in
    # flight once 40% are in the sink file, and started again at once while the file still grows.
    writer = Writer(src, n)
    writer.start()
    deadline = time.monotonic() + 60
    while len(read_lines(dst)) < 2 * n // 5:
        w.check_alive()
        assert time.monotonic() < deadline, f"{len(read_lines(dst))} lines in the sink file after 60s\n{w.tail()}"
        time.sleep(0.05)
    w.kill(signal.SIGKILL)
    at_kill, written_at_kill = len(read_lines(dst)), writer.written
    assert at_kill < n, "the copy was complete before the kill"
    t_restart = time.monotonic()
    w.start()
    writer.join(60)
    got = wait_sink(w, dst, n, timeout=150)
    print(f"distributed: {at_kill} lines in the sink, {written_at_kill} in the source at the kill; "
          f"complete {time.monotonic() - t_restart:.1f}s after the restart; {len(got)} lines for {n} "
          f"({len(got) - n} duplicates)")

    idx = [line_index(l) for l in got]
    lines = make_lines(0, n)
    wrong = [(i, l) for i, l in enumerate(got) if l != lines[idx[i]]]
    assert not wrong, f"lines changed in the copy: {wrong[:5]}\n{w.tail()}"
    jumps = describe_runs(idx)
    skips = [j for j in jumps if j[2] > j[1] + 1]
    assert idx[0] == 0 and not skips, f"lines skipped (position, from, to): {skips[:10]}\n{w.tail()}"
    assert set(idx) == set(range(n)), f"missing lines: {sorted(set(range(n)) - set(idx))[:20]}"
    assert idx[-1] == n - 1
    # one crash: at most the source's rewind and the sink's rewind
    assert len(jumps) <= 2, f"{len(jumps)} rewinds for one crash (position, from, to): {jumps[:10]}\n{w.tail()}"


def test_exactly_once_source_worker_killed_mid_copy(broker, tmp_path, workers):
    n = 100_000
    tag = uuid.uuid4().hex[:6]
    topic = f"connect-eos-{tag}"
    create_topic(broker.bootstrap, topic, 1)
    src = tmp_path / "source.txt"
    src.touch()
    w = Worker(tmp_path, "eos", "distributed",
               distributed_props(broker.bootstrap, tag, **{"exactly.once.source.support": "enabled"}))
    workers.append(w)
    w.start()
    w.wait_rest()
    name = f"file-source-eos-{tag}"
    w.create_connector(name, {"connector.class": "FileStreamSource", "tasks.max": "1", "file": str(src),
                              "topic": topic, "exactly.once.support": "required",
                              # one transaction a second: the kill lands inside one with records written
                              "transaction.boundary": "interval", "transaction.boundary.interval.ms": "1000"})
    w.wait_running(name)

    writer = Writer(src, n)
    writer.start()
    deadline = time.monotonic() + 60
    # kill once 40% is in the log and a transaction with records in the log is open (LSO < HW)
    while True:
        lso = end_offset(broker.bootstrap, topic, "read_committed")
        hw = end_offset(broker.bootstrap, topic)
        if hw >= 2 * n // 5 and lso < hw:
            break
        w.check_alive()
        assert time.monotonic() < deadline, f"high watermark {hw}, LSO {lso} after 60s\n{w.tail()}"
        time.sleep(0.02)
    w.kill(signal.SIGKILL)
    written_at_kill = writer.written
    t_restart = time.monotonic()
    w.start()
    writer.join(60)
    lines = make_lines(0, n)
    got = read_topic(broker.bootstrap, topic, "read_committed", lines[-1], timeout=150, worker=w)
    print(f"exactly-once: high watermark {hw}, last stable offset {lso}, {written_at_kill} lines in the source "
          f"at the kill; all {n} lines committed {time.monotonic() - t_restart:.1f}s after the restart")
    if got != lines:
        idx = [line_index(l) for l in got]
        dup = len(idx) - len(set(idx))
        missing = sorted(set(range(n)) - set(idx))
        raise AssertionError(f"read_committed: {len(got)} records for {n} lines, {dup} duplicates, "
                             f"{len(missing)} missing (first {missing[:10]}), jumps {describe_runs(idx)[:10]}\n"
                             f"{w.tail()}")
    # the records of the transaction the kill interrupted are in the log, aborted: read_uncommitted sees them
    everything = read_topic(broker.bootstrap, topic, "read_uncommitted", lines[-1], timeout=60, worker=w)
    print(f"exactly-once: read_uncommitted sees {len(everything)} records ({len(everything) - n} aborted)")
    assert len(everything) > n, f"the kill interrupted no transaction with records ({len(everything)} records)"


def test_exactly_once_source_offsets_reset_fences_and_copies_again(broker, tmp_path, workers):
    """KIP-875 on an exactly-once source: the connector is stopped, its offsets are deleted over the REST
    API (the leader first fences out the task's transactional producers with Admin.fenceProducers) and it
    is resumed: the file is copied a second time, again exactly once."""
    n = 20_000
    tag = uuid.uuid4().hex[:6]
    topic = f"connect-eos-reset-{tag}"
    create_topic(broker.bootstrap, topic, 1)
    src = tmp_path / "source.txt"
    lines = make_lines(0, n)
    append_lines(src, lines)
    w = Worker(tmp_path, "eos-reset", "distributed",
               distributed_props(broker.bootstrap, tag, **{"exactly.once.source.support": "enabled"}))
    workers.append(w)
    w.start()
    w.wait_rest()
    name = f"file-source-eos-{tag}"
    w.create_connector(name, {"connector.class": "FileStreamSource", "tasks.max": "1", "file": str(src),
                              "topic": topic, "exactly.once.support": "required"})
    w.wait_running(name)
    got = read_topic(broker.bootstrap, topic, "read_committed", lines[-1], worker=w)
    assert got == lines, f"first copy: {len(got)} records for {n} lines\n{w.tail()}"

    status, body = w.rest("PUT", f"/connectors/{name}/stop")
    assert status == 204, f"PUT /connectors/{name}/stop: {status} {body}\n{w.tail()}"
    deadline = time.monotonic() + 60
    while True:
        status, body = w.rest("GET", f"/connectors/{name}/status")
        if status == 200 and body["connector"]["state"] == "STOPPED" and not body["tasks"]:
            break
        assert time.monotonic() < deadline, f"connector not STOPPED: {status} {body}\n{w.tail()}"
        time.sleep(0.3)
    status, body = w.rest("DELETE", f"/connectors/{name}/offsets", timeout=60)
    assert status == 200, f"DELETE /connectors/{name}/offsets: {status} {body}\n{w.tail()}"
    assert f"Finished fencing out 1 task producers for source connector {name}" in w.log_path.read_text(), \
        f"no zombie fencing (Admin.fenceProducers) before the offsets were reset\n{w.tail()}"
    status, body = w.rest("PUT", f"/connectors/{name}/resume")
    assert status == 202, f"PUT /connectors/{name}/resume: {status} {body}\n{w.tail()}"
    got = read_topic(broker.bootstrap, topic, "read_committed", lines[-1], times=2, worker=w)
    assert got == lines + lines, \
        f"after the reset: {len(got)} records for {2 * n} ({len(set(got))} distinct)\n{w.tail()}"
