"""Disk full: on a small loop-mounted ext4 filesystem, a produce that does not fit gets KAFKA_STORAGE_ERROR
(56); the broker stays up and serves reads; nothing acknowledged before is damaged; and writes resume once
space is freed (the partition is not taken offline for good). Needs root and a loop device; skipped
otherwise."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import TARGET, Broker, consume_all, create_topic
from test_hostile import produce_v3
from test_protocol_errors import connect

pytestmark = pytest.mark.skipif(TARGET != "ringtide", reason="mounts a filesystem under Ringtide's data dir")

KAFKA_STORAGE_ERROR = 56
VALUE = 256 * 1024


def batch(i):
    from kafka.record.memory_records import MemoryRecordsBuilder
    b = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=VALUE + (1 << 16))
    b.append(0, str(i).encode(), value(i), headers=[])
    b.close()
    return bytes(b.buffer())


def value(i):
    return bytes([i % 251]) * (VALUE - 16) + f"{i:016d}".encode()


@pytest.fixture
def small_fs():
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a loop device")
    tmp = Path(tempfile.mkdtemp(prefix="ringtide-diskfull-"))
    img, mnt = tmp / "fs.img", tmp / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"cannot mount a loop filesystem here: {e}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def test_disk_full_then_space_freed(small_fs, request):
    b = Broker(request.node.name)
    b.data_dir = small_fs / "data"
    b.data_dir.mkdir()
    request.node._ringtide_broker = b
    try:
        b.start()
        topic = "full"
        create_topic(b.bootstrap, topic, 1)
        # Ballast that will be deleted to free space later.
        ballast = small_fs / "ballast"
        with open(ballast, "wb") as f:
            f.write(b"\xbb" * (24 << 20))
            os.fsync(f.fileno())

        acked = {}  # offset -> i
        failed_at = None
        with connect(b) as s:
            for i in range(400):
                err, base = produce_v3(s, i, topic, 0, batch(i))
                if err == 0:
                    acked[base] = i
                    continue
                assert err == KAFKA_STORAGE_ERROR, f"produce {i} failed with {err}, expected KAFKA_STORAGE_ERROR"
                failed_at = i
                break
            assert failed_at is not None, "the filesystem never filled up"
            assert len(acked) >= 10
            # Still full: further writes fail the same way, fast; the connection and the broker stay up.
            err, _ = produce_v3(s, 1000, topic, 0, batch(1000))
            assert err == KAFKA_STORAGE_ERROR
        assert b.alive()
        assert "disk full" in b.log_path.read_text(errors="replace")

        # Reads serve everything acknowledged, unchanged.
        n = len(acked)
        got = consume_all(b.bootstrap, topic, 1, expected_counts={0: n})[0]
        assert [(m.offset(), m.value()) for m in got] == [(o, value(acked[o])) for o in sorted(acked)]

        # Free space: writes resume without a restart.
        ballast.unlink()
        deadline = time.monotonic() + 20
        with connect(b) as s:
            while True:
                err, base = produce_v3(s, 2000, topic, 0, batch(2000))
                if err == 0:
                    break
                assert err == KAFKA_STORAGE_ERROR
                assert time.monotonic() < deadline, "writes did not resume after space was freed"
                time.sleep(0.5)
        acked[base] = 2000
        # The batches refused while the disk was full may have been written once space came back (their
        # producer got an error, as after a timeout); every acknowledged one is there, unchanged.
        b.restart(signal.SIGTERM)
        assert b.last_exit_code == 0
        got = consume_all(b.bootstrap, topic, 1)[0]
        by_offset = {m.offset(): m.value() for m in got}
        for o, i in acked.items():
            assert by_offset.get(o) == value(i), f"acknowledged offset {o} lost or changed"
        assert [m.offset() for m in got] == list(range(len(got)))
    finally:
        b.cleanup()
