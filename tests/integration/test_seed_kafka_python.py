"""The seed's kafka-python examples (tests/seed/, made Python 3), run as
subprocesses against the broker, checking what they print."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SEED = Path(__file__).resolve().parents[1] / "seed"


def run_seed(bootstrap, script, *args, timeout=120):
    env = {**os.environ, "BOOTSTRAP_SERVERS": bootstrap, "CONSUMER_TIMEOUT_MS": "5000",
           "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, str(SEED / script), *args], cwd=SEED, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{script} {args} exited {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p.stdout


def start_seed(bootstrap, script, *args):
    env = {**os.environ, "BOOTSTRAP_SERVERS": bootstrap, "CONSUMER_TIMEOUT_MS": "5000",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(SEED / script), *args], cwd=SEED, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p, what, timeout=120):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"{what} exited {p.returncode}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    return out


def test_producer_consumer(bootstrap):
    """producer.py sends 5 gzip messages to `test`; consumer.py prints them in order."""
    run_seed(bootstrap, "producer.py")
    out = run_seed(bootstrap, "consumer.py")
    lines = [l for l in out.splitlines() if l.strip()]
    assert len(lines) == 5, out
    values = []
    for line in lines:
        topic, ts, value = line.split(" ", 2)
        assert topic == "test"
        assert int(ts) > 1_500_000_000_000  # a real epoch-millis timestamp
        values.append(ast.literal_eval(value))
    assert values == [b"some_message_bytes [%d]" % i for i in range(5)]


LINE = re.compile(r"^(adder-[01]) (\d+) (b'.*') sum: (-?\d+)$")


def test_adder(bootstrap):
    """The `adder` example: a 2-partition topic `adder` decides how many
    topics adder-N the producer spreads 10000 json values over."""
    out = run_seed(bootstrap, "create_topic.py", "adder", "2")
    assert "created adder" in out

    out = run_seed(bootstrap, "producer_adder.py")
    assert out.strip().splitlines()[0] == "{0, 1}", out  # partitions_for('adder')

    # the two consumers of the seed run side by side
    procs = {n: start_seed(bootstrap, "consumer_adder.py", str(n)) for n in (0, 1)}
    outs = {n: finish(p, f"consumer_adder.py {n}") for n, p in procs.items()}

    for n, out in outs.items():
        lines = out.splitlines()
        assert lines[0] == "{0, 1}", out[:500]  # partitions_for_topic('adder')
        recs = []
        for line in lines[1:]:
            m = LINE.match(line)
            assert m, f"unexpected line from consumer_adder {n}: {line!r}"
            topic, ts, value, s = m.groups()
            assert topic == f"adder-{n}"
            vals = json.loads(ast.literal_eval(value))
            assert vals["op1"] == vals["op2"]
            assert int(s) == vals["op1"] + vals["op2"]
            recs.append(vals["op1"])
        assert len(recs) == 5000, f"adder-{n}: {len(recs)} records"
        assert recs == list(range(n, 10000, 2)), f"adder-{n}: records missing or out of order"
        total = sum(int(LINE.match(l).group(4)) for l in lines[1:])
        assert total == sum(2 * i for i in range(n, 10000, 2))
