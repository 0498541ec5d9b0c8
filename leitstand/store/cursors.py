"""Read cursors: opaque to clients, url-safe base64 of (version, seq, inode, offset).

`seq` names the file of the domain (see `segments.py`: closed segments 1, 2, ... and then the
active file), `offset` the position just after a line in that file's *uncompressed* bytes. So a
cursor into the active file stays valid after the file became segment `seq`, was compressed, or
moved. `inode` is the active file's inode when the cursor was handed out: when the active file
has the cursor's `seq` but another inode, it was replaced outside the rotation (by hand) and
reading starts again at its beginning.

Version 1 cursors (inode, offset: before rotation existed) are still understood: they point into
the active file if the inode matches, else to its beginning.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from ..errors import BadCursor

_V1 = struct.Struct(">BQQ")
_V2 = struct.Struct(">BIQQ")


@dataclass(frozen=True, slots=True)
class Cursor:
    seq: int | None  # None: a version 1 cursor (the active file, if `inode` still matches)
    inode: int
    offset: int


def encode_cursor(seq: int, inode: int, offset: int) -> str:
    return _b64(_V2.pack(2, seq, inode, offset))


def decode_cursor(text: str) -> Cursor:
    """The position a cursor names; `BadCursor` if it is not one of ours."""
    for layout in (_V2, _V1):
        if len(text) == len(_b64(b"\0" * layout.size)):
            break
    else:
        raise BadCursor("invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4))
        fields = layout.unpack(raw)
    except (ValueError, binascii.Error, struct.error, UnicodeEncodeError):
        raise BadCursor("invalid cursor") from None
    if layout is _V2 and fields[0] == 2:
        return Cursor(fields[1], fields[2], fields[3])
    if layout is _V1 and fields[0] == 1:
        return Cursor(None, fields[1], fields[2])
    raise BadCursor("invalid cursor")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
