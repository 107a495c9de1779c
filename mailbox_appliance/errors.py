"""Errors for things a user did wrong; each message is fit to show as is."""

import errno


class StoreError(Exception):
    """A request the store refuses; ``str(error)`` is one line for the user."""


class InvalidAddress(StoreError):
    pass


class UnknownDomain(StoreError):
    pass


class DuplicateDomain(StoreError):
    pass


class DomainInUse(StoreError):
    pass


class DuplicateAccount(StoreError):
    pass


class NoSuchAccount(StoreError):
    pass


class DuplicateAlias(StoreError):
    pass


class NoSuchAlias(StoreError):
    pass


class BlobMissing(StoreError):
    """A blob was garbage-collected before the reference to it was committed."""

    def __init__(self, sha256: str):
        super().__init__(f"blob {sha256} is not in the store")
        self.sha256 = sha256


class SchemaError(StoreError):
    """The database schema is not the one this software needs; the message says what to run."""


class MailboxError(StoreError):
    """A mailbox operation refused; ``code`` says why, for the protocol layer to map.

    Codes: ``NONEXISTENT``, ``ALREADYEXISTS``, ``CANNOT``, ``OVERQUOTA``, ``LIMIT`` (RFC 5530
    response codes) and ``TRYCREATE`` (RFC 3501 §6.4.7: the target mailbox of a COPY or
    APPEND does not exist).  ``str(error)`` is a one-line reason fit to show the user.
    """

    NONEXISTENT = "NONEXISTENT"
    ALREADYEXISTS = "ALREADYEXISTS"
    CANNOT = "CANNOT"
    TRYCREATE = "TRYCREATE"
    OVERQUOTA = "OVERQUOTA"
    LIMIT = "LIMIT"
    CODES = frozenset({NONEXISTENT, ALREADYEXISTS, CANNOT, TRYCREATE, OVERQUOTA, LIMIT})

    def __init__(self, code: str, reason: str):
        if code not in self.CODES:
            raise ValueError(f"unknown mailbox error code {code!r}")
        super().__init__(reason)
        self.code = code

    def __reduce__(self):
        return (type(self), (self.code, str(self)))


# -- the file-transfer station (interfaces.IUploadBackend) ---------------------------------


class UploadError(StoreError):
    """A refused upload operation; ``str()`` is the reason for the client."""


class UploadGone(UploadError):
    """No such upload for this owner, or it expired (HTTP 404 or 410)."""

    def __init__(self, reason: str = "no such upload", expired: bool = False):
        super().__init__(reason)
        self.expired = expired


class UploadTooLarge(UploadError):
    """Over a limit: the largest file, the station's or the cloud drive's capacity (413)."""


class UploadConflict(UploadError):
    """Not possible in the upload's state: complete, final, length already set (409/403)."""


class OffsetMismatch(UploadError):
    """The client's Upload-Offset is not where the upload is (HTTP 409)."""

    def __init__(self, current: int):
        super().__init__(f"the upload is at offset {current}")
        self.current = current


class ChecksumMismatch(UploadError):
    """The chunk does not match its Upload-Checksum; it was discarded (tus: 460)."""


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the data directory's disk (or its quota) is full: worth a
    "try again later" answer (SMTP 452 4.3.1, HTTP 507) and a log line, not a traceback."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
