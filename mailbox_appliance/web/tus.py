"""Resumable uploads over HTTP: the tus 1.0.0 protocol (https://tus.io/protocols/resumable-upload)
on an IUploadBackend.

Core protocol plus the creation, creation-with-upload, creation-defer-length, termination,
checksum, expiration and concatenation extensions; X-HTTP-Method-Override and CORS for browser
clients; GET of a finished upload (as tusd does).  Upload bytes arrive through
web.request.StreamingRequest, which hands them to `UploadBody` as they come off the socket.
"""

import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from mailbox_appliance.errors import UploadError
from mailbox_appliance.interfaces import IUploadBackend, UploadInfo
from mailbox_appliance.web.request import OFFSET_OCTET_STREAM
from mailbox_appliance.web.tus_wire import (
    CHECKSUM_ALGORITHMS,
    EXTENSIONS,
    TUS_VERSION,
    Reply,
    TusError,
    effective_method,
    header,
    http_date,
    info_headers,
    map_upload_error,
    parse_checksum,
    parse_metadata,
    parse_size,
    server_error,
)
from mailbox_appliance.web.urls import host_url

log = Logger()

#: GET reads a finished upload this much at a time.
READ_CHUNK = 256 * 1024

_CORS_ALLOW_METHODS = b"POST, HEAD, PATCH, OPTIONS, GET, DELETE"
_CORS_ALLOW_HEADERS = (
    b"Authorization, Origin, X-Requested-With, X-Request-ID, X-HTTP-Method-Override, "
    b"Content-Type, Upload-Length, Upload-Offset, Tus-Resumable, Upload-Metadata, "
    b"Upload-Defer-Length, Upload-Concat, Upload-Checksum"
)
_CORS_EXPOSE_HEADERS = (
    b"Upload-Offset, Location, Upload-Length, Tus-Version, Tus-Resumable, Tus-Max-Size, "
    b"Tus-Extension, Tus-Checksum-Algorithm, Upload-Metadata, Upload-Defer-Length, "
    b"Upload-Concat, Upload-Expires"
)
_ID = re.compile(r"^[A-Za-z0-9_\-.~]+$")

#: Fires with the account id of the request's credentials, or None (a Deferred or coroutine).
Authenticate = Callable[[Request], Awaitable[int | None]]


# -- the resource --------------------------------------------------------------------------


