"""How long a group of 3 librdkafka members over 6 partitions takes to hand over the partitions of a
member that leaves (LeaveGroup on close), with librdkafka's default heartbeat.interval.ms (3 s) and with
100 ms (which shows the cost of the rebalance itself rather than the wait for the next heartbeat).

Measured from the start of the leaving member's close() to the moment the two remaining members'
rebalance callbacks have assigned all 6 partitions between them. The same test runs against Apache
Kafka 4.4 (RINGTIDE_TEST_TARGET=kafka); each run appends its samples to
$RINGTIDE_TEST_LOGS/rebalance-times.txt.
"""

import statistics
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer

from conftest import LOG_DIR, TARGET, create_topic, wait_for

pytestmark = pytest.mark.needs_groups

ROUNDS = 5


class TimedMember(threading.Thread):
    def __init__(self, bootstrap, group, topic, strategy, heartbeat_ms):
        super().__init__(daemon=True)
        self.conf = {"bootstrap.servers": bootstrap, "group.id": group,
                     "partition.assignment.strategy": strategy, "enable.auto.commit": False,
                     "heartbeat.interval.ms": heartbeat_ms}
        self.topic = topic
        self.cooperative = strategy == "cooperative-sticky"
        self.assignment = set()
        self.changed_at = 0.0
        self.stop_event = threading.Event()
        self.close_started = None
        self.error = None

    def run(self):
        try:
            c = Consumer(self.conf)

            def on_assign(consumer, parts):
                new = {p.partition for p in parts}
                self.assignment = (self.assignment | new) if self.cooperative else new
                self.changed_at = time.monotonic()

            def on_revoke(consumer, parts):
                gone = {p.partition for p in parts}
                self.assignment = self.assignment - gone
                self.changed_at = time.monotonic()

            c.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
            while not self.stop_event.is_set():
                c.poll(0.02)
            self.close_started = time.monotonic()
            c.close()
        except Exception as e:
            self.error = e


def covers(members, partitions):
    seen = sorted(p for m in members for p in m.assignment)
    return seen == list(range(partitions))


@pytest.mark.parametrize("heartbeat_ms", [3000, 100])
@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_leave_rebalance_time(broker, topic_name, strategy, heartbeat_ms):
    bs = broker.bootstrap
    parts = 6
    create_topic(bs, topic_name, parts)
    samples = []
    for _ in range(ROUNDS):
        group = f"rt-{uuid.uuid4().hex[:8]}"
        members = [TimedMember(bs, group, topic_name, strategy, heartbeat_ms) for _ in range(3)]
        for m in members:
            m.start()
        try:
            wait_for(lambda: any(m.error for m in members)
                     or (covers(members, parts) and all(len(m.assignment) == 2 for m in members)),
                     90, 0.01, "3 members sharing 6 partitions")
            time.sleep(0.5)
            leaving, rest = members[0], members[1:]
            leaving.stop_event.set()
            wait_for(lambda: leaving.close_started is not None, 10, 0.001, "close to start")
            wait_for(lambda: covers(rest, parts) and all(len(m.assignment) == 3 for m in rest),
                     60, 0.005, "handover")
            done = max(m.changed_at for m in rest)
            samples.append(done - leaving.close_started)
        finally:
            for m in members:
                m.stop_event.set()
            for m in members:
                m.join(60)
        assert all(m.error is None for m in members), [m.error for m in members]
    line = (f"{time.strftime('%Y-%m-%dT%H:%M:%S')} target={TARGET} leave-rebalance strategy={strategy} "
            f"heartbeat={heartbeat_ms}ms rounds={ROUNDS} median={statistics.median(samples):.3f}s "
            f"min={min(samples):.3f}s max={max(samples):.3f}s samples={[round(s, 3) for s in samples]}\n")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / "rebalance-times.txt", "a") as f:
        f.write(line)
    print(line, end="")
    # A leave is announced at the next heartbeat (<= 3 s); the rebalance itself is quick.
    assert max(samples) < 10, samples
