"""Structured fuzzing with hypothesis: whole exchanges and documents rather than bytes.

- DHCP: a school's worth of clients doing DISCOVER/REQUEST/RELEASE/DECLINE in any order,
  with the pool exhausted: an address is never bound to two clients, an ACK is always in
  the pool or the client's reservation, the reserved device always gets its address.
- NBD: any sequence of well-formed options ends the handshake at most once.
- Config: any mapping over the real schema's keys loads or raises ConfigError.
- InventoryRecords: any entries through both profiles assemble into a consistent InventoryRecords.
"""

from __future__ import annotations

import os
import struct
from ipaddress import IPv4Address, IPv4Network

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootserverd.config import settings as configmod
from dhcp import options as O
from dhcp.codec import Message, decode, encode
from dhcp.leases import BOUND, LeaseTable
from dhcp.machine import Arrival, Interface, Machine, Policy, Subnet
from ldapsync.mapping import PROFILES, DirectoryView
from nbd import codec as nc
from nbd.handshake import Close, Handshake, Transmit
from tests.fuzz.fuzz_nbd import Catalog
from tests.fuzz.world import RESERVED_MAC, make_resolver

EXAMPLES = int(os.environ.get("BOOTSERVERD_HYPOTHESIS_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
A = IPv4Address
IFACE = Interface("eth1", 3, A("10.0.0.1"), IPv4Network("10.0.0.0/24"))
HERE = Arrival(IFACE, A("0.0.0.0"), 68, addresses=(IFACE,))
POOL = (A("10.0.0.100"), A("10.0.0.107"))          # 8 addresses for up to 40 clients
SUBNET = Subnet(IPv4Network("10.0.0.0/24"), (POOL,), router=A("10.0.0.1"), lease_time=600)
RESOLVER = make_resolver()
INVENTORY = RESOLVER.model.inventory


def _mac(n: int) -> bytes:
    return bytes.fromhex(RESERVED_MAC.replace(":", "")) if n == 0 else bytes([2, 0, 0, 0, 0, n])


step = st.tuples(st.integers(0, 39), st.sampled_from(("discover", "request", "release", "decline",
                                                      "init-reboot")),
                 st.integers(0, 15), st.floats(0, 400))


@SETTINGS
@given(st.lists(step, min_size=1, max_size=120))
def test_dhcp_exchanges_never_double_book(steps):
    reserved = {A(d.ip) for d in INVENTORY.devices if d.ip}
    machine = Machine(Policy(subnets=(SUBNET,), server_address=A("10.0.0.1")), LeaseTable(),
                      RESOLVER.resolve,
                      lambda mac: A(d.ip) if (d := INVENTORY.device(mac)) and d.ip else None,
                      lambda ip: ip in reserved)
    now, offers = 1000.0, {}
    for client, kind, pick, dt in steps:
        now += dt
        chaddr = _mac(client)
        opts = [(O.MESSAGE_TYPE, O.u8({"discover": O.DISCOVER, "request": O.REQUEST,
                                       "init-reboot": O.REQUEST, "release": O.RELEASE,
                                       "decline": O.DECLINE}[kind]))]
        ciaddr = A(0)
        target = offers.get(client, A(int(POOL[0]) + pick))
        if kind == "request":
            opts += [(O.SERVER_ID, A("10.0.0.1").packed), (O.REQUESTED_IP, target.packed)]
        elif kind == "init-reboot":
            opts += [(O.REQUESTED_IP, A(int(POOL[0]) + pick).packed)]
        elif kind == "decline":
            opts += [(O.REQUESTED_IP, target.packed)]
        elif kind == "release":
            ciaddr = target
        msg = decode(encode(Message(xid=client, chaddr=chaddr, ciaddr=ciaddr, options=tuple(opts))))
        reply = machine.handle(msg, HERE, now).reply
        if reply is None:
            continue
        got = decode(reply.payload)
        if got.msg_type == O.OFFER:
            offers[client] = got.yiaddr
        if got.msg_type in (O.OFFER, O.ACK) and int(got.yiaddr):
            in_pool = POOL[0] <= got.yiaddr <= POOL[1]
            if client == 0:
                assert got.yiaddr == A("10.0.0.57")     # the reservation, pool full or not
            else:
                assert in_pool, got.yiaddr
        holders = {}
        for ip, row in machine.leases.by_ip.items():
            if row.state == BOUND and row.active(now):
                assert holders.setdefault(ip, row.key) == row.key


option = st.one_of(
    st.builds(lambda n: nc.option_request(nc.OPT_GO, struct.pack(">I", len(n)) + n + b"\0\0"),
              st.sampled_from((b"alpha", b"", b"nope", b"empty"))),
    st.builds(lambda n: nc.option_request(nc.OPT_INFO, struct.pack(">I", len(n)) + n + b"\0\x01\0\x03"),
              st.sampled_from((b"alpha", b"nope"))),
    st.sampled_from([nc.option_request(o) for o in (nc.OPT_LIST, nc.OPT_STRUCTURED_REPLY,
                                                    nc.OPT_STARTTLS, nc.OPT_ABORT, 42)]),
    st.builds(lambda d: nc.option_request(nc.OPT_SET_META_CONTEXT, d), st.binary(max_size=40)),
    st.builds(lambda n: nc.option_request(nc.OPT_EXPORT_NAME, n), st.sampled_from((b"alpha", b"x"))))


@SETTINGS
@given(st.integers(0, 3), st.lists(option, max_size=12), st.integers(1, 64))
def test_nbd_option_sequences_end_once(flags, options, chunk):
    hs = Handshake(Catalog())
    hs.start()
    stream = struct.pack(">I", flags) + b"".join(options)
    ends = 0
    for i in range(0, len(stream), chunk):
        if hs.done:
            break
        for action in hs.feed(stream[i:i + chunk]):
            if isinstance(action, (Close, Transmit)):
                ends += 1
                if isinstance(action, Transmit):
                    assert action.export.name in Catalog.EXPORTS
    assert ends <= 1 and (ends == 1) == hs.done


scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=True),
                   st.text(max_size=12), st.sampled_from(("127.0.0.1:69", "10.0.0.0/24", "eth1", ".")))