class TusResource(Resource):
    """The upload collection (``POST /files/``) and its uploads (``/files/<id>``).

    ``authenticate(request)`` fires with the owner's account id, or None for 401.
    """

    isLeaf = True

    def __init__(
        self,
        backend: IUploadBackend,
        authenticate: Authenticate,
        max_size: int,
        reactor: Any,
        stream: "Callable[..., Deferred[None]] | None" = None,
    ):
        super().__init__()
        self.backend = backend
        self.authenticate = authenticate
        self.max_size = max_size
        self.reactor = reactor
        #: How GET sends a finished upload: ``stream(request, size, sha256, read, name)``,
        #: which sets status and body and finishes the request (may return an awaitable).
        self.stream = stream or stream_content

    # twisted.web.resource.IResource

    def render(self, request: Request) -> int:
        Deferred.fromCoroutine(self._respond(request))
        return NOT_DONE_YET

    def bodySink(self, request: Request) -> "UploadBody | None":
        """web.request.StreamingRequest asks this once headers are complete."""
        method = effective_method(request)
        if method == b"PATCH" or (method == b"POST" and _is_upload_body(request)):
            return UploadBody(self, request, method)
        return None

    # -- dispatch ------------------------------------------------------------------------

    async def _respond(self, request: Request) -> None:
        try:
            reply = await self._dispatch(request)
        except TusError as error:
            reply = error.reply()
        except UploadError as error:
            reply = map_upload_error(error, effective_method(request)).reply()
        except Exception:
            reply = server_error(Failure(), f"tus {request.method!r} {request.uri!r}").reply()
        if reply is not None:
            self.send(request, reply)

    async def _dispatch(self, request: Request) -> Reply | None:
        method = effective_method(request)
        if method == b"OPTIONS":
            return self._options(request)
        sink = getattr(request, "sink", None)
        if isinstance(sink, UploadBody) and sink.resource is self:
            return await sink.result
        if method != b"GET":  # a download is plain HTTP (browsers, curl), as tusd serves it
            check_version(request)
        upload_id = self.upload_id(request)
        if method == b"PATCH" or (method == b"POST" and _is_upload_body(request)):
            # A plain twisted.web Request buffered the body: feed it through the same path.
            body = UploadBody(self, request, method)
            await _feed(body, request.content)
            return await body.result
        owner = await self.owner(request)
        if upload_id is None:
            if method == b"POST":
                return await self.create(request, owner)
            raise TusError(405, "use POST to create an upload", {b"Allow": b"POST, OPTIONS"})
        if method == b"HEAD":
            return await self._head(request, owner, upload_id)
        if method == b"DELETE":
            await self.backend.terminate(owner, upload_id)
            return Reply(204)
        if method == b"GET":
            await self._download(request, owner, upload_id)
            return None
        raise TusError(405, "not allowed here", {b"Allow": b"HEAD, PATCH, DELETE, GET, OPTIONS"})

    # -- helpers shared with UploadBody --------------------------------------------------

    def upload_id(self, request: Request) -> str | None:
        """The id in ``/files/<id>``; None for the collection itself."""
        postpath = [p for p in request.postpath if p] if request.postpath else []
        if not postpath:
            return None
        upload_id = postpath[0].decode("latin-1")
        if len(postpath) > 1 or not _ID.match(upload_id):
            raise TusError(404, "no such upload")
        return upload_id

    async def owner(self, request: Request) -> int:
        owner = await self.authenticate(request)
        if owner is None:
            raise TusError(401, "authentication required", {b"WWW-Authenticate": _CHALLENGE})
        return owner

    def base_path(self, request: Request) -> bytes:
        return b"/" + b"".join(p + b"/" for p in request.prepath or [])

    def host_url(self, request: Request) -> bytes:
        """scheme://host[:port] as the client addressed us, for Location (creation)."""
        return host_url(request).encode("ascii")

    def location(self, request: Request, upload_id: str) -> bytes:
        return self.host_url(request) + self.base_path(request) + upload_id.encode()

    async def create(self, request: Request, owner: int) -> Reply:
        """POST to the collection without a body: 201 with the new upload's Location."""
        info = await self.create_upload(request, owner)
        headers = {b"Location": self.location(request, info.id)}
        if info.expires is not None and not info.complete:
            headers[b"Upload-Expires"] = http_date(info.expires)
        return Reply(201, headers)

    async def create_upload(self, request: Request, owner: int) -> UploadInfo:
        """An upload as the POST's headers describe it (creation, creation-defer-length,
        concatenation)."""
        concat = header(request, b"upload-concat")
        metadata_header = header(request, b"upload-metadata")
        metadata = parse_metadata(metadata_header) if metadata_header else {}
        length_header = header(request, b"upload-length")
        defer = header(request, b"upload-defer-length")
        if concat is not None and concat.startswith(b"final;"):
            if length_header is not None or defer is not None:
                raise TusError(400, "a final upload has no Upload-Length of its own")
            parts = self._part_ids(request, concat[len(b"final;") :])
            info = await self.backend.create(owner, None, metadata, parts=parts)
        else:
            if concat not in (None, b"partial"):
                raise TusError(400, "Upload-Concat must be partial or final;URLs")
            if (length_header is None) == (defer is None):
                raise TusError(400, "send Upload-Length or Upload-Defer-Length: 1")
            if defer is not None and defer != b"1":
                raise TusError(400, "Upload-Defer-Length must be 1")
            length = None if length_header is None else parse_size(length_header, "Upload-Length")
            self.check_size(length)
            extra = {"partial": True} if concat == b"partial" else {}
            info = await self.backend.create(owner, length, metadata, **extra)
        return info

    def check_size(self, length: int | None) -> None:
        if length is not None and length > self.max_size:
            raise TusError(413, f"the largest upload is {self.max_size} bytes")

    def _part_ids(self, request: Request, urls: bytes) -> list[str]:
        """The partial uploads named in ``Upload-Concat: final;URL URL...``."""
        base = self.base_path(request)
        ids = []
        for url in urls.split():
            path = urlsplit(url).path
            if not path.startswith(base) or not _ID.match(path[len(base) :].decode("latin-1")):
                raise TusError(400, "Upload-Concat: not an upload of this server")
            ids.append(path[len(base) :].decode("latin-1"))
        if not ids:
            raise TusError(400, "Upload-Concat: final needs the partial uploads' URLs")
        return ids

    def send(self, request: Request, reply: Reply) -> None:
        """Write ``reply`` with Tus-Resumable and, for browsers, CORS headers."""
        if request._disconnected or request.finished:
            return
        request.setResponseCode(reply.code)
        request.setHeader(b"Tus-Resumable", TUS_VERSION)
        origin = header(request, b"origin")
        if origin:
            request.setHeader(b"Access-Control-Allow-Origin", origin)
            request.setHeader(b"Access-Control-Expose-Headers", _CORS_EXPOSE_HEADERS)
            request.setHeader(b"Vary", b"Origin")
        for name, value in reply.headers.items():
            request.setHeader(name, value)
        if reply.code not in (204, 304) and request.method != b"HEAD":
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.setHeader(b"Content-Length", b"%d" % len(reply.body))
            request.write(reply.body)
        request.finish()

    # -- methods -------------------------------------------------------------------------

    def _options(self, request: Request) -> Reply:
        """Discovery (tus 1.0.0 core OPTIONS) and the CORS preflight (Fetch standard)."""
        headers = {
            b"Tus-Version": TUS_VERSION,
            b"Tus-Extension": EXTENSIONS,
            b"Tus-Max-Size": b"%d" % self.max_size,
            b"Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS).encode(),
        }
        if header(request, b"origin"):
            headers[b"Access-Control-Allow-Methods"] = _CORS_ALLOW_METHODS
            headers[b"Access-Control-Allow-Headers"] = _CORS_ALLOW_HEADERS
            headers[b"Access-Control-Max-Age"] = b"86400"
        return Reply(204, headers)

    async def _head(self, request: Request, owner: int, upload_id: str) -> Reply:
        info = await self.backend.info(owner, upload_id)
        if info is None:
            raise TusError(404, "no such upload")
        headers = info_headers(info, self.base_path(request), self.host_url(request))
        headers[b"Cache-Control"] = b"no-store"
        return Reply(200, headers)

    async def _download(self, request: Request, owner: int, upload_id: str) -> None:
        size, sha256, read = await self.backend.open_content(owner, upload_id)
        info = await self.backend.info(owner, upload_id)
        raw_name = info.metadata.get("filename") if info is not None else None
        name = raw_name.decode("utf-8", "replace") if raw_name else None
        request.setHeader(b"Tus-Resumable", TUS_VERSION)
        origin = header(request, b"origin")
        if origin:
            request.setHeader(b"Access-Control-Allow-Origin", origin)
            request.setHeader(b"Access-Control-Expose-Headers", _CORS_EXPOSE_HEADERS)
        sent = self.stream(request, size, sha256, read, name)
        if inspect.isawaitable(sent):
            await sent


