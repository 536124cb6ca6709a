"""Fail-stop: a panic on one core ends the whole broker with a log line naming the thread and the cause,
instead of leaving the other cores serving while requests forwarded to the dead core hang forever."""

import os
import signal
import subprocess
import time

import pytest

from conftest import TARGET, Broker

pytestmark = pytest.mark.skipif(TARGET != "ringtide", reason="fault injection is Ringtide's own")


@pytest.mark.parametrize("core", [0, 1])
def test_panic_on_one_core_stops_the_whole_broker(request, core):
    b = Broker(f"fail-stop-{core}")
    request.node._ringtide_broker = b
    os.environ["RINGTIDE_FAULT_PANIC_CORE"] = str(core)
    try:
        b.start()
    finally:
        del os.environ["RINGTIDE_FAULT_PANIC_CORE"]
    try:
        rc = b.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        b.cleanup()
        pytest.fail("the broker kept running after a core panicked")
    assert rc == -signal.SIGABRT, f"exit {rc}, expected an abort"
    log = b.log_path.read_text(errors="replace")
    assert "fatal" in log and f"injected fault on core {core}" in log, log[-3000:]
    b.cleanup()
