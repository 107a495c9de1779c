"""Errors for things a user did wrong; each message is fit to show as is."""


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
