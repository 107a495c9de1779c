"""IMAP strings for FETCH answers: NIL, "quoted" or {literal} (RFC 3501 §4.3, §9 ``nstring``).

Text is a latin-1 ``str`` standing for raw bytes.  A quoted string cannot hold CR, LF or 8-bit
bytes (RFC 3501 §9 ``QUOTED-CHAR``), so those become literals.  The choices between the two
forms follow Dovecot 2.3 (``imap-quote.c``) so answers are byte-identical with it: more than
four characters needing a backslash make a literal too, and display names and subjects are
written "for humans" (white space runs collapsed to one space, trimmed), as a literal whenever
that changed anything.
"""

from __future__ import annotations

import re

_NEEDS_LITERAL = re.compile(r'[\r\n\x80-\xff]|(?:[^"\\]*["\\]){5}')
_NEWLINES = re.compile(r"[\r\n]+")
_NEEDS_HUMAN_CLEANUP = re.compile(r'[\x00\t\r\n"\\\x80-\xff]|  |^ | $')
_LWSP_RUN = re.compile(r"[ \t\r\n]+")


def literal(text: str) -> str:
    return f"{{{len(text)}}}\r\n{text}"


def nstring(text: str | None) -> str:
    """NIL, a quoted string, or a literal (RFC 3501 §9 ``nstring``)."""
    if text is None:
        return "NIL"
    if text.isascii() and '"' not in text and "\\" not in text:
        if "\r" not in text and "\n" not in text:
            return '"' + text + '"'
    if _NEEDS_LITERAL.search(text):
        return literal(text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nstring_nolf(text: str | None) -> str:
    """An nstring of a header value with its line breaks removed (unfolded, RFC 5322 §2.2.3).

    A CR or LF followed by white space (folding) disappears; one followed by anything else
    becomes a space, so words on either side stay apart.
    """
    if text is not None and ("\n" in text or "\r" in text):
        text = _NEWLINES.sub(_unfold_match, text)
    return nstring(text)


def _unfold_match(match: re.Match[str]) -> str:
    end = match.end()
    following = match.string[end : end + 1]
    return "" if following in ("", " ", "\t") else " "


def string_for_humans(text: str | None) -> str:
    """A subject or display name: white space runs as one space, trimmed; NUL as 0x80."""
    if text is None:
        return "NIL"
    if not _NEEDS_HUMAN_CLEANUP.search(text):
        return '"' + text + '"'
    cleaned = _LWSP_RUN.sub(" ", text.replace("\x00", "\x80")).strip(" ")
    if not cleaned:
        return '""'
    return literal(cleaned)
