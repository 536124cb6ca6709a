"""Damaged partition files after a crash: the broker starts, cuts the log back to its last valid batch (or
rebuilds the index), says so in one log line naming the file and offset, serves every record before that
point to a real client, never serves the damaged bytes, and takes new writes after it.

Each case: produce over three 1 MiB segments, SIGKILL the broker, damage the files, start it again."""

import os
import re
import signal
import time
import struct

import pytest
from confluent_kafka import Producer

from conftest import TARGET, consume_all, create_topic

pytestmark = pytest.mark.skipif(TARGET != "ringtide", reason="damages Ringtide's files and reads its log lines")

RECORDS = 1500  # ~2.9 MiB of values: three segments of 1 MiB


def value(i):
    return f"corruption-{i:06d}-".encode() + bytes([i % 251]) * 1900


def produce(bootstrap, topic, start, count):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.num.messages": 20})
    acked, errors = {}, []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[msg.offset()] = int(msg.key())

    for i in range(start, start + count):
        p.produce(topic, key=str(i).encode(), value=value(i), on_delivery=cb)
        p.poll(0)
    assert p.flush(60) == 0 and not errors, errors[:3]
    return acked


def batches(path):
    """[(position, base_offset, total_size)] of the valid-looking batches of a segment file, stopping at
    zero padding."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos + 12 <= len(data):
        base, length = struct.unpack(">qi", data[pos:pos + 12])
        if length <= 0 or pos + 12 + length > len(data):
            break
        out.append((pos, base, 12 + length))
        pos += 12 + length
    return out


def segments(part_dir):
    return sorted(p for p in part_dir.iterdir() if re.fullmatch(r"\d{20}\.log", p.name))


CASES = ["torn-last-batch", "flipped-bytes", "zero-filled-tail", "missing-index", "truncated-index",
         "stray-files", "damaged-checkpoint", "damaged-snapshot"]
# Cases whose files a clean stop writes (the recovery-point checkpoint, producer snapshots): SIGTERM first.
CLEAN_STOP_CASES = {"damaged-checkpoint", "damaged-snapshot"}


@pytest.mark.parametrize("case", CASES)
def test_damaged_files_are_recovered(fresh_broker, topic_name, case):
    b = fresh_broker
    create_topic(b.bootstrap, topic_name, 1, config={"segment.bytes": str(1 << 20)})
    acked = produce(b.bootstrap, topic_name, 0, RECORDS)
    assert sorted(acked) == list(range(RECORDS))
    b.stop(signal.SIGTERM if case in CLEAN_STOP_CASES else signal.SIGKILL)

    part = b.data_dir / f"{topic_name}-0"
    segs = segments(part)
    assert len(segs) >= 3, f"expected rolled segments, got {[s.name for s in segs]}"
    active, first = segs[-1], segs[0]
    last_pos, last_base, last_size = batches(active)[-1]
    cut = RECORDS  # records that must be served afterwards: offsets below `cut`
    expect_line = None
    if case == "torn-last-batch":
        with open(active, "r+b") as f:
            f.truncate(last_pos + last_size // 2)
        cut = last_base
        expect_line = ("truncating log segment", active.name, f"offset={last_base}")
    elif case == "flipped-bytes":
        with open(active, "r+b") as f:
            f.seek(last_pos + last_size - 100)
            byte = f.read(1)
            f.seek(last_pos + last_size - 100)
            f.write(bytes([byte[0] ^ 0xFF]))
        cut = last_base
        expect_line = ("truncating log segment", active.name, f"offset={last_base}", "CRC mismatch")
    elif case == "zero-filled-tail":
        with open(active, "r+b") as f:
            f.seek(last_pos)
            f.write(b"\0" * last_size + b"\0" * 8192)
        cut = last_base
        expect_line = ("truncating log segment", active.name, f"offset={last_base}", "zero-filled tail")
    elif case == "missing-index":
        idx = first.with_suffix(".index")
        assert idx.exists()
        idx.unlink()
        expect_line = ("rebuilding index file", idx.name)
    elif case == "truncated-index":
        idx = first.with_suffix(".timeindex")
        assert idx.exists() and idx.stat().st_size > 12
        with open(idx, "r+b") as f:
            f.truncate(5)
        expect_line = ("rebuilding index file", idx.name)
    elif case == "stray-files":
        (part / "notes.txt").write_text("not a segment")
        (part / "00000000000000000000.log.swp").write_bytes(b"\xde\xad" * 100)
        (part / "00000000000000099999.index").write_bytes(b"\x00" * 16)
        expect_line = ("ignoring stray file", "notes.txt")
    elif case == "damaged-checkpoint":
        cp = b.data_dir / "recovery-point-offset-checkpoint"
        assert f"{topic_name} 0 {RECORDS}" in cp.read_text()
        cp.write_text(f"0\n2\n{topic_name} 0 {RECORDS}\n")  # says two entries, holds one
        expect_line = ("ignoring a damaged recovery point checkpoint",)
    elif case == "damaged-snapshot":
        snaps = sorted(part.glob("*.snapshot"))
        assert snaps and snaps[-1].name == f"{RECORDS:020d}.snapshot", [s.name for s in snaps]
        data = bytearray(snaps[-1].read_bytes())
        data[-3] ^= 0x40
        snaps[-1].write_bytes(bytes(data))
        expect_line = ("ignoring producer snapshot", snaps[-1].name, "CRC")

    log_before = b.log_path.read_text(errors="replace")
    b.start()
    got = consume_all(b.bootstrap, topic_name, 1, expected_counts={0: cut})[0]
    assert [m.offset() for m in got] == list(range(cut))
    for m in got:
        i = int(m.key())
        assert i == acked[m.offset()] and m.value() == value(i), f"offset {m.offset()} differs"

    new_lines = b.log_path.read_text(errors="replace")[len(log_before):].splitlines()
    hits = [ln for ln in new_lines if all(s in ln for s in expect_line)]
    assert len(hits) == 1, f"expected one log line with {expect_line}, got {hits or new_lines[-30:]}"

    # The log takes writes again, right after the last valid batch.
    more = produce(b.bootstrap, topic_name, RECORDS, 50)
    assert sorted(more) == list(range(cut, cut + 50))
    got = consume_all(b.bootstrap, topic_name, 1, expected_counts={0: cut + 50})[0]
    assert [int(m.key()) for m in got[cut:]] == list(range(RECORDS, RECORDS + 50))


def test_bad_base_offset_in_a_sealed_segment_does_not_stop_the_start(fresh_broker, topic_name):
    """A flipped bit in the base offset of a sealed segment's first batch (outside the batch CRC) used to
    panic recovery: the broker never listened. Now that segment is cut at the bad batch with a log line,
    and the broker serves: the records of the active segment are still there and produces continue at
    the same offsets."""
    b = fresh_broker
    create_topic(b.bootstrap, topic_name, 1, config={"segment.bytes": str(1 << 20)})
    acked = produce(b.bootstrap, topic_name, 0, RECORDS)
    assert sorted(acked) == list(range(RECORDS))
    b.stop(signal.SIGKILL)

    segs = segments(b.data_dir / f"{topic_name}-0")
    assert len(segs) >= 3
    first, active = segs[0], segs[-1]
    with open(first, "r+b") as f:
        f.seek(0)
        byte = f.read(1)
        f.seek(0)
        f.write(bytes([byte[0] ^ 0x40]))  # the base offset's top byte: offset ~2^62
    # Recovery reads a sealed segment below the newest producer snapshot (every roll writes one) only if its
    # index files are missing or fail their checks, as Kafka's does: remove them so that it reads this one.
    for index in (first.with_suffix(".index"), first.with_suffix(".timeindex")):
        index.unlink()

    log_before = b.log_path.read_text(errors="replace")
    b.start()
    new_lines = b.log_path.read_text(errors="replace")[len(log_before):]
    assert "batch offset out of the segment's range" in new_lines and first.name in new_lines, new_lines[-3000:]
    active_base = batches(active)[0][1]
    more = produce(b.bootstrap, topic_name, RECORDS, 50)
    assert sorted(more) == list(range(RECORDS, RECORDS + 50)), "produces continue at the same offsets"
    # The active segment's records, and the new ones, read back from its base offset.
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"unused-{topic_name}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic_name, 0, active_base)])
    offsets, deadline = [], time.monotonic() + 60
    while (not offsets or offsets[-1] < RECORDS + 49) and time.monotonic() < deadline:
        m = c.poll(1)
        if m is not None and not m.error():
            offsets.append(m.offset())
    c.close()
    assert offsets == list(range(active_base, RECORDS + 50))
