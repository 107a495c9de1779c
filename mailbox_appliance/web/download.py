"""Streaming file downloads for the file-transfer station (finished uploads, files, share links).

``send`` answers a GET or HEAD for one immutable :class:`Content` on a twisted.web request:

* Validators (RFC 9110 §8.8): the strong ETag is the quoted SHA-256, sent on every response,
  with Last-Modified when the content has a date.  Preconditions are evaluated in the order of
  RFC 9110 §13.2.2: If-Match / If-Unmodified-Since (412), If-None-Match / If-Modified-Since
  (304), then Range guarded by If-Range.
* Ranges (RFC 9110 §14): ``a-b``, ``a-`` and ``-n``.  One range is a 206 with Content-Range;
  several ranges are sorted, ranges that overlap or are closer than the cost of a part header are
  coalesced (§14.2 allows both), and what remains is sent as ``multipart/byteranges`` (§14.6),
  or as a plain 206 if only one range is left.  No satisfiable range is a 416 with
  ``Content-Range: bytes */size``; an invalid Range header is ignored (§14.2) and so is a
  Range on HEAD (§14.2: range handling is defined for GET only).
* Content-Disposition per RFC 6266 with an ASCII ``filename`` fallback and an RFC 8187
  ``filename*``.
* The body is streamed by a push producer in 256 KiB reads with one read ahead of the
  transport, so a slow client stops the reads (back-pressure) and a file is never in memory
  whole.  A read that fails mid-body aborts the connection: Content-Length is always declared,
  so the client sees a short body, never a wrong one.
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.iweb import IRequest
from zope.interface import implementer

log = Logger()

CHUNK_SIZE = 1024 * 1024
"""Bytes asked of ``Content.read`` per call: big enough that the thread hop per read stays
cheap beside the bytes it brings (1 MiB: 0.83–1.0 of a loopback sendfile copy; 256 KiB:
0.72–1.0), small enough that the one chunk held ahead of the transport costs little memory."""

MAX_RANGES = 100
"""More range-specs than this are ignored as a whole (RFC 9110 §14.2 lets a server ignore a
Range header it considers abusive); a 200 is always a correct answer."""

_COALESCE_GAP = 80
"""Ranges separated by fewer bytes than a part header are merged (RFC 9110 §14.2)."""

_ATTR_CHARS = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&+-.^_`|~"
)
_RANGE_SPEC = re.compile(r"^(\d*)-(\d*)$")
_ENTITY_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*(?:,|$)')


@dataclass(frozen=True)
class Content:
    """One immutable download: its size and digest are known before the first byte is read."""

    size: int
    sha256: str
    name: str | None
    read: Callable[[int, int], Deferred[bytes]]
    content_type: str = "application/octet-stream"
    modified: datetime | None = None

    @property
    def etag(self) -> str:
        """The strong entity-tag (RFC 9110 §8.8.3): the digest names exactly these bytes."""
        return f'"{self.sha256}"'


def send(
    request: IRequest,
    content: Content,
    *,
    disposition: str = "attachment",
    reactor: IReactorTime | None = None,
) -> None:
    """Answer a GET or HEAD for ``content`` on a twisted.web request.

    Call from ``render_GET``/``render_HEAD`` and return ``NOT_DONE_YET``.  ``reactor`` is the
    clock used to decide whether Last-Modified is old enough to be a strong validator for
    If-Range (RFC 9110 §8.8.2.2); without one the wall clock is used.
    """
    if disposition not in ("attachment", "inline"):
        raise ValueError(f"disposition must be 'attachment' or 'inline', not {disposition!r}")
    now = reactor.seconds() if reactor is not None else time.time()
    modified = _epoch(content.modified)
    head = request.method == b"HEAD"

    request.setHeader(b"ETag", content.etag.encode("ascii"))
    request.setHeader(b"Cache-Control", b"private")
    request.setHeader(b"Accept-Ranges", b"bytes")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    if modified is not None:
        request.setHeader(b"Last-Modified", http.datetimeToString(modified))

    status = _preconditions(request, content, modified)
    if status is not None:
        _empty(request, status)
        return

    request.setHeader(b"Content-Disposition", content_disposition(disposition, content.name))
    ranges = None if head else _requested_ranges(request, content, modified, now)
    if ranges == []:
        request.setHeader(b"Content-Range", b"bytes */%d" % content.size)
        _empty(request, http.REQUESTED_RANGE_NOT_SATISFIABLE)
        return

    segments: list[bytes | tuple[int, int]]
    if ranges is None:
        request.setResponseCode(http.OK)
        request.setHeader(b"Content-Type", content.content_type.encode("ascii"))
        segments = [(0, content.size)]
    elif len(ranges) == 1:
        first, last = ranges[0]
        request.setResponseCode(http.PARTIAL_CONTENT)
        request.setHeader(b"Content-Type", content.content_type.encode("ascii"))
        request.setHeader(b"Content-Range", b"bytes %d-%d/%d" % (first, last, content.size))
        segments = [(first, last - first + 1)]
    else:
        boundary = secrets.token_hex(16)
        request.setResponseCode(http.PARTIAL_CONTENT)
        request.setHeader(
            b"Content-Type", f"multipart/byteranges; boundary={boundary}".encode("ascii")
        )
        segments = _multipart(boundary, content, ranges)
    length = sum(len(s) if isinstance(s, bytes) else s[1] for s in segments)
    request.setHeader(b"Content-Length", b"%d" % length)
    if head or length == 0:
        request.finish()
        return
    _Streamer(request, content, segments).start()


def content_disposition(disposition: str, name: str | None) -> bytes:
    """Build a Content-Disposition value (RFC 6266 §4.1).

    ``filename`` comes first as an ASCII fallback for old agents (RFC 6266 Appendix D), and
    ``filename*`` carries the exact name in UTF-8 (RFC 8187 §3.2), which agents prefer.
    """
    if not name:
        return disposition.encode("ascii")
    fallback = []
    for ch in unicodedata.normalize("NFKD", name):
        if unicodedata.combining(ch):
            continue  # "é" decomposes to "e" + accent: keep the "e".
        if ch in '"\\':
            fallback.append("\\" + ch)
        elif " " <= ch <= "~":
            fallback.append(ch)
        else:
            fallback.append("_")
    encoded = "".join(chr(b) if b in _ATTR_CHARS else f"%{b:02X}" for b in name.encode("utf-8"))
    return f"{disposition}; filename=\"{''.join(fallback)}\"; filename*=UTF-8''{encoded}".encode(
        "ascii"
    )


def parse_range(value: str) -> list[tuple[int | None, int | None]] | None:
    """Parse a Range value into ``(first, last)`` pairs; ``(None, n)`` is a suffix of n bytes.

    Returns ``None`` for anything RFC 9110 §14.1.1 does not allow in a bytes range, including
    an unknown unit and ``last < first``: the caller then ignores the header (§14.2).
    """
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    result: list[tuple[int | None, int | None]] = []
    for item in spec.split(","):
        item = item.strip(" \t")
        if not item:
            continue  # 1#element allows empty list elements (RFC 9110 §5.6.1.2).
        match = _RANGE_SPEC.match(item)
        if match is None:
            return None
        first, last = match.group(1), match.group(2)
        if first:
            if last and int(last) < int(first):
                return None
            result.append((int(first), int(last) if last else None))
        elif last:
            result.append((None, int(last)))
        else:
            return None
    return result or None


def _requested_ranges(
    request: IRequest, content: Content, modified: int | None, now: float
) -> list[tuple[int, int]] | None:
    """The ranges to send: ``None`` for the whole content, ``[]`` when none is satisfiable."""
    raw = request.getHeader(b"Range")
    if raw is None:
        return None
    parsed = parse_range(raw.decode("latin-1"))
    if parsed is None or len(parsed) > MAX_RANGES:
        return None
    if_range = request.getHeader(b"If-Range")
    if if_range is not None and not _if_range_matches(
        if_range.decode("latin-1"), content, modified, now
    ):
        return None
    size = content.size
    resolved = []
    for first, last in parsed:
        if first is None:
            assert last is not None
            if last > 0 and size > 0:
                resolved.append((max(size - last, 0), size - 1))
        elif first < size:
            resolved.append((first, size - 1 if last is None else min(last, size - 1)))
    if not resolved:
        if size == 0 and any(first is None and last for first, last in parsed):
            return None  # A suffix of an empty file is "satisfiable" but has no bytes: send 200.
        return []
    resolved.sort()
    merged = [resolved[0]]
    for first, last in resolved[1:]:
        prev_first, prev_last = merged[-1]
        if first <= prev_last + 1 + _COALESCE_GAP:
            merged[-1] = (prev_first, max(prev_last, last))
        else:
            merged.append((first, last))
    return merged


def _multipart(
    boundary: str, content: Content, ranges: list[tuple[int, int]]
) -> list[bytes | tuple[int, int]]:
    """Lay out a multipart/byteranges body (RFC 9110 §14.6) as literal bytes and file regions."""
    segments: list[bytes | tuple[int, int]] = []
    for first, last in ranges:
        segments.append(
            (
                f"--{boundary}\r\nContent-Type: {content.content_type}\r\n"
                f"Content-Range: bytes {first}-{last}/{content.size}\r\n\r\n"
            ).encode("ascii")
        )
        segments.append((first, last - first + 1))
        segments.append(b"\r\n")
    segments.append(f"--{boundary}--\r\n".encode("ascii"))
    return segments


def _preconditions(request: IRequest, content: Content, modified: int | None) -> int | None:
    """Evaluate preconditions in RFC 9110 §13.2.2 order; return 412, 304 or None to go on."""
    if_match = request.getHeader(b"If-Match")
    if if_match is not None:
        if not _tag_list_matches(if_match.decode("latin-1"), content.sha256, strong=True):
            return http.PRECONDITION_FAILED
    else:
        since = _date(request.getHeader(b"If-Unmodified-Since"))
        if since is not None and modified is not None and modified > since:
            return http.PRECONDITION_FAILED
    if_none_match = request.getHeader(b"If-None-Match")
    if if_none_match is not None:
        if _tag_list_matches(if_none_match.decode("latin-1"), content.sha256, strong=False):
            return http.NOT_MODIFIED
    else:
        since = _date(request.getHeader(b"If-Modified-Since"))
        if since is not None and modified is not None and modified <= since:
            return http.NOT_MODIFIED
    return None


def _tag_list_matches(value: str, opaque: str, *, strong: bool) -> bool:
    """If-Match uses strong comparison (§13.1.1), If-None-Match weak (§13.1.2); ``*`` matches
    any current representation, and this one exists."""
    if value.strip() == "*":
        return True
    pos = 0
    while pos < len(value):
        match = _ENTITY_TAG.match(value, pos)
        if match is None:
            return False  # Malformed list: never a match.
        if match.group(2) == opaque and not (strong and match.group(1)):
            return True
        pos = match.end()
    return False


def _if_range_matches(value: str, content: Content, modified: int | None, now: float) -> bool:
    """RFC 9110 §13.1.5: an entity-tag matches by strong comparison; a date only if it equals
    Last-Modified exactly and that date is a strong validator (at least a second old)."""
    value = value.strip()
    if value.startswith(("W/", '"')):
        return value == content.etag
    date = _date(value.encode("latin-1"))
    return date is not None and date == modified and modified <= now - 1


def _date(value: bytes | None) -> int | None:
    """Parse an HTTP-date (RFC 9110 §5.6.7); an invalid date makes its header ignored."""
    if value is None:
        return None
    try:
        return int(http.stringToDatetime(value))
    except (ValueError, IndexError, KeyError):
        return None


def _epoch(moment: datetime | None) -> int | None:
    """Whole seconds since the epoch, the resolution of HTTP dates; naive datetimes are UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _empty(request: IRequest, status: int) -> None:
    """Finish a response that has no body (304, 412, 416)."""
    request.setResponseCode(status)
    request.defaultContentType = None  # type: ignore[attr-defined]
    if status != http.NOT_MODIFIED:
        request.setHeader(b"Content-Length", b"0")
    request.finish()


