"""Group timers take effect at their deadline, as in Apache Kafka 4.4 (whose coordinator arms a timer per
deadline): a member's session timeout, the rebalance timeout of the join phase, and the rebalance timeout
of the sync phase.

Raw requests, so that the moment each timer was armed is known: each check is made SLACK_MS after the
deadline. Ringtide used to look at its timers on a 100 ms tick and so answered up to 100 ms late; each
scenario runs TRIALS groups in parallel, so that such a broker fails it all but surely. The same file
runs against Kafka 4.4 (RINGTIDE_TEST_TARGET=kafka).
"""

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import groupraw as g
from test_protocol_errors import connect

pytestmark = pytest.mark.needs_groups

# Kafka's group.min.session.timeout.ms: the shortest session both brokers accept.
SESSION_MS = 6000
# How long after a deadline its effect is checked (Kafka 4.4 was seen up to ~20 ms late).
SLACK_MS = 40
# A broker checking on a 100 ms tick passes one trial with probability ~SLACK_MS / 100.
TRIALS = 8
NON_EMPTY_GROUP = 68
MEMBER_ID_REQUIRED = 79
# Any topic name serves wait_coordinator's OffsetFetch.
TOPIC = "group-timeouts"


def group_ids(name):
    return [f"{name}-{uuid.uuid4().hex[:8]}-{i}" for i in range(TRIALS)]


def in_parallel(fn, groups):
    """fn(trial number, group) for every group on its own thread; returns the results in order."""
    with ThreadPoolExecutor(len(groups)) as pool:
        return list(pool.map(fn, range(len(groups)), groups))


def spread(i):
    """Spreads the trials' deadlines over 100 ms. A broker that ended the initial rebalance delay on a
    100 ms tick and checks its timers on the same tick would otherwise find every deadline just before
    one of its ticks (the requests that arm them follow the JoinGroup answer closely)."""
    time.sleep(i * 0.1 / TRIALS)


def sleep_until(t):
    time.sleep(max(0.0, t - time.monotonic()))


def delete_group(broker, group):
    with connect(broker) as s:
        return g.parse_delete_groups_v1(g.call(s, 21, g.delete_groups_v1(21, [group])))[group]


class Member:
    """One group member on its own connection (JoinGroup v5, SyncGroup v3, Heartbeat v3)."""

    def __init__(self, broker, group, instance=None, rebalance_ms=60000):
        self.sock = connect(broker)
        self.sock.settimeout(60)
        self.group, self.instance, self.rebalance_ms = group, instance, rebalance_ms
        self.member_id, self.generation, self.corr = "", -1, 100

    def _call(self, make, *args, **kw):
        self.corr += 1
        return g.call(self.sock, self.corr, make(self.corr, *args, **kw))

    def join(self):
        """JoinGroup (again after MEMBER_ID_REQUIRED); returns the answer."""
        while True:
            j = g.parse_join_group_v5(self._call(
                g.join_group_v5, self.group, self.member_id, self.instance, SESSION_MS, self.rebalance_ms))
            if j["error"] != MEMBER_ID_REQUIRED:
                break
            self.member_id = j["member_id"]
        assert j["error"] == 0, j
        self.member_id, self.generation = j["member_id"], j["generation"]
        return j

    def send_join(self):
        """Sends JoinGroup without reading the answer (see `read_join`)."""
        self.corr += 1
        self.pending = self.corr
        self.sock.sendall(g.join_group_v5(self.corr, self.group, self.member_id, self.instance, SESSION_MS,
                                          self.rebalance_ms))

    def read_join(self):
        return g.parse_join_group_v5(g.answer(self.sock, self.pending))

    def sync(self, assignments=()):
        err, _ = g.parse_sync_group_v3(self._call(
            g.sync_group_v3, self.group, self.generation, self.member_id, self.instance, assignments))
        return err

    def heartbeat(self):
        return g.parse_heartbeat_v3(self._call(
            g.heartbeat_v3, self.group, self.generation, self.member_id, self.instance))

    def close(self):
        self.sock.close()


def test_static_member_expires_at_its_session_timeout(broker):
    """A static member closes its connection without LeaveGroup (as a restarting consumer with
    group.instance.id does): the group stays non-empty until session.timeout.ms after its last heartbeat,
    and can be deleted right after."""

    def trial(i, group):
        g.wait_coordinator(broker, group, TOPIC)
        m = Member(broker, group, instance="static-1")
        m.join()
        assert m.sync([(m.member_id, b"")]) == 0
        spread(i)
        assert m.heartbeat() == 0
        deadline = time.monotonic() + SESSION_MS / 1000
        m.close()
        sleep_until(deadline - 0.2)
        before = delete_group(broker, group)
        sleep_until(deadline + SLACK_MS / 1000)
        after = delete_group(broker, group)
        return before, after

    results = in_parallel(trial, group_ids("session"))
    assert all(before == NON_EMPTY_GROUP for before, _ in results), results
    assert [after for _, after in results] == [0] * TRIALS, \
        f"DeleteGroups {SLACK_MS} ms after the session deadline: {results}"


def test_join_phase_ends_at_the_rebalance_timeout(broker):
    """A second member joins a stable group; the first never rejoins. The join phase ends (the absent
    dynamic member removed) when the rebalance timeout has passed since the rebalance started."""
    rebalance_ms = 1500

    def trial(i, group):
        g.wait_coordinator(broker, group, TOPIC)
        a = Member(broker, group, rebalance_ms=rebalance_ms)
        a.join()
        assert a.sync([(a.member_id, b"")]) == 0
        b = Member(broker, group, rebalance_ms=rebalance_ms)
        # First JoinGroup: MEMBER_ID_REQUIRED (answered at once); the second starts the rebalance.
        j = g.parse_join_group_v5(b._call(g.join_group_v5, group, "", None, SESSION_MS, rebalance_ms))
        assert j["error"] == MEMBER_ID_REQUIRED, j
        b.member_id = j["member_id"]
        spread(i)
        started = time.monotonic()
        b.send_join()
        j = b.read_join()
        took_ms = (time.monotonic() - started) * 1000
        a.close()
        b.close()
        assert j["error"] == 0 and j["generation"] == a.generation + 1, j
        assert [m[0] for m in j["members"]] == [b.member_id], "the absent member is gone"
        return took_ms

    took = in_parallel(trial, group_ids("join"))
    assert all(rebalance_ms - 5 <= t <= rebalance_ms + SLACK_MS + 10 for t in took), \
        f"join phase took {[round(t) for t in took]} ms, rebalance timeout {rebalance_ms} ms"


def test_sync_phase_ends_at_the_rebalance_timeout(broker):
    """The leader never sends SyncGroup: a rebalance timeout after the join phase ended it is removed
    (and the group, left without members, is empty)."""

    def trial(i, group):
        # The join phase ends at once here, so the rebalance timeouts spread the deadlines (see spread).
        rebalance_ms = 1500 + 5 + i * 100 // TRIALS
        g.wait_coordinator(broker, group, TOPIC)
        m = Member(broker, group, rebalance_ms=rebalance_ms)
        m.join()
        deadline = time.monotonic() + rebalance_ms / 1000
        sleep_until(deadline - 0.2)
        before = delete_group(broker, group)
        sleep_until(deadline + SLACK_MS / 1000)
        after = delete_group(broker, group)
        m.close()
        return before, after

    results = in_parallel(trial, group_ids("sync"))
    assert all(before == NON_EMPTY_GROUP for before, _ in results), results
    assert [after for _, after in results] == [0] * TRIALS, \
        f"DeleteGroups {SLACK_MS} ms after the sync deadline: {results}"
