"""The station's JSON API under ``/api/``, for the upload page and for scripts.

Every route but ``login`` needs an account: HTTP Basic (RFC 7617) or the page's session cookie
(web/session.py), both through the shared HTTPAuthenticator.  A cookie-authenticated request
that changes something must also carry a same-origin proof, or it is a 403.  The API sends no
CORS headers: only our own page (or a client outside a browser) can use it.

Routes (a file or share of another account is a 404, exactly like one that does not exist):

* ``POST /api/login``, ``POST /api/logout``: the cookie session.
* ``GET /api/me``: the address, the station's and the cloud drive's usage and capacity.
* ``GET /api/files``: the account's files; ``POST /api/files`` with ``{sha256, size, name}``:
  the fast path, a new file of content the account already stores, at once (201) or 404.
* ``GET /api/files/<id>``, ``DELETE /api/files/<id>`` (204).
* ``PATCH /api/files/<id>`` (RFC 5789) with ``{"kind": "cloud"|"station"}``: move the file
  into the cloud drive (kept until deleted) or back to the station (it expires again); 200
  with the file, 413 when it does not fit there, 410 for a station file that has expired.
* ``GET|HEAD /api/files/<id>/content``: the download, with ranges (web/download.py).
* ``GET|POST /api/files/<id>/shares``: the file's share links; a new one (201).
* ``DELETE /api/shares/<token>``: revoke a link (204).

Answers are JSON; a refusal is a 4xx with ``{"error": reason}``, never a traceback.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from mailbox_appliance.errors import UploadGone, UploadTooLarge
from mailbox_appliance.store import transfers
from mailbox_appliance.web import download, session
from mailbox_appliance.web.auth import CrossOrigin, HTTPAuthenticator, Identity
from mailbox_appliance.web.urls import host_url

log = Logger()

#: Largest JSON body read.
MAX_BODY = 64 * 1024
#: Longest a share link may be asked to live (days), and the longest share password.
MAX_SHARE_DAYS = 3650
MAX_PASSWORD = 1024

TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


class ApiError(Exception):
    """A refusal: ``code`` and the reason sent as ``{"error": ...}``."""

    def __init__(self, code: int, reason: str, headers: dict[bytes, bytes] | None = None):
        super().__init__(reason)
        self.code = code
        self.headers = headers or {}


# -- shared with web/share.py --------------------------------------------------------------


def iso(moment: datetime.datetime | None) -> str | None:
    """RFC 3339 in UTC, as the page and scripts parse it."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def share_url(request: IRequest, public_url: str | None, token: str) -> str:
    """The link to give out: under ``transfer.public_url`` when set, else as we were reached."""
    base = public_url.rstrip("/") if public_url else host_url(request)
    return f"{base}/s/{token}"


def share_state(share: dict[str, Any] | None, now: datetime.datetime) -> str:
    """``active``, ``expired``, ``used up`` or ``revoked`` (also for a missing link)."""
    if share is None or share["revoked"]:
        return "revoked"
    if share["expires"] <= now:
        return "expired"
    limit = share["max_downloads"]
    if limit is not None and share["downloads"] >= limit:
        return "used up"
    return "active"


class _BlobReader:
    """Reads one open blob on the blob threads; closed when the response ends.

    The download streamer keeps at most one read outstanding, so seek-then-read on one file
    object is safe; closing waits for that read.
    """

    def __init__(self, blobs: Any, f: BinaryIO):
        self.blobs = blobs
        self.f = f
        self._pending: Deferred | None = None

    def read(self, offset: int, length: int) -> Deferred[bytes]:
        d = self.blobs.run(_read_thd, self.f, offset, length)
        self._pending = d
        return d

    def close(self, result: object = None) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.called:
            pending.addBoth(lambda r: (self.f.close(), r)[1])
        else:
            self.f.close()


def _read_thd(f: BinaryIO, offset: int, length: int) -> bytes:
    f.seek(offset)
    return f.read(length)


