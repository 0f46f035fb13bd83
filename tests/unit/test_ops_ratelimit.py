"""bootserverd.ops.ratelimit: once per key per interval, with the count of what was hidden."""

from bootserverd.ops.ratelimit import LogThrottle, suffix


def test_once_per_key_per_interval_then_reports_hidden_count():
    t = LogThrottle(interval=60)
    assert t.admit("a", 0.0) == 0
    assert t.admit("a", 1.0) is None and t.admit("a", 59.9) is None
    assert t.admit("b", 2.0) == 0                     # another key is not held back
    assert t.hidden() == 2
    assert t.admit("a", 60.0) == 2                    # the next line says two were hidden
    assert t.admit("a", 61.0) is None


def test_keys_are_bounded():
    t = LogThrottle(interval=60, max_keys=3)
    for i in range(100):
        t.admit(i, 0.0)
    assert len(t) == 3


def test_suffix():
    assert suffix(0) == "" and "3 more" in suffix(3)
