"""The kernel's NBD generic-netlink messages (family "nbd", include/uapi/linux/nbd-netlink.h),
described for pyroute2, and the two the helper sends (pure: message objects and bytes).

- ``reconfigure(index, dead_timeout=, timeout=, fd=)``: NBD_CMD_RECONFIGURE: the dead-connection
  timeout (the kernel holds I/O instead of failing it while no connection is alive), the
  request timeout, and a new socket for the dead connection (NBD_ATTR_SOCKETS).
- ``link_dead_index(msg)``: the device of an NBD_CMD_LINK_DEAD multicast (group
  ``nbd_mc_group``), sent when a connection of a device dies.
"""

from __future__ import annotations

from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, genlmsg, nla

FAMILY = "nbd"
MCAST_GROUP = "nbd_mc_group"
VERSION = 1

CMD_CONNECT, CMD_DISCONNECT, CMD_RECONFIGURE, CMD_LINK_DEAD, CMD_STATUS = 1, 2, 3, 4, 5
REQUEST_FLAGS = NLM_F_REQUEST | NLM_F_ACK


class nbd_msg(genlmsg):
    """Attributes in the kernel's numbering (NBD_ATTR_*); nested sockets and device list."""
    prefix = "NBD_ATTR_"
    nla_map = (
        ("NBD_ATTR_UNSPEC", "none"),
        ("NBD_ATTR_INDEX", "uint32"),
        ("NBD_ATTR_SIZE_BYTES", "uint64"),
        ("NBD_ATTR_BLOCK_SIZE_BYTES", "uint64"),
        ("NBD_ATTR_TIMEOUT", "uint64"),
        ("NBD_ATTR_SERVER_FLAGS", "uint64"),
        ("NBD_ATTR_CLIENT_FLAGS", "uint64"),
        ("NBD_ATTR_SOCKETS", "sockets"),
        ("NBD_ATTR_DEAD_CONN_TIMEOUT", "uint64"),
        ("NBD_ATTR_DEVICE_LIST", "device_list"),
        ("NBD_ATTR_BACKEND_IDENTIFIER", "asciiz"),
    )

    class sockets(nla):
        nla_map = (("NBD_SOCK_ITEM_UNSPEC", "none"), ("NBD_SOCK_ITEM", "sock_item"))

        class sock_item(nla):
            nla_map = (("NBD_SOCK_UNSPEC", "none"), ("NBD_SOCK_FD", "uint32"))

    class device_list(nla):
        nla_map = (("NBD_DEVICE_ITEM_UNSPEC", "none"), ("NBD_DEVICE_ITEM", "device_item"))

        class device_item(nla):
            nla_map = (("NBD_DEVICE_UNSPEC", "none"), ("NBD_DEVICE_INDEX", "uint32"),
                       ("NBD_DEVICE_CONNECTED", "uint8"))


def reconfigure(index: int, *, dead_timeout: int | None = None, timeout: int | None = None,
                fd: int | None = None) -> nbd_msg:
    """NBD_CMD_RECONFIGURE of /dev/nbd<index> (the netlink header is filled in when sent)."""
    msg = nbd_msg()
    msg["cmd"] = CMD_RECONFIGURE
    msg["version"] = VERSION
    msg["attrs"] = [["NBD_ATTR_INDEX", index]]
    if timeout is not None:
        msg["attrs"].append(["NBD_ATTR_TIMEOUT", timeout])
    if dead_timeout is not None:
        msg["attrs"].append(["NBD_ATTR_DEAD_CONN_TIMEOUT", dead_timeout])
    if fd is not None:
        msg["attrs"].append(["NBD_ATTR_SOCKETS",
                             {"attrs": [["NBD_SOCK_ITEM", {"attrs": [["NBD_SOCK_FD", fd]]}]]}])
    return msg


def encode(msg: nbd_msg, family_id: int, seq: int = 1, pid: int = 0) -> bytes:
    """The bytes of ``msg`` as a request to the family (what the tests compare)."""
    msg["header"]["type"] = family_id
    msg["header"]["flags"] = REQUEST_FLAGS
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = pid
    msg.encode()
    return bytes(msg.data)


def decode(data: bytes) -> nbd_msg:
    msg = nbd_msg(data)
    msg.decode()
    return msg


def link_dead_index(msg: nbd_msg) -> int | None:
    """The device index of an NBD_CMD_LINK_DEAD message, else None."""
    if msg.get("cmd") != CMD_LINK_DEAD:
        return None
    return msg.get_attr("NBD_ATTR_INDEX")
