"""Text for IMAP SEARCH from stored messages (RFC 3501 §6.4.4 HEADER, BODY, TEXT).

``header_values`` reads a field out of a stored header block; ``text_chunks`` reads the text
parts of a message from its blob file, part by part and in bounded pieces, decoding the
transfer encoding (RFC 2045 §6) and the charset (RFC 2045 §5.1; RFC 2047 for header text).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import BinaryIO

from mailbox_appliance.mime.headers import header_fields, parse_part_header
from mailbox_appliance.mime.rfc2047 import charset_codec, decode_value
from mailbox_appliance.mime.transfer import decoder

READ_SIZE = 64 * 1024
PART_TEXT_CAP = 16 * 1024 * 1024  # encoded bytes of one part read for SEARCH
HEADER_READ_CAP = 256 * 1024


def header_values(hdr: str, name: str) -> list[str]:
    """The values of every ``name`` field of a header block (latin-1 text, as stored in
    "hdr"), unfolded, encoded words decoded; [] when there is none."""
    wanted = name.strip().lower()
    return [
        decode_value(value).strip()
        for field, value in header_fields(hdr)
        if field.lower() == wanted
    ]


def decoded_header(block: bytes) -> str:
    """A header block as readable text, one "Name: value" line per field."""
    return "".join(
        f"{name}: {decode_value(value).strip()}\n" for name, value in header_fields(block)
    )


def text_chunks(f: BinaryIO, structure: dict, include_headers: bool) -> Iterator[str]:
    """The decoded text of the message's text/* parts, in order, a piece at a time.

    ``f`` is the seekable binary blob file.  At most ``PART_TEXT_CAP`` bytes of each part are
    read, ``READ_SIZE`` at a time.  With ``include_headers`` (SEARCH TEXT) every header block
    (the message's, each MIME part's, each embedded message's) comes first in its place.
    Each part's text and each header block end with "\n", so joined pieces never glue words
    of two parts together; a word can still straddle two pieces of one part.
    """
    yield from _walk(f, structure["part"], include_headers)


def _walk(f: BinaryIO, node: dict, include_headers: bool) -> Iterator[str]:
    header = None
    if include_headers and node["b"] > node["h"]:
        header = _read(f, node["h"], min(node["b"], node["h"] + HEADER_READ_CAP))
        yield decoded_header(header)
    if "sub" in node:
        for child in node["sub"]:
            yield from _walk(f, child, include_headers)
    elif "msg" in node:
        yield from _walk(f, node["msg"], include_headers)
    elif node["t"].startswith("text/") and node["e"] > node["b"]:
        if header is None:
            header = _read(f, node["h"], min(node["b"], node["h"] + HEADER_READ_CAP))
        yield from _part_text(f, node, header)


def _part_text(f: BinaryIO, node: dict, header: bytes) -> Iterator[str]:
    info = parse_part_header(header, message=False, mime=True)
    charset = next((value for key, value in info.params if key.lower() == "charset"), None)
    text = codecs.getincrementaldecoder(charset_codec(charset))(errors="replace")
    transfer = decoder(info.encoding)
    position, end = node["b"], min(node["e"], node["b"] + PART_TEXT_CAP)
    f.seek(position)
    while position < end:
        data = f.read(min(READ_SIZE, end - position))
        if not data:
            break
        position += len(data)
        piece = text.decode(transfer.feed(data))
        if piece:
            yield piece
    yield text.decode(transfer.flush(), final=True) + "\n"


def _read(f: BinaryIO, start: int, end: int) -> bytes:
    f.seek(start)
    return f.read(max(0, end - start))
