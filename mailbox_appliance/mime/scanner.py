"""Incremental MIME structure scanner (RFC 2045, RFC 2046 §5.1, RFC 5322 §2.1).

``MimeScanner`` is fed a message in chunks of any size and keeps only what it must: the
header block being read (at most ``HEADER_CAP`` bytes of it; a longer header is still followed
to its end, but the rest is not recorded) and a few bytes of look-ahead.  Bodies are never
held: they are searched for ``\\n--`` with ``bytes.find`` and their lines counted with
``bytes.count``, chunk by chunk.  The result does not depend on where the chunks are cut.

Boundary rules (RFC 2046 §5.1.1, as Dovecot applies them): a delimiter is a line starting with
``--`` and the boundary of any enclosing multipart (innermost first, the longest one winning
when several match); the CR LF before it belongs to the delimiter, not to the part; the rest
of a delimiter line is ignored; a close delimiter (``--`` after the boundary) ends the
multipart, whose epilogue is then searched for enclosing boundaries only.  An enclosing
boundary ends every part inside it.  When the blank line after a part's header is followed
at once by a delimiter, that line break is the delimiter's, so the part's header ends before
it and its body is empty.  Lines start after LF: bare-LF messages scan like CRLF ones.

Broken messages: a header without blank line runs to the next delimiter or to the end of the
data; parts without a final boundary end at the end of the data; a multipart without
boundary parameter has no parts (its content is only reachable as its body; BODYSTRUCTURE
shows one empty text/plain part, as Dovecot does).  Nesting deeper than ``MAX_DEPTH`` is not
followed, and after ``MAX_PARTS`` parts no new part is started, so the stored structure stays
small whatever the input.
"""

from __future__ import annotations

import re

from mailbox_appliance.mime import render
from mailbox_appliance.mime.dates import sent_date
from mailbox_appliance.mime.headers import parse_part_header
from mailbox_appliance.mime.parts import LEAF, MESSAGE, MULTIPART, Part

HEADER_CAP = 256 * 1024  # header bytes recorded per part; the rest is scanned, not kept
STORED_HEADER_CAP = 64 * 1024  # of the top-level header, kept in the structure's "hdr"
MAX_DEPTH = 100  # Dovecot's default limits (message_parser max nested / total parts)
MAX_PARTS = 10000
MAX_BOUNDARY = 998  # RFC 2046 allows 70; anything longer than a line is no boundary

_HEADER, _BODY, _DELIMITER = range(3)
_CR, _LF, _DASH = 13, 10, 45
_NEED = object()  # a decision needs more data

_HEADER_END = re.compile(rb"\n\r?\n")
_HEADER_END_OR_DASHES = re.compile(rb"\n(?:\r?\n|--)")


