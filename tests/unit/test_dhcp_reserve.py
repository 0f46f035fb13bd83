"""dhcp.subnets[].reserve_for_known: the last free pool addresses go only to known devices;
and the incremental free-address count it relies on (checked against a full recount)."""

import random
from ipaddress import IPv4Address, IPv4Network

import pytest

from bootserverd.config import settings as configmod
from dhcp import options as O
from dhcp.leases import RELEASED, LeaseTable
from dhcp.machine import Machine, Policy, Subnet, reserve_count
from tests.support.dhcp_world import DEVICES, HERE, KNOWN, msg, resolve

A = IPv4Address
POOL = ((A("10.0.0.100"), A("10.0.0.109")),)        # 10 addresses
NET = IPv4Network("10.0.0.0/24")


def machine(reserve: int, reserved_in=lambda pool: 0):
    reserved = {A(d.ip) for d in DEVICES.values() if d.ip}
    return Machine(Policy(subnets=(Subnet(NET, POOL, lease_time=1000, reserve_for_known=reserve),)),
                   LeaseTable(), resolve, reserved=lambda ip: ip in reserved, reserved_in=reserved_in)


def unknown(i: int) -> str:
    return "02:00:00:01:00:%02x" % i


def bind(m, mac, now=0.0):
    offer = m.handle(msg(O.DISCOVER, mac), HERE, now)
    if offer.reply is None:
        return offer
    sid = offer.reply.message.get(O.SERVER_ID)
    return m.handle(msg(O.REQUEST, mac, opts=((O.SERVER_ID, sid),
                                              (O.REQUESTED_IP, offer.reply.message.yiaddr.packed))),
                    HERE, now)


def test_reserve_count_from_config_values():
    assert reserve_count(0, POOL) == 0 and reserve_count(3, POOL) == 3
    assert reserve_count("10%", POOL) == 1 and reserve_count("15%", POOL) == 2   # rounded up
    assert reserve_count("100%", POOL) == 10 and reserve_count("0%", POOL) == 0


def test_unknown_clients_stop_at_the_reserve_known_devices_do_not():
    m = machine(reserve=3)
    got = [bind(m, unknown(i)) for i in range(10)]
    acked = [o for o in got if o.reply is not None and o.reply.message.msg_type == O.ACK]
    assert len(acked) == 7                                      # 10 - 3 kept
    refused = [o for o in got if o.reply is None]
    assert all("kept for known devices" in o.event for o in refused)
    assert refused[0].throttle == f"reserve {NET}"              # a flood logs once a minute
    # a known device without a reservation still gets one of the kept addresses
    ack = bind(m, KNOWN)
    assert ack.reply.message.msg_type == O.ACK and ack.reply.message.yiaddr in \
        [A(f"10.0.0.{n}") for n in range(100, 110)]


def test_unknown_client_keeps_renewing_its_own_address_inside_the_reserve():
    m = machine(reserve=3)
    first = [bind(m, unknown(i)).reply.message.yiaddr for i in range(7)]
    assert bind(m, unknown(8)).reply is None                    # the reserve is reached
    again = bind(m, unknown(0), now=10.0)                       # DISCOVER/REQUEST again
    assert again.reply.message.msg_type == O.ACK and again.reply.message.yiaddr == first[0]
    renew = m.handle(msg(O.REQUEST, unknown(1), ciaddr=first[1]), HERE, 20.0)
    assert renew.reply.message.msg_type == O.ACK


def test_init_reboot_of_an_unknown_client_cannot_bypass_the_reserve():
    m = machine(reserve=3)
    for i in range(7):
        bind(m, unknown(i))
    nak = m.handle(msg(O.REQUEST, unknown(9), opts=((O.REQUESTED_IP, A("10.0.0.109").packed),)),
                   HERE, 1.0)
    assert nak.reply.message.msg_type == O.NAK and "kept for known devices" in nak.event


def test_reserve_frees_up_as_leases_expire_and_are_released():
    m = machine(reserve=3)
    ips = [bind(m, unknown(i)).reply.message.yiaddr for i in range(7)]
    assert bind(m, unknown(20), now=5.0).reply is None
    rel = m.handle(msg(O.RELEASE, unknown(0), ciaddr=ips[0]), HERE, 6.0)
    assert rel.changes and rel.changes[0].state == RELEASED
    assert bind(m, unknown(20), now=7.0).reply.message.msg_type == O.ACK
    assert bind(m, unknown(21), now=8.0).reply is None
    # every lease expires at 1000: the pool is free again
    assert bind(m, unknown(21), now=1001.0).reply.message.msg_type == O.ACK


