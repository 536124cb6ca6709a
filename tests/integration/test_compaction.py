"""Log compaction (issue 12) as Kafka 4.4 does it: compacted topics refuse records without a key, are
never deleted by age alone, and the log cleaner keeps the latest record of every key.

The cleaner tests run on a broker of their own with a short `log.cleaner.backoff.ms` and retention check
interval, the same settings on both targets.
"""

import time

import pytest

import prodraw
from conftest import Broker, create_topic
from kafka.record.memory_records import MemoryRecordsBuilder
from test_protocol_errors import connect

NONE = 0
INVALID_RECORD = 87


def keyed_batch(pairs, first_ts=None):
    """One uncompressed batch of (key, value) records; None is a null key or a tombstone."""
    ts = int(time.time() * 1000) if first_ts is None else first_ts
    b = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    for i, (k, v) in enumerate(pairs):
        b.append(ts + i, k, v, headers=[])
    b.close()
    return bytes(b.buffer())


@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_keyless_records_refused(broker, topic_name, policy):
    create_topic(broker.bootstrap, topic_name, config={"cleanup.policy": policy})
    s = connect(broker)
    try:
        r = prodraw.one(s, 8, topic_name, 0, keyed_batch([(b"a", b"1"), (None, b"2"), (b"c", b"3"), (None, b"4")]))
        why = f"Compacted topic cannot accept message without key in topic partition {topic_name}-0"
        assert r["error"] == INVALID_RECORD
        assert (r["base_offset"], r["log_start_offset"]) == (-1, 0)
        assert r["record_errors"] == [(1, why), (3, why)]
        assert r["error_message"] == (
            "One or more records have been rejected due to 2 record errors in total, and only showing the "
            f"first three errors at most: [RecordError(batchIndex=1, message='{why}'), "
            f"RecordError(batchIndex=3, message='{why}')]")
        # Nothing of the refused batch was appended; keyed records and tombstones are taken.
        r = prodraw.one(s, 8, topic_name, 0, keyed_batch([(b"a", b"1"), (b"b", None)]))
        assert (r["error"], r["base_offset"]) == (NONE, 0)
    finally:
        s.close()