class MimeScanner:
    """Feed raw message bytes with ``feed``; ``close`` returns the structure dict."""

    def __init__(self) -> None:
        self._buf = b""
        self._base = 0  # message offset of _buf[0]
        self._cur = 0  # first byte of _buf not yet consumed
        self._prev = -1  # the byte before _buf[0]
        self._lf = 0  # LFs consumed while some open part counts lines
        self._counting = 0  # open parts that count lines
        self._root = Part(0, 0, in_multipart=False, message_root=True)
        self._open: list[Part] = [self._root]
        self._bounds: list[tuple[bytes, Part]] = []
        self._maxb = 0
        self._mode = _HEADER
        self._line_start = True  # _cur is at the start of a line
        self._fresh = False  # the body being read began right after its part's header
        self._hdr: list[bytes] = []
        self._hdr_len = 0
        self._top_header = b""
        self._delimiter: tuple[Part, bool] | None = None
        self._parts = 1
        self._result: dict | None = None

    # -- public API --------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Scan the next piece of the message."""
        if self._result is not None:
            raise ValueError("MimeScanner.feed() after close()")
        if not chunk:
            return
        buf, cur = self._buf, self._cur
        if cur >= len(buf):
            if buf:
                self._prev = buf[-1]
            self._base += len(buf)
            self._buf = bytes(chunk)
        else:
            if cur:
                self._prev = buf[cur - 1]
            self._base += cur
            self._buf = buf[cur:] + chunk
        self._cur = 0
        self._run(False)

    @property
    def root(self) -> Part:
        """The part tree, with every offset final once ``close`` has run (smtp/detach.py
        reads each part's encoding and byte range from it)."""
        return self._root

    def close(self) -> dict:
        """Finish the scan; the structure (see the package docstring) is returned."""
        if self._result is not None:
            return self._result
        self._run(True)
        end = self._base + len(self._buf)
        while self._open:
            self._end_part(self._open.pop(), end, self._lf)
        root = self._root
        info = root.info
        self._result = {
            "v": 1,
            "envelope": render.envelope(info.envelope if info else None),
            "body": render.body(root, False),
            "bodystructure": render.body(root, True),
            "sent": sent_date(info.first_date if info else None),
            "hdr": self._top_header.decode("latin-1"),
            "part": root.to_node(),
        }
        return self._result

    # -- the state machine ---------------------------------------------------------------------

    def _run(self, eof: bool) -> None:
        while True:
            if self._mode == _HEADER:
                progressed = self._step_header(eof)
            elif self._mode == _BODY:
                progressed = self._step_body(eof)
            else:
                progressed = self._step_delimiter_line()
            if not progressed:
                return

    def _consume(self, to: int) -> None:
        if to > self._cur:
            if self._counting:
                self._lf += self._buf.count(b"\n", self._cur, to)
            self._cur = to

    def _take_header(self, to: int) -> None:
        """Record header bytes up to ``to`` (within HEADER_CAP) and consume them."""
        cur = self._cur
        if to > cur and self._hdr_len < HEADER_CAP:
            piece = self._buf[cur : min(to, cur + HEADER_CAP - self._hdr_len)]
            self._hdr.append(piece)
            self._hdr_len += len(piece)
        self._consume(to)

    def _byte_before(self, i: int) -> int:
        return self._buf[i - 1] if i > 0 else self._prev

    def _step_header(self, eof: bool) -> bool:
        buf, n = self._buf, len(self._buf)
        pos = self._cur
        if self._line_start:
            if pos >= n:
                if not eof:
                    return False
                self._header_ended(self._base + n, 0)
                return True
            first = buf[pos]
            if first == _LF or (first == _CR and pos + 1 < n and buf[pos + 1] == _LF):
                blank = 1 if first == _LF else 2
                self._take_header(pos + blank)
                self._header_ended(self._base + pos + blank, blank)
                return True
            if first == _CR and pos + 1 >= n and not eof:
                return False
            if first == _DASH and self._bounds:
                if pos + 1 >= n and not eof:
                    return False
                if pos + 1 < n and buf[pos + 1] == _DASH:
                    found = self._boundary_at(pos, eof)
                    if found is _NEED:
                        return False
                    if found is not None:
                        self._headers_cut(self._base + pos)
                        self._found(found, pos, first_line=True)
                        return True
            self._line_start = False
        pattern = _HEADER_END_OR_DASHES if self._bounds else _HEADER_END
        search_from = pos
        while True:
            m = pattern.search(buf, search_from)
            if m is None:
                if eof:
                    self._take_header(n)
                    self._header_ended(self._base + n, 0)
                    return True
                self._take_header(max(pos, n - 2))
                return False
            i = m.start()
            if buf[i + 1] != _DASH:
                blank = m.end() - i - 1
                self._take_header(m.end())
                self._header_ended(self._base + m.end(), blank)
                return True
            found = self._boundary_at(i + 1, eof)
            if found is _NEED:
                self._take_header(i)
                return False
            if found is None:
                search_from = i + 1
                continue
            # The header ends at the delimiter; its last line break is the delimiter's.
            end = i - 1 if self._byte_before(i) == _CR else i
            if end >= self._cur:
                self._take_header(end)
            elif self._hdr and self._hdr_len < HEADER_CAP:
                self._hdr[-1] = self._hdr[-1][:-1]  # the CR was recorded already
            self._consume(i)
            self._headers_cut(self._base + end)
            self._found(found, i + 1, first_line=False)
            return True

    def _step_body(self, eof: bool) -> bool:
        buf, n = self._buf, len(self._buf)
        pos = self._cur
        if not self._bounds:
            self._consume(n)
            return False
        if self._line_start:
            if pos + 2 > n and not eof:
                return False
            if pos + 2 <= n and buf[pos] == _DASH and buf[pos + 1] == _DASH:
                found = self._boundary_at(pos, eof)
                if found is _NEED:
                    return False
                if found is not None:
                    self._found(found, pos, first_line=True)
                    return True
            self._line_start = False
        i = buf.find(b"\n--", pos)
        while i >= 0:
            found = self._boundary_at(i + 1, eof)
            if found is _NEED:
                self._consume(i)
                return False
            if found is not None:
                self._consume(i)
                self._found(found, i + 1, first_line=False)
                return True
            i = buf.find(b"\n--", i + 1)
        self._consume(n if eof else max(pos, n - 2))
        return False

    def _step_delimiter_line(self) -> bool:
        lf = self._buf.find(b"\n", self._cur)
        if lf < 0:
            self._consume(len(self._buf))
            return False
        self._consume(lf + 1)
        self._after_delimiter()
        return True

    # -- boundaries ----------------------------------------------------------------------------

    def _boundary_at(self, line: int, eof: bool):
        """At a line starting with "--": (index of the boundary in _bounds, is close), None,
        or _NEED when the line is too short yet to tell."""
        buf = self._buf
        start = line + 2
        limit = start + self._maxb + 2
        lf = buf.find(b"\n", start, limit)
        if lf < 0:
            if len(buf) < limit and not eof:
                return _NEED
            lf = min(len(buf), limit)
        text = buf[start:lf]
        best = -1
        best_len = -1
        bounds = self._bounds
        for index in range(len(bounds) - 1, -1, -1):
            boundary = bounds[index][0]
            if len(boundary) > best_len and text.startswith(boundary):
                best, best_len = index, len(boundary)
        if best < 0:
            return None
        return best, text[best_len : best_len + 2] == b"--"

    def _found(self, found: tuple[int, bool], line: int, first_line: bool) -> None:
        """A delimiter line starts at ``line``: end the parts it closes, skip the line."""
        index, close = found
        owner = self._bounds[index][1]
        current = self._open[-1]
        if not (first_line and owner is current):
            lf = self._lf
            if first_line:
                end = self._base + line
                blank_owner = current
                if not current.blank and current.h == end and len(self._open) > 1:
                    # An empty embedded message: the blank line is its message part's.
                    if self._open[-2].msg is current:
                        blank_owner = self._open[-2]
                if self._fresh and blank_owner.blank and blank_owner.b == end:
                    # The blank line after the header is the delimiter's line break.
                    blank_owner.b -= blank_owner.blank
                    end = blank_owner.b
                    lf -= 1
                    blank_owner.lf_b = lf
                    if current is not blank_owner:
                        current.h = current.b = end
                        current.lf_b = lf
            else:
                end = self._base + line - 1
                if self._byte_before(line - 1) == _CR:
                    end -= 1
            while self._open[-1] is not owner:
                self._end_part(self._open.pop(), end, lf)
        del self._bounds[index + 1 :]
        if close:
            del self._bounds[index]
        self._maxb = max((len(b) for b, _ in self._bounds), default=0)
        self._delimiter = (owner, close)
        self._mode = _DELIMITER
        self._consume(line)

    def _after_delimiter(self) -> None:
        owner, close = self._delimiter
        self._line_start = True
        self._fresh = False
        if close:
            self._mode = _BODY  # the epilogue
        elif self._parts >= MAX_PARTS:
            self._bounds.clear()  # no more parts: the rest is the multipart's body
            self._maxb = 0
            self._mode = _BODY
        else:
            child = Part(
                self._base + self._cur, owner.depth + 1, in_multipart=True, message_root=False
            )
            owner.children.append(child)
            self._parts += 1
            self._open.append(child)
            self._mode = _HEADER

    # -- parts ---------------------------------------------------------------------------------

    def _end_part(self, part: Part, end: int, lf: int) -> None:
        part.e = end
        if part.needs_lines:
            part.lf_e = lf
            self._counting -= 1

    def _header_ended(self, body_start: int, blank: int) -> None:
        """The current part's header is complete: decide what its body is."""
        part = self._open[-1]
        block = b"".join(self._hdr)
        self._hdr = []
        self._hdr_len = 0
        if part is self._root:
            self._top_header = block[:STORED_HEADER_CAP]
        info = parse_part_header(block, message=part.message_root, mime=part.in_multipart)
        part.info = info
        part.b = body_start
        part.blank = blank
        self._classify(part)
        if part.needs_lines:
            self._counting += 1
            part.lf_b = self._lf
        self._line_start = True
        self._fresh = True
        if part.kind == MESSAGE:
            embedded = Part(body_start, part.depth + 1, in_multipart=False, message_root=True)
            part.msg = embedded
            self._parts += 1
            self._open.append(embedded)
            self._mode = _HEADER
            return
        self._mode = _BODY
        boundary = info.boundary() if part.kind == MULTIPART else None
        if boundary is not None and len(boundary) <= MAX_BOUNDARY:
            self._bounds.append((boundary.encode("latin-1"), part))
            self._maxb = max(self._maxb, len(boundary))

    def _headers_cut(self, at: int) -> None:
        """A delimiter (or the end) comes before the blank line: the header(s) end at ``at``,
        an embedded message included."""
        self._header_ended(at, 0)
        while self._mode == _HEADER:
            self._header_ended(at, 0)

    def _classify(self, part: Part) -> None:
        info = part.info
        content_type = info.content_type.lower() if info.content_type is not None else None
        parent = self._open[-2] if len(self._open) > 1 else None
        if content_type is None:
            if part.in_multipart and parent is not None and parent.digest:
                part.kind = MESSAGE  # RFC 2046 §5.1.5
            else:
                part.text = True  # RFC 2045 §5.2
        elif content_type in ("message/rfc822", "message/global"):
            part.kind = MESSAGE
        elif content_type.startswith("multipart/"):
            part.kind = MULTIPART
            part.digest = content_type[10:] == "digest"
        elif content_type.startswith("text") and content_type[4:5] in ("", "/"):
            part.text = True
        if part.kind != LEAF and (part.depth >= MAX_DEPTH or self._parts >= MAX_PARTS):
            part.kind = LEAF
            part.truncated = True


def scan(data: bytes) -> dict:
    """The structure of a whole message held in memory."""
    scanner = MimeScanner()
    scanner.feed(data)
    return scanner.close()