async def blob_content(
    store: Any,
    request: IRequest,
    sha256: str,
    size: int,
    name: str | None,
    modified: datetime.datetime | None = None,
) -> download.Content | None:
    """A download of a stored blob for ``request``; None if the client is already gone.

    The blob is opened once (inline content from its row, else its file) and read in chunks on
    the store's blob threads; call ``download.send`` right away, with no await in between.
    """
    f = await store.blobs.open(sha256)
    if getattr(request, "_disconnected", False) or request.finished:
        f.close()
        return None
    reader = _BlobReader(store.blobs, f)
    request.notifyFinish().addBoth(reader.close)
    return download.Content(size, sha256, name, reader.read, modified=modified)


def write_json(
    request: IRequest, code: int, body: Any, headers: dict[bytes, bytes] | None = None
) -> None:
    """Finish ``request`` with a JSON answer that no cache keeps."""
    if getattr(request, "_disconnected", False) or request.finished:
        return
    data = b"" if body is None else json.dumps(body).encode("utf-8") + b"\n"
    request.setResponseCode(code)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    if code == 204:
        request.responseHeaders.removeHeader(b"Content-Type")
        request.defaultContentType = None  # type: ignore[attr-defined]
    else:
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        request.setHeader(b"Content-Length", b"%d" % len(data))
        if request.method != b"HEAD":
            request.write(data)
    request.finish()


def read_json(request: IRequest) -> dict[str, Any]:
    """The request's JSON object (an empty body is ``{}``); 400/413 with the reason."""
    content = request.content
    body = content.read(MAX_BODY + 1) if content is not None else b""
    if len(body) > MAX_BODY:
        raise ApiError(413, f"the body is over {MAX_BODY} bytes")
    if not body.strip():
        return {}
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object")
    return value


# -- the resource --------------------------------------------------------------------------


