"""tus 1.0.0 on the wire: its header values in and out, and refusals as HTTP statuses.

Split from web/tus.py, which serves the protocol (https://tus.io/protocols/resumable-upload)
with these.
"""

import base64
import binascii
import calendar
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.server import Request

from mailbox_appliance.errors import (
    ChecksumMismatch,
    OffsetMismatch,
    UploadConflict,
    UploadError,
    UploadGone,
    UploadTooLarge,
    disk_full,
)
from mailbox_appliance.interfaces import UploadInfo

log = Logger()

TUS_VERSION = b"1.0.0"
EXTENSIONS = (
    b"creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,"
    b"concatenation"
)
#: Upload-Checksum algorithms (checksum extension) and their digest sizes.
CHECKSUM_ALGORITHMS = {"sha1": 20, "sha256": 32}
CHECKSUM_MISMATCH = 460


@dataclass
class Reply:
    """One response: tus answers are all small, so the body is bytes."""

    code: int
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""


class TusError(Exception):
    """A request refused with ``code``; ``str()`` is the reason sent as the body."""

    def __init__(self, code: int, reason: str, headers: dict[bytes, bytes] | None = None):
        super().__init__(reason)
        self.code = code
        self.headers = headers or {}

    def reply(self) -> Reply:
        return Reply(self.code, dict(self.headers), str(self).encode() + b"\n")


# -- headers -------------------------------------------------------------------------------


def header(request: Request, name: bytes) -> bytes | None:
    value = request.getHeader(name)
    return None if value is None else value.strip()


def effective_method(request: Request) -> bytes:
    """X-HTTP-Method-Override lets clients that can only POST send PATCH and DELETE."""
    if request.method == b"POST":
        override = (header(request, b"x-http-method-override") or b"").upper()
        if override in (b"PATCH", b"DELETE"):
            return override
    return request.method


def parse_size(value: bytes, name: str) -> int:
    """A non-negative decimal integer header (Upload-Length, Upload-Offset)."""
    if not value.isdigit() or len(value) > 19:
        raise TusError(400, f"{name} must be a non-negative integer")
    return int(value)


def parse_metadata(value: bytes) -> dict[str, bytes]:
    """Upload-Metadata (tus 1.0.0, creation): comma-separated "key base64value" pairs; a key
    alone means an empty value; keys are unique, non-empty, without spaces or commas."""
    metadata: dict[str, bytes] = {}
    for pair in value.decode("latin-1").split(","):
        parts = pair.strip().split(" ")
        key = parts[0]
        if not key or len(parts) > 2 or key in metadata:
            raise TusError(400, "Upload-Metadata: malformed key-value pair")
        try:
            metadata[key] = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
        except (binascii.Error, ValueError):
            raise TusError(400, f"Upload-Metadata: {key} is not base64") from None
    return metadata


def encode_metadata(metadata: dict[str, bytes]) -> bytes:
    return b",".join(
        key.encode("latin-1") + (b" " + base64.b64encode(value) if value else b"")
        for key, value in metadata.items()
    )


def parse_checksum(value: bytes | None) -> tuple[str, bytes] | None:
    """Upload-Checksum (checksum extension): "algorithm base64digest"; an algorithm we do not
    support is 400 Bad Request."""
    if value is None:
        return None
    algorithm, _, encoded = value.decode("latin-1").partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise TusError(400, f"Upload-Checksum: unsupported algorithm {algorithm!r}")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != CHECKSUM_ALGORITHMS[algorithm]:
        raise TusError(400, "Upload-Checksum: malformed digest")
    return algorithm, digest


def http_date(when: Any) -> bytes:
    """RFC 7231 section 7.1.1.1 IMF-fixdate (Upload-Expires, expiration extension)."""
    return http.datetimeToString(calendar.timegm(when.utctimetuple()))


def map_upload_error(error: UploadError, method: bytes) -> TusError:
    """A backend refusal as the status tus 1.0.0 gives it."""
    reason = str(error)
    if isinstance(error, UploadGone):
        return TusError(410 if error.expired else 404, reason)
    if isinstance(error, UploadTooLarge):
        return TusError(413, reason)
    if isinstance(error, ChecksumMismatch):
        return TusError(CHECKSUM_MISMATCH, reason or "Checksum Mismatch")
    if isinstance(error, OffsetMismatch):
        return TusError(409, reason, {b"Upload-Offset": b"%d" % error.current})
    if isinstance(error, UploadConflict):
        return TusError(409, reason)
    return TusError(400, reason)


def info_headers(info: UploadInfo, base: bytes, host_url: bytes) -> dict[bytes, bytes]:
    """Upload-Offset, Upload-Length or Upload-Defer-Length, Upload-Metadata, Upload-Concat and
    Upload-Expires for HEAD (tus 1.0.0 core, creation, concatenation, expiration)."""
    headers: dict[bytes, bytes] = {}
    if not info.final or info.complete:
        # A final upload's offset is only valid once concatenated (concatenation).
        headers[b"Upload-Offset"] = b"%d" % info.offset
    if info.length is not None:
        headers[b"Upload-Length"] = b"%d" % info.length
    else:
        headers[b"Upload-Defer-Length"] = b"1"
    if info.metadata:
        headers[b"Upload-Metadata"] = encode_metadata(info.metadata)
    if info.partial:
        headers[b"Upload-Concat"] = b"partial"
    elif info.final:
        parts = info.parts
        urls = b" ".join(host_url + base + part.encode() for part in parts)
        headers[b"Upload-Concat"] = b"final;" + urls
    if info.expires is not None and not info.complete:
        headers[b"Upload-Expires"] = http_date(info.expires)
    return headers


def server_error(failure: Failure, what: str) -> TusError:
    """Our own failure, logged: 507 Insufficient Storage (RFC 4918 §11.5) when the disk is
    full, which the client may retry later from the offset HEAD reports; else 500."""
    error = failure.value
    if disk_full(error):
        log.error("{what}: the data directory's disk is full ({error})", what=what, error=error)
        return TusError(507, "the server is out of storage space; try again later")
    log.failure(what, failure)
    return TusError(500, "internal error")


# -- downloads -----------------------------------------------------------------------------
