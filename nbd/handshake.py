"""Fixed-newstyle option negotiation as a pure state machine.

feed(bytes) -> list of actions (Send / Close / Transmit). Exports come from an
injected catalog (exports.Catalog); the machine never touches sockets, files or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import codec as c
from .exports import Catalog, OpenExport

MAX_REQUEST = 32 * 1024 * 1024      # advertised maximum block size
PREFERRED_BLOCK = 4096
MAX_OPTION_DATA = 64 * 1024         # larger options are skipped and answered ERR_TOO_BIG
MAX_OPTIONS = 1024                  # a client haggling forever is a denial of service
META_CONTEXT_ID = 1                 # id of base:allocation on SET_META_CONTEXT

BASE_FLAGS = (c.FLAG_HAS_FLAGS | c.FLAG_READ_ONLY | c.FLAG_SEND_FLUSH
              | c.FLAG_SEND_CACHE | c.FLAG_CAN_MULTI_CONN)


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class Close:
    """Hard disconnect after the preceding Sends."""
    reason: str


@dataclass(frozen=True)
class Transmit:
    """Negotiation finished: enter transmission with this opened export."""
    export: OpenExport
    flags: int
    structured: bool
    contexts: dict[int, str]
    no_zeroes: bool
    leftover: bytes


@dataclass
class Negotiated:
    """What a session negotiated, for the connect log line."""
    client_flags: int = 0
    structured: bool = False
    contexts: dict[int, str] = field(default_factory=dict)
    options: list[str] = field(default_factory=list)


class Handshake:
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._buf = bytearray()
        self._state = "greeting"       # greeting → flags → options → done
        self._skip = 0                  # bytes of an oversized option still to discard
        self._skip_option = 0
        self._meta_export: str | None = None
        self.negotiated = Negotiated()

    @property
    def done(self) -> bool:
        return self._state == "done"

    def start(self) -> list:
        self._state = "flags"
        return [Send(c.greeting(c.FLAG_FIXED_NEWSTYLE | c.FLAG_NO_ZEROES))]

    def feed(self, data: bytes) -> list:
        if self._state in ("done", "greeting"):
            raise RuntimeError(f"feed() in state {self._state}")
        self._buf += data
        out: list = []
        while self._state != "done":
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    break
                out.append(self._reply(self._skip_option, c.REP_ERR_TOO_BIG,
                                       f"option data over {MAX_OPTION_DATA} bytes"))
                continue
            if self._state == "flags":
                if len(self._buf) < 4:
                    break
                (flags,) = c.CLIENT_FLAGS.unpack_from(self._buf)
                del self._buf[:4]
                if flags & ~(c.FLAG_C_FIXED_NEWSTYLE | c.FLAG_C_NO_ZEROES):
                    out.append(Close(f"unknown client flags 0x{flags:x}"))
                    self._state = "done"
                    break
                self.negotiated.client_flags = flags
                self._state = "options"
                continue
            if len(self._buf) < c.OPTION_HEADER.size:
                break
            magic, option, length = c.OPTION_HEADER.unpack_from(self._buf)
            if magic != c.IHAVEOPT:
                out.append(Close(f"bad option magic 0x{magic:x}"))
                self._state = "done"
                break
            if len(self.negotiated.options) >= MAX_OPTIONS:
                out.append(Close(f"more than {MAX_OPTIONS} options"))
                self._state = "done"
                break
            if length > MAX_OPTION_DATA:
                del self._buf[:c.OPTION_HEADER.size]
                self.negotiated.options.append(c.OPTION_NAMES.get(option, str(option)))
                if option == c.OPT_EXPORT_NAME:
                    out.append(Close("oversized EXPORT_NAME"))
                    self._state = "done"
                    break
                self._skip, self._skip_option = length, option
                continue
            end = c.OPTION_HEADER.size + length
            if len(self._buf) < end:
                break
            payload = bytes(self._buf[c.OPTION_HEADER.size:end])
            del self._buf[:end]
            self.negotiated.options.append(c.OPTION_NAMES.get(option, str(option)))
            out.extend(self._option(option, payload))
        return out

    # --- options ------------------------------------------------------------------------------

    def _reply(self, option: int, reply: int, message: str | bytes = b"") -> Send:
        data = message.encode() if isinstance(message, str) else message
        return Send(c.option_reply(option, reply, data))

    def _flags(self) -> int:
        return BASE_FLAGS | (c.FLAG_SEND_DF if self.negotiated.structured else 0)

    def _option(self, option: int, data: bytes) -> list:
        handler = {
            c.OPT_EXPORT_NAME: self._export_name,
            c.OPT_ABORT: self._abort,
            c.OPT_LIST: self._list,
            c.OPT_STARTTLS: self._starttls,
            c.OPT_INFO: self._info,
            c.OPT_GO: self._info,
            c.OPT_STRUCTURED_REPLY: self._structured,
            c.OPT_LIST_META_CONTEXT: self._meta,
            c.OPT_SET_META_CONTEXT: self._meta,
        }.get(option)
        if handler is None:
            return [self._reply(option, c.REP_ERR_UNSUP, f"option {option} not supported")]
        return handler(option, data)

    def _no_data(self, option: int, data: bytes) -> list | None:
        if data:
            return [self._reply(option, c.REP_ERR_INVALID, "option takes no data")]
        return None

    def _abort(self, option: int, data: bytes) -> list:
        self._state = "done"
        return [self._reply(option, c.REP_ACK), Close("client aborted negotiation")]

    def _list(self, option: int, data: bytes) -> list:
        err = self._no_data(option, data)
        if err:
            return err
        out = [self._reply(option, c.REP_SERVER, c.rep_server(n)) for n in self._catalog.names()]
        out.append(self._reply(option, c.REP_ACK))
        return out

    def _starttls(self, option: int, data: bytes) -> list:
        err = self._no_data(option, data)
        if err:
            return err
        # No TLS support (yet): the spec's answer for a server that does not offer it.
        return [self._reply(option, c.REP_ERR_POLICY, "TLS is not configured on this server")]

    def _structured(self, option: int, data: bytes) -> list:
        err = self._no_data(option, data)
        if err:
            return err
        self.negotiated.structured = True
        return [self._reply(option, c.REP_ACK)]

    def _export_name(self, option: int, data: bytes) -> list:
        self._state = "done"
        try:
            name = c.parse_export_name(data)
        except ValueError as e:
            return [Close(f"bad EXPORT_NAME: {e}")]
        export = self._catalog.open(name)
        if export is None:
            return [Close(f"unknown export {name!r}")]
        self._drop_contexts_unless(export.name)
        no_zeroes = bool(self.negotiated.client_flags & c.FLAG_C_NO_ZEROES)
        flags = self._flags()
        return [Send(c.export_name_reply(export.size, flags, no_zeroes)),
                self._transmit(export, flags, no_zeroes)]

    def _info(self, option: int, data: bytes) -> list:
        try:
            req = c.parse_info_request(data)
        except ValueError as e:
            return [self._reply(option, c.REP_ERR_INVALID, str(e))]
        go = option == c.OPT_GO
        export = self._catalog.open(req.name) if go else self._catalog.lookup(req.name)
        if export is None:
            return [self._reply(option, c.REP_ERR_UNKNOWN, f"no export named {req.name!r}")]
        flags = self._flags()
        out = [self._reply(option, c.REP_INFO, c.info_export(export.size, flags))]
        if c.INFO_NAME in req.requests:
            out.append(self._reply(option, c.REP_INFO, c.info_name(export.name)))
        if c.INFO_DESCRIPTION in req.requests and export.description:
            out.append(self._reply(option, c.REP_INFO, c.info_description(export.description)))
        # Always sent: min 1 means any alignment works, so it is safe unrequested.
        out.append(self._reply(option, c.REP_INFO,
                               c.info_block_size(1, PREFERRED_BLOCK, MAX_REQUEST)))
        out.append(self._reply(option, c.REP_ACK))
        if go:
            self._state = "done"
            self._drop_contexts_unless(req.name)
            out.append(self._transmit(export, flags, True))
        return out

    def _meta(self, option: int, data: bytes) -> list:
        if not self.negotiated.structured:
            return [self._reply(option, c.REP_ERR_INVALID,
                                "negotiate NBD_OPT_STRUCTURED_REPLY first")]
        try:
            req = c.parse_meta_context_request(data)
        except ValueError as e:
            return [self._reply(option, c.REP_ERR_INVALID, str(e))]
        if self._catalog.lookup(req.name) is None:
            return [self._reply(option, c.REP_ERR_UNKNOWN, f"no export named {req.name!r}")]
        listing = option == c.OPT_LIST_META_CONTEXT
        if listing:
            # An empty query list, or the "base:" namespace, lists everything we have.
            hit = not req.queries or any(q in ("base:", c.META_BASE_ALLOCATION)
                                         for q in req.queries)
        else:
            hit = c.META_BASE_ALLOCATION in req.queries
            self._meta_export = req.name
            self.negotiated.contexts = {META_CONTEXT_ID: c.META_BASE_ALLOCATION} if hit else {}
        out = []
        if hit:
            cid = 0 if listing else META_CONTEXT_ID
            out.append(self._reply(option, c.REP_META_CONTEXT,
                                   c.meta_context(cid, c.META_BASE_ALLOCATION)))
        out.append(self._reply(option, c.REP_ACK))
        return out

    def _drop_contexts_unless(self, name: str) -> None:
        # Contexts were selected for one export; they do not carry over to another.
        if self._meta_export != name:
            self.negotiated.contexts = {}

    def _transmit(self, export: OpenExport, flags: int, no_zeroes: bool) -> Transmit:
        leftover = bytes(self._buf)
        self._buf.clear()
        return Transmit(export, flags, self.negotiated.structured,
                        dict(self.negotiated.contexts), no_zeroes, leftover)