_CHALLENGE = b'Basic realm="files"'


def _is_upload_body(request: Request) -> bool:
    ctype = header(request, b"content-type") or b""
    return ctype.split(b";")[0].strip().lower() == OFFSET_OCTET_STREAM


def check_version(request: Request) -> None:
    """tus 1.0.0 core: every request but OPTIONS names the version it speaks, else 412."""
    if header(request, b"tus-resumable") != TUS_VERSION:
        raise TusError(412, "Tus-Resumable 1.0.0 required", {b"Tus-Version": TUS_VERSION})


async def _feed(body: "UploadBody", content: Any) -> None:
    """Deliver a body twisted.web already buffered, as StreamingRequest would have."""
    content.seek(0)
    while data := content.read(READ_CHUNK):
        written = body.dataReceived(data)
        if written is not None:
            await written
    body.bodyComplete()


# -- the bytes of a PATCH (or creation-with-upload POST) -----------------------------------


class UploadBody:
    """web.request.BodySink for one PATCH: checks the request, opens an IUploadWriter and
    appends each piece as it arrives.  ``result`` fires with the Reply (None when the client
    went away: what arrived was kept, tus core "resume after interruption")."""

    def __init__(self, resource: TusResource, request: Request, method: bytes):
        self.resource = resource
        self.request = request
        self.method = method
        self.writer: Any = None
        self.received = 0
        self._failed: TusError | None = None
        self._waiting: list[Deferred[None]] = []
        self._opened = False
        self._lost = False
        #: Fires True when the connection dropped before the body was complete.
        self._end: Deferred[bool] = Deferred()
        self.result: Deferred[Reply | None] = Deferred.fromCoroutine(self._run())

    # BodySink

    def dataReceived(self, data: bytes) -> "Deferred[None] | None":
        if not self._opened:
            waiter: Deferred[None] = Deferred()
            self._waiting.append(waiter)
            return waiter.addCallback(lambda _: self.dataReceived(data))
        if self._failed is not None or self.writer is None:
            return None  # refused: the rest of the body is read and dropped
        self.received += len(data)
        try:
            written = self.writer.write(data)
        except Exception:
            self._write_failed(Failure())
            return None
        if isinstance(written, Deferred):
            return written.addErrback(self._write_failed)
        return None

    def bodyComplete(self) -> None:
        if not self._end.called:
            self._end.callback(False)

    def connectionLost(self, reason: Failure) -> None:
        if not self._end.called:
            self._lost = True
            self._end.callback(True)

    # internals

    def _write_failed(self, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, UploadError):
            self._failed = map_upload_error(error, self.method)
        else:
            self._failed = server_error(failure, "writing upload bytes")

    def _opened_now(self) -> None:
        self._opened = True
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)

    async def _run(self) -> Reply | None:
        try:
            return await self._upload()
        except Exception:
            error = server_error(Failure(), "tus upload body")
            return None if self._lost else error.reply()

    async def _upload(self) -> Reply | None:
        created: UploadInfo | None = None
        try:
            try:
                created = await self._open()
            finally:
                self._opened_now()
        except (TusError, UploadError, Exception) as error:
            self._failed = _as_tus_error(error, self.method)
        lost = await self._end
        if self.writer is None:
            return self._failed.reply() if self._failed and not lost else None
        try:
            if lost or self._failed is not None:
                # Keep what arrived: a dropped connection or a refused write (tus core).
                await self.writer.keep()
                if lost:
                    return None
                raise self._failed
            info = await self.writer.finish()
        except Exception as error:
            failure = _as_tus_error(error, self.method)
            if created is None or lost:
                return None if lost else failure.reply()
            # creation-with-upload: the upload exists; say so, and how much it holds.
            info = await self.resource.backend.info(self.owner, created.id) or created
        return self._reply(info, created)

    async def _open(self) -> UploadInfo | None:
        """Everything to check before the first byte may be written."""
        request, resource = self.request, self.resource
        check_version(request)
        if self.method == b"PATCH" and not _is_upload_body(request):
            raise TusError(415, "Content-Type must be application/offset+octet-stream")
        checksum = parse_checksum(header(request, b"upload-checksum"))
        length = request.getHeader(b"content-length")
        created = None
        if self.method == b"POST":
            if resource.upload_id(request) is not None:
                raise TusError(405, "POST creates uploads in the collection")
            self.owner = await resource.owner(request)
            created = await resource.create_upload(request, self.owner)
            upload_id, offset = created.id, 0
        else:
            upload_id = resource.upload_id(request)
            if upload_id is None:
                raise TusError(405, "PATCH an upload, not the collection")
            offset_header = header(request, b"upload-offset")
            if offset_header is None:
                raise TusError(400, "Upload-Offset required")
            offset = parse_size(offset_header, "Upload-Offset")
            self.owner = await resource.owner(request)
            info = await resource.backend.info(self.owner, upload_id)
            if info is None:
                # Absent or expired: open_writer fails with UploadGone saying which (404/410).
                self.writer = await resource.backend.open_writer(self.owner, upload_id, offset)
                return None
            if info.final:
                raise TusError(403, "a final upload cannot be patched (concatenation)")
            declared = header(request, b"upload-length")
            if declared is not None:
                value = parse_size(declared, "Upload-Length")
                if info.length is None:
                    resource.check_size(value)
                    info = await resource.backend.declare_length(self.owner, upload_id, value)
                elif value != info.length:
                    raise TusError(400, "Upload-Length cannot change")
            if info.length is not None and length is not None and length.isdigit():
                if offset + int(length) > info.length:
                    raise TusError(413, "the body goes past Upload-Length")
        self.writer = await resource.backend.open_writer(
            self.owner, upload_id, offset, checksum=checksum
        )
        return created

    def _reply(self, info: UploadInfo, created: UploadInfo | None) -> Reply:
        headers = {b"Upload-Offset": b"%d" % info.offset}
        if info.expires is not None and not info.complete:
            headers[b"Upload-Expires"] = http_date(info.expires)
        if created is None:
            return Reply(204, headers)
        headers[b"Location"] = self.resource.location(self.request, info.id)
        return Reply(201, headers)


