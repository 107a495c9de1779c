"""Writing responses (IMAP, POP3) with back-pressure, message content streamed from blobs.

The session's one registered push producer: the transport pauses it when its send buffer
fills, and long answers (a FETCH of 10,000 messages, a 2 GiB ``BODY[]``) wait on
:meth:`Output.drained` between pieces, so the server never builds an answer bigger than a
batch in memory (design rule 3).  Large content is read from its file in chunks on a blob
thread, one chunk ahead of the socket.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

#: Bytes read from a blob file per trip to a blob thread.
STREAM_CHUNK = 256 * 1024


class ConnectionGone(Exception):
    """The client went away while an answer was being sent."""


@implementer(IPushProducer)
class Output:
    def __init__(self, transport, blobs, on_resume=None):
        self.transport = transport
        self.blobs = blobs
        #: Called when the client has read enough for more answers (the session's pump).
        self.on_resume = on_resume
        self.paused = False
        self.gone = False
        self._waiters: list[Deferred] = []
        transport.registerProducer(self, True)

    def write(self, data: bytes) -> None:
        if not self.gone:
            self.transport.write(data)

    def drained(self) -> Deferred[None]:
        """Fires once the transport wants more; fails with ConnectionGone if it never will."""
        if self.gone:
            return fail(ConnectionGone())
        if not self.paused:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    async def stream(self, sha256: str, start: int, end: int, transform=None, done=None) -> None:
        """Send bytes [start, end) of a file-backed blob, a chunk at a time.

        ``transform(chunk) -> bytes`` rewrites each chunk on the way (POP3 dot-stuffing);
        ``done()`` true ends the stream early (POP3 TOP has its lines).
        """
        offset = start
        pending = self._read(sha256, offset, end)
        while offset < end and not (done is not None and done()):
            chunk = await pending
            if not chunk:
                raise OSError(f"blob {sha256} ended at {offset}, before {end}")
            offset += len(chunk)
            if offset < end:  # read the next chunk while this one goes out
                pending = self._read(sha256, offset, end)
            await self.drained()
            self.write(transform(chunk) if transform is not None else chunk)

    def _read(self, sha256: str, offset: int, end: int) -> Deferred[bytes]:
        return self.blobs.read_file_chunk(sha256, offset, min(STREAM_CHUNK, end - offset))

    # IPushProducer, driven by the transport
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if not self.paused:
                d.callback(None)
            else:
                self._waiters.append(d)
        if not self.paused and self.on_resume is not None:
            self.on_resume()

    def stopProducing(self) -> None:
        self.gone = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(ConnectionGone())
