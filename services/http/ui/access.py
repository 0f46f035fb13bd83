"""Who may see the status page: a list of networks (``http.ui_allow``). Pure.

The page shows hostnames, MACs and addresses of a school's machines: by default only this
host (loopback) and the subnets the DHCP service serves may see it."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, ip_address

LOOPBACK = IPv4Network("127.0.0.0/8")


def allowed_networks(configured, served_subnets) -> tuple[IPv4Network, ...]:
    """``configured`` (http.ui_allow) when set, else loopback and ``served_subnets``."""
    if configured is not None:
        return tuple(configured)
    return (LOOPBACK, *served_subnets)


def may_see(networks, client: str) -> bool:
    """Whether the address ``client`` (IPv4, or IPv4-mapped IPv6) is in ``networks``."""
    try:
        address = ip_address(client)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if not isinstance(address, IPv4Address):
        return False
    return any(address in network for network in networks)