def _as_tus_error(error: BaseException, method: bytes) -> TusError:
    if isinstance(error, TusError):
        return error
    if isinstance(error, UploadError):
        return map_upload_error(error, method)
    return server_error(Failure(error), "tus upload")


class _Pauser:
    """IPushProducer for stream_content: the transport says when to wait."""

    def __init__(self) -> None:
        self.stopped = False
        self._resumed: Deferred[None] | None = None

    def pauseProducing(self) -> None:
        if self._resumed is None:
            self._resumed = Deferred()

    def resumeProducing(self) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.callback(None)

    def stopProducing(self) -> None:
        self.stopped = True
        self.resumeProducing()

    async def ready(self) -> bool:
        if self._resumed is not None:
            await self._resumed
        return not self.stopped


async def stream_content(
    request: Request,
    size: int,
    sha256: str,
    read: Callable[[int, int], "Deferred[bytes]"],
    name: str | None = None,
) -> None:
    """Answer a GET with all ``size`` bytes of ``read(offset, length)``, READ_CHUNK at a time,
    waiting whenever the client is slower than the disk.  The one place a download is sent:
    a Range-aware replacement takes the same arguments (``TusResource(stream=...)``)."""
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", b"application/octet-stream")
    request.setHeader(b"ETag", b'"%s"' % sha256.encode())
    request.setHeader(b"Content-Length", b"%d" % size)
    producer = _Pauser()
    request.registerProducer(producer, True)
    request.notifyFinish().addErrback(lambda _: producer.stopProducing())
    offset = 0
    try:
        while offset < size and await producer.ready():
            data = await read(offset, min(READ_CHUNK, size - offset))
            if not data:
                raise OSError(f"upload content ends at {offset} of {size} bytes")
            offset += len(data)
            request.write(data)
    except Exception:
        log.failure("sending upload content")
        request.unregisterProducer()
        request.loseConnection()  # the status is sent: only a short body can say it
        return
    request.unregisterProducer()
    if not producer.stopped and not request._disconnected:
        request.finish()
