"""Crash consistency: the broker is SIGKILLed at random moments under an idempotent acks=all load and
restarted on the same data at once (20 cycles; every start must succeed on its first try); every acknowledged record must be there, unchanged, with no offset gaps and no
duplicates. A short run of tests/crash_harness.py (which runs standalone for long runs:
`python3 tests/crash_harness.py --cycles 100`). The second test does the same with every kill turned into
a simulated power cut (`--power-cut`), which also catches an ack sent before its fdatasync completed."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import crash_harness  # noqa: E402

pytestmark = pytest.mark.skipif(os.environ.get("RINGTIDE_TEST_TARGET", "ringtide") != "ringtide",
                                reason="the harness starts and kills the ringtide binary itself")

CYCLES = int(os.environ.get("RINGTIDE_CRASH_CYCLES", "20"))


def test_sigkill_under_load_loses_nothing_acknowledged():
    problems, summary = crash_harness.run(CYCLES, seed=20261125, log=lambda *_: None)
    print("crash harness:", summary)
    assert summary["acked"] > 0, f"nothing was acknowledged: {summary}"
    assert not problems, "\n".join(problems[:30]) + f"\n{summary}"


POWER_CUT_CYCLES = int(os.environ.get("RINGTIDE_POWER_CUT_CYCLES", "8"))


def test_power_cut_under_load_loses_nothing_acknowledged():
    """Each kill is a simulated power cut: the broker journals every completed sync
    (RINGTIDE_FAULT_SYNC_JOURNAL) and the harness drops every byte the journal does not show as synced
    before restarting it. Fails if an ack can leave before its fdatasync completed, which SIGKILL alone
    cannot show (the page cache keeps unsynced bytes). Default durability mode only: with a flush interval
    acks do not wait for fdatasync, by design."""
    problems, summary = crash_harness.run(POWER_CUT_CYCLES, seed=20261201, log=lambda *_: None,
                                          power_cut=True)
    print("power-cut harness:", summary)
    assert summary["acked"] > 0, f"nothing was acknowledged: {summary}"
    assert summary["power_cut"].get("segments_cut", 0) > 0, f"no power cut dropped unsynced bytes: {summary}"
    assert not problems, "\n".join(problems[:30]) + f"\n{summary}"
