"""LdapInventorySource in-process against real slapd: DHCP reservations through the real
BootResolver, the puavo profile against a Puavo-shaped schema, bad entries, a dead replica.

The reactor's part (running what the consumer thread hands over with callFromThread) is
played by ``Pump`` on the test's thread; the daemon tests cover the real reactor."""
import queue
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from bootserverd.config.settings import Config, LdapConfig, ServerConfig
from bootserverd.model.snapshot import Inventory, Model
from bootserverd.boot.resolver import BootResolver
from ldapsync.source import LdapInventorySource
from tests.support.slapd import BASE, DAEMON_DN, Pair, device_attrs, free_port

# A Puavo-shaped schema (names as Puavo's, shapes simplified) under a test-only UUID arc.
PUAVO_SCHEMA = Path(__file__).with_name("puavo-test.ldif")


class Pump(Clock):
    """Runs what the consumer thread hands to 'the reactor', on this thread, in order; its
    clock never advances (timers: the replication-lag check, the GC pause limit, stay idle)."""

    def __init__(self):
        super().__init__()
        self.handed: queue.Queue = queue.Queue()

    def callFromThread(self, f, *args):
        self.handed.put((f, args))

    def until(self, predicate, timeout: float = 2.0) -> float:
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"not within {timeout} s")
            try:
                f, args = self.handed.get(timeout=0.02)
            except queue.Empty:
                continue
            f(*args)
        return time.monotonic() - start


class Harness:
    def __init__(self, tmp_path, uri, profile="bootserverd", bind=True, server_hostname=None, password=None):
        pw = tmp_path / "pw"
        pw.write_text((password or "daemon-secret") + "\n")
        self.config = LdapConfig(uri=uri, base=BASE, bind_dn=DAEMON_DN if bind else None,
                                 password_file=pw if bind else None, profile=profile)
        self.pump = Pump()
        self.source = LdapInventorySource(self.config, tmp_path, clock=self.pump,
                                          server_hostname=server_hostname, backoff_min=0.1, backoff_max=0.2)
        self.model = Model(Inventory(self.source.load(), {}, None))
        self.resolver = BootResolver(Config(server=ServerConfig(address=IPv4Address("127.0.0.1"),
                                                                state_dir=tmp_path)), self.model)

    def start(self):
        self.source.start(lambda d: self.model.update(records=d))
        return self

    def device(self, mac):
        return self.model.inventory.device(mac)


@pytest.fixture()
def pair():
    p = Pair()
    yield p
    p.cleanup()


def test_a_device_added_centrally_gets_its_dhcp_reservation_within_2_s(tmp_path, pair):
    h = Harness(tmp_path, pair.slave.uri).start()
    try:
        h.pump.until(lambda: h.source.connection == "in-sync")
        mac = "52:54:00:aa:00:01"
        assert not h.resolver.resolve(mac, 0, False).known
        pair.central.add(f"cn=pc-7,{BASE}", device_attrs("pc-7", mac, ipHostNumber="10.1.2.7",
                                                          bootserverdDeviceType="fatclient"))
        took = h.pump.until(lambda: h.resolver.resolve(mac, 0, False).known)
        plan = h.resolver.resolve(mac, 7, False)
        assert (plan.reserved_ip, plan.hostname, plan.bootfile) == ("10.1.2.7", "pc-7", "shimx64.efi")
        assert took < 2.0
        pair.central.replace(f"cn=pc-7,{BASE}", {"ipHostNumber": "10.1.2.8"})
        h.pump.until(lambda: h.resolver.resolve(mac, 0, False).reserved_ip == "10.1.2.8")
        status = h.source.status()
        assert status["connection"] == "in-sync" and status["devices"] == 1
    finally:
        h.source.stop()


def test_more_entries_than_the_global_size_limit(tmp_path, pair):
    """The slave's olcSizeLimit is 500; the daemon's DN has size=unlimited."""
    conn = pair.central.connect()
    for i in range(600):
        pair.central.add(f"cn=n{i},{BASE}", device_attrs(f"n{i}", f"52:54:00:bb:{i >> 8:02x}:{i & 255:02x}"), conn=conn)
    conn.unbind_s()
    pair.wait_in_sync()
    h = Harness(tmp_path, pair.slave.uri).start()
    try:
        h.pump.until(lambda: len(h.model.inventory.devices) == 600, timeout=10)
    finally:
        h.source.stop()
    # without the limit (anonymous here), the replica refuses, and the log says why
    (tmp_path / "anon").mkdir()
    h = Harness(tmp_path / "anon", pair.slave.uri, bind=False).start()
    try:
        h.pump.until(lambda: h.source.connection == "disconnected", timeout=5)
        assert "Size limit exceeded" in h.source.connection_detail
    finally:
        h.source.stop()


