"""Faults a real client cannot produce on demand, by a raw UDP peer against the real server:
wrong TIDs, duplicate RRQs/ACKs, loss, malformed packets, limits."""
import os

import pytest

from tests.support.tftp import RawClient, Server
from tftp import codec
from tftp.codec import Ack, Data, Error, OAck


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tftpfault") / "root"
    root.mkdir()
    (root / "f.bin").write_bytes(os.urandom(512 * 4 + 100))
    (root / "t.txt").write_bytes(b"a\nb\rc")
    s = Server(root, "--timeout", "0.3", "--retries", "2", "--max-per-client", "64",
               "--max-blksize", "1468")
    yield s
    s.stop()


@pytest.fixture
def client(server):
    c = RawClient(server.port)
    yield c
    c.close()   # ends the transfers it left open (an ERROR to each)


def test_plain_transfer_by_hand(server, client):
    data = (server.root / "f.bin").read_bytes()
    client.rrq("f.bin")
    got, n = b"", 0
    while True:
        p, tid = client.recv()
        n += 1
        assert isinstance(p, Data) and p.block == n
        got += p.payload
        client.send(codec.encode(Ack(n)), tid)
        if len(p.payload) < 512:
            break
    assert got == data


def test_retransmitted_rrq_does_not_start_a_second_transfer(client):
    client.rrq("f.bin")
    client.rrq("f.bin")
    got = client.recv_all(0.2)   # shorter than the 0.3 s retransmission timeout
    assert [p for p, _ in got] == [Data(1, (got[0][0]).payload)]


def test_duplicate_ack_does_not_cause_a_duplicate_send(client):
    client.rrq("f.bin")
    p, tid = client.recv()
    assert p.block == 1
    client.send(codec.encode(Ack(1)), tid)
    client.send(codec.encode(Ack(1)), tid)
    client.send(codec.encode(Ack(1)), tid)
    got = client.recv_all(0.2)
    assert [(q.block, a) for q, a in got] == [(2, tid)]


def test_wrong_port_gets_error_5_and_the_transfer_carries_on(server, client):
    client.rrq("f.bin")
    p, tid = client.recv()
    intruder = RawClient(server.port)
    try:
        intruder.send(codec.encode(Ack(1)), tid)
        q, a = intruder.recv()
        assert isinstance(q, Error) and q.code == codec.E_UNKNOWN_TID and a == tid
    finally:
        intruder.close()
    client.send(codec.encode(Ack(1)), tid)
    q, a = client.recv()
    assert q.block == 2 and a == tid


def test_lost_data_is_resent_with_backoff_then_abandoned_and_logged(server, client):
    client.rrq("t.txt", blksize=512)
    oack, tid = client.recv()
    assert oack == OAck((("blksize", "512"),))
    client.send(codec.encode(Ack(0)), tid)
    got = client.recv_all(0.3 + 0.6 + 1.2 + 0.5)     # first send + 2 retries, then silence
    assert [(p.block, a) for p, a in got] == [(1, tid)] * 3
    server.wait_log("'t.txt' (octet): 0 bytes")
    line = [l for l in server.log().splitlines() if "'t.txt' (octet): 0 bytes" in l][-1]
    assert "retransmissions=2: timeout waiting for the final ACK" in line


def test_lost_oack_is_resent(client):
    client.rrq("f.bin", tsize=0)
    first, tid = client.recv()
    again, tid2 = client.recv(1.0)
    assert first == again == OAck((("tsize", str(512 * 4 + 100)),)) and tid == tid2
    client.send(codec.encode(Error(0, "bye")), tid)


def test_netascii_on_the_wire(client):
    client.rrq("t.txt", mode="netascii")
    p, tid = client.recv()
    assert p == Data(1, b"a\r\nb\r\0c")
    client.send(codec.encode(Ack(1)), tid)


def test_option_refused_is_error_8(client):
    client.rrq("f.bin", blksize="huge")
    p, _ = client.recv()
    assert isinstance(p, Error) and p.code == codec.E_OPTION


def test_oack_only_grants_what_is_allowed(client):
    client.rrq("f.bin", blksize=9000, windowsize=500, frobnicate=1, timeout=2)
    p, tid = client.recv()
    assert p == OAck((("blksize", "1468"), ("windowsize", "44"), ("timeout", "2")))
    client.send(codec.encode(Ack(0)), tid)
    got = client.recv_all(0.2)          # the whole file is one window of 2 blocks
    assert [(p.block, len(p.payload)) for p, _ in got] == [(1, 1468), (2, 512 * 4 + 100 - 1468)]
    client.send(codec.encode(Ack(2)), tid)


@pytest.mark.parametrize("raw", [b"\x00", b"\x00\x09junk", b"\x00\x01name-without-nul",
                                 b"\x00\x01f.bin\x00octet\x00blksize\x00"])
