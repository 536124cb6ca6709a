"""Probe a broker's answers to hostile Fetch requests with rawfetch (not a pytest module: run it by hand).

    RINGTIDE_TEST_TARGET=kafka python3 tests/integration/fetch_probe.py [--big]

Starts one broker (conftest.Broker, Kafka 4.4 or target/release/ringtide), fills a 1-partition topic with
~20 MB of 10 KB records and a 3-partition topic, then prints what each request gets back. --big also
fills 100 partitions x ~1.2 MB to measure the cap on one answer (broker fetch.max.bytes).
"""

import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import TARGET, Broker, create_topic  # noqa: E402
from rawfetch import Part, fetch, topic_id  # noqa: E402
from test_protocol_errors import api_versions_v0, connect  # noqa: E402
from test_fetch_limits import produce  # noqa: E402

MiB = 1 << 20
MAXI = 2**31 - 1


def show(label, r):
    parts = [dict(i=p.index, err=p.error_code, hw=p.high_watermark, lso=p.last_stable_offset,
                  lstart=p.log_start_offset, bytes=p.records_len, batches=p.batches, recs=p.records,
                  partial=p.partial_bytes if p.partial else 0, first=p.first_offset, next=p.next_offset)
             for p in r.partitions]
    if len(parts) > 6:
        errs = sorted({(p.error_code) for p in r.partitions})
        head = parts[:3]
        parts = {"first3": head, "n": len(parts), "errs": errs,
                 "nonempty": sum(1 for p in r.partitions if p.records_len > 0)}
    print(f"{label}: {r.summary()} {'OVERSIZE' if r.oversize else ''}\n    {json.dumps(parts)}", flush=True)


def main():
    big = "--big" in sys.argv
    b = Broker("fetch-probe")
    b.start()
    try:
        run(b, big)
    finally:
        b.cleanup()


