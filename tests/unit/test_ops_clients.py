"""bootserverd.ops.clients: the per-address count every service's per-client cap reads."""

from bootserverd.ops.clients import ClientCounts


def test_counts_per_address_and_forgets_an_address_with_nothing_open():
    counts = ClientCounts()
    for host in ("10.0.0.5", "10.0.0.5", "10.0.0.6"):
        counts.begin(host)
    assert (counts["10.0.0.5"], counts["10.0.0.6"], counts["10.0.0.7"]) == (2, 1, 0)
    assert (counts.total, len(counts)) == (3, 2)
    counts.end("10.0.0.6")
    counts.end("10.0.0.5")
    assert counts.as_dict() == {"10.0.0.5": 1} and counts.total == 1


def test_an_end_without_a_begin_changes_nothing():
    # a connection refused before it was counted still ends: the count must not go negative
    counts = ClientCounts()
    counts.end("10.0.0.5")
    counts.begin("10.0.0.5")
    assert counts["10.0.0.5"] == 1 and counts.total == 1
