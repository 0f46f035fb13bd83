"""Start as root, open the privileged ports, then run as an ordinary user.

Under systemd the unit already runs us as ``bootserverd`` with only the capabilities the
services need; started by hand as root, we switch to ``server.user``/``server.group`` once
every socket is open, and refuse to keep running as root unless ``server.allow_root`` says so.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path


class PrivilegeError(Exception):
    pass


def drop_privileges(user: str | None, group: str | None, allow_root: bool, writable: list[Path]) -> str | None:
    """Switch to user/group if we are root; return what was done for the log, or None."""
    if os.getuid() != 0:
        return None
    if user is None:
        if allow_root:
            return "running as root (server.allow_root is true)"
        raise PrivilegeError("refusing to run as root: set server.user (and server.group), "
                             "or server.allow_root: true")
    try:
        account = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group else account.pw_gid
    except KeyError as exc:
        raise PrivilegeError(f"no such user or group: {exc.args[0]}") from None
    for path in writable:                      # state made before the switch stays ours
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, account.pw_uid, gid)
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(account.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise PrivilegeError("could not give up root")
    return f"running as {user}:{group or grp.getgrgid(gid).gr_name}"