def test_wrong_password_is_reported_and_retried_not_a_crash(tmp_path, pair):
    h = Harness(tmp_path, pair.slave.uri, password="wrong").start()
    try:
        h.pump.until(lambda: h.source.connection == "disconnected")
        assert "Invalid credentials" in h.source.connection_detail
        assert h.source._consumer.is_alive()
    finally:
        h.source.stop()


def test_nothing_listening_then_the_replica_appears(tmp_path):
    port = free_port()
    h = Harness(tmp_path, f"ldap://127.0.0.1:{port}").start()
    try:
        h.pump.until(lambda: h.source.connection == "disconnected")
        assert "retrying in" in h.source.connection_detail
        consumer = h.source._consumer
    finally:
        h.source.stop()
    assert not consumer.is_alive()                        # stop() ends the thread


def test_puavo_profile_against_a_puavo_shaped_schema(tmp_path):
    pair = Pair(extra_schemas=[PUAVO_SCHEMA])
    try:
        c = pair.central
        c.replace(BASE, {"objectClass": ["dcObject", "organization", "puavoEduOrg"],
                         "puavoDeviceImage": "org-img"})
        for ou in ("Groups", "Hosts"):
            c.add(f"ou={ou},{BASE}", {"objectClass": "organizationalUnit", "ou": ou})
        for ou in ("Devices", "Servers"):
            c.add(f"ou={ou},ou=Hosts,{BASE}", {"objectClass": "organizationalUnit", "ou": ou})
        school = f"puavoId=1,ou=Groups,{BASE}"
        c.add(school, {"objectClass": "puavoSchool", "puavoId": "1", "cn": "gryffindor",
                       "puavoDeviceImage": "school-img"})
        c.add(f"puavoId=9,ou=Servers,ou=Hosts,{BASE}", {
            "objectClass": "puavoServer", "puavoId": "9", "puavoHostname": "boot1",
            "puavoDeviceType": "bootserver", "puavoDeviceImage": "server-img", "puavoSchool": school})
        c.add(f"puavoId=10,ou=Devices,ou=Hosts,{BASE}", {
            "objectClass": "puavoNetbootDevice", "puavoId": "10", "puavoHostname": "thin1",
            "macAddress": "08:00:27:88:0c:a6", "puavoDeviceType": "thinclient",
            "puavoDeviceBootImage": "thin-img", "puavoDeviceCurrentImage": "running-img",
            "puavoDeviceBootMode": "dualboot",
            "puavoDeviceKernelArguments": "thin=1", "puavoDeviceKernelVersion": "6.1", "puavoSchool": school})
        c.add(f"puavoId=11,ou=Devices,ou=Hosts,{BASE}", {
            "objectClass": "puavoLocalbootDevice", "puavoId": "11", "puavoHostname": "lap1",
            "macAddress": "08:00:27:88:0c:a7", "puavoDeviceType": "laptop"})
        h = Harness(tmp_path, pair.slave.uri, profile="puavo", server_hostname="boot1.example.fi").start()
        try:
            h.pump.until(lambda: len(h.model.inventory.devices) == 2)
            inv = h.model.inventory
            thin, lap = h.device("08:00:27:88:0c:a6"), h.device("08:00:27:88:0c:a7")
            assert (thin.hostname, thin.type, thin.school, thin.boot_mode) == ("thin1", "thinclient", "gryffindor", "dualboot")
            # a device's own boot image is not served (current puavo-rest): its school's image is
            assert inv.image_for(thin) == "school-img" and inv.kernel_args_for(thin) == "thin=1"
            assert inv.image_for(lap) == "org-img"             # no school, a laptop: the organisation
            # (the full cascade against the real daemon: test_ldap_puavo.py)
            c.replace(f"puavoId=11,ou=Devices,ou=Hosts,{BASE}", {"puavoSchool": school})
            h.pump.until(lambda: h.model.inventory.image_for(h.device("08:00:27:88:0c:a7")) == "school-img")
            c.replace(school, {"puavoDeviceImage": "school-img-2"})
            h.pump.until(lambda: h.model.inventory.image_for(h.device("08:00:27:88:0c:a7")) == "school-img-2")
        finally:
            h.source.stop()
    finally:
        pair.cleanup()


def test_snapshot_of_another_profile_is_not_served(tmp_path, pair):
    pair.central.add(f"cn=p1,{BASE}", device_attrs("p1", "52:54:00:cc:00:01"))
    h = Harness(tmp_path, pair.slave.uri).start()
    try:
        h.pump.until(lambda: len(h.model.inventory.devices) == 1)
    finally:
        h.source.stop()                                   # saves the snapshot
    assert len(Harness(tmp_path, pair.slave.uri).model.inventory.devices) == 1
    assert len(Harness(tmp_path, pair.slave.uri, profile="puavo").model.inventory.devices) == 0
