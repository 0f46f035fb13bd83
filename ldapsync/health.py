"""The replication lag, checked periodically: the replica's and the centre's contextCSN.

Each check runs in the reactor's thread pool (python-ldap blocks), one at a time, with short
timeouts; the result goes to the pure ``LagTracker`` in the reactor, which says what to log.
The centre is ``inventory.ldap.central_uri``, else the provider of the replica's
olcSyncrepl when the daemon may read cn=config (root over ldapi); it is bound to with the
daemon's own DN and password (the bind entry is replicated from the centre).
"""

from __future__ import annotations

import time
from pathlib import Path

from twisted.internet import threads
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ldapsync.replication import LagTracker
from ldapsync.syncrepl_conf import is_loopback, provider_from, strip_index

log = Logger(namespace="bootserverd.directory")
TIMEOUT = 3.0


class ReplicationMonitor:
    def __init__(self, reactor, *, uri: str, base: str, bind_dn: str | None, password: str | None,
                 central_uri: str | None, ca_file: Path | None, interval: float, warn_after: float):
        self.reactor = reactor
        self.uri, self.base, self.bind_dn, self.password = uri, base, bind_dn, password
        self.central_uri = central_uri
        self.ca_file = str(ca_file) if ca_file else None
        self.interval = interval
        self.tracker = LagTracker(warn_after, started=time.time())
        self._loop: LoopingCall | None = None
        self._first = None
        self._busy = False
        self.unknown_centre = False

    def start(self) -> None:
        # the first check a moment after start-up, when the consumer has connected
        self._first = self.reactor.callLater(min(1.0, self.interval), self._begin)

    def _begin(self) -> None:
        self._first = None
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        first, self._first = self._first, None
        if first is not None and first.active():
            first.cancel()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def lag_seconds(self) -> float:
        return 0.0 if self.unknown_centre else self.tracker.lag(time.time())

    def status(self) -> dict:
        if self.unknown_centre:
            return {"centre": None, "state": "centre unknown", "lag_seconds": 0.0}
        return {"centre": self.central_uri, **self.tracker.status(time.time())}

    def _tick(self) -> None:
        if self._busy:                      # a check still waits on a timeout: skip this one
            return
        self._busy = True
        d = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self._check)
        d.addCallback(self._observed)
        d.addErrback(lambda failure: self._observed((None, None, f"check failed: {failure.getErrorMessage()}")))

    def _observed(self, result) -> None:
        self._busy = False
        if self._loop is None:
            return
        local, central, error = result
        if self.central_uri is None and error is None:
            # nothing to compare with: say so once, report no lag rather than a growing one
            log.info("directory: replication lag not checked: the centre is unknown (set "
                     "inventory.ldap.central_uri; cn=config is not readable to the daemon)")
            self.unknown_centre = True
            self.stop()
            return
        for level, line in self.tracker.observe(time.time(), local, central, error):
            getattr(log, level)("directory: {line}", line=line,
                                lag=round(self.tracker.lag(time.time()), 1), centre=self.central_uri)

    # -- in a pool thread --
    def _check(self) -> tuple[list[str] | None, list[str] | None, str | None]:
        import ldap
        from ldapsync.consumer import describe
        try:
            conn = self._connect(self.uri)
        except ldap.LDAPError as exc:
            return None, None, f"replica {self.uri}: {describe(exc)}"
        try:
            local = self._csn(conn)
            if self.central_uri is None:
                self.central_uri = self._provider(conn)
        except ldap.LDAPError as exc:
            return None, None, f"replica {self.uri}: {describe(exc)}"
        finally:
            conn.unbind_ext()
        if self.central_uri is None:
            return local, None, None
        try:
            central_conn = self._connect(self.central_uri, central=True)
            try:
                return local, self._csn(central_conn), None
            finally:
                central_conn.unbind_ext()
        except ldap.LDAPError as exc:
            return local, None, f"centre {self.central_uri}: {describe(exc)}"

    def _connect(self, uri: str, central: bool = False):
        import ldap
        conn = ldap.initialize(uri)
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, TIMEOUT)
        conn.set_option(ldap.OPT_TIMEOUT, TIMEOUT)
        conn.set_option(ldap.OPT_REFERRALS, 0)
        if central and self.ca_file:
            conn.set_option(ldap.OPT_X_TLS_CACERTFILE, self.ca_file)
            conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
            conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
        # the password crosses the network to the centre: only over TLS, unless on loopback
        if central and uri.lower().startswith("ldap://") and not is_loopback(uri):
            conn.start_tls_s()
        if self.bind_dn:
            conn.simple_bind_s(self.bind_dn, self.password or "")
        elif uri.startswith("ldapi:"):
            conn.sasl_external_bind_s()
        return conn

    def _csn(self, conn) -> list[str]:
        import ldap
        result = conn.search_s(self.base, ldap.SCOPE_BASE, "(objectClass=*)", ["contextCSN"])
        return sorted(v.decode() for v in result[0][1].get("contextCSN", ())) if result else []

    def _provider(self, conn) -> str | None:
        import ldap
        try:
            found = conn.search_s("cn=config", ldap.SCOPE_ONELEVEL, "(olcSyncrepl=*)", ["olcSyncrepl"])
        except ldap.LDAPError:
            return None
        for _, attrs in found:
            for value in attrs.get("olcSyncrepl", ()):
                provider = provider_from(strip_index(value.decode())).get("provider")
                if provider:
                    return provider
        return None