def file_json(file: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {
        "id": file["id"],
        "name": file["name"],
        "size": file["size"],
        "sha256": file["blob_sha256"],
        "kind": file["kind"],
        "created": iso(file["created"]),
        "expires": iso(file["expires"]),
        "url": f"{prefix}/files/{file['id']}/content",
    }


class ApiResource(Resource):
    """``/api/``: see the module docstring.  ``appliance`` gives the store, the config and
    the password hasher; ``authenticator`` is the one the tus resource uses."""

    isLeaf = True

    def __init__(self, appliance: Any, authenticator: HTTPAuthenticator):
        super().__init__()
        self.store = appliance.store
        self.passwords = appliance.passwords
        self.transfer = appliance.config.transfer
        self.authenticator = authenticator
        self.clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)

    def render(self, request: IRequest) -> int:
        Deferred.fromCoroutine(self._respond(request))
        return NOT_DONE_YET

    async def _respond(self, request: IRequest) -> None:
        try:
            await self._dispatch(request)
        except ApiError as error:
            write_json(request, error.code, {"error": str(error)}, error.headers)
        except CrossOrigin as error:
            write_json(request, 403, {"error": str(error)})
        except Exception:
            log.failure("api {method!r} {uri!r}", method=request.method, uri=request.uri)
            if not request.startedWriting:
                write_json(request, 500, {"error": "internal error"})

    def prefix(self, request: IRequest) -> str:
        return "/" + "/".join(p.decode("ascii") for p in request.prepath or [])

    async def _dispatch(self, request: IRequest) -> None:
        path = [p.decode("latin-1") for p in request.postpath or []]
        while path and path[-1] == "":
            path.pop()
        method = request.method
        if path == ["login"]:
            _allow(request, b"POST")
            code, body = await session.login(request, self.authenticator)
            write_json(request, code, body)
            return
        if path == ["logout"]:
            _allow(request, b"POST")
            code, body = session.logout(request, self.authenticator)
            write_json(request, code, body)
            return
        route = self._route(path)
        if route is None:
            raise ApiError(404, "no such API route")
        handlers, args = route
        if method == b"OPTIONS":
            allow = b", ".join(sorted(handlers) + [b"OPTIONS"])
            write_json(request, 204, None, {b"Allow": allow})
            return
        handler = handlers.get(method)
        if handler is None:
            _allow(request, *handlers)
        who = await self.authenticator.identify(request)
        if who is None:
            headers = {}
            if request.getHeader(session.PROOF_HEADER) is None:
                # RFC 9110 §11.6.1; a script on our page asks for none (no browser dialog).
                headers[b"WWW-Authenticate"] = b'Basic realm="files"'
            raise ApiError(401, "log in first (HTTP Basic or POST /api/login)", headers)
        await handler(request, who, *args)

    def _route(self, path: list[str]) -> tuple[dict[bytes, Callable], list[str]] | None:
        match path:
            case ["me"]:
                return {b"GET": self.me}, []
            case ["files"]:
                return {b"GET": self.list_files, b"POST": self.claim}, []
            case ["files", file_id] if TOKEN.match(file_id):
                return {
                    b"GET": self.get_file,
                    b"PATCH": self.move_file,
                    b"DELETE": self.delete_file,
                }, [file_id]
            case ["files", file_id, "content"] if TOKEN.match(file_id):
                return {b"GET": self.content, b"HEAD": self.content}, [file_id]
            case ["files", file_id, "shares"] if TOKEN.match(file_id):
                return {b"GET": self.list_shares, b"POST": self.create_share}, [file_id]
            case ["shares", token] if TOKEN.match(token):
                return {b"DELETE": self.revoke}, [token]
        return None

    # -- handlers ------------------------------------------------------------------------

    async def _own_file(self, who: Identity, file_id: str) -> dict[str, Any]:
        file = await self.store.file(file_id, who.account_id)
        if file is None:
            raise ApiError(404, "no such file")
        return file

    async def me(self, request: IRequest, who: Identity) -> None:
        station = await self.store.station_usage(who.account_id)
        cloud = await self.store.cloud_usage(who.account_id)
        write_json(
            request,
            200,
            {
                "address": who.address,
                "station": {"used": station, "capacity": int(self.transfer.station_capacity)},
                "cloud": {"used": cloud, "capacity": int(self.transfer.cloud_capacity)},
                "max_file_size": int(self.transfer.max_file_size),
                "share_expires_days": self.transfer.share_expires / 86400,
            },
        )

    async def list_files(self, request: IRequest, who: Identity) -> None:
        files = await self.store.list_files(who.account_id)
        prefix = self.prefix(request)
        write_json(request, 200, {"files": [file_json(f, prefix) for f in files]})

    async def get_file(self, request: IRequest, who: Identity, file_id: str) -> None:
        file = await self._own_file(who, file_id)
        write_json(request, 200, file_json(file, self.prefix(request)))

    async def claim(self, request: IRequest, who: Identity) -> None:
        """The fast path: the page hashed a file the account already stores, so no byte needs
        to travel.  Only the account's own files are looked at, so a 404 says nothing about
        what other accounts hold."""
        body = read_json(request)
        sha256, size, name = body.get("sha256"), body.get("size"), body.get("name")
        if not isinstance(sha256, str) or not _SHA256.match(sha256.lower()):
            raise ApiError(400, "sha256 must be 64 hexadecimal digits")
        if not _whole(size) or not 0 <= size <= self.transfer.max_file_size:
            raise ApiError(400, "size must be a whole number of bytes within the largest file")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "name must be a non-empty string")
        clean = transfers.file_name({"filename": name.encode("utf-8", "replace")}, "file")
        try:
            file = await self.store.claim_existing(who.account_id, sha256.lower(), size, clean)
        except UploadTooLarge as error:
            raise ApiError(413, str(error)) from None
        if file is None:
            raise ApiError(404, "this account holds no such content: upload it")
        body = file_json(file, self.prefix(request))
        write_json(request, 201, body, {b"Location": body["url"].rsplit("/", 1)[0].encode()})

    async def move_file(self, request: IRequest, who: Identity, file_id: str) -> None:
        """Keep a file in the cloud drive, or put it back on the station to expire."""
        kind = read_json(request).get("kind")
        if not isinstance(kind, str) or kind not in transfers.KINDS:
            raise ApiError(400, 'kind must be "cloud" or "station"')
        try:
            file = await self.store.move_file(file_id, who.account_id, kind)
        except UploadTooLarge as error:
            raise ApiError(413, str(error)) from None
        except UploadGone as error:
            raise ApiError(410, str(error)) from None
        if file is None:
            raise ApiError(404, "no such file")
        write_json(request, 200, file_json(file, self.prefix(request)))

    async def delete_file(self, request: IRequest, who: Identity, file_id: str) -> None:
        await self._own_file(who, file_id)
        if not await self.store.delete_file(file_id):
            raise ApiError(404, "no such file")
        write_json(request, 204, None)

    async def content(self, request: IRequest, who: Identity, file_id: str) -> None:
        file = await self._own_file(who, file_id)
        content = await blob_content(
            self.store, request, file["blob_sha256"], file["size"], file["name"], file["created"]
        )
        if content is not None:
            download.send(request, content)

    def _share_json(self, request: IRequest, share: dict[str, Any]) -> dict[str, Any]:
        return {
            "token": share["token"],
            "url": share_url(request, self.transfer.public_url, share["token"]),
            "created": iso(share["created"]),
            "expires": iso(share["expires"]),
            "downloads": share["downloads"],
            "max_downloads": share["max_downloads"],
            "password": share["password_hash"] is not None,
            "state": share_state(share, self.clock()),
        }

    async def list_shares(self, request: IRequest, who: Identity, file_id: str) -> None:
        await self._own_file(who, file_id)
        shares = await self.store.shares(file_id)
        write_json(request, 200, {"shares": [self._share_json(request, s) for s in shares]})

    async def create_share(self, request: IRequest, who: Identity, file_id: str) -> None:
        """A new link; it never outlives its file (a station file expires)."""
        body = read_json(request)
        days = body.get("expires_days")
        if days is None:
            lifetime = datetime.timedelta(seconds=self.transfer.share_expires)
        elif _number(days) and 0 < days <= MAX_SHARE_DAYS:
            lifetime = datetime.timedelta(days=days)
        else:
            raise ApiError(400, f"expires_days must be a number above 0, at most {MAX_SHARE_DAYS}")
        password = body.get("password")
        if password is not None and (
            not isinstance(password, str) or not 0 < len(password) <= MAX_PASSWORD
        ):
            raise ApiError(400, f"password must be a string of 1 to {MAX_PASSWORD} characters")
        limit = body.get("max_downloads")
        if limit is not None and (not _whole(limit) or not 1 <= limit <= 2**31 - 1):
            raise ApiError(400, "max_downloads must be a whole number of at least 1")
        file = await self._own_file(who, file_id)
        expires = self.clock() + lifetime
        if file["expires"] is not None:
            expires = min(expires, file["expires"])
        password_hash = await self.passwords.hash(password) if password else None
        share = await self.store.create_share(file_id, expires, password_hash, limit)
        answer = self._share_json(request, share)
        write_json(request, 201, answer, {b"Location": answer["url"].encode("ascii")})

    async def revoke(self, request: IRequest, who: Identity, token: str) -> None:
        if not await self.store.revoke_share(token, who.account_id):
            raise ApiError(404, "no such share link (or it is revoked already)")
        write_json(request, 204, None)


def _allow(request: IRequest, *methods: bytes) -> None:
    """405 with Allow (RFC 9110 §15.5.6) unless the request's method is one of ``methods``."""
    if request.method not in methods:
        allow = b", ".join(methods)
        raise ApiError(405, "method not allowed here", {b"Allow": allow})


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
