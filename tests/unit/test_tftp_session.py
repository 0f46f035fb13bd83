"""The read-transfer state machine: action lists for loss, duplicates, windows, rollover."""
from hypothesis import given, settings, strategies as st

from tftp import codec
from tftp.codec import Data, Error, Request
from tftp.session import (Finish, Policy, ReadSession, SendBlocks, SendPacket, SetTimer,
                          negotiate)

P = Policy(max_blksize=1468, max_windowsize=64, timeout=1.0, retries=3)


def rrq(*opts, mode="octet"):
    return Request(codec.RRQ, "f", mode, tuple(opts))


def session(size, *opts, policy=P):
    return ReadSession(rrq(*opts), size, policy)


def test_plain_rfc1350_lock_step_to_the_end():
    s = session(1000)
    assert s.start(0.0) == (SendBlocks(1, 1), SetTimer(1.0))
    assert s.on_ack(1, 0.1) == (SendBlocks(2, 2), SetTimer(1.1))
    assert s.on_ack(2, 0.2) == (Finish(True, "ok"),)
    assert s.bytes_acked == 1000 and s.retransmitted == 0


def test_exact_multiple_ends_with_an_empty_block():
    s = session(1024)
    assert s.nblocks == 3
    s.start(0)
    s.on_ack(1, 0), s.on_ack(2, 0)
    assert s.on_ack(3, 0) == (Finish(True, "ok"),)


def test_empty_file_is_one_empty_block():
    s = session(0)
    assert s.start(0) == (SendBlocks(1, 1), SetTimer(1.0))
    assert s.on_ack(1, 0) == (Finish(True, "ok"),)


def test_oack_carries_only_granted_options_then_ack0_starts():
    s = session(5000, ("blksize", "9000"), ("tsize", "0"), ("foo", "bar"),
                ("timeout", "3"), ("windowsize", "100"))
    acts = s.start(10.0)
    assert acts == (SendPacket(codec.encode(codec.OAck((("blksize", "1468"), ("tsize", "5000"),
                                                         ("timeout", "3"),
                                                         ("windowsize", "44"))))),
                    SetTimer(13.0))
    assert s.on_ack(1, 10.1) == ()          # not ACK 0: ignored
    assert s.on_ack(0, 10.2) == (SendBlocks(1, 4), SetTimer(13.2))   # 5000/1468 -> 4 blocks


def test_tsize_not_granted_for_an_empty_file():
    assert negotiate((("tsize", "0"), ("blksize", "1024")), 0, P).granted == (("blksize", "1024"),)
    assert session(0, ("tsize", "0")).start(0) == (SendBlocks(1, 1), SetTimer(1.0))


def test_only_unknown_options_means_no_oack():
    assert session(10, ("multicast", ""))  .start(0) == (SendBlocks(1, 1), SetTimer(1.0))


def test_window_is_bounded_in_bytes_so_a_burst_fits_a_socket_buffer():
    pol = Policy(max_blksize=65464, max_windowsize=64)
    assert negotiate((("windowsize", "16"), ("blksize", "8192")), 1, pol).windowsize == 8
    assert negotiate((("windowsize", "16"), ("blksize", "65464")), 1, pol).windowsize == 1
    assert negotiate((("windowsize", "16"),), 1, pol).windowsize == 16          # 512-byte blocks
    assert negotiate((("windowsize", "64"), ("blksize", "1468")), 1, pol).granted == \
        (("windowsize", "44"), ("blksize", "1468"))


def test_blksize_bounds():
    assert negotiate((("blksize", "70000"),), 1, Policy(max_blksize=65464)).blksize == 65464
    assert negotiate((("blksize", "8"),), 1, P).blksize == 8
    assert negotiate((("blksize", "512"),), 1, P).blksize == 512


def test_bad_option_values_are_refused_with_error_8():
    for opt in (("blksize", "7"), ("blksize", "abc"), ("timeout", "0"), ("timeout", "256"),
                ("windowsize", "0"), ("tsize", "-1"), ("blksize", "１２")):
        s = session(10, opt)
        acts = s.start(0)
        assert codec.decode(acts[0].data).code == codec.E_OPTION, opt
        assert acts[1].ok is False and "option refused" in acts[1].outcome


def test_client_refusing_oack_with_error_8():
    s = session(10, ("blksize", "1024"))
    s.start(0)
    (fin,) = s.on_packet(Error(8, "no"), 0.5)
    assert fin.ok is False and "refused the options" in fin.outcome


