"""Message content as a POP3 multi-line response (RFC 1939 §3): CRLF lines, dot-stuffed.

Works a chunk at a time with ``bytes.replace``, carrying the one fact a chunk boundary can
split (whether the next byte starts a line, and a CR waiting for its LF), so a ``.`` that
starts a chunk is stuffed like any other and a CRLF split across chunks stays one line end.
(``twisted.mail.pop3`` turns stored CRLF into CR CR LF and misses a ``.`` at a chunk start.)
A bare LF in the stored message goes out as CRLF: the only line end POP3 has.
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


class TopFilter:
    """TOP msg n (RFC 1939 §7): the header, the blank line, then ``n`` lines of the body.

    Fed the raw message; passes on what is wanted and says when it has all of it.
    """

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.done = False
        self._in_header = True
        self._previous = b"\n"  # a message starting with a blank line has an empty header

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        start = 0
        if self._in_header:
            end = _header_end(self._previous + data)
            if end is None:
                self._previous = (self._previous + data)[-2:]
                return data
            end -= len(self._previous)
            self._in_header = False
            start = end
            if self.lines == 0:
                self.done = True
                return data[:end]
        position = start
        while self.lines > 0:
            i = data.find(b"\n", position)
            if i < 0:
                return data
            position = i + 1
            self.lines -= 1
        self.done = True
        return data[:position]


def _header_end(data: bytes) -> int | None:
    """Offset just past the blank line that ends a header (CRLF or bare LF lines)."""
    found = [i for i in (data.find(b"\n\r\n"), data.find(b"\n\n")) if i >= 0]
    if not found:
        return None
    i = min(found)
    return i + (3 if data[i + 1 : i + 2] == b"\r" else 2)
