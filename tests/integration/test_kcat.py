"""kcat (librdkafka's command-line client): metadata listing and a
produce/consume round trip."""

import json
import subprocess

from conftest import create_topic


def kcat(*args, input=None, timeout=60):
    io = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    p = subprocess.run(["kcat", *args], capture_output=True, timeout=timeout, **io)
    assert p.returncode == 0, f"kcat {args} exited {p.returncode}\nstdout:\n{p.stdout[-3000:]!r}\nstderr:\n{p.stderr[-3000:]!r}"
    return p


def test_metadata_list(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 4)
    out = kcat("-L", "-b", broker.bootstrap).stdout.decode()
    assert "1 brokers:" in out, out
    assert f"at 127.0.0.1:{broker.port}" in out, out
    assert f'topic "{topic_name}" with 4 partitions:' in out, out

    md = json.loads(kcat("-L", "-J", "-b", broker.bootstrap, "-t", topic_name).stdout)
    assert [(b["name"]) for b in md["brokers"]] == [f"127.0.0.1:{broker.port}"]
    (t,) = md["topics"]
    assert t["topic"] == topic_name and "error" not in t
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2, 3]
    for p in t["partitions"]:
        assert p["leader"] == md["brokers"][0]["id"]


def test_produce_consume_roundtrip(broker, topic_name):
    b = broker.bootstrap
    lines = [f"key{i}\tvalue number {i}" for i in range(1000)]
    kcat("-P", "-b", b, "-t", topic_name, "-p", "0", "-K", "\t", "-z", "snappy",
         input=("\n".join(lines) + "\n").encode())
    out = kcat("-C", "-b", b, "-t", topic_name, "-p", "0", "-o", "beginning", "-e",
               "-f", "%o|%k|%s\n").stdout.decode()
    got = out.splitlines()
    assert got == [f"{i}|key{i}|value number {i}" for i in range(1000)], got[:5]

    # and offsets in the middle / from the end
    out = kcat("-C", "-b", b, "-t", topic_name, "-p", "0", "-o", "990", "-e", "-f", "%o %s\n").stdout.decode()
    assert out.splitlines() == [f"{i} value number {i}" for i in range(990, 1000)]
    out = kcat("-C", "-b", b, "-t", topic_name, "-p", "0", "-o", "-3", "-e", "-f", "%o\n").stdout.decode()
    assert out.split() == ["997", "998", "999"]
