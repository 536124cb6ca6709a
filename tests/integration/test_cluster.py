"""Three brokers as one cluster (issue 14).

ringtide target: a real ZooKeeper (Debian's package, started here on a free port) and three Ringtide
brokers with `zookeeper.connect` (under a chroot) and `node.id` 1..3.
kafka target: three Kafka 4.4 nodes in KRaft (combined broker+controller, a static quorum of the three);
Kafka has no ZooKeeper mode any more, so the tests that look into ZooKeeper are Ringtide's own.

Clients bootstrap from ONE broker and must find the others through metadata. Every topic has
replication factor 1: a partition lives on one broker (replication is the next issue).
"""

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import (LOG_DIR, TARGET, Broker, consume_all, create_topic, free_port, kafka_cluster_id,
                      port_open, wait_for)
from test_seed_kafka_python import LINE, finish, run_seed, start_seed

ZK_CLASSPATH = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar"
CHROOT = "/ringtide-it"
SIZE = 3
CONSUMER_GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
SESSION_MS = 6000  # zookeeper.session.timeout.ms of the Ringtide brokers (Kafka's default is 18000)

ringtide_only = pytest.mark.skipif(TARGET != "ringtide", reason="looks into ZooKeeper; Kafka 4.4 has none")


class ZooKeeper:
    """A standalone ZooKeeper server on 127.0.0.1:port with its own data dir; stop()/start() keep both."""

    def __init__(self, name):
        if not Path("/usr/share/java/zookeeper.jar").exists():
            pytest.fail("ZooKeeper is not installed (/usr/share/java/zookeeper.jar): run tests/run, "
                        "which installs Debian's zookeeper package")
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"ringtide-it-zk-{name}-"))
        self.cfg = self.tmp / "zoo.cfg"
        # tickTime 500 ms: sessions from 1 s to 10 s are allowed, so the brokers' 6 s is granted as asked
        self.cfg.write_text(f"tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={self.tmp / 'data'}\n"
                            f"clientPort={self.port}\nclientPortAddress=127.0.0.1\n"
                            "admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr\n")
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-zookeeper-{name}-{os.getpid()}.log"
        self.proc = None

    @property
    def connect(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=60):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["java", "-Xmx256m", "-cp", ZK_CLASSPATH, "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                 str(self.cfg)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        wait_for(lambda: port_open(self.port) or self.proc.poll() is not None, timeout, what="ZooKeeper's port")
        assert self.proc.poll() is None, f"ZooKeeper exited ({self.proc.returncode}); log {self.log_path}"
        return self

    def stop(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=60)
        wait_for(lambda: not port_open(self.port), 30, what="ZooKeeper's port to close")

    def cleanup(self):
        self.stop()
        if os.environ.get("RINGTIDE_KEEP_DATA") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)


class Cluster:
    """SIZE brokers with node ids 1..SIZE (and, for Ringtide, their ZooKeeper)."""

    def __init__(self, name):
        self.zk = ZooKeeper(name) if TARGET == "ringtide" else None
        self.brokers = {}
        if TARGET == "kafka":
            cports = {n: free_port() for n in range(1, SIZE + 1)}
            voters = ",".join(f"{n}@127.0.0.1:{p}" for n, p in cports.items())
            cid = kafka_cluster_id()
            for n in cports:
                self.brokers[n] = Broker(f"{name}-{n}", controller_port=cports[n], cluster_id=cid, config={
                    "node.id": n, "controller.quorum.voters": voters})
        else:
            for n in range(1, SIZE + 1):
                self.brokers[n] = Broker(f"{name}-{n}", config={
                    "node.id": n,
                    "zookeeper.connect": f"{self.zk.connect}{CHROOT}",
                    "zookeeper.session.timeout.ms": SESSION_MS,
                })

    @property
    def ids(self):
        return set(self.brokers)

    def bootstrap(self, n=1):
        """One broker's address: clients must learn the others from it."""
        return self.brokers[n].bootstrap

    def start(self):
        if self.zk:
            self.zk.start()
        for b in self.brokers.values():
            b.spawn()
        deadline = time.monotonic() + 120
        for b in self.brokers.values():
            b.wait_ready(deadline)
        self.wait_converged(self.ids)
        return self

    def live(self):
        return {n: b for n, b in self.brokers.items() if b.alive()}

    def wait_converged(self, ids, timeout=90):
        """Every live broker's Metadata lists exactly `ids`."""
        def ok():
            return all(metadata(b.bootstrap)[0] == ids for b in self.live().values())
        wait_for(ok, timeout, interval=0.2, what=f"every broker to list brokers {sorted(ids)}")

    def cleanup(self):
        for b in self.brokers.values():
            b.cleanup()
        if self.zk:
            self.zk.cleanup()


