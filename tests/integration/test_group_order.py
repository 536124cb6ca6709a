"""Group mutations follow request order on a connection (issue 11, item 2).

A consumer that pipelines many OffsetCommits on one connection gets them answered in order, and the
offset OffsetFetch returns afterwards is the last one committed, on that connection, on a new one, and
after a restart. A fetch pipelined behind commits sees them; OffsetDelete and DeleteGroups pipelined
between commits take effect exactly where they were sent. Kafka serves one request of a connection at a
time, so every expectation here is what Kafka 4.4 answers (RINGTIDE_TEST_TARGET=kafka).
"""

import uuid
from pathlib import Path

import pytest

from conftest import KAFKA_RUN, create_topic
from groupraw import (NONE, answer, call, delete_groups_v1, fetch_committed, offset_commit_v7,
                      offset_delete_v0, offset_fetch_v5, parse_delete_groups_v1, parse_offset_commit_v7,
                      parse_offset_delete_v0, parse_offset_fetch_v5, wait_coordinator)
from test_protocol_errors import connect

pytestmark = pytest.mark.needs_groups

HERE = Path(__file__).resolve().parent
COMMITS = 50
GROUPS = 6  # several groups, so that some are coordinated by another core than the connection's


@pytest.fixture(scope="module")
def topic(broker):
    name = f"order-{uuid.uuid4().hex[:6]}"
    create_topic(broker.bootstrap, name, 2)
    return name


def pipeline_commits(s, group, topic, n, first_corr=100):
    """Sends n OffsetCommits ({0: i, 1: 1000 + i} for i in 1..n) in one write, then reads every answer."""
    frames = [offset_commit_v7(first_corr + i, group, topic, {0: i, 1: 1000 + i}) for i in range(1, n + 1)]
    s.sendall(b"".join(frames))
    for i in range(1, n + 1):
        got = parse_offset_commit_v7(answer(s, first_corr + i))
        assert got == {(topic, 0): NONE, (topic, 1): NONE}, f"commit {i}: {got}"


def fetch_on(s, corr, group, topic):
    got, err = parse_offset_fetch_v5(call(s, corr, offset_fetch_v5(corr, group, topic, [0, 1])))
    assert err == NONE
    return {p: got[(topic, p)] for p in (0, 1)}


def test_pipelined_commits_leave_the_last_one(broker, topic):
    for k in range(GROUPS):
        group = f"order-commits-{k}-{uuid.uuid4().hex[:6]}"
        wait_coordinator(broker, group, topic)
        with connect(broker) as s:
            pipeline_commits(s, group, topic, COMMITS)
            assert fetch_on(s, 9, group, topic) == {0: (COMMITS, NONE), 1: (1000 + COMMITS, NONE)}
        assert fetch_committed(broker, group, topic, [0, 1]) == {0: COMMITS, 1: 1000 + COMMITS}


def test_fetch_pipelined_behind_commits_sees_them(broker, topic):
    for k in range(GROUPS):
        group = f"order-fetch-{k}-{uuid.uuid4().hex[:6]}"
        wait_coordinator(broker, group, topic)
        with connect(broker) as s:
            # A fetch before, commits, a fetch after, all in one write.
            frames = [offset_fetch_v5(1, group, topic, [0, 1])]
            frames += [offset_commit_v7(100 + i, group, topic, {0: i, 1: 1000 + i}) for i in range(1, COMMITS + 1)]
            frames.append(offset_fetch_v5(2, group, topic, [0, 1]))
            s.sendall(b"".join(frames))
            before, err = parse_offset_fetch_v5(answer(s, 1))
            assert err == NONE and before == {(topic, 0): (-1, NONE), (topic, 1): (-1, NONE)}
            for i in range(1, COMMITS + 1):
                assert parse_offset_commit_v7(answer(s, 100 + i)) == {(topic, 0): NONE, (topic, 1): NONE}
            after, err = parse_offset_fetch_v5(answer(s, 2))
            assert err == NONE
            assert after == {(topic, 0): (COMMITS, NONE), (topic, 1): (1000 + COMMITS, NONE)}


