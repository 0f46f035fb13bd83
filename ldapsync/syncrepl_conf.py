"""Reading olcSyncrepl values and LDAP URIs (pure, stdlib only): shared by the replica tool
(``bootserverd ldap-slave``) and the replication health monitor."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse


def strip_index(value: str) -> str:
    """'{0}rid=001 …' → 'rid=001 …' (cn=config orders values with an {n} prefix)."""
    return re.sub(r"^\{-?\d+\}", "", value)


def provider_from(syncrepl: str) -> dict[str, str]:
    """An olcSyncrepl value's key=value and key="quoted value" pairs."""
    return {m[1]: m[2] or m[3] for m in re.finditer(r'(\w[\w-]*)=(?:"((?:[^"\\]|\\.)*)"|(\S+))', syncrepl)}


def is_loopback(uri: str) -> bool:
    host = urllib.parse.urlsplit(uri).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
