"""nbd.admission: who may connect, which refusals are worth a log line (plain values, no sockets)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nbd.admission import (MAX_CONNECTIONS, MAX_PER_CLIENT, Admission, Refuse,  # noqa: E402
                           limit_reached, throttle_key)


def test_limit_reached_names_the_config_key_and_the_count():
    assert limit_reached(host_connections=0, connections=0, max_connections=2, max_per_client=1) is None
    assert limit_reached(1, 1, 2, 1) == (MAX_PER_CLIENT, "1 connections from it")
    assert limit_reached(0, 2, 2, 1) == (MAX_CONNECTIONS, "2 connections")
    # the listener's cap is named first when both are reached
    assert limit_reached(1, 2, 2, 1) == (MAX_CONNECTIONS, "2 connections")
    assert MAX_CONNECTIONS == "nbd.max_connections" and MAX_PER_CLIENT == "nbd.max_connections_per_client"


def test_accepts_up_to_the_per_client_cap_then_refuses_that_address_only():
    a = Admission(max_connections=10, max_per_client=2)
    for open_now in (0, 1):
        assert a.decide("10.0.0.5", open_now, now=0.0) is None
        a.begin("10.0.0.5")
    refused = a.decide("10.0.0.5", 2, now=0.0)
    assert refused == Refuse("10.0.0.5", MAX_PER_CLIENT, "2 connections from it", log=True, hidden=0)
    assert a.decide("10.0.0.6", 2, now=0.0) is None          # another address is not held back
    assert a.per_client.as_dict() == {"10.0.0.5": 2} and a.refused == 1


def test_the_listener_cap_counts_every_address():
    a = Admission(max_connections=3, max_per_client=16)
    refused = a.decide("10.0.0.9", 3, now=0.0)
    assert (refused.limit, refused.why) == (MAX_CONNECTIONS, "3 connections")


def test_a_closed_connection_frees_its_slot():
    a = Admission(max_connections=10, max_per_client=1)
    a.begin("h")
    assert a.decide("h", 1, 0.0) is not None
    a.end("h")
    assert a.per_client.as_dict() == {}
    assert a.decide("h", 0, 0.0) is None
    a.end("h")                                      # an extra end is harmless
    assert a.per_client.as_dict() == {}


def test_refusals_are_logged_once_per_address_and_limit_per_interval_with_the_count_hidden():
    a = Admission(max_connections=100, max_per_client=0, log_interval=60.0)
    first = a.decide("h", 0, now=0.0)
    assert first.log and first.hidden == 0
    quiet = [a.decide("h", 0, now=t) for t in (1.0, 30.0, 59.9)]
    assert [r.log for r in quiet] == [False, False, False]
    assert a.decide("other", 0, now=2.0).log        # another address has its own line
    again = a.decide("h", 0, now=60.0)
    assert again.log and again.hidden == 3          # the next line says three were hidden
    assert a.refused == 6


def test_each_limit_has_its_own_throttling_key():
    a = Admission(max_connections=5, max_per_client=1)
    a.begin("h")
    per_client = a.decide("h", 1, now=0.0)
    total = a.decide("h", 5, now=1.0)               # the listener filled up meanwhile
    assert per_client.log and total.log
    assert per_client.throttle_key == throttle_key("h", MAX_PER_CLIENT) == ("h", MAX_PER_CLIENT)
    assert total.throttle_key == ("h", MAX_CONNECTIONS)


def test_new_limits_apply_to_the_next_connection():
    a = Admission(max_connections=10, max_per_client=1)
    a.begin("h")
    assert a.decide("h", 1, 0.0) is not None
    a.max_per_client = 2                             # SIGHUP: reconfigured in place
    assert a.decide("h", 1, 0.0) is None
