"""Message content as dot-stuffed CRLF lines: a POP3 multi-line response (RFC 1939 §3) and
SMTP DATA (RFC 5321 §4.5.2).

Works a chunk at a time with ``bytes.replace``, carrying the one fact a chunk boundary can
split (whether the next byte starts a line, and a CR waiting for its LF), so a ``.`` that
starts a chunk is stuffed like any other and a CRLF split across chunks stays one line end.
(``twisted.mail.pop3`` turns stored CRLF into CR CR LF and misses a ``.`` at a chunk start.)
A bare LF in the stored message goes out as CRLF: the only line end either protocol has
(RFC 5321 §2.3.8).
"""

from __future__ import annotations


class DotStuffer:
    def __init__(self) -> None:
        self._line_start = True
        self._cr = False  # the last chunk ended with CR

    def feed(self, data: bytes) -> bytes:
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._cr = True
        if not data:
            return b""
        if b"\n" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            data = data.replace(b"\n.", b"\n..")
        if self._line_start and data[:1] == b".":
            data = b"." + data
        self._line_start = data.endswith(b"\n")
        return data

    def close(self) -> bytes:
        """The rest, a line end if the message lacked a final one, and the terminating dot."""
        tail = b"\r" if self._cr else b""
        if tail or not self._line_start:
            tail += b"\r\n"
        return tail + b".\r\n"
