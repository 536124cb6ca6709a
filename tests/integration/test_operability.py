"""Operability: metrics endpoint, Kafka's ops tools, clear start-up failures, CLI.

Every check runs the real `ringtide` binary; the ops tools are Kafka 4.4's own classes.
"""
import json
import os
import re
import socket
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from conftest import TARGET, REPO, KAFKA_RUN, create_topic, free_port

ringtide_only = pytest.mark.skipif(TARGET != "ringtide", reason="ringtide's own admin surface")

BIN = Path(os.environ.get("RINGTIDE_BIN", REPO / "target" / "release" / "ringtide"))


def kafka_tool(cls, *args, check=True):
    p = subprocess.run([str(KAFKA_RUN), cls, *args], capture_output=True, text=True, timeout=180,
                       stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, f"{cls} {args} failed rc={p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def produce(bootstrap, topic, n, partitions=None):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors = []
    for i in range(n):
        kw = {} if partitions is None else {"partition": i % partitions}
        p.produce(topic, key=str(i).encode(), value=b"v" * 100,
                  on_delivery=lambda err, msg: errors.append(err) if err else None, **kw)
    assert p.flush(30) == 0
    assert not errors, errors


def http_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.read().decode()


def metric(text, name, labels=""):
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)}\s+(\S+)$", text, re.M)
    return float(m.group(1)) if m else None


@ringtide_only
def test_metrics_and_status(broker, topic_name):
    topic = topic_name
    create_topic(broker.bootstrap, topic, partitions=2)
    produce(broker.bootstrap, topic, 500, partitions=2)
    status, text = http_get(broker.admin_port, "/metrics")
    assert status == 200
    assert metric(text, "kafka_server_brokertopicmetrics_messagesin_total", f'{{topic="{topic}"}}') == 500
    assert metric(text, "kafka_server_brokertopicmetrics_bytesin_total", f'{{topic="{topic}"}}') > 500 * 100
    assert metric(text, "kafka_network_requestmetrics_requests_total", '{request="Produce"}') >= 1
    assert metric(text, "ringtide_log_flush_seconds_count") >= 1
    # one partition per core with two cores: each core reports its partitions
    per_core = [metric(text, "ringtide_partitions", f'{{core="{c}"}}') for c in (0, 1)]
    assert sum(per_core) >= 2, per_core
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? \S+$', line), line

    status, body = http_get(broker.admin_port, "/v1/status")
    s = json.loads(body)
    assert status == 200 and s["cores"] == 2 and s["partitions"] >= 2 and s["uptime_s"] >= 0


@ringtide_only
def test_deleted_topic_leaves_metrics(broker, topic_name):
    """A deleted topic's per-topic series disappear from /metrics (each core drops its own)."""
    from confluent_kafka.admin import AdminClient
    topic = topic_name
    create_topic(broker.bootstrap, topic, partitions=2)
    produce(broker.bootstrap, topic, 50, partitions=2)
    _, text = http_get(broker.admin_port, "/metrics")
    assert metric(text, "kafka_server_brokertopicmetrics_messagesin_total", f'{{topic="{topic}"}}') == 50
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics([topic])[topic].result(timeout=30)
    # DeleteTopics is answered once every core has installed the metadata without the topic.
    _, text = http_get(broker.admin_port, "/metrics")
    assert f'topic="{topic}"' not in text, text


def test_log_dirs_describe(broker, topic_name):
    topic = topic_name
    create_topic(broker.bootstrap, topic, partitions=2)
    produce(broker.bootstrap, topic, 200, partitions=2)
    p = kafka_tool("org.apache.kafka.tools.LogDirsCommand", "--bootstrap-server", broker.bootstrap,
                   "--describe", "--topic-list", topic)
    line = next(l for l in p.stdout.splitlines() if l.startswith("{"))
    doc = json.loads(line)
    parts = [pt for b in doc["brokers"] for d in b["logDirs"] for pt in d["partitions"]]
    names = sorted(pt["partition"] for pt in parts)
    assert names == [f"{topic}-0", f"{topic}-1"], doc
    assert all(pt["size"] > 0 for pt in parts), doc