def test_grub_closing_after_the_oack_is_a_probe_an_error_later_is_an_abort():
    s = session(10, ("blksize", "1024"), ("tsize", "0"))
    s.start(0)
    (fin,) = s.on_packet(Error(0, "closed"), 0.5)      # GRUB: open, read the size, close
    assert fin.outcome == "client closed after the options: error 0 'closed'"
    s = session(3000, ("blksize", "1024"))
    s.start(0)
    s.on_ack(0, 0.1)                                   # GRUB acks the OACK, gets block 1, closes
    (fin,) = s.on_packet(Error(0, "closed"), 0.2)
    assert fin.outcome.startswith("client closed after the options")
    s = session(3000, ("blksize", "1024"))
    s.start(0)
    s.on_ack(0, 0.1)
    s.on_ack(1, 0.2)
    (fin,) = s.on_packet(Error(0, "closed"), 0.5)     # after data: a real abort
    assert fin.outcome.startswith("client aborted")


def test_loss_of_data_resends_with_backoff_then_gives_up():
    s = session(1500)   # blocks 1, 2 full, 3 final
    s.start(0)
    assert s.on_ack(1, 0.0) == (SendBlocks(2, 2), SetTimer(1.0))
    assert s.on_timeout(0.5) == (SetTimer(1.0),)            # early wake-up: nothing sent
    assert s.on_timeout(1.0) == (SendBlocks(2, 2), SetTimer(3.0))   # interval 2
    assert s.on_timeout(3.0) == (SendBlocks(2, 2), SetTimer(7.0))   # interval 4
    assert s.on_ack(2, 7.5) == (SendBlocks(3, 3), SetTimer(8.5))    # progress resets to 1 s
    assert s.retransmitted == 2
    s.on_timeout(8.5), s.on_timeout(10.5), s.on_timeout(14.5)       # 3 retries
    (fin,) = s.on_timeout(22.5)
    assert fin == Finish(False, "timeout waiting for the final ACK")
    assert s.on_ack(3, 23) == () and s.on_timeout(30) == ()


def test_loss_of_final_ack_resends_last_block():
    s = session(600)
    s.start(0)
    s.on_ack(1, 0)
    assert s.on_timeout(1.0) == (SendBlocks(2, 2), SetTimer(3.0))
    assert s.on_ack(2, 3.1) == (Finish(True, "ok"),)


def test_timeout_abandons_mid_file():
    s = session(10_000)
    s.start(0)
    for t in (1, 3, 7):
        s.on_timeout(t)
    (fin,) = s.on_timeout(15)
    assert fin.ok is False and fin.outcome == "timeout after 3 retransmissions"


def test_duplicate_ack_never_sends_sorcerers_apprentice():
    s = session(5000)
    s.start(0)
    s.on_ack(1, 0)
    assert s.on_ack(1, 0.1) == ()
    assert s.on_ack(0, 0.1) == ()     # older still
    assert s.on_ack(9, 0.1) == ()     # never sent


def test_window_gap_ack_resends_from_there_and_timeout_resends_window():
    s = session(100 * 512, ("windowsize", "4"), ("blksize", "512"))
    s.start(0)
    assert s.on_ack(0, 0) == (SendBlocks(1, 4), SetTimer(1))
    assert s.on_ack(2, 0.1) == (SendBlocks(3, 6), SetTimer(1.1))     # receiver saw a gap
    assert s.retransmitted == 2
    assert s.on_ack(2, 0.2) == ()                                     # duplicate: nothing
    assert s.on_ack(6, 0.3) == (SendBlocks(7, 10), SetTimer(1.3))
    assert s.on_timeout(1.3) == (SendBlocks(7, 10), SetTimer(3.3))
    assert s.retransmitted == 6


def test_ack_inside_a_resent_burst_slides_without_duplicates():
    """atftp ACKs at block numbers divisible by the window size; after a go-back those land
    inside our burst. They must not trigger another go-back (a cascade of duplicates)."""
    s = session(100 * 512, ("windowsize", "4"), ("blksize", "512"))
    s.start(0)
    s.on_ack(0, 0)                                                    # 1..4
    assert s.on_ack(2, 0.1) == (SendBlocks(3, 6), SetTimer(1.1))     # gap: go back
    assert s.on_ack(4, 0.2) == (SendBlocks(7, 8), SetTimer(1.2))     # cadence ACK: slide
    assert s.on_ack(8, 0.3) == (SendBlocks(9, 12), SetTimer(1.3))    # aligned again
    assert s.retransmitted == 2
    assert s.on_ack(10, 0.4) == (SendBlocks(11, 14), SetTimer(1.4))  # new gap: go back
    assert s.on_timeout(1.4) == (SendBlocks(11, 14), SetTimer(3.4))
    assert s.on_ack(12, 3.5) == (SendBlocks(15, 16), SetTimer(4.5))  # inside the resend


