"""POP3 TOP (RFC 1939 §7): the header and the first lines of the body; the dot-stuffing
itself is shared with SMTP DATA (``mailbox_appliance.stuffing``)."""

from __future__ import annotations


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
