"""The checks both inventory sources apply (the YAML file and the LDAP directory), written once.

Each returns None for a good value or the problem in words; the source decides what a problem
costs (the YAML file refuses to load, an LDAP entry loses the attribute with a warning).
"""

from __future__ import annotations

import re

HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
# the <v> of /boot/vmlinuz-<v> inside an image
KERNEL_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")


def hostname_problem(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > 253 or not HOSTNAME.match(value):
        return f"not a valid hostname: {value!r}"
    return None


def kernel_version_problem(value: object) -> str | None:
    if isinstance(value, float):     # YAML reads 6.10 as 6.1: make the operator quote it
        return f"write the kernel version in quotes, YAML read it as the number {value!r}"
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not KERNEL_VERSION.match(str(value)):
        return f"not a kernel version like 6.1.0-18-amd64 (the <v> of /boot/vmlinuz-<v>): {value!r}"
    return None