def test_malformed_gets_error_4(client, raw):
    client.send(raw)
    p, _ = client.recv()
    assert isinstance(p, Error) and p.code == codec.E_ILLEGAL


def test_malformed_packets_from_one_client_are_one_log_line(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    s = Server(root)
    c = RawClient(s.port)
    try:
        for raw in (b"\x00", b"\x00\x09junk", b"\x00\x01x"):
            c.send(raw)
            assert c.recv()[0].code == codec.E_ILLEGAL     # each is answered
        assert s.wait_log("malformed packet").count("malformed packet") == 1
    finally:
        c.close()
        s.stop()


def test_unknown_mode_and_stray_packets(client):
    client.rrq("f.bin", mode="mail")
    p, _ = client.recv()
    assert p.code == codec.E_ILLEGAL
    client.send(codec.encode(Ack(3)))                  # ACK to the listening port
    p, _ = client.recv()
    assert p.code == codec.E_UNKNOWN_TID
    client.send(codec.encode(Error(0, "x")))           # errors are never answered
    assert client.recv(0.3) == (None, None)


def test_wrq_is_refused(server, client):
    client.send(b"\x00\x02new.bin\x00octet\x00")
    p, _ = client.recv()
    assert p == Error(codec.E_ACCESS, "read-only server")
    assert not (server.root / "new.bin").exists()


def test_per_client_limit(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "f.bin").write_bytes(b"x" * 2000)
    s = Server(root, "--max-per-client", "3")
    clients = [RawClient(s.port) for _ in range(4)]
    try:
        for c in clients:
            c.rrq("f.bin")
        replies = [c.recv()[0] for c in clients]
        assert [type(r) for r in replies[:3]] == [Data] * 3
        assert replies[3] == Error(0, "too many transfers from this client")
    finally:
        for c in clients:
            c.close()
        s.stop()


def test_client_error_ends_the_transfer(server, client):
    client.rrq("f.bin", blksize=700)
    p, tid = client.recv()
    client.send(codec.encode(Error(0, "changed my mind")), tid)
    assert client.recv_all(0.5) == []
    server.wait_log("client aborted: error 0 'changed my mind'")


def test_server_full_drops_silently_and_a_retried_rrq_gets_through(tmp_path):
    """At max_transfers an RRQ gets no answer (a PXE ROM retries; an error would make it
    give up) and the retry succeeds once a slot is free."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(b"x" * 2000)
    s = Server(root, "--max-transfers", "1")
    a, b = RawClient(s.port), RawClient(s.port)
    try:
        a.rrq("f")
        p, tid = a.recv()
        assert isinstance(p, Data)
        b.rrq("f")
        assert b.recv(0.4) == (None, None)
        a.send(codec.encode(Error(0, "done")), tid)
        s.wait_log("client aborted")
        b.rrq("f")
        p, _ = b.recv()
        assert isinstance(p, Data) and p.block == 1
    finally:
        a.close(), b.close()
        s.stop()


def test_shutdown_tells_clients_in_transfer(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(b"x" * 2000)
    s = Server(root)
    c = RawClient(s.port)
    try:
        c.rrq("f")
        p, tid = c.recv()
        assert isinstance(p, Data)
        s.proc.terminate()
        assert s.proc.wait(5) == 0
        q, a = c.recv()
        assert q == Error(0, "server shutting down") and a == tid
    finally:
        c.close()
        s.stop()


def test_netascii_is_refused_for_image_sized_files(server):
    with open(server.root / "huge.img", "wb") as f:
        f.truncate(17 << 20)     # sparse
    c = RawClient(server.port)
    try:
        c.rrq("huge.img", mode="netascii")
        p, _ = c.recv()
        assert p == Error(0, "file too large for netascii mode, use octet")
    finally:
        c.close()
        (server.root / "huge.img").unlink()


def test_sighup_reconfigure_moves_the_listener_and_keeps_transfers(tmp_path):
    import signal
    from tests.support.tftp import free_udp_port
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(b"x" * 5000)
    new_port = free_udp_port()
    s = Server(root, "--on-hup", f'{{"max_blksize": 2048, "listen": "127.0.0.1:{new_port}"}}')
    a = RawClient(s.port)
    b = RawClient(new_port)
    try:
        a.rrq("f", blksize=4096)
        assert a.recv()[0] == OAck((("blksize", "1468"),))
        tid = next(iter(a.tids))
        s.proc.send_signal(signal.SIGHUP)
        assert s.proc.stdout.readline().strip() == f"PORT {new_port}"
        a.send(codec.encode(Ack(0)), tid)                 # the running transfer carries on
        p, _ = a.recv()
        assert p == Data(1, b"x" * 1468)
        b.rrq("f", blksize=4096)                          # new limits on the new port
        assert b.recv()[0] == OAck((("blksize", "2048"),))
        a.rrq("f")                                        # old port closed: no answer
        assert a.recv(0.5) == (None, None)
    finally:
        a.close(), b.close()
        s.stop()
