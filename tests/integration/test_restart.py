"""Durability across broker restarts: everything acknowledged (acks=all)
before a clean stop (SIGTERM) or a crash (SIGKILL) is readable afterwards,
on the same port and data dir."""

import signal

from confluent_kafka import Producer

from conftest import consume_all, create_topic

PARTITIONS = 2


def produce(bootstrap, topic, start, count):
    """Produce records start..start+count-1; return {i: (partition, offset)}
    from the delivery reports, all of which must be successes."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "compression.type": "lz4"})
    acked, errors = {}, []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[int(msg.key())] = (msg.partition(), msg.offset())

    for i in range(start, start + count):
        while True:
            try:
                p.produce(topic, key=str(i).encode(), value=value(i), on_delivery=cb)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(60) == 0, "not everything was delivered"
    assert not errors, f"{len(errors)} delivery errors, first {errors[:3]}"
    assert len(acked) == count
    return acked


def value(i):
    return f"restart-value-{i}-".encode() + b"z" * (i % 500)


def check_all(bootstrap, topic, acked):
    expect = {}
    for i, (part, off) in acked.items():
        expect.setdefault(part, {})[off] = i
    got = consume_all(bootstrap, topic, PARTITIONS, {p: len(expect.get(p, {})) for p in range(PARTITIONS)})
    n = 0
    for part, msgs in got.items():
        for m in msgs:
            i = expect[part][m.offset()]
            assert m.key() == str(i).encode() and m.value() == value(i), (part, m.offset())
            n += 1
    assert n == len(acked)


def test_restart_sigterm_then_sigkill(fresh_broker, topic_name):
    b = fresh_broker
    create_topic(b.bootstrap, topic_name, PARTITIONS)
    acked = produce(b.bootstrap, topic_name, 0, 5000)
    check_all(b.bootstrap, topic_name, acked)

    b.restart(signal.SIGTERM)
    assert b.last_exit_code in (0, 143, -signal.SIGTERM), f"clean shutdown exited {b.last_exit_code}"
    check_all(b.bootstrap, topic_name, acked)

    acked.update(produce(b.bootstrap, topic_name, 5000, 3000))
    check_all(b.bootstrap, topic_name, acked)

    b.restart(signal.SIGKILL)
    check_all(b.bootstrap, topic_name, acked)

    # and the broker still takes writes after the crash
    acked.update(produce(b.bootstrap, topic_name, 8000, 1000))
    check_all(b.bootstrap, topic_name, acked)
    assert len(acked) == 9000
