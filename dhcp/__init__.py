"""DHCP server. Pure (stdlib only, no clock, no sockets): codec and options (bytes ⇄
messages), machine (policy: message + arrival + now → Outcome), leases (the lease table),
sniff (decisions on undecoded datagrams), rogue (other servers' replies → rogue servers),
split (two servers' shares of a pool).
I/O: protocol (the Twisted adapter), journal (the durable lease journal, group-committed),
netif (interfaces and neighbour entries, netlink), icmp (the conflict probe), watch (the
packet socket and probe that feed rogue)."""
