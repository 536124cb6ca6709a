"""Transaction version 2 (KIP-890 part 2) on the wire, the protocol a Kafka 4.4 client gets from Kafka 4.4.

Raw requests (kafka-python's generated protocol classes), so that nothing depends on what a client library
decides for itself:
- ApiVersions finalizes `transaction.version` at level 2 (supported 0..2), which is what makes clients
  use transaction version 2;
- a transactional Produce v12 adds its partition to the transaction itself (no AddPartitionsToTxn);
- EndTxn v5 bumps the epoch on every commit and abort and answers the new one; a retry of the same EndTxn
  (the previous epoch) is answered NONE with the current epoch; the old epoch is fenced after that;
- TxnOffsetCommit v5 adds the group's offsets partition itself (no AddOffsetsToTxn);
- the Java client (TxnEpochs.java) commits with the epoch bumped by each transaction, seen through
  DescribeTransactions, and sends no AddPartitionsToTxn.
Every test passes against Kafka 4.4 too (RINGTIDE_TEST_TARGET=kafka).
"""

import os
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from kafka.protocol.admin import DescribeTransactionsRequest, DescribeTransactionsResponse
from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest, FindCoordinatorResponse
from kafka.protocol.producer import (
    EndTxnRequest,
    EndTxnResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
    ProduceRequest,
    ProduceResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
)
from kafka.record.memory_records import MemoryRecordsBuilder

from conftest import KAFKA_RUN, TARGET, create_topic
from test_protocol_errors import connect, recv_frame

HERE = Path(__file__).parent

NONE = 0
PRODUCER_FENCED = 90
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
RETRIABLE_COORDINATOR = (14, 15, 16)  # COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
CONCURRENT_TRANSACTIONS = 51


def uid():
    return uuid.uuid4().hex[:8]


class Conn:
    """One connection sending kafka-python protocol objects and decoding their answers."""

    def __init__(self, broker):
        self.sock = connect(broker)
        self.corr = 0

    def call(self, req, resp_cls, version):
        self.corr += 1
        req.API_VERSION = version
        req.with_header(correlation_id=self.corr, client_id="ringtide-it")
        data = req.encode(version=version, header=True)
        self.sock.sendall(struct.pack(">i", len(data)) + data)
        resp = resp_cls.decode(recv_frame(self.sock), version=version, header=True)
        return resp

    def close(self):
        self.sock.close()


def txn_batch(producer_id, epoch, base_sequence, value):
    b = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 16, transactional=True,
                             producer_id=producer_id, producer_epoch=epoch, base_sequence=base_sequence)
    b.append(int(time.time() * 1000), b"k", value, headers=[])
    b.close()
    return bytes(b.buffer())


def init_producer_id(conn, txn_id, timeout=60):
    """FindCoordinator (key type 1, which creates __transaction_state) and InitProducerId, retried while
    the coordinator is loading; returns (producer id, epoch)."""
    deadline = time.monotonic() + timeout
    while True:
        fc = conn.call(FindCoordinatorRequest(key_type=1, coordinator_keys=[txn_id]),
                       FindCoordinatorResponse, 4)
        err = fc.coordinators[0].error_code
        if err == NONE:
            r = conn.call(InitProducerIdRequest(transactional_id=txn_id, transaction_timeout_ms=60000,
                                                producer_id=-1, producer_epoch=-1),
                          InitProducerIdResponse, 5)
            if r.error_code == NONE:
                return r.producer_id, r.producer_epoch
            err = r.error_code
        assert err in RETRIABLE_COORDINATOR + (CONCURRENT_TRANSACTIONS,), err
        assert time.monotonic() < deadline, f"coordinator not ready: {err}"
        time.sleep(0.2)


def produce_v12(conn, txn_id, topic, producer_id, epoch, seq, value):
    req = ProduceRequest(transactional_id=txn_id, acks=-1, timeout_ms=30000, topic_data=[
        ProduceRequest.TopicProduceData(name=topic, partition_data=[
            ProduceRequest.TopicProduceData.PartitionProduceData(
                index=0, records=txn_batch(producer_id, epoch, seq, value))])])
    r = conn.call(req, ProduceResponse, 12)
    return r.responses[0].partition_responses[0].error_code


