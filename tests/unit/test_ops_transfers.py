"""bootserverd.ops.transfers: one record and one ledger for TFTP transfers, HTTP responses and
NBD sessions — the same counts in /status and /metrics, the same event in the boot report."""

from bootserverd.ops.metrics import Metrics
from bootserverd.ops.transfers import TransferLedger
from nbd.transmission import SessionRecord
from services.http.transfer import TransferRecord as HttpRecord
from tftp.session import TransferRecord as TftpRecord


def tftp(outcome="ok", ok=True, size=100):
    return TftpRecord("10.0.0.5", 2000, "pxelinux.0", "octet", size, 100 if ok else 0, 0.5, 1408, 1, (), 0,
                      ok, outcome)


def test_each_protocol_record_becomes_one_transfer_shape():
    t = tftp().as_transfer()
    assert (t.service, t.client, t.what, t.bytes, t.outcome, t.ok) == ("tftp", "10.0.0.5", "pxelinux.0", 100,
                                                                      "done", True)
    assert t.mbps == 100 / 0.5 / 1e6
    probe = tftp("client refused the options (error 8)", ok=False).as_transfer()
    assert (probe.outcome, probe.ok) == ("probe", False)
    h = HttpRecord(client="10.0.0.6", method="GET", path="/boot/x/vmlinuz", status=200, start=0, length=10,
                   size=10, sent=4, seconds=1.0, outcome="aborted").as_transfer()
    assert (h.service, h.client, h.bytes, h.outcome, h.ok) == ("http", "10.0.0.6", 4, "aborted", False)
    assert h.summary == "HTTP /boot/x/vmlinuz 4 bytes: aborted"
    n = SessionRecord("10.0.0.7:40000", "img", 4096, 1, 2.0, "client sent NBD_CMD_DISC").as_transfer()
    assert (n.service, n.client, n.what, n.bytes, n.outcome, n.ok) == ("nbd", "10.0.0.7", "img", 4096, "done", True)
    listed = SessionRecord("10.0.0.7:40001", None, 0, 0, 0.1, "listed", "no_export").as_transfer()
    assert (listed.what, listed.ok) == ("", False)


def test_ledger_counts_outcomes_bytes_and_metrics_and_passes_each_on():
    metrics, seen = Metrics(), []
    ledger = TransferLedger("tftp", metrics, seen.append)
    for record in (tftp(), tftp(), tftp("timeout after 5 retries", ok=False),
                   tftp("client refused the options (error 8)", ok=False),
                   tftp("file not found", ok=False, size=None)):
        ledger.add(record.as_transfer())
    assert dict(ledger.outcomes) == {"done": 2, "stalled": 1, "probe": 1, "refused": 1}
    assert (ledger.ok, ledger.failed(), ledger.bytes_sent) == (2, 1, 200)
    assert len(seen) == 5
    value = metrics.registry.get_sample_value
    assert value("bootserverd_transfers_total", {"service": "tftp", "outcome": "done"}) == 2
    assert value("bootserverd_sent_bytes_total", {"service": "tftp"}) == 200


def test_a_ledger_that_leaves_bytes_to_the_scrape_does_not_count_them_twice():
    metrics = Metrics()
    ledger = TransferLedger("nbd", metrics, count_bytes=False)
    ledger.add(SessionRecord("10.0.0.7:1", "img", 4096, 1, 2.0, "done").as_transfer())
    assert metrics.registry.get_sample_value("bootserverd_sent_bytes_total", {"service": "nbd"}) == 0
    assert ledger.bytes_sent == 4096
