"""Oversized attachments of submitted mail become download links (``transfer.detach_threshold``).

When an authenticated user submits a message, each attachment whose content is larger than
the threshold is decoded (base64 or quoted-printable, RFC 2045 §6) into a blob of its own, and
the message is written again with a short part in its place that links to it
(smtp/detach_notice.py).  The store then files the new message and, in the same transaction,
makes each attachment a station file of the sender with a share link (store/detached.py): the
reply to the client, the mail, the files and the links are all or nothing.

One message may thus carry up to ``smtp.submission_max_message_size`` of attachments (2 GiB by
default) to any recipient, while what is delivered and relayed stays small.  Everything is
streamed: the old message is read in ``READ_SIZE`` pieces on a blob thread, the writers pause
this loop while their disk work is behind, and no part is ever held whole.

Only parts inside a multipart are detached (an attachment is a part beside the text); a
message that is one large non-multipart body, or an attached message's own parts, are left as
they are.  An attached message (message/rfc822) that is large is detached whole, as ``.eml``.
"""

from __future__ import annotations

import datetime
import io
from typing import BinaryIO, NamedTuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from mailbox_appliance.mime import transfer
from mailbox_appliance.mime.parts import LEAF, MESSAGE, MULTIPART, Part
from mailbox_appliance.mime.scanner import MimeScanner
from mailbox_appliance.smtp.detach_notice import (
    Notice,
    attachment_name,
    choose_boundary,
    notice_part,
)
from mailbox_appliance.store.blob_rows import BlobRef
from mailbox_appliance.store.transfers import StationFile, new_token

#: Bytes of the old message read (and decoded) per trip to a blob thread.
READ_SIZE = 1024 * 1024
#: Bytes of a part's header read to find its file name.
HEADER_READ = 64 * 1024


class Detached(NamedTuple):
    """A rewritten message: its blob and structure, and the files its links lead to."""

    ref: BlobRef
    structure: dict
    files: tuple[StationFile, ...]


def estimated_size(part: Part) -> int:
    """The decoded size of a part's body, from its encoded size (base64: three bytes for
    every four characters; line breaks make this a slight overestimate)."""
    encoded = part.e - part.b
    if (part.info.encoding or "").lower() == "base64":
        return encoded * 3 // 4
    return encoded


def large_parts(root: Part, threshold: int) -> list[tuple[Part, str]]:
    """The parts to detach, in message order, each with the boundary for its notice."""
    found: list[tuple[Part, str]] = []

    def walk(multipart: Part, bounds: tuple[bytes, ...]) -> None:
        boundary = multipart.info.boundary() if multipart.info else None
        if boundary:
            bounds = (*bounds, boundary.encode("latin-1"))
        for child in multipart.children:
            if child.kind == MULTIPART:
                walk(child, bounds)
            elif child.kind in (LEAF, MESSAGE) and not child.truncated:
                if child.info is not None and estimated_size(child) > threshold:
                    boundary = choose_boundary(bounds)
                    if boundary is not None:
                        found.append((child, boundary))

    if threshold > 0 and root.kind == MULTIPART:
        walk(root, ())
    return found


@implementer(IPushProducer)
class _Pacer:
    """Registered with a BlobWriter: ``ready()`` waits while the writer has paused us."""

    def __init__(self) -> None:
        self._paused = False
        self._waiting: Deferred | None = None

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    def stopProducing(self) -> None:
        self.resumeProducing()

    def ready(self) -> Deferred[None]:
        if not self._paused:
            return succeed(None)
        self._waiting = Deferred()
        return self._waiting


def _read_thd(source: BinaryIO, offset: int, size: int, decoder=None) -> bytes:
    source.seek(offset)
    data = source.read(size)
    return decoder.feed(data) if decoder is not None else data


class Detacher:
    """Rewrites submitted messages whose attachments exceed ``threshold`` bytes."""

    def __init__(self, reactor, blobs, *, threshold: int, file_expires: int, base_url: str):
        self.reactor = reactor
        self.blobs = blobs
        self.threshold = threshold
        self.file_expires = datetime.timedelta(seconds=file_expires)
        self.base_url = base_url.rstrip("/")

    async def detach(self, ref: BlobRef, root: Part) -> Detached | None:
        """The message at ``ref`` (scanned into ``root``) with its large parts as links; None
        when it has none.  Blobs written before a failure are left to garbage collection."""
        parts = large_parts(root, self.threshold)
        if not parts:
            return None
        now = datetime.datetime.fromtimestamp(self.reactor.seconds(), datetime.UTC)
        expires = now + self.file_expires
        if ref.inline is not None:  # small content, stored only with the message's row
            source: BinaryIO = io.BytesIO(ref.inline)
        else:
            source = await self.blobs.open(ref.sha256)
        try:
            files, notices = [], []
            for number, (part, boundary) in enumerate(parts, 1):
                header = await self._read(source, part.h, min(part.b - part.h, HEADER_READ))
                name = attachment_name(header, part.media_type(), number)
                content = await self._decoded(source, part)
                token = new_token()
                files.append(StationFile(name, content, token, expires))
                notice = Notice(name, content.size, content.sha256, self._link(token), expires)
                newline = b"\r\n" if b"\r\n" in header else b"\n"
                notices.append(notice_part(notice, boundary, newline))
            new_ref, structure = await self._rewrite(source, ref.size, parts, notices)
        finally:
            source.close()
        return Detached(new_ref, structure, tuple(files))

    def _link(self, token: str) -> str:
        return f"{self.base_url}/s/{token}"

    def _read(self, source: BinaryIO, offset: int, size: int, decoder=None) -> Deferred[bytes]:
        return self.blobs.run(_read_thd, source, offset, size, decoder)

    async def _decoded(self, source: BinaryIO, part: Part) -> BlobRef:
        """The part's body, transfer-decoded, as a blob of its own."""
        decoder = transfer.decoder(part.info.encoding)
        writer = self.blobs.open_writer()
        return await self._stream(writer, source, [(part.b, part.e)], decoder)

    async def _rewrite(
        self, source: BinaryIO, size: int, parts: list, notices: list[bytes]
    ) -> tuple[BlobRef, dict]:
        """The message again, each detached part's bytes replaced by its notice."""
        scanner = MimeScanner()
        writer = self.blobs.open_writer(observer=scanner)
        pieces: list[tuple[int, int] | bytes] = []
        at = 0
        for (part, _), notice in zip(parts, notices, strict=True):
            pieces += [(at, part.h), notice]
            at = part.e
        pieces.append((at, size))
        ref = await self._stream(writer, source, pieces)
        return ref, scanner.close()

    async def _stream(self, writer, source: BinaryIO, pieces: list, decoder=None) -> BlobRef:
        """Write byte ranges of ``source`` (and literal bytes) into ``writer``; its BlobRef."""
        pacer = _Pacer()
        writer.registerProducer(pacer, True)
        try:
            for piece in pieces:
                if isinstance(piece, bytes):
                    writer.write(piece)
                    await pacer.ready()
                    continue
                start, end = piece
                while start < end:
                    size = min(READ_SIZE, end - start)
                    writer.write(await self._read(source, start, size, decoder))
                    start += size
                    await pacer.ready()
            if decoder is not None:
                writer.write(decoder.flush())
            writer.unregisterProducer()
        except BaseException:
            await writer.abort()
            raise
        return await writer.finish()