def end_txn_v5(conn, txn_id, producer_id, epoch, commit, timeout=30):
    """EndTxn v5: (error, producer id, epoch). CONCURRENT_TRANSACTIONS is retried, as clients do (Kafka
    answers EndTxn once the prepare record is written and a retry meets the markers still on their way)."""
    deadline = time.monotonic() + timeout
    while True:
        r = conn.call(EndTxnRequest(transactional_id=txn_id, producer_id=producer_id, producer_epoch=epoch,
                                    committed=commit), EndTxnResponse, 5)
        if r.error_code != CONCURRENT_TRANSACTIONS or time.monotonic() > deadline:
            return r.error_code, r.producer_id, r.producer_epoch
        time.sleep(0.05)


def describe(conn, txn_id, timeout=30):
    """DescribeTransactions of the id, once its markers are written (Kafka answers EndTxn after the
    prepare record and writes the markers afterwards: PrepareCommit/PrepareAbort until then)."""
    deadline = time.monotonic() + timeout
    while True:
        r = conn.call(DescribeTransactionsRequest(transactional_ids=[txn_id]), DescribeTransactionsResponse, 0)
        st = r.transaction_states[0]
        assert st.error_code == NONE, st
        if not st.transaction_state.startswith("Prepare") or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def read_committed(bootstrap, topic, expect, timeout=30):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uid()}", "enable.auto.commit": False,
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 0)])
    got, deadline = [], time.monotonic() + timeout
    idle = None
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            if len(got) >= expect:
                idle = idle or time.monotonic()
                if time.monotonic() - idle > 2:
                    break
            continue
        idle = None
        got.append(m.value())
    c.close()
    return got


def test_api_versions_finalize_transaction_version_2(broker):
    """transaction.version as Kafka 4.4 advertises it: finalized 2 with an epoch from v3, supported 0..2
    from v4 (v3 leaves out supported features whose minimum is 0); Ringtide advertises nothing that would
    make a client use a protocol it does not serve (group.version: the KIP-848 consumer protocol)."""
    conn = Conn(broker)
    try:
        for version in (3, 4):
            req = ApiVersionsRequest(client_software_name="ringtide-it", client_software_version="1.0")
            r = conn.call(req, ApiVersionsResponse, version)
            assert r.error_code == NONE
            finalized = {f.name: (f.min_version_level, f.max_version_level) for f in r.finalized_features}
            supported = {f.name: (f.min_version, f.max_version) for f in r.supported_features}
            assert finalized.get("transaction.version") == (2, 2), finalized
            assert r.finalized_features_epoch >= 0
            if version >= 4:
                assert supported.get("transaction.version") == (0, 2), supported
            else:
                assert "transaction.version" not in supported, supported
            if TARGET != "kafka":
                assert set(finalized) == {"transaction.version"}, finalized
                assert set(supported) <= {"transaction.version"}, supported
    finally:
        conn.close()


def test_end_txn_v5_bumps_the_epoch_and_produce_v12_adds_partitions(broker):
    """Produce v12 joins the transaction without AddPartitionsToTxn; EndTxn v5 answers the bumped epoch,
    answers a retry with the previous epoch NONE, and the next transaction runs at the new epoch; only the
    committed record is read with read_committed."""
    topic = f"tv2-{uid()}"
    create_topic(broker.bootstrap, topic, 1)
    txn_id = f"tv2-{uid()}"
    conn = Conn(broker)
    try:
        pid, e0 = init_producer_id(conn, txn_id)
        assert produce_v12(conn, txn_id, topic, pid, e0, 0, b"committed") == NONE
        assert describe(conn, txn_id).transaction_state == "Ongoing"
        assert end_txn_v5(conn, txn_id, pid, e0, True) == (NONE, pid, e0 + 1)
        # The client did not hear the answer and retries: NONE, with the epoch it should use now.
        assert end_txn_v5(conn, txn_id, pid, e0, True) == (NONE, pid, e0 + 1)
        st = describe(conn, txn_id)
        assert (st.transaction_state, st.producer_epoch) == ("CompleteCommit", e0 + 1)
        # The old epoch can no longer write or end anything.
        assert produce_v12(conn, txn_id, topic, pid, e0, 1, b"zombie") == INVALID_PRODUCER_EPOCH
        # The next transaction, at the bumped epoch from sequence 0, aborted.
        assert produce_v12(conn, txn_id, topic, pid, e0 + 1, 0, b"aborted") == NONE
        assert end_txn_v5(conn, txn_id, pid, e0 + 1, False) == (NONE, pid, e0 + 2)
        assert end_txn_v5(conn, txn_id, pid, e0 + 1, False) == (NONE, pid, e0 + 2)
        # A commit retry after the abort, and the epoch before last, are refused.
        assert end_txn_v5(conn, txn_id, pid, e0 + 1, True)[0] == INVALID_TXN_STATE
        assert end_txn_v5(conn, txn_id, pid, e0, True)[0] == PRODUCER_FENCED
        # Aborting with no transaction (transaction version 2 allows it) bumps again.
        assert end_txn_v5(conn, txn_id, pid, e0 + 2, False) == (NONE, pid, e0 + 3)
        st = describe(conn, txn_id)
        assert (st.transaction_state, st.producer_epoch) == ("CompleteAbort", e0 + 3)
    finally:
        conn.close()
    assert read_committed(broker.bootstrap, topic, 1) == [b"committed"]