def test_configs_describe_and_alter(broker, topic_name):
    topic = topic_name
    create_topic(broker.bootstrap, topic, partitions=1)
    b = ["--bootstrap-server", broker.bootstrap]
    kafka_tool("org.apache.kafka.tools.ConfigCommand", *b, "--alter", "--entity-type", "topics",
               "--entity-name", topic, "--add-config", "retention.ms=123456,segment.bytes=2097152")
    p = kafka_tool("org.apache.kafka.tools.ConfigCommand", *b, "--describe", "--entity-type", "topics",
                   "--entity-name", topic)
    assert "retention.ms=123456" in p.stdout and "segment.bytes=2097152" in p.stdout, p.stdout
    kafka_tool("org.apache.kafka.tools.ConfigCommand", *b, "--alter", "--entity-type", "topics",
               "--entity-name", topic, "--delete-config", "retention.ms")
    p = kafka_tool("org.apache.kafka.tools.ConfigCommand", *b, "--describe", "--entity-type", "topics",
                   "--entity-name", topic)
    assert "retention.ms=123456" not in p.stdout and "segment.bytes=2097152" in p.stdout, p.stdout
    # an invalid value is refused with Kafka's INVALID_CONFIG
    p = kafka_tool("org.apache.kafka.tools.ConfigCommand", *b, "--alter", "--entity-type", "topics",
                   "--entity-name", topic, "--add-config", "retention.ms=soon", check=False)
    assert p.returncode != 0 and "retention.ms" in (p.stdout + p.stderr)
    # static broker configs are visible
    p = kafka_tool("org.apache.kafka.tools.ConfigCommand", *b, "--describe", "--entity-type", "brokers",
                   "--entity-name", "1", "--all")
    assert "log.dirs=" in p.stdout or "log.dir" in p.stdout, p.stdout


def test_broker_api_versions(broker):
    p = kafka_tool("org.apache.kafka.tools.BrokerApiVersionsCommand", "--bootstrap-server", broker.bootstrap)
    assert re.search(r"Produce\(0\): \d+ to \d+", p.stdout), p.stdout
    assert re.search(r"Fetch\(1\): \d+ to \d+ \[usable", p.stdout), p.stdout


# ---------------------------------------------------------------- the binary itself

def run_bin(*args, timeout=20):
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})


@ringtide_only
def test_second_broker_on_the_same_data_dir_is_refused(broker, topic_name):
    """Kafka's `.lock`: a second broker process pointed at a live broker's log.dirs exits with a message
    naming the lock, and touches nothing (the first broker keeps its clean-shutdown state and data)."""
    create_topic(broker.bootstrap, topic_name)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(topic_name, b"before")
    assert p.flush(30) == 0
    port = free_port()
    q = run_bin("--override", f"log.dirs={broker.data_dir}",
                "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
                "--override", f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "--override", f"ringtide.admin.listener=127.0.0.1:{free_port()}")
    assert q.returncode != 0, q.stdout + q.stderr
    assert "lock" in q.stderr and str(broker.data_dir) in q.stderr, q.stderr
    assert broker.alive()
    p.produce(topic_name, b"after")
    assert p.flush(30) == 0
    broker.restart()  # a clean stop and start: the data of both records is intact
    from conftest import consume_all
    got = consume_all(broker.bootstrap, topic_name, 1, expected_counts={0: 2})
    assert [m.value() for m in got[0]] == [b"before", b"after"]


@ringtide_only
def test_cli_help_version_print_config():
    p = run_bin("--help")
    assert p.returncode == 0 and "--override" in p.stdout and "--config" in p.stdout
    p = run_bin("--version")
    assert p.returncode == 0 and re.match(r"ringtide \d+\.\d+\.\d+", p.stdout)
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "server.properties"
        cfg.write_text("num.partitions=4\nno.such.key=1\n")
        p = run_bin("--config", str(cfg), "--override", "log.retention.hours=1", "--print-config")
        assert p.returncode == 0, p.stderr
        lines = {l.split("=")[0]: l for l in p.stdout.splitlines()}
        assert lines["num.partitions"].startswith("num.partitions=4") and "# file" in lines["num.partitions"]
        assert "# override" in lines["log.retention.hours"]
        assert "# default" in lines["log.segment.bytes"]
        assert "no.such.key" in p.stderr  # unknown keys warn


