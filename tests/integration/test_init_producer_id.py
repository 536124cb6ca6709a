"""InitProducerId for producers without a transactional id (issue 11, item 4), on a raw socket.

Kafka 4.4 (KafkaApis.handleInitProducerIdRequest, TransactionCoordinator.handleInitProducerId):
producer_id and producer_epoch (v3+) must be both -1 or both set (else INVALID_REQUEST, id -1, epoch -1);
with a null transactional_id the answer is always a new producer id with epoch 0, whatever id and epoch
the request names. So a client can never bump, and so fence, another client's producer id.
"""

import struct
import time

import pytest

from rawfetch import compact_str, request_v2
from test_protocol_errors import connect, recv_frame, request

INIT_PRODUCER_ID = 22
NONE = 0
COORDINATOR_LOAD_IN_PROGRESS = 14
INVALID_REQUEST = 42


def init_producer_id(s, version, corr, producer_id=-1, epoch=-1, timeout=60):
    """-> (error_code, producer_id, producer_epoch). Retries COORDINATOR_LOAD_IN_PROGRESS (a Kafka broker
    just started answers it until its first block of producer ids has arrived)."""
    deadline = time.monotonic() + timeout
    while True:
        got = init_producer_id_once(s, version, corr, producer_id, epoch)
        if got[0] != COORDINATOR_LOAD_IN_PROGRESS or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def init_producer_id_once(s, version, corr, producer_id, epoch):
    if version >= 2:  # flexible: request header v2, compact strings, tagged fields
        body = compact_str(None) + struct.pack(">i", 60000)
        if version >= 3:
            body += struct.pack(">qh", producer_id, epoch)
        body += b"\x00"
        s.sendall(request_v2(INIT_PRODUCER_ID, version, corr, body))
    else:
        body = struct.pack(">hi", -1, 60000)
        s.sendall(request(INIT_PRODUCER_ID, version, corr, body))
    resp = recv_frame(s)
    (got,) = struct.unpack(">i", resp[:4])
    assert got == corr
    at = 5 if version >= 2 else 4  # response header v1 has tagged fields
    _throttle, err, pid, ep = struct.unpack(">ihqh", resp[at:at + 16])
    return err, pid, ep


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4, 5])
def test_new_producer_gets_a_new_id_with_epoch_zero(broker, version):
    with connect(broker) as s:
        err, pid, ep = init_producer_id(s, version, 1)
        assert (err, ep) == (NONE, 0) and pid >= 0
        err, pid2, ep = init_producer_id(s, version, 2)
        assert (err, ep) == (NONE, 0) and pid2 >= 0 and pid2 != pid


@pytest.mark.parametrize("version", [3, 4, 5])
def test_naming_an_existing_producer_id_gets_a_new_one(broker, version):
    with connect(broker) as s:
        err, pid, ep = init_producer_id(s, version, 1)
        assert (err, ep) == (NONE, 0)
        # Another client names that id and epoch: it does not bump it, it gets its own.
        with connect(broker) as other:
            err, other_pid, other_ep = init_producer_id(other, version, 1, pid, ep)
        assert (err, other_ep) == (NONE, 0) and other_pid not in (pid, -1)
        # The owner asking with its own id and epoch (the KIP-360 recovery) gets a new id too.
        err, pid2, ep2 = init_producer_id(s, version, 2, pid, ep)
        assert (err, ep2) == (NONE, 0) and pid2 not in (pid, other_pid, -1)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_made_up_producer_id_gets_a_new_one(broker, version):
    with connect(broker) as s:
        for corr, (pid, ep) in enumerate([(123456789, 7), (0, 0), (2**62, 32766), (5, 32767)], 1):
            err, got, got_ep = init_producer_id(s, version, corr, pid, ep)
            assert (err, got_ep) == (NONE, 0), (pid, ep)
            assert got >= 0


@pytest.mark.parametrize("version", [3, 4, 5])
@pytest.mark.parametrize("pid,ep", [(-1, 0), (-1, 5), (42, -1), (0, -1)])
def test_only_one_of_id_and_epoch_is_an_invalid_request(broker, version, pid, ep):
    with connect(broker) as s:
        assert init_producer_id(s, version, 1, pid, ep) == (INVALID_REQUEST, -1, -1)
