"""NBD codec: bytes against the values written in proto.md."""

import struct
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:     # Debian's libnbd binding is also "nbd": ours must win
    sys.path.insert(0, str(ROOT))

from nbd import codec as c  # noqa: E402


def test_our_nbd_package_is_imported():
    assert Path(c.__file__).resolve().parent == ROOT / "nbd"


def test_magic_values_spell_the_spec_strings():
    assert struct.pack(">Q", c.NBDMAGIC) == b"NBDMAGIC"
    assert struct.pack(">Q", c.IHAVEOPT) == b"IHAVEOPT"
    assert c.OPTION_REPLY_MAGIC == 0x3E889045565A9
    assert c.REQUEST_MAGIC == 0x25609513
    assert c.SIMPLE_REPLY_MAGIC == 0x67446698
    assert c.STRUCTURED_REPLY_MAGIC == 0x668E33EF


def test_constants_match_spec_numbers():
    assert (c.OPT_EXPORT_NAME, c.OPT_ABORT, c.OPT_LIST, c.OPT_STARTTLS, c.OPT_INFO, c.OPT_GO,
            c.OPT_STRUCTURED_REPLY, c.OPT_LIST_META_CONTEXT, c.OPT_SET_META_CONTEXT) == (
        1, 2, 3, 5, 6, 7, 8, 9, 10)
    assert c.REP_ERR_UNSUP == 2**31 + 1 and c.REP_ERR_POLICY == 2**31 + 2
    assert c.REP_ERR_INVALID == 2**31 + 3 and c.REP_ERR_UNKNOWN == 2**31 + 6
    assert c.REP_ERR_TOO_BIG == 2**31 + 9
    assert (c.CMD_READ, c.CMD_WRITE, c.CMD_DISC, c.CMD_FLUSH, c.CMD_TRIM, c.CMD_CACHE,
            c.CMD_WRITE_ZEROES, c.CMD_BLOCK_STATUS) == tuple(range(8))
    assert c.FLAG_CAN_MULTI_CONN == 0x100 and c.FLAG_SEND_CACHE == 0x400
    assert (c.EPERM, c.EIO, c.EINVAL, c.EOVERFLOW) == (1, 5, 22, 75)
    assert c.REPLY_TYPE_ERROR == 32769 and c.REPLY_TYPE_BLOCK_STATUS == 5


def test_greeting_is_18_bytes_with_fixed_newstyle_and_no_zeroes():
    g = c.greeting()
    assert g == b"NBDMAGICIHAVEOPT\x00\x03"


def test_option_reply_layout():
    r = c.option_reply(c.OPT_LIST, c.REP_SERVER, c.rep_server("img"))
    assert r == (struct.pack(">QIII", 0x3E889045565A9, 3, 2, 7) + b"\x00\x00\x00\x03img")


def test_export_name_reply_zero_padding_depends_on_no_zeroes():
    assert c.export_name_reply(4096, 0x503, no_zeroes=True) == struct.pack(">QH", 4096, 0x503)
    full = c.export_name_reply(4096, 0x503, no_zeroes=False)
    assert len(full) == 8 + 2 + 124 and full[10:] == bytes(124)


def test_info_payloads():
    assert c.info_export(1 << 33, 0x503) == struct.pack(">HQH", 0, 1 << 33, 0x503)
    assert c.info_name("a") == b"\x00\x01a"
    assert c.info_description("d") == b"\x00\x02d"
    assert c.info_block_size(1, 4096, 1 << 25) == struct.pack(">HIII", 3, 1, 4096, 1 << 25)


def test_parse_info_request():
    data = struct.pack(">I", 3) + b"abc" + struct.pack(">HHH", 2, 1, 3)
    assert c.parse_info_request(data) == c.InfoRequest("abc", (1, 3))
    assert c.parse_info_request(struct.pack(">IH", 0, 0)) == c.InfoRequest("", ())


@pytest.mark.parametrize("data", [
    b"",
    struct.pack(">I", 10) + b"abc" + struct.pack(">H", 0),       # name runs past the end
    struct.pack(">I", 3) + b"abc" + struct.pack(">HH", 2, 1),    # count says 2, one present
    struct.pack(">I", 3) + b"abc" + struct.pack(">HH", 0, 1),    # trailing bytes
    struct.pack(">I", 3) + b"a\0c" + struct.pack(">H", 0),       # NUL in name
    struct.pack(">I", 2) + b"\xff\xfe" + struct.pack(">H", 0),   # not UTF-8
])
def test_parse_info_request_rejects_malformed(data):
    with pytest.raises(ValueError):
        c.parse_info_request(data)


def test_parse_meta_context_request():
    q = b"base:allocation"
    data = struct.pack(">I", 3) + b"img" + struct.pack(">II", 1, len(q)) + q
    assert c.parse_meta_context_request(data) == c.MetaContextRequest("img", (q.decode(),))
    with pytest.raises(ValueError):
        c.parse_meta_context_request(data[:-1])
    with pytest.raises(ValueError):
        c.parse_meta_context_request(data + b"x")


def test_request_and_replies_layout():
    req = c.request(c.CMD_READ, 0x1122334455667788, 4096, 512, flags=c.CMD_FLAG_DF)
    assert req == struct.pack(">IHHQQI", 0x25609513, 4, 0, 0x1122334455667788, 4096, 512)
    assert c.simple_reply(7, 22) == struct.pack(">IIQ", 0x67446698, 22, 7)
    assert c.data_chunk_header(7, 4096, 512) == struct.pack(
        ">IHHQIQ", 0x668E33EF, 1, 1, 7, 520, 4096)
    assert c.none_chunk(7) == struct.pack(">IHHQI", 0x668E33EF, 1, 0, 7, 0)
    err = c.error_chunk(7, c.EINVAL, "no")
    assert err == struct.pack(">IHHQI", 0x668E33EF, 1, 32769, 7, 8) + struct.pack(">IH", 22, 2) + b"no"
    bs = c.block_status_chunk(7, 1, ((512, 0),))
    assert bs == struct.pack(">IHHQI", 0x668E33EF, 1, 5, 7, 12) + struct.pack(">III", 1, 512, 0)