@ringtide_only
@pytest.mark.parametrize("override,key", [
    ("num.partitions=zero", "num.partitions"),
    ("default.replication.factor=3", "default.replication.factor"),
    ("log.message.timestamp.type=Sometimes", "log.message.timestamp.type"),
    ("listeners=HTTP://:80", "listeners"),
])
def test_invalid_config_exits_naming_key(override, key):
    p = run_bin("--override", override)
    assert p.returncode != 0
    assert key in p.stderr, p.stderr


@ringtide_only
def test_port_in_use_is_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with tempfile.TemporaryDirectory() as d:
            p = run_bin("--override", f"listeners=PLAINTEXT://127.0.0.1:{port}", "--override", f"log.dirs={d}",
                        "--override", "ringtide.admin.listener=none")
    assert p.returncode != 0
    assert str(port) in p.stderr and "in use" in p.stderr, p.stderr


@ringtide_only
def test_foreign_or_unwritable_data_dir_is_refused():
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "meta.properties").write_text("version=1\nnode.id=7\ncluster.id=abc\n")
        p = run_bin("--override", f"listeners=PLAINTEXT://127.0.0.1:{free_port()}", "--override", f"log.dirs={d}",
                    "--override", "ringtide.admin.listener=none")
        assert p.returncode != 0
        assert "node.id 7" in p.stderr and "node.id=7" in p.stderr, p.stderr
    p = run_bin("--override", f"listeners=PLAINTEXT://127.0.0.1:{free_port()}",
                "--override", "log.dirs=/proc/ringtide-cannot-write-here",
                "--override", "ringtide.admin.listener=none")
    assert p.returncode != 0 and "log.dirs" in p.stderr, p.stderr


@ringtide_only
def test_grafana_dashboard_uses_served_metrics(broker):
    """Every metric the dashboard queries is one the broker serves (so the dashboard cannot rot)."""
    _, text = http_get(broker.admin_port, "/metrics")
    served = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    dash = json.loads((REPO / "docs" / "grafana-ringtide.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b((?:kafka|ringtide)_[a-z_]+)", e)}
    missing = {m for m in used if m not in served and re.sub(r"_(sum|count)$", "", m) not in served}
    assert used and not missing, missing


def test_delete_records(broker, topic_name, tmp_path):
    """kafka-delete-records moves the log start offset; it holds across a restart."""
    create_topic(broker.bootstrap, topic_name, partitions=1)
    produce(broker.bootstrap, topic_name, 300, partitions=1)
    spec = tmp_path / "delete.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic_name, "partition": 0, "offset": 120}]}))
    p = kafka_tool("org.apache.kafka.tools.DeleteRecordsCommand", "--bootstrap-server", broker.bootstrap,
                   "--offset-json-file", str(spec))
    assert "low_watermark: 120" in p.stdout, p.stdout

    def earliest():
        out = kafka_tool("org.apache.kafka.tools.GetOffsetShell", "--bootstrap-server", broker.bootstrap,
                         "--topic", topic_name, "--time", "-2").stdout
        return int(re.search(rf"^{re.escape(topic_name)}:0:(\d+)$", out, re.M).group(1))

    assert earliest() == 120
    broker.restart()
    assert earliest() == 120
    # beyond the high watermark is refused with OFFSET_OUT_OF_RANGE
    spec.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic_name, "partition": 0, "offset": 10_000}]}))
    p = kafka_tool("org.apache.kafka.tools.DeleteRecordsCommand", "--bootstrap-server", broker.bootstrap,
                   "--offset-json-file", str(spec), check=False)
    assert "OffsetOutOfRange" in (p.stdout + p.stderr) or "out of range" in (p.stdout + p.stderr).lower(), p.stdout + p.stderr