SECTIONS = {"server": ("address", "state_dir", "log_format", "log_level", "user", "allow_root"),
            "images": ("dir", "default", "rescan_interval", "settle_seconds"),
            "tftp": ("enabled", "listen", "root", "max_blksize", "max_windowsize", "timeout", "retries"),
            "nbd": ("enabled", "listen", "max_connections", "handshake_timeout"),
            "http": ("enabled", "listen", "stall_timeout", "diff_prebuild_window"),
            "dhcp": ("enabled", "mode", "interfaces", "subnets", "unknown_mac_policy", "decline_hold"),
            "inventory": ("source", "file", "ldap", "poll_interval")}
section = st.sampled_from(sorted(SECTIONS)).flatmap(
    lambda name: st.tuples(st.just(name), st.dictionaries(st.sampled_from(SECTIONS[name]),
                                                          st.one_of(scalar, st.lists(scalar, max_size=3)),
                                                          max_size=5)))


@SETTINGS
@given(st.lists(section, max_size=6))
def test_config_documents_load_or_explain(tmp_path_factory, sections):
    tmp = tmp_path_factory.mktemp("cfg")
    (tmp / "images").mkdir()
    doc = {"server": {"address": "127.0.0.1", "state_dir": str(tmp)}, "images": {"dir": "images"},
           "inventory": {"source": "yaml", "file": "inv.yaml"}}
    (tmp / "inv.yaml").write_text("devices: []\n")
    for name, values in sections:
        doc.setdefault(name, {}).update(values)
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        config = configmod.load(path)
    except configmod.ConfigError as exc:
        assert exc.problems and all(str(path) in str(p) for p in exc.problems)
        return
    assert config.tftp.timeout == config.tftp.timeout          # never NaN


attr_value = st.one_of(st.sampled_from(("52:54:00:aa:00:01", "52:54:00:aa:00:02", "TRUE", "laptop",
                                        "10.0.0.9", "img", "ou=s1,dc=x", "s1", "")),
                       st.text(max_size=20))
entry = st.tuples(st.sampled_from(("cn=a,ou=s1,dc=x", "ou=s1,dc=x", "dc=x", "puavoId=1,ou=s1,dc=x")),
                  st.sampled_from(("bootserverdDevice", "bootserverdSchoolSettings", "puavoDevice",
                                   "puavoSchool", "puavoEduOrg", "puavoServer", "bootserverdImageEntry")),
                  st.dictionaries(st.sampled_from(PROFILES["bootserverd"].attributes
                                                  + PROFILES["puavo"].attributes),
                                  st.lists(attr_value, min_size=1, max_size=3), max_size=8))


@SETTINGS
@given(st.sampled_from(sorted(PROFILES)), st.lists(entry, max_size=10))
def test_directory_entries_assemble(profile, entries):
    view = DirectoryView(PROFILES[profile], "srv")
    for n, (dn, cls, attrs) in enumerate(entries):
        view.put(f"u{n % 7}", dn, {"objectclass": (cls,), **{k.lower(): tuple(v) for k, v in attrs.items()}})
    directory, problems = view.build()
    macs = [d.mac for d in directory.devices]
    assert len(macs) == len(set(macs))
    for device in directory.devices:
        assert RESOLVER.cmdline("img", device).isprintable()
