"""Fixtures for ringtide's integration tests.

Every test talks to a REAL broker process over TCP on 127.0.0.1.  Which
broker is chosen by the environment variable RINGTIDE_TEST_TARGET:

  ringtide (default)  target/release/ringtide, built by `cargo build --release`
  kafka               Apache Kafka (KRaft, combined broker+controller) from the
                      jars that tests/run downloads; used to prove that the
                      tests themselves are right.

Fixtures:
  broker        module-scoped running broker (a Broker object; str() of it and
                .bootstrap are "127.0.0.1:PORT")
  bootstrap     the bootstrap string of `broker`
  fresh_broker  function-scoped broker, for tests that stop/restart it
  kafka_run     helper running Kafka's Java CLI tools (tests/kafka/kafka-run)

Broker stdout/stderr go to a log file under $RINGTIDE_TEST_LOGS (default
target/integration-logs/); the tail of it is attached to the report of any
failing test that used the broker.
"""

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
KAFKA_RUN = TESTS / "kafka" / "kafka-run"
TARGET = os.environ.get("RINGTIDE_TEST_TARGET", "ringtide")
LOG_DIR = Path(os.environ.get("RINGTIDE_TEST_LOGS", REPO / "target" / "integration-logs"))
START_TIMEOUT = float(os.environ.get("RINGTIDE_START_TIMEOUT", "60" if TARGET == "kafka" else "30"))

if TARGET not in ("ringtide", "kafka"):
    raise pytest.UsageError(f"RINGTIDE_TEST_TARGET must be 'ringtide' or 'kafka', not {TARGET!r}")


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_groups: test uses consumer groups (group coordinator)")
    config.addinivalue_line("markers", "kafka_only: test only meaningful against real Kafka")


def pytest_report_header(config):
    return [f"ringtide target: {TARGET}", f"broker logs: {LOG_DIR}"]


# --------------------------------------------------------------------------
# helpers


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kafka_home():
    """Directory with libs/ holding the Kafka jars (same rule as kafka-run)."""
    if os.environ.get("KAFKA_HOME"):
        return Path(os.environ["KAFKA_HOME"])
    cache = Path(os.environ.get("RINGTIDE_CACHE", Path.home() / ".cache" / "ringtide"))
    home = cache / f"kafka-{os.environ.get('KAFKA_VERSION', '4.4.0')}"
    if not (home / "libs" / ".complete").exists():
        cands = sorted((p for p in cache.glob("kafka-4.*") if (p / "libs" / ".complete").exists()), key=lambda p: [int(x) if x.isdigit() else x for x in p.name[6:].split(".")])
        if cands:
            home = cands[-1]
    return home


def kafka_cluster_id():
    """A cluster id like Kafka's Uuid.randomUuid(): base64url, never starting with '-' (the storage
    tool's argument parser would take that for an option)."""
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return cluster_id


def wait_for(cond, timeout, interval=0.05, what="condition"):
    """Poll cond() until truthy; return its value or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run_kafka_tool(cls, *args, input=None, timeout=180, check=True):
    """Run a Kafka Java CLI tool; returns CompletedProcess (text)."""
    cmd = [str(KAFKA_RUN), cls, *map(str, args)]
    io = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **io)
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {p.returncode}\n--- stdout ---\n{p.stdout[-4000:]}\n--- stderr ---\n{p.stderr[-4000:]}"
        )
    return p


def create_topic(bootstrap, name, partitions=1, config=None, timeout=30):
    """Create a topic with the admin API and wait until metadata shows every
    partition with a leader."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                        config=config or {})])[name]
    fut.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(topic=name, timeout=5).topics.get(name)
        if md is not None and md.error is None and len(md.partitions) == partitions and \
                all(p.leader >= 0 for p in md.partitions.values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} not ready: {md}")
        time.sleep(0.1)


