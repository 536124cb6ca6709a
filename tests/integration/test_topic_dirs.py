"""Partition directories on disk: deleting a topic removes its directories (renamed to `-delete` first,
as Kafka does, so a crash mid-removal never leaves a half-deleted partition under its live name), and
what such a crash left behind is removed at the next start."""

import signal

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from conftest import TARGET, create_topic, wait_for

pytestmark = pytest.mark.skipif(TARGET != "ringtide", reason="inspects Ringtide's data directory")


def test_delete_topic_removes_directories_and_leftovers_go_at_start(fresh_broker, topic_name):
    b = fresh_broker
    create_topic(b.bootstrap, topic_name, partitions=2)
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
    for i in range(10):
        p.produce(topic_name, value=b"x", partition=i % 2)
    assert p.flush(30) == 0
    dirs = lambda: sorted(p.name for p in b.data_dir.iterdir() if p.name.startswith(topic_name))
    assert dirs() == [f"{topic_name}-0", f"{topic_name}-1"]
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.delete_topics([topic_name])[topic_name].result(30)
    wait_for(lambda: dirs() == [], 30, what="the topic's directories to go")

    # A deletion a crash interrupted: the renamed directory is still there at the next start.
    b.stop(signal.SIGKILL)
    leftover = b.data_dir / f"{topic_name}-0.0123456789abcdef0123456789abcdef-delete"
    leftover.mkdir()
    (leftover / "00000000000000000000.log").write_bytes(b"\0" * 100)
    b.start()
    assert not leftover.exists()