@pytest.fixture(scope="module")
def cluster(request):
    c = Cluster("cluster")
    try:
        c.start()
        yield c
    finally:
        c.cleanup()


# -------------------------------------------------------------------------- helpers

def admin(bootstrap):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap})


def metadata(bootstrap, topic=None):
    """(broker ids, {topic: {partition: leader}}) as one broker answers Metadata."""
    try:
        md = admin(bootstrap).list_topics(topic=topic, timeout=5)
    except Exception:
        return set(), {}
    topics = {name: {p: pm.leader for p, pm in t.partitions.items()}
              for name, t in md.topics.items() if t.error is None or t.partitions}
    return set(md.brokers), topics


def leaders(bootstrap, topic):
    return metadata(bootstrap, topic)[1].get(topic, {})


def controller_id(c, via):
    """The active controller, asked of live broker `via`: Ringtide's /v1/status (the /controller znode
    as that broker sees it); Kafka's KRaft quorum leader (kafka-metadata-quorum). Clients cannot tell:
    librdkafka's DescribeCluster reads Metadata, whose controller is any live broker, on both."""
    if TARGET == "ringtide":
        return status(c.brokers[via])["cluster"]["controller_id"]
    from conftest import run_kafka_tool
    out = run_kafka_tool("org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-server",
                         c.bootstrap(via), "describe", "--status", timeout=60).stdout
    return int(re.search(r"LeaderId:\s+(-?\d+)", out).group(1))