def test_txn_offset_commit_v5_adds_the_offsets_partition(broker):
    """TxnOffsetCommit v5 joins the transaction without AddOffsetsToTxn: the offsets are committed with
    the transaction."""
    topic = f"tv2o-{uid()}"
    create_topic(broker.bootstrap, topic, 1)
    txn_id, group = f"tv2o-{uid()}", f"tv2o-g-{uid()}"
    conn = Conn(broker)
    try:
        pid, e0 = init_producer_id(conn, txn_id)
        deadline = time.monotonic() + 60
        while True:
            fc = conn.call(FindCoordinatorRequest(key_type=0, coordinator_keys=[group]),
                           FindCoordinatorResponse, 4)
            if fc.coordinators[0].error_code == NONE:
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        req = TxnOffsetCommitRequest(
            transactional_id=txn_id, group_id=group, producer_id=pid, producer_epoch=e0,
            generation_id=-1, member_id="", group_instance_id=None,
            topics=[TxnOffsetCommitRequest.TxnOffsetCommitRequestTopic(name=topic, partitions=[
                TxnOffsetCommitRequest.TxnOffsetCommitRequestTopic.TxnOffsetCommitRequestPartition(
                    partition_index=0, committed_offset=7, committed_leader_epoch=-1,
                    committed_metadata="")])])
        while True:
            r = conn.call(req, TxnOffsetCommitResponse, 5)
            code = r.topics[0].partitions[0].error_code
            if code not in RETRIABLE_COORDINATOR + (CONCURRENT_TRANSACTIONS,):
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert code == NONE
        st = describe(conn, txn_id)
        assert st.transaction_state == "Ongoing"
        assert any(t.topic == "__consumer_offsets" for t in st.topics), st
        assert end_txn_v5(conn, txn_id, pid, e0, True) == (NONE, pid, e0 + 1)
    finally:
        conn.close()
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    deadline = time.monotonic() + 30
    while True:
        committed = c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        if committed == 7 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    c.close()
    assert committed == 7


JAVA_DEBUG_LOG4J = """status = error
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %p %m%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = STDERR
logger.producer.name = org.apache.kafka.clients.producer.internals
logger.producer.level = debug
"""


