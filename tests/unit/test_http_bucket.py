"""services.http.bucket: laptop updates share http.update_rate; boot files never wait."""

import pytest

from bootserverd.config.settings import parse_rate
from services.http.bucket import GRANT, TokenBucket


def test_no_limit_grants_everything_and_never_waits():
    assert TokenBucket(0).grant(0.0, 10 << 20) == (10 << 20, 0.0)


def test_a_second_of_burst_then_grants_after_waits_in_the_order_asked():
    bucket = TokenBucket(1_000_000, burst=1_000_000)
    assert [bucket.grant(0.0, 1 << 20) for _ in range(3)] == [(GRANT, 0.0)] * 3   # the burst
    first = bucket.grant(0.0, 1 << 20)
    second = bucket.grant(0.0, 1 << 20)
    assert first == (GRANT, pytest.approx((4 * GRANT - 1_000_000) / 1e6))
    assert second == (GRANT, pytest.approx((5 * GRANT - 1_000_000) / 1e6))   # behind the first
    assert bucket.grant(0.0, 1000) == (1000, pytest.approx((5 * GRANT + 1000 - 1_000_000) / 1e6))


def test_twenty_downloads_waiting_as_the_reactor_makes_them_share_the_rate_evenly():
    """Each download asks when it may send; it sends its grant after the wait it was given,
    then asks again at once (the sendfile path)."""
    bucket = TokenBucket(2_000_000)
    sent, ready = [0] * 20, [0.0] * 20
    while min(ready) < 10.0:
        i = min(range(20), key=ready.__getitem__)
        granted, wait = bucket.grant(ready[i], 1 << 20)
        ready[i] += wait + 0.0001
        if ready[i] <= 10.0:
            sent[i] += granted
    assert sum(sent) == pytest.approx(2_000_000 * 10.25, rel=0.03)   # the burst + 10 s of rate
    assert max(sent) < 1.5 * min(sent)                              # turns, not one taking it all


def test_refunded_bytes_come_back_up_to_the_burst():
    bucket = TokenBucket(1_000_000, burst=1_000_000)
    granted, _ = bucket.grant(0.0, GRANT)
    bucket.refund(granted)
    bucket.refund(10 << 20)
    assert bucket.tokens == 1_000_000


@pytest.mark.parametrize("text, rate", [("40MB/s", 40e6), ("300Mbit/s", 37.5e6), ("300Mb/s", 37.5e6),
                                        ("1GB/s", 1e9), (0, 0.0), ("0", 0.0), (5_000_000, 5e6)])
def test_rates_are_written_as_a_sysadmin_writes_them(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "-1", -1, True, "40 MB per second"])
def test_a_rate_that_is_not_one_is_refused_with_the_reason(text):
    with pytest.raises(ValueError, match="must"):
        parse_rate(text)