def produce(bootstrap, topic, partitions, n, prefix="v"):
    """n idempotent acks=all records, spread round-robin; returns {partition: count acknowledged}."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    acked, errors = {}, []

    def done(err, m):
        if err is not None:
            errors.append(err)
        else:
            acked[m.partition()] = acked.get(m.partition(), 0) + 1
    for i in range(n):
        p.produce(topic, value=f"{prefix}-{i}".encode(), partition=i % partitions, on_delivery=done)
        p.poll(0)
    assert p.flush(60) == 0, "records still unacknowledged after 60 s"
    assert not errors, errors[:5]
    return acked


def check_read_back(bootstrap, topic, partitions, acked, prefix="v"):
    got = consume_all(bootstrap, topic, partitions, expected_counts=acked)
    for p, msgs in got.items():
        want = [f"{prefix}-{i}".encode() for i in range(p, sum(acked.values()), partitions)]
        assert [m.value() for m in msgs] == want, f"partition {p}"
        assert [m.offset() for m in msgs] == list(range(len(want)))


def status(b):
    with urllib.request.urlopen(f"http://127.0.0.1:{b.admin_port}/v1/status", timeout=5) as r:
        return json.load(r)


def metric(b, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{b.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def coordinator_partition(group, partitions):
    """Kafka's partitionFor: Utils.abs(groupId.hashCode()) % partitions (Java's String.hashCode; abs of
    Integer.MIN_VALUE is 0)."""
    h = 0
    for unit in struct.unpack(f">{len(group.encode('utf-16-be')) // 2}H", group.encode("utf-16-be")):
        h = (31 * h + unit) & 0xFFFFFFFF
    h = h - (1 << 32) if h >= 1 << 31 else h
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def group_on_another_broker(c, prefix, not_on):
    """A group id whose coordinator (leader of its __consumer_offsets partition) is not broker `not_on`."""
    ensure_offsets_topic(c.bootstrap())
    offsets = wait_for(lambda: len(leaders(c.bootstrap(), "__consumer_offsets")) > 0 and
                       all(v >= 0 for v in leaders(c.bootstrap(), "__consumer_offsets").values()) and
                       leaders(c.bootstrap(), "__consumer_offsets"), 60, interval=0.2,
                       what="__consumer_offsets")
    for i in range(1000):
        g = f"{prefix}-{i}"
        if offsets[coordinator_partition(g, len(offsets))] != not_on:
            return g
    raise AssertionError("no group id found")


def ensure_offsets_topic(bootstrap):
    """A FindCoordinator for a group makes __consumer_offsets exist."""
    def found():
        try:
            return group_coordinator(bootstrap, "offsets-probe") >= 0
        except Exception:
            return False
    wait_for(found, 60, interval=0.5, what="a group coordinator")


def group_coordinator(bootstrap, group):
    a = admin(bootstrap)  # held until the answer: a destroyed client never completes its futures
    return a.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15).coordinator.id


# -------------------------------------------------------------------------- tests

def test_every_broker_lists_the_cluster_and_partitions_spread(cluster, topic_name):
    """A 12-partition topic created through broker 1 has leaders on all three brokers; every broker
    answers Metadata the same; records produced through one bootstrap reach every leader and come back."""
    create_topic(cluster.bootstrap(1), topic_name, 12)
    want = leaders(cluster.bootstrap(1), topic_name)
    assert set(want.values()) == cluster.ids, want
    for n, b in cluster.brokers.items():
        wait_for(lambda: metadata(b.bootstrap, topic_name) == (cluster.ids, {topic_name: want}), 30,
                 what=f"broker {n}'s metadata to match broker 1's")
    acked = produce(cluster.bootstrap(2), topic_name, 12, 1200)
    assert acked == {p: 100 for p in range(12)}
    check_read_back(cluster.bootstrap(3), topic_name, 12, acked)


def test_a_partition_led_elsewhere_is_refused_with_not_leader(cluster, topic_name):
    """A Produce sent straight to a broker that does not lead the partition gets NOT_LEADER_OR_FOLLOWER (6)."""
    import prodraw
    from test_protocol_errors import connect
    create_topic(cluster.bootstrap(1), topic_name, 3)
    lead = leaders(cluster.bootstrap(1), topic_name)
    for p, leader in lead.items():
        for n, b in cluster.brokers.items():
            with connect(b) as s:
                r = prodraw.one(s, 8, topic_name, p, prodraw.batch(2))
            if n == leader:
                assert r["error"] == 0, (p, n, r)
            else:
                assert r["error"] == 6, (p, n, r)


def test_seed_examples(cluster):
    """The seed's kafka-python examples (producer/consumer on `test`, the `adder` example), bootstrapped
    from one broker of the cluster."""
    bs = cluster.bootstrap(2)
    run_seed(bs, "producer.py")
    out = run_seed(bs, "consumer.py")
    assert len([line for line in out.splitlines() if line.strip()]) == 5, out

    assert "created adder" in run_seed(bs, "create_topic.py", "adder", "2")
    out = run_seed(bs, "producer_adder.py")
    assert out.strip().splitlines()[0] == "{0, 1}", out
    procs = {n: start_seed(bs, "consumer_adder.py", str(n)) for n in (0, 1)}
    outs = {n: finish(p, f"consumer_adder.py {n}") for n, p in procs.items()}
    total = 0
    for n, out in outs.items():
        lines = out.splitlines()
        assert lines[0] == "{0, 1}", out[:500]
        for line in lines[1:]:
            m = LINE.match(line)
            assert m and m.group(1) == f"adder-{n}", line
            total += 1
    assert total == 10000, total


def test_console_tools(cluster, kafka_run, topic_name):
    """kafka-console-producer through broker 3, kafka-console-consumer (a group) through broker 1."""
    create_topic(cluster.bootstrap(1), topic_name, 6)
    lines = [f"line {i}" for i in range(300)]
    kafka_run("console-producer", "--bootstrap-server", cluster.bootstrap(3), "--topic", topic_name,
              input="\n".join(lines) + "\n")
    p = kafka_run("console-consumer", "--bootstrap-server", cluster.bootstrap(1), "--topic", topic_name,
                  "--from-beginning", "--max-messages", "300", "--timeout-ms", "60000",
                  "--group", f"{topic_name}-console")
    assert sorted(line for line in p.stdout.splitlines() if line.strip()) == sorted(lines)


@ringtide_only
def test_seed_kazoo_snippet_lists_topics(cluster):
    """The seed's kazoo snippet: KazooClient(...).get_children('/config/topics') lists the topics, and the
    znodes hold Kafka 2.x's JSON."""
    from kazoo.client import KazooClient
    existing = metadata(cluster.bootstrap(1))[1]
    if "adder" not in existing:  # when run alone; test_seed_examples creates both
        create_topic(cluster.bootstrap(1), "adder", 2)
    if "test" not in existing:
        run_seed(cluster.bootstrap(1), "producer.py")
    ensure_offsets_topic(cluster.bootstrap(1))
    zk = KazooClient(hosts=f"{cluster.zk.connect}{CHROOT}")
    zk.start(timeout=15)
    try:
        topics = wait_for(lambda: (lambda t: {"adder", "test", "__consumer_offsets"} <= set(t) and t)(
            zk.get_children("/config/topics")), 30, what="/config/topics")
        assert {"adder", "test", "__consumer_offsets"} <= set(topics), topics
        assert sorted(zk.get_children("/brokers/ids"), key=int) == ["1", "2", "3"]
        reg = json.loads(zk.get("/brokers/ids/2")[0])
        assert reg["port"] == cluster.brokers[2].port and reg["host"] == "127.0.0.1"
        assert f"PLAINTEXT://127.0.0.1:{cluster.brokers[2].port}" in reg["endpoints"]
        ctl = json.loads(zk.get("/controller")[0])
        assert ctl["brokerid"] in (1, 2, 3)
        assert ctl["brokerid"] == controller_id(cluster, via=3)
        assert int(zk.get("/controller_epoch")[0]) >= 1
        assignment = json.loads(zk.get("/brokers/topics/adder")[0])
        assert set(assignment["partitions"]) == {"0", "1"} and assignment.get("topic_id")
        state = json.loads(zk.get("/brokers/topics/adder/partitions/0/state")[0])
        assert state["leader"] == assignment["partitions"]["0"][0] and state["isr"] == [state["leader"]]
        assert json.loads(zk.get("/config/topics/__consumer_offsets")[0])["config"]["cleanup.policy"] == "compact"
        assert zk.get("/cluster/id")[0]
    finally:
        zk.stop()
        zk.close()


