"""Incremental Content-Transfer-Encoding decoders (RFC 2045 §6.7 quoted-printable, §6.8 base64).

Each decoder takes the encoded body in pieces of any size and returns the decoded bytes so
far; ``flush`` returns what is left at the end.  Bad input is skipped, never raised on.
"""

from __future__ import annotations

import binascii
import re

_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_QP_CARRY_LIMIT = 1 << 20  # decode a line this long even before its end is seen


class Identity:
    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class Base64:
    """Base64 with white space and padding ignored; a lone trailing character is dropped."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        data = self._carry + _NOT_BASE64.sub(b"", data)
        usable = len(data) - len(data) % 4
        self._carry = data[usable:]
        return binascii.a2b_base64(data[:usable]) if usable else b""

    def flush(self) -> bytes:
        data, self._carry = self._carry, b""
        if len(data) < 2:
            return b""
        try:
            return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        except binascii.Error:
            return b""


class QuotedPrintable:
    """Quoted-printable, decoded a line at a time so "=XX" and soft breaks never split."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        data = self._carry + data
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) > _QP_CARRY_LIMIT:
            cut = len(data) - 2
        self._carry = data[cut:]
        return binascii.a2b_qp(data[:cut]) if cut else b""

    def flush(self) -> bytes:
        data, self._carry = self._carry, b""
        return binascii.a2b_qp(data) if data else b""


def decoder(encoding: str | None) -> Identity | Base64 | QuotedPrintable:
    name = (encoding or "").lower()
    if name == "base64":
        return Base64()
    if name == "quoted-printable":
        return QuotedPrintable()
    return Identity()  # 7bit, 8bit, binary and unknown encodings are passed through