def run(b, big):
    bs = b.bootstrap
    one, three = f"one-{uuid.uuid4().hex[:6]}", f"three-{uuid.uuid4().hex[:6]}"
    create_topic(bs, one, 1)
    create_topic(bs, three, 3)
    t0 = time.monotonic()
    produce(bs, one, 1, 2000, 10_000)
    produce(bs, three, 3, 300, 10_000)
    print(f"produced in {time.monotonic() - t0:.1f}s", flush=True)
    s = connect(b)
    s.settimeout(60)
    tid1, tid3 = topic_id(s, one), topic_id(s, three)
    corr = [100]

    def f(label, version, parts, **kw):
        corr[0] += 1
        t = time.monotonic()
        r = fetch(s, version, parts, correlation_id=corr[0], **kw)
        show(f"{label} [v{version}, {time.monotonic() - t:.2f}s]", r)
        return r

    def key(v, name, tid):
        return name if v < 13 else tid

    for v in (11, 12, 15):
        k1, k3 = key(v, one, tid1), key(v, three, tid3)
        print(f"\n===== version {v}")
        f("baseline one p0 pmb=1MiB", v, [Part(k1, 0, 0, MiB)])
        f("baseline three p0..2 pmb=1MiB", v, [Part(k3, i, 0, MiB) for i in range(3)])
        # a. duplicates
        f("a. same partition x100 (one topic entry) pmb=1MiB", v, [Part(k1, 0, 0, MiB)] * 100)
        f("a. same partition x100 (100 topic entries) pmb=1MiB", v, [Part(k1, 0, 0, MiB)] * 100,
          one_topic_entry_per_part=True)
        f("a. same partition x100 pmb=20MiB", v, [Part(k1, 0, 0, 20 * MiB)] * 100)
        f("a. same partition x2, different offsets (0 then 500)", v, [Part(k1, 0, 0, MiB), Part(k1, 0, 500, MiB)])
        # b. max_bytes
        for mb in (0, -1, MAXI, 1):
            f(f"b. max_bytes={mb} three pmb=1MiB", v, [Part(k3, i, 0, MiB) for i in range(3)], max_bytes=mb)
        for pmb in (0, -1, 1, 1000):
            f(f"b. pmb={pmb} three", v, [Part(k3, i, 0, pmb) for i in range(3)])
        f("b. pmb=1 on p1 only (p0 pmb=0)", v, [Part(k3, 0, 0, 0), Part(k3, 1, 0, 1), Part(k3, 2, 0, 1)])
        f("b. max_bytes=1 p0 pmb=0", v, [Part(k3, 0, 0, 0), Part(k3, 1, 0, MiB), Part(k3, 2, 0, MiB)], max_bytes=1)
        f("b. max_bytes=100000 pmb 1MiB", v, [Part(k3, i, 0, MiB) for i in range(3)], max_bytes=100000)
        # e. offsets
        f("e. offset=hw", v, [Part(k1, 0, 2000, MiB)])
        f("e. offset=hw+1", v, [Part(k1, 0, 2001, MiB)])
        f("e. offset=-1", v, [Part(k1, 0, -1, MiB)])
        f("e. offset=-5", v, [Part(k1, 0, -5, MiB)])
        # g. read_committed
        f("g. isolation=1", v, [Part(k3, i, 0, 1000) for i in range(3)], isolation_level=1)
        # f. unknown
        if v < 13:
            f("f. 5000 partitions of missing topic", v, [Part("no-such-topic-xyz", i, 0, MiB) for i in range(5000)])
        else:
            f("f. 5000 partitions of unknown topic id", v, [Part(uuid.uuid4().bytes, i, 0, MiB) for i in range(5000)])
        f("f. partitions 3..5002 of three", v, [Part(k3, i, 0, MiB) for i in range(3, 5003)])
        f("f. 5000 x (partition -1) of three", v, [Part(k3, -1, 0, MiB)] * 5000)
        f("f. mixed: three p0 then 1000 missing", v, [Part(k3, 0, 0, MiB)] + [Part(k3, i, 0, MiB) for i in range(3, 1003)])
        # d. min_bytes
        f("d. min_bytes=100MB wait=1000 (at hw)", v, [Part(k3, i, 300, MiB) for i in range(3)],
          min_bytes=100_000_000, max_wait_ms=1000)
        f("d. min_bytes=100MB wait=1000 (from 0)", v, [Part(k3, i, 0, MiB) for i in range(3)],
          min_bytes=100_000_000, max_wait_ms=1000)
        f("d. min_bytes=1 wait=-1 (at hw)", v, [Part(k3, 0, 300, MiB)], min_bytes=1, max_wait_ms=-1)
        f("d. min_bytes=1 wait=0 (at hw)", v, [Part(k3, 0, 300, MiB)], min_bytes=1, max_wait_ms=0)
        f("d. min_bytes=100MB wait=-1000 (at hw)", v, [Part(k3, 0, 300, MiB)], min_bytes=100_000_000,
          max_wait_ms=-1000)
        f("d. min_bytes=-1 wait=1000 (at hw)", v, [Part(k3, 0, 300, MiB)], min_bytes=-1, max_wait_ms=1000)
        # h. trailing partial batch
        f("h. pmb=1.5MiB one", v, [Part(k1, 0, 0, 3 * MiB // 2)])
        f("h. pmb=20MiB one", v, [Part(k1, 0, 0, 20 * MiB)])
        f("h. pmb=max one", v, [Part(k1, 0, 0, MAXI)])
        # c. huge
        f("c. one + three pmb=max, max_bytes=max", v, [Part(k1, 0, 0, MAXI)] + [Part(k3, i, 0, MAXI) for i in range(3)])
        assert api_versions_v0(s, 5)[0] == 0
    if big:
        hundred = f"hundred-{uuid.uuid4().hex[:6]}"
        create_topic(bs, hundred, 100)
        t0 = time.monotonic()
        produce(bs, hundred, 100, 120, 10_000)
        print(f"produced hundred in {time.monotonic() - t0:.1f}s", flush=True)
        tid = topic_id(s, hundred)
        for v in (11, 15):
            k = hundred if v < 13 else tid
            f("c. 100 partitions x pmb=1MiB max_bytes=max", v, [Part(k, i, 0, MiB) for i in range(100)])
            f("c. 100 partitions x pmb=max max_bytes=max", v, [Part(k, i, 0, MAXI) for i in range(100)])
            f("c. 100 partitions x pmb=1MiB max_bytes=10MiB", v, [Part(k, i, 0, MiB) for i in range(100)],
              max_bytes=10 * MiB)
            r = fetch(s, v, [Part(k, i, 0, MiB) for i in range(100)], correlation_id=9)
            nonempty = [p for p in r.partitions if p.records_len > 0]
            print("   per-partition bytes (nonempty):", [(p.index, p.records_len, p.batches, p.partial_bytes)
                                                          for p in nonempty][-4:], len(nonempty))
    print("TARGET", TARGET)


if __name__ == "__main__":
    main()