def test_topics_describe_shows_leaders_on_every_broker(cluster, kafka_run, topic_name):
    kafka_run("topics", "--bootstrap-server", cluster.bootstrap(2), "--create", "--topic", topic_name,
              "--partitions", "6", "--replication-factor", "1")
    out = kafka_run("topics", "--bootstrap-server", cluster.bootstrap(1), "--describe", "--topic", topic_name).stdout
    lead = {int(p): int(l) for p, l in re.findall(r"Partition: (\d+)\s+Leader: (-?\d+)", out)}
    assert sorted(lead) == list(range(6)), out
    assert set(lead.values()) == cluster.ids, out


def test_configs_set_through_one_broker_are_seen_by_every_broker(cluster, kafka_run, topic_name):
    create_topic(cluster.bootstrap(1), topic_name, 3)
    kafka_run("configs", "--bootstrap-server", cluster.bootstrap(1), "--alter", "--entity-type", "topics",
              "--entity-name", topic_name, "--add-config", "retention.ms=3600000,max.message.bytes=2000000")
    for n, b in cluster.brokers.items():
        def seen():
            out = kafka_run("configs", "--bootstrap-server", b.bootstrap, "--describe", "--entity-type",
                            "topics", "--entity-name", topic_name).stdout
            return "retention.ms=3600000" in out and "max.message.bytes=2000000" in out
        wait_for(seen, 60, interval=0.5, what=f"broker {n} to show the new configs")
    # a record over the old 1 MB limit is taken by the partition leaders on every broker
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": cluster.bootstrap(3), "message.max.bytes": 1900000})
    errs = []
    for part in range(3):
        p.produce(topic_name, value=b"x" * 1500000, partition=part,
                  on_delivery=lambda e, m: errs.append(e) if e else None)
    assert p.flush(60) == 0 and not errs, errs