def test_java_client_bumps_the_epoch_every_transaction(broker, tmp_path):
    """The Java client (kafka-clients 4.4) turns transaction version 2 on, DescribeTransactions shows the
    epoch one higher after each commit and abort, and the client never sends AddPartitionsToTxn or
    AddOffsetsToTxn (its producer internals log every transactional request at DEBUG)."""
    topic = f"tv2j-{uid()}"
    create_topic(broker.bootstrap, topic, 2)
    txn_id = f"tv2j-{uid()}"
    log4j = tmp_path / "log4j2.properties"
    log4j.write_text(JAVA_DEBUG_LOG4J)
    env = {**os.environ, "KAFKA_LOG4J_CONFIG": str(log4j)}
    p = subprocess.run([str(KAFKA_RUN), str(HERE / "TxnEpochs.java"), broker.bootstrap, topic, txn_id],
                       capture_output=True, text=True, timeout=240, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    lines = dict(line.split("=", 1) for line in p.stdout.split() if "=" in line)
    epochs = [int(e) for e in lines["epochs"].split(",")]
    assert epochs == list(range(epochs[0], epochs[0] + 5)), epochs
    assert "Updating isTV2 enabled to true" in p.stderr, p.stderr[-3000:]
    sent = [line for line in p.stderr.splitlines() if "Sending transactional request" in line]
    assert any("EndTxnRequestData" in line for line in sent), sent
    assert not any("AddPartitionsToTxn" in line or "AddOffsetsToTxn" in line for line in sent), sent


def test_transaction_log_keeps_transaction_version_2_across_a_restart(fresh_broker, kafka_run):
    """__transaction_state holds TransactionLogValue v1 with ClientTransactionVersion 2, as Kafka 4.4
    writes it (kafka-dump-log decodes it); after a restart the id continues at the bumped epoch and a retry
    of the last EndTxn is still recognised."""
    from test_groups import java_string_hash
    broker = fresh_broker
    topic = f"tv2r-{uid()}"
    create_topic(broker.bootstrap, topic, 1)
    txn_id = f"tv2r-{uid()}"
    conn = Conn(broker)
    try:
        pid, e0 = init_producer_id(conn, txn_id)
        assert produce_v12(conn, txn_id, topic, pid, e0, 0, b"before") == NONE
        assert end_txn_v5(conn, txn_id, pid, e0, True) == (NONE, pid, e0 + 1)
        assert describe(conn, txn_id).transaction_state == "CompleteCommit"
    finally:
        conn.close()
    broker.stop()
    h = java_string_hash(txn_id)
    part = 0 if h == -(2 ** 31) else abs(h) % 50
    logs = sorted((broker.data_dir / f"__transaction_state-{part}").glob("*.log"))
    assert logs
    p = kafka_run("dump-log", "--files", ",".join(map(str, logs)), "--transaction-log-decoder")
    out = p.stdout + p.stderr
    assert txn_id in out and "Exception" not in out, out[-3000:]
    values = [line[line.index("payload:"):] for line in out.splitlines() if txn_id in line and "payload:" in line]
    assert [v for v in values if '"transactionStatus":"Ongoing"' in v], out[-3000:]
    for v in values:
        assert '"version":"1"' in v, v
        # The first InitProducerId is recorded before any client transaction version is known.
        if '"transactionStatus":"Empty"' not in v:
            assert '"clientTransactionVersion":2' in v, v
    assert '"transactionStatus":"CompleteCommit"' in values[-1], values
    broker.start()
    conn = Conn(broker)
    try:
        deadline = time.monotonic() + 60
        while True:
            code = end_txn_v5(conn, txn_id, pid, e0, True)
            if code[0] not in RETRIABLE_COORDINATOR or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert code == (NONE, pid, e0 + 1)
        assert produce_v12(conn, txn_id, topic, pid, e0 + 1, 0, b"after") == NONE
        assert end_txn_v5(conn, txn_id, pid, e0 + 1, True) == (NONE, pid, e0 + 2)
    finally:
        conn.close()
    assert read_committed(broker.bootstrap, topic, 2) == [b"before", b"after"]


def test_write_txn_markers_v2_applies_the_strict_epoch_rule(broker):
    """WriteTxnMarkers v2 (KIP-1228) names the transaction version of its markers: with version 2 a marker
    at the producer's own epoch, while its transaction is ongoing on the partition, is refused
    (INVALID_PRODUCER_EPOCH: the coordinator bumps the epoch for every marker); the legacy version takes
    the same marker."""
    from kafka.protocol.producer import WriteTxnMarkersRequest, WriteTxnMarkersResponse
    topic = f"tv2m-{uid()}"
    create_topic(broker.bootstrap, topic, 1)
    txn_id = f"tv2m-{uid()}"
    conn = Conn(broker)

    def marker(epoch, tv, version):
        m = WriteTxnMarkersRequest.WritableTxnMarker(
            producer_id=pid, producer_epoch=epoch, transaction_result=False, coordinator_epoch=0,
            transaction_version=tv, topics=[
                WriteTxnMarkersRequest.WritableTxnMarker.WritableTxnMarkerTopic(name=topic, partition_indexes=[0])])
        r = conn.call(WriteTxnMarkersRequest(markers=[m]), WriteTxnMarkersResponse, version)
        return r.markers[0].topics[0].partitions[0].error_code

    try:
        pid, e0 = init_producer_id(conn, txn_id)
        assert produce_v12(conn, txn_id, topic, pid, e0, 0, b"aborted") == NONE
        assert marker(e0, 2, 2) == INVALID_PRODUCER_EPOCH
        assert marker(e0, 0, 1) == NONE
        # The coordinator still holds the transaction: its abort (a bumped epoch) ends it as usual.
        assert end_txn_v5(conn, txn_id, pid, e0, False) == (NONE, pid, e0 + 1)
        assert describe(conn, txn_id).transaction_state == "CompleteAbort"
    finally:
        conn.close()
    assert read_committed(broker.bootstrap, topic, 0, timeout=5) == []
