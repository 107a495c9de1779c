"""DATA content framing (RFC 5321 §4.1.1.4, §4.5.2) without a Python call per line.

The content is scanned a read at a time with ``bytes.find`` and ``bytes.replace``: the end of
data is the first CRLF "." CRLF, and a line that starts with "." loses that dot.  No line-length
limit applies inside DATA, so a long line can never flip the session back into command mode.
Only CR LF "." CR LF ends the content: a bare LF "." LF does not (the SMTP smuggling trick).
"""

from __future__ import annotations

_END = b"\r\n.\r\n"
#: Tails that may be the start of the end marker or of a dot-stuffed line: held back.
_PARTIAL = (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r")


class DotDecoder:
    """Feed raw DATA bytes; get back the unstuffed content and, at the end, the bytes after it."""

    def __init__(self) -> None:
        # The CRLF that ended the DATA command line: a "." on the very first line is stuffed
        # too, and an immediate "." CRLF is an empty message.
        self._held = b"\r\n"
        self._strip = 2
        self.done = False

    def feed(self, data: bytes) -> tuple[bytes, bytes | None]:
        """Returns (content, rest): ``rest`` is None until the end marker has been seen, then
        the bytes that followed it (the next commands of a pipelining client)."""
        buffer = self._held + data if self._held else data
        end = buffer.find(_END)
        if end >= 0:
            self.done = True
            self._held = b""
            return self._unstuff(buffer[: end + 2]), buffer[end + 5 :]
        cut = len(buffer)
        for tail in _PARTIAL:
            if buffer.endswith(tail):
                cut -= len(tail)
                break
        self._held = buffer[cut:]
        return self._unstuff(buffer[:cut]), None

    def _unstuff(self, chunk: bytes) -> bytes:
        if b"\r\n." in chunk:
            chunk = chunk.replace(b"\r\n.", b"\r\n")
        if self._strip:
            taken = min(self._strip, len(chunk))
            chunk = chunk[taken:]
            self._strip -= taken
        return chunk