def test_consumer_groups_with_the_coordinator_on_another_broker(cluster, kafka_run, topic_name):
    """librdkafka and kafka-python groups bootstrapped from broker 1 whose coordinator is another broker:
    they consume everything, commit, and a restarted member resumes from the commits;
    kafka-consumer-groups lists and describes them through any broker."""
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions
    from kafka import KafkaConsumer
    create_topic(cluster.bootstrap(1), topic_name, 6)
    acked = produce(cluster.bootstrap(1), topic_name, 6, 600)
    total = sum(acked.values())
    g_rdk = group_on_another_broker(cluster, f"{topic_name}-rdk", not_on=1)
    g_py = group_on_another_broker(cluster, f"{topic_name}-py", not_on=1)

    def rdk_consume(n_expected, timeout=60):
        c = Consumer({"bootstrap.servers": cluster.bootstrap(1), "group.id": g_rdk,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic_name])
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n_expected and time.monotonic() < deadline:
            for m in c.consume(500, timeout=0.5):
                assert not m.error(), m.error()
                got.append(m.value())
        if got:
            c.commit(asynchronous=False)
        extra = [m for m in c.consume(500, timeout=2.0) if not m.error()]
        c.close()
        return got + [m.value() for m in extra]

    assert len(rdk_consume(total)) == total
    produce(cluster.bootstrap(1), topic_name, 6, 60, prefix="more")
    again = rdk_consume(60)
    assert sorted(again) == sorted(f"more-{i}".encode() for i in range(60)), again[:5]
    assert group_coordinator(cluster.bootstrap(1), g_rdk) != 1

    def py_consume():
        c = KafkaConsumer(topic_name, bootstrap_servers=cluster.bootstrap(1), group_id=g_py,
                          auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=8000)
        got = [m.value for m in c]
        c.commit()
        c.close()
        return got
    assert len(py_consume()) == total + 60
    assert py_consume() == []
    assert group_coordinator(cluster.bootstrap(2), g_py) != 1

    a = admin(cluster.bootstrap(3))
    committed = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g_py)])[g_py].result(timeout=15)
    assert sum(tp.offset for tp in committed.topic_partitions if tp.topic == topic_name) == total + 60

    for n in cluster.ids:
        out = kafka_run(CONSUMER_GROUPS, "--bootstrap-server", cluster.bootstrap(n), "--list").stdout.split()
        assert g_rdk in out and g_py in out, (n, out)
    out = kafka_run(CONSUMER_GROUPS, "--bootstrap-server", cluster.bootstrap(1), "--describe",
                    "--group", g_py).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith(g_py)]
    assert len(rows) == 6, out
    assert all(r[1] == topic_name and r[3] == r[4] and r[5] == "0" for r in rows), out  # offset == end, lag 0
    assert sum(int(r[3]) for r in rows) == total + 60


def test_controller_killed_another_takes_over(cluster, topic_name):
    """kill -9 of the controller's broker: within the session timeout another broker is the controller and
    topics can be created again; the killed broker's partitions are offline meanwhile and come back, with
    every record, when it restarts."""
    create_topic(cluster.bootstrap(1), topic_name, 6)
    acked = produce(cluster.bootstrap(1), topic_name, 6, 600)
    before = leaders(cluster.bootstrap(1), topic_name)
    victim = controller_id(cluster, via=1)
    survivors = sorted(cluster.ids - {victim})
    sbs = ",".join(cluster.bootstrap(n) for n in survivors)
    cluster.brokers[victim].stop(signal.SIGKILL)
    try:
        # Within the session timeout (+ slack for a loaded machine) a survivor is the controller and the
        # survivors no longer list the victim. (A topic created before that may be assigned to the victim,
        # as with Kafka: its registration or heartbeat outlives it until then.)
        wait_for(lambda: controller_id(cluster, via=survivors[0]) in survivors, SESSION_MS / 1000 + 30,
                 interval=0.5, what="a surviving controller")
        cluster.wait_converged(set(survivors))
        # a new topic can be created through the survivors
        from confluent_kafka.admin import NewTopic
        name = f"{topic_name}-after"
        deadline = time.monotonic() + 60
        while True:
            try:
                a = admin(sbs)
                a.create_topics([NewTopic(name, 4, 1)], request_timeout=10)[name].result(timeout=15)
                break
            except Exception as e:
                if "already exists" in str(e) or "TOPIC_ALREADY_EXISTS" in str(e):
                    break
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
        new = wait_for(lambda: (lambda m: len(m) == 4 and all(v in survivors for v in m.values()) and m)(
            leaders(sbs, f"{topic_name}-after")), 30, interval=0.2, what="the new topic's leaders")
        assert set(new.values()) <= set(survivors)
        acked_new = produce(sbs, f"{topic_name}-after", 4, 200)
        check_read_back(sbs, f"{topic_name}-after", 4, acked_new)
        # the victim's partitions have no leader while it is down (replication factor 1)
        lost = {p for p, leader in before.items() if leader == victim}
        assert lost
        now = leaders(sbs, topic_name)
        assert all(now[p] == -1 for p in lost), now
        assert all(now[p] == before[p] for p in before if p not in lost), now
    finally:
        cluster.brokers[victim].start()
    cluster.wait_converged(cluster.ids)
    wait_for(lambda: leaders(cluster.bootstrap(victim), topic_name) == before, 60, interval=0.2,
             what="the restarted broker to lead its partitions again")
    check_read_back(cluster.bootstrap(victim), topic_name, 6, acked)