def test_last_window_is_short():
    s = session(10 * 512, ("windowsize", "8"), ("blksize", "512"))   # 11 blocks
    s.start(0)
    s.on_ack(0, 0)
    assert s.on_ack(8, 0) == (SendBlocks(9, 11), SetTimer(1))
    assert s.on_ack(11, 0) == (Finish(True, "ok"),)


def test_block_numbers_roll_over_and_keep_going():
    blksize, nblocks = 8, 70_000
    s = session(blksize * (nblocks - 1) + 3, ("blksize", "8"), ("windowsize", "16"))
    s.start(0)
    acts = s.on_ack(0, 0)
    sent = 0
    while True:
        send = acts[0]
        if isinstance(send, Finish):
            break
        sent = max(sent, send.last)
        acts = s.on_ack(send.last & 0xFFFF, 0)     # what a client puts on the wire
    assert send == Finish(True, "ok") and sent == nblocks > 65536
    assert s.bytes_acked == s.size and s.retransmitted == 0


def test_rollover_ack_inside_a_window_spanning_the_wrap():
    s = session(8 * 70_000, ("blksize", "8"), ("windowsize", "8"))
    s.start(0)
    s.acked, s.sent, s.state = 65530, 65530, "sending"
    assert s.on_ack(65530 & 0xFFFF, 0) == ()
    s.on_timeout(1)                                     # resend 65531..65538
    assert s.sent == 65538
    # wire 1 = block 65537, inside the resent burst: slide on with new blocks only
    assert s.on_ack(1, 2) == (SendBlocks(65539, 65545), SetTimer(3))
    assert s.on_ack(65545 & 0xFFFF, 2) == (SendBlocks(65546, 65553), SetTimer(3))


def test_illegal_packet_from_peer_is_error_4_and_ends():
    s = session(10)
    s.start(0)
    acts = s.on_packet(Data(1, b"x"), 0)
    assert codec.decode(acts[0].data).code == codec.E_ILLEGAL and acts[1].ok is False


def test_client_error_aborts():
    s = session(10)
    s.start(0)
    (fin,) = s.on_packet(Error(0, "user cancelled"), 0)
    assert fin.ok is False and "aborted" in fin.outcome


def test_datagrams_from_the_peer_acks_packets_and_junk():
    s = session(1000)
    s.start(0)
    assert s.on_datagram(codec.encode(codec.Ack(1)), 0.1) == (SendBlocks(2, 2), SetTimer(1.1))
    assert s.on_datagram(b"\x00\x04\x00", 0.2) == ()            # malformed: dropped, the timer covers it
    (fin,) = s.on_datagram(codec.encode(Error(0, "bye")), 0.3)
    assert fin == Finish(False, "client aborted: error 0 'bye'")


def test_server_abort_tells_the_peer_once():
    s = session(10)
    s.start(0)
    err, fin = s.abort("server shutting down", "aborted: server shutting down")
    assert codec.decode(err.data) == Error(0, "server shutting down")
    assert fin == Finish(False, "aborted: server shutting down") == s.result and s.done
    assert s.abort("again", "again") == ()


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 16), st.lists(st.one_of(st.integers(-3, 20), st.none()), max_size=200),
       st.integers(0, 65535))
def test_no_amplification(window, events, junk):
    """Whatever a client sends (ACKs near the acknowledged block, far off, duplicates) and
    whenever timeouts fire: nothing goes out beyond acked + windowsize, and only ACKs that
    move forward (or the first ACK 0 after the OACK, or our timeouts) cause sends."""
    s = session(512 * 40, ("windowsize", str(window)), ("blksize", "512"))
    s.start(0)
    t = 0.0
    for i, ev in enumerate(events):
        t += 0.1
        before, waiting = s.acked, s.state == "wait-oack-ack"
        if ev is None:
            acts = s.on_timeout(s.deadline or t)
        else:
            wire = junk if i % 7 == 6 else (s.acked + ev) & 0xFFFF
            acts = s.on_ack(wire, t)
        for a in acts:
            if isinstance(a, SendBlocks):
                assert a.last <= s.acked + window and a.last - a.first < window
                assert ev is None or s.acked > before or waiting
        if s.done:
            break