@implementer(IPushProducer)
class _Streamer:
    """Writes the body segments, reading file regions one chunk ahead of the transport.

    At most one read is outstanding or held ready at any time: a chunk is read while the
    previous one drains, and while the transport is paused the next chunk waits here instead
    of another read starting.
    """

    def __init__(
        self, request: IRequest, content: Content, segments: list[bytes | tuple[int, int]]
    ) -> None:
        self._request: Any = request
        self._content = content
        self._segments = deque(segments)
        self._region: tuple[int, int] | None = None  # (offset, bytes left) being read
        self._ready: bytes | None = None
        self._reading = False
        self._paused = False
        self._done = False
        self._pumping = False

    def start(self) -> None:
        """Register with the request and write until the transport pushes back."""
        self._request.registerProducer(self, True)
        self._request.notifyFinish().addErrback(self._client_gone)
        self._pump()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._done = True

    def _client_gone(self, reason: Failure) -> None:
        """The connection closed first: stop, and let no read start after this."""
        self._done = True

    def _pump(self) -> None:
        """Write what is ready and start the next read; re-entrant calls (a read that fires
        synchronously) only update state and let the outer loop continue."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self._done:
                if self._ready is not None:
                    if self._paused:
                        return
                    data, self._ready = self._ready, None
                    self._request.write(data)
                elif self._reading:
                    return
                elif not self._next():
                    self._finish()
                    return
        finally:
            self._pumping = False

    def _next(self) -> bool:
        """Make the next piece ready or start reading it; False when the body is complete."""
        if self._region is None:
            if not self._segments:
                return False
            segment = self._segments.popleft()
            if isinstance(segment, bytes):
                self._ready = segment
                return True
            self._region = segment
        offset, left = self._region
        length = min(CHUNK_SIZE, left)
        self._reading = True
        try:
            d = self._content.read(offset, length)
        except Exception:
            d = fail(Failure())
        d.addCallbacks(self._got, self._failed, (offset, length))
        d.addErrback(self._abort)
        return True

    def _got(self, data: bytes, offset: int, length: int) -> None:
        self._reading = False
        if self._done:
            return
        if not 0 < len(data) <= length:
            raise OSError(f"read({offset}, {length}) returned {len(data)} bytes")
        assert self._region is not None
        left = self._region[1] - len(data)
        self._region = (offset + len(data), left) if left else None
        self._ready = data
        self._pump()

    def _failed(self, failure: Failure) -> Failure | None:
        self._reading = False
        return None if self._done else failure

    def _finish(self) -> None:
        self._done = True
        self._request.unregisterProducer()
        self._request.finish()

    def _abort(self, failure: Failure) -> None:
        """Log once and cut the body short: with Content-Length declared, a truncated body is
        detectable by the client, while anything written in place of the bytes would not be."""
        if self._done:
            return
        self._done = True
        log.failure(
            "download of {name!r} ({sha256}) failed",
            failure,
            name=self._content.name,
            sha256=self._content.sha256,
        )
        request = self._request
        request.unregisterProducer()
        if not request.startedWriting:
            # Nothing was sent yet: a 500 is clearer than a reset, and it describes no bytes.
            for header in (
                b"Content-Range",
                b"Content-Disposition",
                b"Content-Type",
                b"ETag",
                b"Last-Modified",
            ):
                request.responseHeaders.removeHeader(header)
            _empty(request, http.INTERNAL_SERVER_ERROR)
            return
        channel = request.channel
        if channel is not None:
            channel.transport.abortConnection()
