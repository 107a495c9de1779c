"""A twisted.web Request that streams an upload's body to its resource as it arrives.

twisted.web buffers a whole request body (BytesIO or a temporary file) before ``render()`` and
throws it away when the client disconnects (twisted-mail-gaps.md, "twisted.web").  A resumable
upload (tus 1.0.0) needs the opposite: every byte written once, straight to the upload, with
TCP back-pressure while the disk is busy, and what arrived kept when the connection drops.

For a request that may carry upload bytes (``PATCH``, ``POST`` overridden to ``PATCH``, or a
``POST`` of ``application/offset+octet-stream``: tus creation-with-upload) this Request
resolves its resource as soon as the headers are complete and asks it for a body sink
(``resource.bodySink(request)``, see `BodySink`).  Every other request, and every request whose
resource has no sink to offer, is twisted.web's ordinary Request.
"""

from collections import deque
from io import BytesIO
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import IResource

log = Logger()

#: tus 1.0.0 "Content-Type" of a PATCH (and of a creation-with-upload POST).
OFFSET_OCTET_STREAM = b"application/offset+octet-stream"

_DATA, _END, _LOST = "data", "end", "lost"


class BodySink(Protocol):
    """Where a streamed request body goes; the request calls these one at a time, in order."""

    def dataReceived(self, data: bytes) -> "Deferred[None] | None":
        """One piece of the body; a Deferred holds back the next piece (and pauses reading)
        until it fires.  Its failures are logged, so the sink should handle its own."""

    def bodyComplete(self) -> None:
        """The whole body arrived (called after every dataReceived Deferred fired)."""

    def connectionLost(self, reason: Failure) -> None:
        """The connection dropped before the body was complete; no response can be sent."""


def may_carry_upload(method: bytes, headers: Any) -> bool:
    """Whether a request's body could be upload bytes worth streaming (tus 1.0.0 PATCH,
    X-HTTP-Method-Override, creation-with-upload)."""
    if method == b"PATCH":
        return True
    if method != b"POST":
        return False
    override = headers.getRawHeaders(b"x-http-method-override", [b""])[0]
    if override.strip().upper() == b"PATCH":
        return True
    ctype = headers.getRawHeaders(b"content-type", [b""])[0]
    return ctype.split(b";")[0].strip().lower() == OFFSET_OCTET_STREAM


class StreamingRequest(server.Request):
    """``Site.requestFactory`` for the file-transfer station; see the module docstring.

    ``sink`` is the resource's BodySink when this request streams; ``bodyEnded`` whether the
    body is over (complete or cut short); ``readingPaused`` and ``pauses`` whether (and how
    often) reading from the client was held back.
    """

    sink: BodySink | None = None
    bodyEnded = False
    readingPaused = False
    pauses = 0

    def gotLength(self, length: int | None) -> None:
        """Headers are complete: choose between streaming and twisted.web's buffering."""
        sink = self._open_sink()
        if sink is None:
            super().gotLength(length)
            return
        self.sink = sink
        self._queue: deque[tuple[str, Any]] = deque()
        self._busy = False
        self.bodyEnded = False
        read_in_large_pieces(self.channel.transport)

    def handleContentChunk(self, data: bytes) -> None:
        if self.sink is None:
            super().handleContentChunk(data)
        else:
            self._enqueue(_DATA, data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """The body is complete: render as usual, with an empty ``content`` (the bytes went
        to the sink), while the sink learns the body ended once its writes are done."""
        if self.sink is not None:
            self.content = BytesIO()
            self.bodyEnded = True
            self._enqueue(_END, None)
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure) -> None:
        """Tell the sink the body stopped short, after the writes it already has."""
        if self.sink is not None and not self.bodyEnded:
            self.bodyEnded = True
            self._enqueue(_LOST, reason)
        super().connectionLost(reason)

    # -- internals ---------------------------------------------------------------------------

    def _open_sink(self) -> BodySink | None:
        """Resolve the resource now (twisted.web does it only after the body) and ask it for
        a sink.  The method and path are the channel's parse of the request line: the
        Request learns them only in requestReceived."""
        channel = self.channel
        command = getattr(channel, "_command", None)
        path = getattr(channel, "_path", None)
        if command is None or path is None or not may_carry_upload(command, self.requestHeaders):
            return None
        site = getattr(channel, "site", None)
        if site is None:
            return None
        # What process() would set; requestReceived/process set them again identically.
        self.method, self.uri = command, path
        self.clientproto = getattr(channel, "_version", self.clientproto)
        self.path = path.split(b"?", 1)[0]
        self.args = {}
        self.prepath = []
        self.postpath = list(map(server.unquote, self.path[1:].split(b"/")))
        try:
            resource = site.getResourceFor(self)
            factory = getattr(resource, "bodySink", None)
            if factory is None or not IResource.providedBy(resource):
                return None
            return factory(self)
        except Exception:
            log.failure("choosing a body sink for {uri!r}", uri=path)
            return None

    def _enqueue(self, kind: str, value: Any) -> None:
        self._queue.append((kind, value))
        self._pump()

    def _pump(self) -> None:
        """Deliver queued events in order; a pending write holds back the rest and pauses
        reading from the client (TCP back-pressure instead of memory)."""
        while self._queue and not self._busy:
            kind, value = self._queue.popleft()
            if kind == _DATA:
                d = maybeDeferred(self.sink.dataReceived, value)
                d.addErrback(self._sink_failed)
                if not d.called:
                    self._busy = True
                    self._pause_reading()
                    d.addBoth(self._written)
                continue
            try:
                if kind == _END:
                    self.sink.bodyComplete()
                else:
                    self.sink.connectionLost(value)
            except Exception:
                log.failure("body sink of {uri!r} failed", uri=self.uri)
        if not self._busy:
            self._resume_reading()

    def _written(self, _: object) -> None:
        self._busy = False
        self._pump()

    def _sink_failed(self, failure: Failure) -> None:
        log.failure("body sink of {uri!r} failed", failure, uri=self.uri)

    def _pause_reading(self) -> None:
        if self.readingPaused or getattr(self, "channel", None) is None:
            return
        self.readingPaused = True
        self.pauses += 1
        self.channel.pauseProducing()

    def _resume_reading(self) -> None:
        if not self.readingPaused:
            return
        self.readingPaused = False
        channel = getattr(self, "channel", None)  # gone once the request has finished
        if channel is not None:
            channel.resumeProducing()


#: Bytes asked of the socket per read while an upload streams in (Twisted reads 64 KiB): each
#: read costs the same Python work however large, so larger reads save CPU per byte.
UPLOAD_READ_SIZE = 1024 * 1024


def read_in_large_pieces(transport: Any) -> None:
    """Raise the read size of the TCP connection under ``transport`` (under TLS too)."""
    while transport is not None:
        if hasattr(transport, "bufferSize"):
            transport.bufferSize = max(transport.bufferSize, UPLOAD_READ_SIZE)
        transport = getattr(transport, "transport", None)


def upload_site(resource: IResource, **kwargs: Any) -> server.Site:
    """A Site for the file-transfer station: streaming uploads, never a traceback shown."""
    site = server.Site(resource, requestFactory=StreamingRequest, **kwargs)
    site.displayTracebacks = False
    return site