@ringtide_only
def test_zookeeper_outage(cluster, topic_name):
    """ZooKeeper stops: every broker keeps serving the partitions it leads (acks=all produce, fetch), says
    so in /v1/status and /metrics; ZooKeeper restarts: brokers reconnect and the cluster converges (a topic
    created afterwards is served by every broker's view)."""
    create_topic(cluster.bootstrap(1), topic_name, 6)
    lead = leaders(cluster.bootstrap(1), topic_name)
    assert set(lead.values()) == cluster.ids
    cluster.zk.stop(signal.SIGKILL)
    try:
        for b in cluster.brokers.values():
            wait_for(lambda: not status(b)["cluster"]["zookeeper_connected"], 30, interval=0.2,
                     what="the broker to notice ZooKeeper is gone")
            assert metric(b, "ringtide_zookeeper_connected") == 0
        acked = produce(cluster.bootstrap(1), topic_name, 6, 600)
        check_read_back(cluster.bootstrap(2), topic_name, 6, acked)
        time.sleep(SESSION_MS / 1000 + 1)  # past the session timeout
        acked2 = produce(cluster.bootstrap(3), topic_name, 6, 60, prefix="late")
        assert acked2 == {p: 10 for p in range(6)}
        for b in cluster.brokers.values():
            assert b.alive()
            assert "ZooKeeper" in b.log_path.read_text(errors="replace")
    finally:
        cluster.zk.start()
    for b in cluster.brokers.values():
        wait_for(lambda: status(b)["cluster"]["zookeeper_connected"], 60, interval=0.2,
                 what="the broker to reconnect to ZooKeeper")
    cluster.wait_converged(cluster.ids)
    wait_for(lambda: sum(status(b)["cluster"]["is_controller"] for b in cluster.brokers.values()) == 1, 60,
             interval=0.2, what="exactly one controller")
    ctl = next(n for n, b in cluster.brokers.items() if status(b)["cluster"]["is_controller"])

    def converged(b):
        st = status(b)["cluster"]
        return st["controller_id"] == ctl and st["brokers"] == sorted(cluster.ids) and st["offline_partitions"] == 0
    for n, b in cluster.brokers.items():
        wait_for(lambda: converged(b), 60, interval=0.2,
                 what=f"broker {n}: controller {ctl}, every broker, no offline partition")
    assert metric(cluster.brokers[ctl], "kafka_controller_kafkacontroller_activecontrollercount") == 1
    assert metric(cluster.brokers[ctl], "kafka_controller_kafkacontroller_activebrokercount") == SIZE
    create_topic(cluster.bootstrap(2), f"{topic_name}-after", 6)
    for b in cluster.brokers.values():
        wait_for(lambda: (lambda m: len(m) == 6 and all(v in cluster.ids for v in m.values()))(
            leaders(b.bootstrap, f"{topic_name}-after")), 30, interval=0.2, what="the new topic everywhere")
    assert leaders(cluster.bootstrap(1), topic_name) == lead
    acked3 = produce(cluster.bootstrap(1), f"{topic_name}-after", 6, 120)
    check_read_back(cluster.bootstrap(3), f"{topic_name}-after", 6, acked3)
