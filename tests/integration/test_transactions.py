"""Transactions (issue 13): transactional producers, read_committed consumers, offsets in transactions,
fencing, Kafka's transactions tool, and a restart in the middle of a transaction.

Every expectation is what Kafka 4.4 does (RINGTIDE_TEST_TARGET=kafka runs the same file against it),
except the restart test, which is Ringtide's (it kills the broker with SIGKILL).
"""

import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from conftest import KAFKA_RUN, TARGET, create_topic, run_kafka_tool

HERE = Path(__file__).resolve().parent


def uid():
    return uuid.uuid4().hex[:8]


def txn_producer(bootstrap, txn_id, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "transaction.timeout.ms": 60000,
        "linger.ms": 5,
    }
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(30)
    return p


def read_all(bootstrap, topic, partitions, isolation, timeout=30, expect=None):
    """Every record of the topic from offset 0 with the given isolation level: {partition: [values]}.
    Reads until `expect` records arrived (if given) and then until the end offsets the consumer sees."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{uid()}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "auto.offset.reset": "earliest",
    })
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + timeout
    idle_since = None
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                n = sum(len(v) for v in got.values())
                if expect is None or n >= expect:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 1.5:
                        break
                continue
            idle_since = None
            if m.error():
                continue
            got[m.partition()].append(m.value().decode())
    finally:
        c.close()
    return got


@pytest.fixture(scope="module")
def topic(broker):
    name = f"txn-{uid()}"
    create_topic(broker.bootstrap, name, 3)
    return name


def test_commit_and_abort_interleaved(broker, topic):
    """Committed transactions are seen by read_committed, aborted ones are not; read_uncommitted sees
    both. Two producers interleave their transactions over three partitions."""
    a = txn_producer(broker.bootstrap, f"tx-a-{uid()}")
    b = txn_producer(broker.bootstrap, f"tx-b-{uid()}")
    committed, aborted = [], []
    for round_ in range(6):
        a.begin_transaction()
        b.begin_transaction()
        for i in range(10):
            for prod, name in ((a, "a"), (b, "b")):
                v = f"{name}-{round_}-{i}"
                prod.produce(topic, value=v, partition=i % 3)
        a.flush(30)
        b.flush(30)
        if round_ % 2 == 0:
            a.commit_transaction(30)
            b.abort_transaction(30)
            committed += [f"a-{round_}-{i}" for i in range(10)]
            aborted += [f"b-{round_}-{i}" for i in range(10)]
        else:
            b.commit_transaction(30)
            a.abort_transaction(30)
            committed += [f"b-{round_}-{i}" for i in range(10)]
            aborted += [f"a-{round_}-{i}" for i in range(10)]
    rc = read_all(broker.bootstrap, topic, 3, "read_committed", expect=len(committed))
    seen = sorted(v for vs in rc.values() for v in vs)
    assert seen == sorted(committed)
    # Each partition keeps the producers' order.
    for p, vs in rc.items():
        for name in "ab":
            mine = [v for v in vs if v.startswith(name + "-")]
            assert mine == sorted(mine, key=lambda v: (int(v.split("-")[1]), int(v.split("-")[2])))
    ru = read_all(broker.bootstrap, topic, 3, "read_uncommitted", expect=len(committed) + len(aborted))
    assert sorted(v for vs in ru.values() for v in vs) == sorted(committed + aborted)


def test_open_transaction_holds_back_read_committed(broker):
    """Records of an open transaction are invisible to read_committed, and so is everything after them
    (the last stable offset), until the transaction commits."""
    name = f"txn-lso-{uid()}"
    create_topic(broker.bootstrap, name, 1)
    tx = txn_producer(broker.bootstrap, f"tx-open-{uid()}")
    plain = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    tx.begin_transaction()
    tx.produce(name, value="in-txn")
    tx.flush(30)
    plain.produce(name, value="after")
    plain.flush(30)
    rc = read_all(broker.bootstrap, name, 1, "read_committed", timeout=4)
    assert rc == {0: []}
    ru = read_all(broker.bootstrap, name, 1, "read_uncommitted", expect=2)
    assert ru == {0: ["in-txn", "after"]}
    tx.commit_transaction(30)
    rc = read_all(broker.bootstrap, name, 1, "read_committed", expect=2)
    assert rc == {0: ["in-txn", "after"]}


def test_zombie_is_fenced(broker, topic):
    """A second producer with the same transactional id fences the first: the first one's commit fails,
    its open transaction is aborted, and the new one's records are committed."""
    txn_id = f"tx-zombie-{uid()}"
    name = f"txn-z-{uid()}"
    create_topic(broker.bootstrap, name, 1)
    old = txn_producer(broker.bootstrap, txn_id)
    old.begin_transaction()
    old.produce(name, value="zombie")
    old.flush(30)
    new = txn_producer(broker.bootstrap, txn_id)
    with pytest.raises(KafkaException) as e:
        old.commit_transaction(30)
    assert e.value.args[0].fatal() or "fenced" in str(e.value).lower()
    new.begin_transaction()
    new.produce(name, value="new")
    new.commit_transaction(30)
    rc = read_all(broker.bootstrap, name, 1, "read_committed", expect=1)
    assert rc == {0: ["new"]}


