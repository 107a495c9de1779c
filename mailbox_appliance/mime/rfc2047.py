"""Readable text of header values: unfolding and encoded words (RFC 5322 §2.2.3, RFC 2047).

Best effort and never raising: an unknown charset falls back to UTF-8, undecodable bytes become
U+FFFD, and raw 8-bit header text (RFC 6532) is read as UTF-8 where it is valid UTF-8 and as
latin-1 where it is not.  Used for SEARCH, never for FETCH answers (clients decode those).
"""

from __future__ import annotations

import binascii
import codecs
import re

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?]*?)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])|\r?\n$")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def charset_codec(charset: str | None) -> str:
    """A Python codec name for a MIME charset; UTF-8 when unknown or absent."""
    if charset:
        name = charset.strip().strip('"').lower()
        if name in ("us-ascii", "ascii", "unknown-8bit", "x-unknown"):
            return "utf-8"  # undeclared 8-bit text is far more often UTF-8 than anything
        try:
            return codecs.lookup(name).name
        except LookupError:
            pass
    return "utf-8"


def raw_text(text: str) -> str:
    """Latin-1 characters standing for bytes, as text: UTF-8 if valid, else latin-1."""
    if text.isascii():
        return text
    data = text.encode("latin-1", "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return text


def _decode_word(charset: str, encoding: str, payload: str) -> str:
    data = payload.encode("latin-1", "replace")
    try:
        if encoding in "Bb":
            data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
            data = (
                binascii.a2b_base64(data + b"=" * (-len(data) % 4)) if len(data) % 4 != 1 else b""
            )
        else:
            data = _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data.replace(b"_", b" "))
    except (binascii.Error, ValueError):
        return payload
    # RFC 2231 §5: a charset may carry a language, "utf-8*en".
    return data.decode(charset_codec(charset.split("*", 1)[0]), "replace")


def decode_value(raw: str) -> str:
    """A header field value (latin-1, possibly folded) as readable, unfolded text."""
    text = _FOLD.sub("", raw)
    out: list[str] = []
    pos = 0
    previous_was_word = False
    for m in _ENCODED_WORD.finditer(text):
        between = text[pos : m.start()]
        # White space between two encoded words is not part of the text (RFC 2047 §6.2).
        if not (previous_was_word and between.strip(" \t\r\n") == ""):
            out.append(raw_text(between))
        out.append(_decode_word(m.group(1), m.group(2), m.group(3)))
        pos = m.end()
        previous_was_word = True
    out.append(raw_text(text[pos:]))
    return "".join(out)