def consume_all(bootstrap, topic, partitions, expected_counts=None, timeout=120):
    """Read every partition of `topic` from offset 0 up to its high watermark
    with a manually assigned confluent-kafka consumer (no group is joined).
    If expected_counts {partition: n} is given, the high watermarks must
    equal it.  Returns {partition: [Message, ...]}."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
    # confluent-kafka refuses to create a consumer without group.id, but with
    # assign() + explicit offsets + no commits the group is never joined and
    # no offsets are fetched or committed.
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"unused-{topic}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.wait.max.ms": 100,
        "enable.partition.eof": True,
    })
    try:
        hw = {}
        deadline = time.monotonic() + timeout
        for p in range(partitions):
            while True:  # retriable errors (e.g. NOT_LEADER right after a restart) are retried
                try:
                    lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    break
                except KafkaException as e:
                    err = e.args[0]
                    retriable = err.retriable() or err.code() in (
                        KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                        KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
                        KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_LEADER_OR_FOLLOWER
                        if hasattr(KafkaError, "NOT_LEADER_OR_FOLLOWER") else KafkaError.LEADER_NOT_AVAILABLE)
                    if not retriable or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            assert lo == 0, f"partition {p} low watermark {lo}"
            if expected_counts is not None:
                assert hi == expected_counts.get(p, 0), f"partition {p} high watermark {hi} != {expected_counts.get(p, 0)}"
            hw[p] = hi
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got = {p: [] for p in range(partitions)}
        done = {p for p in range(partitions) if hw[p] == 0}
        while len(done) < partitions:
            assert time.monotonic() < deadline, f"timed out; got {[len(v) for v in got.values()]} of {hw}"
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        if len(got[m.partition()]) >= hw[m.partition()]:
                            done.add(m.partition())
                        continue
                    raise AssertionError(f"consumer error: {m.error()}")
                got[m.partition()].append(m)
                if len(got[m.partition()]) >= hw[m.partition()]:
                    done.add(m.partition())
        return got
    finally:
        c.close()


# --------------------------------------------------------------------------
# the broker process


class Broker:
    """A broker process on 127.0.0.1:port with its own data dir.

    start()/stop(sig)/restart(sig) keep the same port and data dir, so data
    written before a restart must be there after it.
    """

    _seq = 0

    def __init__(self, name, kind=None, port=None, config=None, controller_port=None,
                 cluster_id=None):
        """kind: "ringtide" or "kafka" (default: the test target); port: the client port (default: a
        free one); config: broker config keys (Kafka's names) set at start on either kind;
        controller_port: Kafka's KRaft controller port (default: a free one). A Kafka config with
        `controller.quorum.voters` is a member of a static multi-node quorum, formatted with
        cluster_id (all members of one quorum share it; see test_cluster.py)."""
        Broker._seq += 1
        self.config = dict(config or {})
        self.name = name
        self.kind = kind or TARGET
        self.port = port or free_port()
        self.controller_port = (controller_port or free_port()) if self.kind == "kafka" else None
        self.cluster_id = cluster_id
        # ringtide's admin HTTP listener (/metrics, /v1/status); its own port so brokers never clash
        self.admin_port = free_port() if self.kind != "kafka" else None
        self.tmp = Path(tempfile.mkdtemp(prefix=f"ringtide-it-{name}-"))
        self.data_dir = self.tmp / "data"
        self.data_dir.mkdir()
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}-{os.getpid()}-{Broker._seq}.log"
        self.proc = None
        self.last_exit_code = None  # exit code of the last stop()
        self.starts = 0
        self._log = None
        if self.kind == "kafka":
            self._kafka_prepare()

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def __str__(self):
        return self.bootstrap

    # -- kafka target ------------------------------------------------------
    def _kafka_prepare(self):
        home = kafka_home()
        if not (home / "libs" / ".complete").exists():
            pytest.fail(f"Kafka jars missing in {home}/libs; run tests/run (it downloads them)")
        self.kafka_home = home
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "auto.create.topics.enable": "true",
            **self.config,
        }
        static_quorum = "controller.quorum.voters" in props
        if static_quorum:
            del props["controller.quorum.bootstrap.servers"]
        self.config_path = self.tmp / "server.properties"
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        cluster_id = self.cluster_id or kafka_cluster_id()
        p = subprocess.run(
            [str(KAFKA_RUN), "kafka.tools.StorageTool", "format", "-t", cluster_id,
             "-c", str(self.config_path), *([] if static_quorum else ["--standalone"])],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
            env={**os.environ, "KAFKA_HOME": str(home)},
        )
        with open(self.log_path, "a") as f:
            f.write(f"=== kafka-storage format (rc={p.returncode})\n{p.stdout}{p.stderr}\n")
        if p.returncode != 0:
            pytest.fail(f"kafka-storage format failed:\n{p.stdout}\n{p.stderr}")

    def _command(self):
        if self.kind == "kafka":
            return [
                "java", "-Xmx1G", "-Xms256M", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={TESTS / 'kafka' / 'log4j2-server.properties'}",
                "-cp", str(self.kafka_home / "libs" / "*"),
                "kafka.Kafka", str(self.config_path),
            ]
        binary = Path(os.environ.get("RINGTIDE_BIN", REPO / "target" / "release" / "ringtide"))
        if not binary.exists():
            pytest.fail(f"{binary} does not exist: run `cargo build --release` (tests/run does)")
        return [
            str(binary),
            "--override", f"listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "--override", f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "--override", f"log.dirs={self.data_dir}",
            "--override", "ringtide.cores=2",
            "--override", f"ringtide.admin.listener=127.0.0.1:{self.admin_port}",
            *[a for k, v in self.config.items() for a in ("--override", f"{k}={v}")],
        ]

    # -- lifecycle ---------------------------------------------------------
    def start(self):
        self.spawn()
        return self.wait_ready(time.monotonic() + START_TIMEOUT)

    def spawn(self):
        """Start the process without waiting for it to serve (a KRaft quorum member cannot serve
        before a majority of its quorum runs); wait_ready() waits."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        cmd = self._command()
        self._log = open(self.log_path, "ab", buffering=0)
        self._log.write(f"=== start #{self.starts}: {' '.join(cmd)}\n".encode())
        env = {**os.environ, "NO_COLOR": "1", "RUST_BACKTRACE": os.environ.get("RUST_BACKTRACE", "1")}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait_ready(self, deadline):
        while not port_open(self.port):
            if self.proc.poll() is not None:
                self._fail(f"broker exited with code {self.proc.returncode} during startup")
            if time.monotonic() > deadline:
                self._fail(f"broker did not accept connections on {self.bootstrap} in time")
            time.sleep(0.05)
        if self.kind == "kafka":
            self._wait_kafka_ready(deadline)
        return self

    def _wait_kafka_ready(self, deadline):
        # Kafka binds its port before the broker is registered/unfenced;
        # wait until metadata shows a broker.
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        while True:
            try:
                md = admin.list_topics(timeout=2)
                if md.brokers:
                    return
            except Exception:
                pass
            if self.proc.poll() is not None:
                self._fail(f"broker exited with code {self.proc.returncode} during startup")
            if time.monotonic() > deadline:
                self._fail("Kafka broker not ready (no brokers in metadata)")
            time.sleep(0.2)

    def _fail(self, msg):
        self.stop(signal.SIGKILL)
        pytest.fail(f"{msg}\n--- broker log {self.log_path} (tail) ---\n{self.log_tail()}", pytrace=False)

    def stop(self, sig=signal.SIGTERM, timeout=60, wait_port=True):
        """Stop the broker with `sig` (SIGTERM: clean shutdown; SIGKILL: crash). With wait_port (the
        default) return only once the port no longer accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
                if self._log:
                    self._log.write(f"=== did not exit within {timeout}s of signal {sig}; killed\n".encode())
        rc = self.proc.returncode if self.proc else None
        self.last_exit_code = rc
        if self._log:
            self._log.write(f"=== stopped with signal {int(sig)}, exit code {rc}\n".encode())
            self._log.close()
            self._log = None
        # the port must be free again before a restart on it
        if wait_port:
            wait_for(lambda: not port_open(self.port), 30, what=f"port {self.port} to close")

    def restart(self, sig=signal.SIGTERM):
        self.stop(sig)
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=80):
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def cleanup(self):
        self.stop(signal.SIGKILL)
        if os.environ.get("RINGTIDE_KEEP_DATA") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)


def _broker_fixture(request, name):
    b = Broker(name)
    request.node._ringtide_broker = b
    try:
        b.start()
        yield b
    finally:
        b.cleanup()


@pytest.fixture(scope="module")
def broker(request):
    yield from _broker_fixture(request, request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture
def fresh_broker(request):
    yield from _broker_fixture(request, request.node.name.replace("/", "_").replace("[", "_").replace("]", ""))


@pytest.fixture(autouse=True)
def _revive_dead_broker(request):
    """If the module's shared broker died during an earlier test (that test
    failed and got the log), start it again on the same port and data dir so
    one crash does not fail every later test in the module."""
    if "broker" in request.fixturenames:
        b = request.getfixturevalue("broker")
        if not b.alive():
            rc = b.proc.returncode if b.proc else None
            b.stop()
            with open(b.log_path, "a") as f:
                f.write(f"=== broker had died (exit code {rc}); restarting it for {request.node.nodeid}\n")
            b.start()
    yield


@pytest.fixture
def bootstrap(broker):
    return broker.bootstrap


@pytest.fixture(scope="session")
def kafka_run():
    if not (kafka_home() / "libs" / ".complete").exists():
        pytest.fail(f"Kafka jars missing in {kafka_home()}/libs; run tests/run (it downloads them)")
    return run_kafka_tool


@pytest.fixture
def topic_name(request):
    """A unique topic name for the current test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60].strip("-")
    return f"{base}-{uuid.uuid4().hex[:6]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        brokers = []
        for fixname in ("broker", "fresh_broker"):
            if fixname in item.fixturenames:
                b = item.funcargs.get(fixname) if hasattr(item, "funcargs") else None
                if isinstance(b, Broker):
                    brokers.append(b)
        c = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
        for n, b in getattr(c, "brokers", {}).items():  # test_cluster.py's brokers
            brokers.append(b)
        for b in brokers:
            state = "running" if b.alive() else f"NOT running (exit code {b.proc.returncode if b.proc else None})"
            rep.sections.append((f"broker log {b.log_path} [{state}]", b.log_tail(120)))