def test_offset_delete_and_delete_groups_apply_where_they_were_sent(broker, topic):
    for k in range(GROUPS):
        group = f"order-delete-{k}-{uuid.uuid4().hex[:6]}"
        wait_coordinator(broker, group, topic)
        with connect(broker) as s:
            frames = [
                offset_commit_v7(1, group, topic, {0: 5, 1: 6}),
                offset_delete_v0(2, group, topic, [0]),
                offset_fetch_v5(3, group, topic, [0, 1]),
                offset_commit_v7(4, group, topic, {0: 7}),
                offset_fetch_v5(5, group, topic, [0, 1]),
                delete_groups_v1(6, [group]),
                offset_fetch_v5(7, group, topic, [0, 1]),
                # The group is gone: a simple commit creates it again.
                offset_commit_v7(8, group, topic, {1: 9}),
                delete_groups_v1(9, [group]),
                delete_groups_v1(10, [group]),
                offset_commit_v7(11, group, topic, {0: 11}),
                offset_fetch_v5(12, group, topic, [0, 1]),
            ]
            s.sendall(b"".join(frames))
            assert parse_offset_commit_v7(answer(s, 1)) == {(topic, 0): NONE, (topic, 1): NONE}
            assert parse_offset_delete_v0(answer(s, 2)) == (NONE, {(topic, 0): NONE})
            assert parse_offset_fetch_v5(answer(s, 3)) == ({(topic, 0): (-1, NONE), (topic, 1): (6, NONE)}, NONE)
            assert parse_offset_commit_v7(answer(s, 4)) == {(topic, 0): NONE}
            assert parse_offset_fetch_v5(answer(s, 5)) == ({(topic, 0): (7, NONE), (topic, 1): (6, NONE)}, NONE)
            assert parse_delete_groups_v1(answer(s, 6)) == {group: NONE}
            assert parse_offset_fetch_v5(answer(s, 7)) == ({(topic, 0): (-1, NONE), (topic, 1): (-1, NONE)}, NONE)
            assert parse_offset_commit_v7(answer(s, 8)) == {(topic, 1): NONE}
            assert parse_delete_groups_v1(answer(s, 9)) == {group: NONE}
            assert parse_delete_groups_v1(answer(s, 10)) == {group: 69}  # GROUP_ID_NOT_FOUND
            assert parse_offset_commit_v7(answer(s, 11)) == {(topic, 0): NONE}
            assert parse_offset_fetch_v5(answer(s, 12)) == ({(topic, 0): (11, NONE), (topic, 1): (-1, NONE)}, NONE)
        assert fetch_committed(broker, group, topic, [0, 1]) == {0: 11, 1: -1}


def test_java_commit_async_then_committed(broker, topic, kafka_run):
    """The Java consumer (classic protocol, a member of the group) pipelines commitAsync calls on its
    coordinator connection; committed() right after them, and after every callback, is the last one."""
    group = f"order-java-{uuid.uuid4().hex[:6]}"
    import subprocess
    p = subprocess.run([str(KAFKA_RUN), str(HERE / "CommitAsyncConsumer.java"), broker.bootstrap, topic, group,
                        str(200)], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    lines = dict(line.split(" ", 1) for line in p.stdout.splitlines() if " " in line)
    assert lines.get("ERRORS") == "0", p.stdout
    assert lines.get("COMMITTED") == "200", p.stdout
    assert lines.get("COMMITTED_AFTER_CALLBACKS") == "200", p.stdout
    assert fetch_committed(broker, group, topic, [0])[0] == 200


def test_pipelined_commits_survive_a_restart(fresh_broker):
    topic = f"order-restart-{uuid.uuid4().hex[:6]}"
    create_topic(fresh_broker.bootstrap, topic, 2)
    groups = [f"order-restart-{k}-{uuid.uuid4().hex[:6]}" for k in range(GROUPS)]
    for group in groups:
        wait_coordinator(fresh_broker, group, topic)
        with connect(fresh_broker) as s:
            pipeline_commits(s, group, topic, COMMITS)
        assert fetch_committed(fresh_broker, group, topic, [0, 1]) == {0: COMMITS, 1: 1000 + COMMITS}
    fresh_broker.restart()
    for group in groups:
        assert fetch_committed(fresh_broker, group, topic, [0, 1], timeout=120) == {0: COMMITS, 1: 1000 + COMMITS}