def test_fixed_addresses_inside_the_pool_count_against_it():
    m = machine(reserve=3, reserved_in=lambda pool: 2)           # two devices' IPs in the pool
    acked = sum(1 for i in range(10) if bind(m, unknown(i)).reply is not None)
    assert acked == 5


def test_no_reserve_means_no_change():
    m = machine(reserve=0)
    assert sum(1 for i in range(12) if bind(m, unknown(i)).reply is not None) == 10


def test_free_count_matches_a_full_recount_under_random_changes():
    rng = random.Random(7)
    ranges = ((A("10.1.0.10"), A("10.1.0.40")), (A("10.1.1.0"), A("10.1.1.9")))
    ips = [A("10.1.0.5")] + [A(int(A("10.1.0.10")) + i) for i in range(31)] + \
        [A(int(A("10.1.1.0")) + i) for i in range(12)]          # some outside the pool
    table = LeaseTable()
    now = 0.0
    for step in range(3000):
        now += rng.uniform(0, 3)
        ip = rng.choice(ips)
        key = bytes([rng.randrange(8)])
        action = rng.randrange(6)
        if action == 0:
            table.offer(ip, key, "m", None, now + 60, now)
        elif action == 1:
            table.bind(ip, key, "m", None, now + rng.uniform(1, 200))
        elif action == 2:
            table.release(ip, key, now)
        elif action == 3:
            table.decline(ip, now + 30)
        elif action == 4:
            table.forget_offer(key)
        else:
            table.allocate(ranges, key, None, now)
        if step == 100:
            table.free_count(ranges, now)                       # start counting midway
        if step > 100:
            size = sum(int(hi) - int(lo) + 1 for lo, hi in ranges)
            recount = size - sum(1 for ip_, row in table.by_ip.items()
                                 if any(lo <= ip_ <= hi for lo, hi in ranges) and row.active(now))
            assert table.free_count(ranges, now) == recount, step


CONFIG = """\
server:
  address: 10.0.0.1
  state_dir: state
images:
  dir: images
inventory:
  source: yaml
  file: inventory.yaml
dhcp:
  enabled: true
  interfaces: [eth1]
  subnets:
    - network: 10.0.0.0/24
      pool: 10.0.0.100-10.0.0.109
      reserve_for_known: {a}
    - network: 10.0.1.0/24
      pool: 10.0.1.100-10.0.1.109
      reserve_for_known: {b}
"""


def load(tmp_path, a, b):
    for name in ("images", "state"):
        (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / "inventory.yaml").write_text("devices: []\n")
    path = tmp_path / "bootserverd.yaml"
    path.write_text(CONFIG.format(a=a, b=b))
    return configmod.load(path)


def test_config_accepts_a_count_or_a_share(tmp_path):
    config = load(tmp_path, 4, '"25%"')
    assert [s.reserve_for_known for s in config.dhcp.subnets] == [4, "25%"]
    subnets = [Subnet.from_config(s) for s in config.dhcp.subnets]
    assert [s.reserve_for_known for s in subnets] == [4, 3]     # 25 % of 10, rounded up
    assert Subnet.from_config(load(tmp_path, 0, 0).dhcp.subnets[0]).reserve_for_known == 0


@pytest.mark.parametrize("a, b, first, second", [
    (11, '"10%"', "11 is more than the pool's 10 addresses", None),
    ("-1", '"150%"', "must be a count of addresses", "share 150% must be from 0% to 100%"),
    ("ten", '"x%"', "must be a count of addresses", "must be a count of addresses"),
    ("true", "2.5", "must be a count of addresses", "must be a count of addresses"),
])
def test_config_errors_name_file_line_and_key(tmp_path, a, b, first, second):
    with pytest.raises(configmod.ConfigError) as info:
        load(tmp_path, a, b)
    found = [str(p) for p in info.value.problems]
    assert any(f"bootserverd.yaml:15: dhcp.subnets[0].reserve_for_known: {first}" in p
               for p in found), found
    if second:
        assert any(f"bootserverd.yaml:18: dhcp.subnets[1].reserve_for_known: {second}" in p
                   for p in found), found
    else:
        assert len(found) == 1, found
