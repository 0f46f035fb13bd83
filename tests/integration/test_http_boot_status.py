"""GET /status/boot/<mac>: one device's boot timeline as JSON, from the daemon as shipped.
A real DHCP client (busybox udhcpc) in its own namespace gets a lease, which starts the boot
report; the endpoint answers the same data `bootserverd status --device MAC` prints, 404 for
a MAC that has not booted, 400 for text that is not a MAC."""
import json
import subprocess
import threading
import time

from tests.support import dhcp_lab as lab
from tests.support.netns import namespaces, veth

PORT = 8099                     # inside the test's own namespace: no clash with other tests


def test_status_boot_timeline(tmp_path):
    with namespaces("hbsrv", "hbcli") as (srv, cli):
        veth(srv, "s0", cli, "c0")
        srv.ip("addr", "add", "10.50.0.1/21", "dev", "s0")
        srv.ip("link", "set", "lo", "up")
        config = lab.write_config(tmp_path, lab.SERVER_DHCP)
        text = config.read_text()
        assert "http: {enabled: false}" in text
        config.write_text(text.replace("http: {enabled: false}",
                                       f'http: {{enabled: true, listen: "10.50.0.1:{PORT}"}}'))
        proc = srv.popen([lab.PY, "-m", "bootserverd", "run", "--config", str(config)], cwd=lab.ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()

        def get(path: str) -> tuple[int, bytes]:
            r = srv.run(["curl", "-sS", "-o", "/dev/stdout", "-w", "\n%{http_code}", f"http://10.50.0.1:{PORT}{path}"],
                        timeout=10)
            body, _, code = r.stdout.rpartition("\n")
            return int(code or 0), body.encode()

        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and proc.poll() is None and \
                    not any("ports 67" in line for line in list(lines)):
                time.sleep(0.1)
            assert any("ports 67" in line for line in list(lines)), "".join(lines)
            assert lab.udhcpc(cli, tmp_path, lab.RESERVED_MAC)["ip"] == "10.50.0.57"
            code, body = get(f"/status/boot/{lab.RESERVED_MAC.upper().replace(':', '-')}")
            assert code == 200, body
            report = json.loads(body)
            assert report["mac"] == lab.RESERVED_MAC and report["ip"] == "10.50.0.57"
            assert report["hostname"] == "class-12"
            assert [e["kind"] for e in report["events"]] == ["dhcp"]
            assert report["events"][0]["what"].startswith("ACK 10.50.0.57")
            # the same data the CLI reads from /status
            status = json.loads(get("/status")[1])
            assert status["boot"]["recent"][lab.RESERVED_MAC] == report
            assert get("/status/boot/52:54:00:99:99:99")[0] == 404
            assert get("/status/boot/not-a-mac")[0] == 400
            assert get("/status/boot/")[0] == 400                   # an empty MAC is malformed too
        finally:
            proc.terminate()
            proc.wait(10)
            reader.join(5)
        assert "Traceback" not in "".join(lines)
