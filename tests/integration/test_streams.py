"""Kafka Streams on the broker (issue 13): a word count with a repartition topic and a changelogged
state store (tests/integration/StreamsWordCount.java, kafka-streams 4.4.0), once with at_least_once and
once with exactly_once_v2. The app is killed with SIGKILL mid-stream and started again; with
exactly_once_v2 the committed output holds every count of every word exactly once (1, 2, ..., n, no
duplicate and nothing missing) and the final counts equal a reference count of the input; with
at_least_once the final counts are at least the reference (a crash may count some lines twice).

Runs against both targets (RINGTIDE_TEST_TARGET=kafka proves the expectations on Kafka 4.4).
"""

import collections
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import KAFKA_RUN, create_topic

HERE = Path(__file__).resolve().parent
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
pytestmark = pytest.mark.needs_groups


def start_app(bootstrap, inp, out, app_id, state_dir, guarantee, log):
    return subprocess.Popen(
        [str(KAFKA_RUN), str(HERE / "StreamsWordCount.java"), bootstrap, inp, out, app_id, state_dir, guarantee],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def produce_lines(bootstrap, topic, start, n):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    lines = []
    for i in range(start, start + n):
        words = [WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 3)]
        line = " ".join(words)
        lines.append(line)
        p.produce(topic, key=str(i), value=line)
    p.flush(30)
    return lines


def read_output(bootstrap, topic, isolation, want_final, timeout=120):
    """Reads the output until every word's latest count reaches want_final (or timeout);
    returns {word: [counts in order]}."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "isolation.level": isolation, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in range(2)])
    seen = collections.defaultdict(list)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.3)
            if m is not None and not m.error():
                seen[m.key().decode()].append(int.from_bytes(m.value(), "big", signed=True))
            elif m is None and all(seen.get(w) and seen[w][-1] >= n for w, n in want_final.items()):
                break
    finally:
        c.close()
    return dict(seen)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_word_count_survives_a_crash(broker, guarantee, tmp_path):
    tag = uuid.uuid4().hex[:6]
    inp, out, app = f"wc-in-{tag}", f"wc-out-{tag}", f"wc-{guarantee.replace('_', '-')}-{tag}"
    create_topic(broker.bootstrap, inp, 2)
    create_topic(broker.bootstrap, out, 2)
    state = str(tmp_path / "state")
    log = open(tmp_path / "app.log", "w")
    lines = produce_lines(broker.bootstrap, inp, 0, 300)
    app_proc = start_app(broker.bootstrap, inp, out, app, state, guarantee, log)
    try:
        # Wait for some output, then kill the app in the middle of the stream.
        partial = {w: 1 for w in WORDS}
        read_output(broker.bootstrap, out, "read_committed", partial, timeout=120)
        lines += produce_lines(broker.bootstrap, inp, 300, 300)
        time.sleep(0.5)
        os.killpg(app_proc.pid, signal.SIGKILL)
        app_proc.wait(30)
        lines += produce_lines(broker.bootstrap, inp, 600, 300)
        app_proc = start_app(broker.bootstrap, inp, out, app, state, guarantee, log)
        reference = collections.Counter(w for line in lines for w in line.split())
        isolation = "read_committed" if guarantee == "exactly_once_v2" else "read_uncommitted"
        got = read_output(broker.bootstrap, out, isolation, dict(reference), timeout=180)
    finally:
        os.killpg(app_proc.pid, signal.SIGKILL)
        app_proc.wait(30)
        log.close()
    tail = (tmp_path / "app.log").read_text()[-3000:]
    for w, n in reference.items():
        assert w in got, f"{w} never counted\n{tail}"
        if guarantee == "exactly_once_v2":
            assert got[w] == list(range(1, n + 1)), f"{w}: {got[w][:20]}... (want 1..{n})\n{tail}"
        else:
            assert got[w][-1] >= n, f"{w}: final {got[w][-1]} < {n}\n{tail}"