def test_offsets_in_a_transaction(broker, topic):
    """send_offsets_to_transaction: the group's offsets become committed with the transaction, and an
    aborted transaction's offsets never do."""
    group = f"txn-group-{uid()}"
    name = f"txn-o-{uid()}"
    create_topic(broker.bootstrap, name, 1)
    src = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(20):
        src.produce(name, value=str(i))
    src.flush(30)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    c.subscribe([name])
    msgs = []
    deadline = time.monotonic() + 30
    while len(msgs) < 20 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            msgs.append(m)
    assert len(msgs) == 20
    tx = txn_producer(broker.bootstrap, f"tx-off-{uid()}")
    tx.begin_transaction()
    tx.produce(topic, value="x", partition=0)
    tx.send_offsets_to_transaction([TopicPartition(name, 0, 10)], c.consumer_group_metadata(), 30)
    tx.abort_transaction(30)
    assert c.committed([TopicPartition(name, 0)], 30)[0].offset < 0
    tx.begin_transaction()
    tx.produce(topic, value="y", partition=0)
    tx.send_offsets_to_transaction([TopicPartition(name, 0, 20)], c.consumer_group_metadata(), 30)
    tx.commit_transaction(30)
    assert c.committed([TopicPartition(name, 0)], 30)[0].offset == 20
    c.close()


def test_java_transactions_and_tools(broker, topic):
    """The Java client: interleaved commits and aborts read back with read_committed; a zombie instance
    is fenced (ProducerFencedException); kafka-transactions lists and describes the ids."""
    name = f"txn-j-{uid()}"
    create_topic(broker.bootstrap, name, 2)
    txn_id = f"tx-java-{uid()}"
    p = subprocess.run([str(KAFKA_RUN), str(HERE / "TxnClient.java"), broker.bootstrap, name, txn_id],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    lines = dict(line.split("=", 1) for line in p.stdout.split() if "=" in line)
    assert lines["committed_read"] == lines["committed_sent"], p.stdout
    assert lines["fenced"] == "true", p.stdout
    listed = run_kafka_tool("org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server",
                            broker.bootstrap, "list").stdout
    assert txn_id in listed, listed
    described = run_kafka_tool("org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server",
                               broker.bootstrap, "describe", "--transactional-id", txn_id).stdout
    assert "CompleteCommit" in described or "Empty" in described or "CompleteAbort" in described, described


@pytest.mark.skipif(TARGET == "kafka", reason="kills the broker with SIGKILL")
def test_restart_in_the_middle_of_a_transaction(fresh_broker):
    """kill -9 with one transaction committed and one open: after the restart the committed records are
    there, and a new producer instance of the open one's id aborts it (read_committed never sees it)."""
    import signal
    broker = fresh_broker
    name = f"txn-r-{uid()}"
    create_topic(broker.bootstrap, name, 2)
    done = txn_producer(broker.bootstrap, f"tx-done-{uid()}")
    done.begin_transaction()
    for i in range(10):
        done.produce(name, value=f"c{i}", partition=i % 2)
    done.commit_transaction(30)
    open_id = f"tx-open-{uid()}"
    pending = txn_producer(broker.bootstrap, open_id)
    pending.begin_transaction()
    for i in range(10):
        pending.produce(name, value=f"o{i}", partition=i % 2)
    pending.flush(30)
    broker.restart(sig=signal.SIGKILL)
    again = txn_producer(broker.bootstrap, open_id)
    again.begin_transaction()
    again.produce(name, value="n0", partition=0)
    again.commit_transaction(30)
    rc = read_all(broker.bootstrap, name, 2, "read_committed", expect=11)
    assert sorted(v for vs in rc.values() for v in vs) == sorted([f"c{i}" for i in range(10)] + ["n0"])
