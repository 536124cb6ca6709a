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


def test_idempotent_dedupe_survives_a_crash_after_several_rolls(fresh_broker, topic_name):
    """Every segment roll writes the producer snapshot `<base offset of the new segment>.snapshot` (Kafka's
    roll does); after kill -9, retries of the producer's last batches, written across several rolls, are
    still answered as duplicates with their original offsets, and a gap is still refused."""
    import prodraw
    from test_protocol_errors import connect

    b = fresh_broker
    create_topic(b.bootstrap, topic_name, 1, config={"segment.bytes": str(1 << 20)})
    s = connect(b)
    pid, epoch = prodraw.init_producer_id(s)
    sent, offsets = [], []
    for seq in range(40):
        batch = prodraw.batch(records=1, value=b"r" * 100_000, producer_id=pid, producer_epoch=epoch,
                              base_sequence=seq)
        r = prodraw.one(s, 8, topic_name, 0, batch, correlation_id=100 + seq)
        assert r["error"] == 0, r
        sent.append(batch)
        offsets.append(r["base_offset"])
    s.close()
    part = b.data_dir / f"{topic_name}-0"
    bases = sorted(int(p.name.split(".")[0]) for p in part.glob("*.log"))
    snapshots = {int(p.name.split(".")[0]) for p in part.glob("*.snapshot")}
    assert len(bases) >= 3, bases
    assert set(bases[1:]) <= snapshots, (bases, sorted(snapshots))

    b.restart(signal.SIGKILL)
    s = connect(b)
    for seq in range(35, 40):
        r = prodraw.one(s, 8, topic_name, 0, sent[seq], correlation_id=200 + seq)
        assert (r["error"], r["base_offset"]) == (0, offsets[seq]), (seq, r)
    gap = prodraw.batch(records=1, producer_id=pid, producer_epoch=epoch, base_sequence=42)
    assert prodraw.one(s, 8, topic_name, 0, gap, correlation_id=300)["error"] == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
    nxt = prodraw.batch(records=1, producer_id=pid, producer_epoch=epoch, base_sequence=40)
    r = prodraw.one(s, 8, topic_name, 0, nxt, correlation_id=301)
    assert (r["error"], r["base_offset"]) == (0, offsets[-1] + 1), r
    s.close()
