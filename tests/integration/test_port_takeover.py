"""Taking over a port: a broker restarted the instant the previous one was killed (as systemd's
Restart=always or a container runtime does), and a broker started on the port of a Kafka broker that was
just stopped with clients connected (its closed connections linger in TIME_WAIT). Both must start on the
first try and serve every acknowledged record."""

import signal

from confluent_kafka import Producer

from conftest import TARGET, Broker, consume_all, create_topic

# Kafka takes seconds to start; the point is the same on it with fewer cycles.
KILL_CYCLES = 20 if TARGET == "ringtide" else 3
PER_CYCLE = 200


def produce_acked(bootstrap, topic, start, count):
    """Produces `count` records with acks=all; returns how many were acknowledged."""
    acked = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "message.timeout.ms": 30000})
    for i in range(start, start + count):
        p.produce(topic, value=f"v{i}".encode(), on_delivery=lambda err, m: acked.append(m) if err is None else None)
    p.flush(60)
    return len(acked)


def test_kill9_then_immediate_start(fresh_broker, topic_name):
    b = fresh_broker
    create_topic(b.bootstrap, topic_name, partitions=2)
    acked = 0
    for cycle in range(KILL_CYCLES):
        acked += produce_acked(b.bootstrap, topic_name, acked, PER_CYCLE)
        # Kill and start again at once: no waiting for the listening sockets to go away. start() fails
        # the test if the broker exits (for example "port in use") or does not listen in time.
        b.stop(signal.SIGKILL, wait_port=False)
        b.start()
        assert b.starts == cycle + 2
    assert acked == KILL_CYCLES * PER_CYCLE
    got = consume_all(b.bootstrap, topic_name, 2)
    values = sorted(int(m.value()[1:]) for msgs in got.values() for m in msgs)
    assert values == list(range(acked)), "every acknowledged record, once"


def test_start_on_the_port_of_a_stopped_kafka_with_clients(request, topic_name):
    kafka = Broker("takeover-kafka", kind="kafka")
    request.node._ringtide_broker = kafka
    successor = None
    try:
        kafka.start()
        create_topic(kafka.bootstrap, topic_name, partitions=1)
        # Clients connected while Kafka stops: the broker closes their connections, which leaves them in
        # TIME_WAIT on the broker's port.
        live = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all"})
        live.produce(topic_name, value=b"before")
        live.flush(30)
        kafka.stop(signal.SIGTERM)
        live.poll(0)

        successor = Broker("takeover-successor", port=kafka.port)
        request.node._ringtide_broker = successor
        successor.start()  # fails the test if the port is refused
        create_topic(successor.bootstrap, topic_name + "-after", partitions=1)
        assert produce_acked(successor.bootstrap, topic_name + "-after", 0, 50) == 50
        got = consume_all(successor.bootstrap, topic_name + "-after", 1)
        assert len(got[0]) == 50
        del live
    finally:
        # The successor first: it holds the port that kafka.cleanup() waits to see closed.
        if successor:
            successor.cleanup()
        kafka.cleanup()
