"""ldapsync.replication: the replication lag from contextCSN values, and its log lines (pure)."""

from ldapsync.replication import LagTracker, missing_since
from ldapsync.replication import csn_time

T0 = csn_time("20261121120000.000000Z#000000#000#000000").timestamp()


def csn(seconds: float, sid: str = "000") -> str:
    import datetime
    when = datetime.datetime.fromtimestamp(T0 + seconds, datetime.timezone.utc)
    return when.strftime("%Y%m%d%H%M%S.%fZ") + f"#000000#{sid}#000000"


def test_missing_since_per_server_id():
    assert missing_since([csn(10)], [csn(10)]) is None
    assert missing_since([csn(10)], [csn(4)]) == T0 + 10
    assert missing_since([csn(10), csn(3, "001")], [csn(10)]) == T0 + 3      # sid 001 never seen
    assert missing_since([], [csn(1)]) is None


def test_in_sync_behind_caught_up_one_line_each():
    t = LagTracker(warn_after=5, started=T0)
    assert t.lag(T0) == 0 and t.state() == "unknown"
    assert t.observe(T0 + 1, [csn(0)], [csn(0)]) == [] and t.state() == "in sync"
    # the centre has a change the replica lacks: lag = time since that change
    assert t.observe(T0 + 12, [csn(0)], [csn(10)]) == []
    assert t.lag(T0 + 12) == 2 and t.state() == "behind"
    lines = t.observe(T0 + 17, [csn(0)], [csn(10)])
    assert lines == [("warn", "the replica is 7 s behind the centre (it lacks changes; threshold 5 s)")]
    assert t.observe(T0 + 20, [csn(0)], [csn(10)]) == []                      # not once per check
    assert t.observe(T0 + 21, [csn(10)], [csn(10)]) == [
        ("info", "the replica caught up with the centre (it was up to 10 s behind)")]
    assert t.lag(T0 + 21) == 0 and t.last_current == T0 + 21


def test_centre_unreachable_lag_grows_from_the_last_known_current():
    t = LagTracker(warn_after=5, started=T0)
    t.observe(T0 + 1, [csn(0)], [csn(0)])
    lines = t.observe(T0 + 3, [csn(0)], None, "centre ldap://c: Can't contact LDAP server")
    assert lines == [("warn", "cannot compare the replica with the centre: centre ldap://c: Can't contact LDAP server")]
    assert t.lag(T0 + 3) == 2 and t.state() == "cannot compare"
    assert t.observe(T0 + 5, [csn(0)], None, "same") == []
    assert t.observe(T0 + 9, [csn(0)], None, "same")[0][1].startswith("the replica is 8 s behind the centre (it cannot")
    lines = t.observe(T0 + 10, [csn(0)], [csn(0)])
    assert [l for _, l in lines] == ["the replica and the centre can be compared again",
                                     "the replica caught up with the centre (it was up to 8 s behind)"]


def test_never_compared_counts_from_the_start():
    t = LagTracker(warn_after=100, started=T0)
    t.observe(T0 + 30, None, None, "replica down")
    assert t.lag(T0 + 40) == 40
    assert t.status(T0 + 40)["state"] == "cannot compare" and t.status(T0 + 40)["lag_seconds"] == 40


