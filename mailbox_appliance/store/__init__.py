"""The store: the only door to SQL and blob files.  Every public method returns a Deferred.

Protocol code (smtp/, imap/, pop3/, web/) and the CLI call these methods; the work runs on the
store's own threads (see db.py and blobs.py) and results come back as plain data.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import text
from twisted.internet.defer import Deferred, inlineCallbacks

from mailbox_appliance.store import accounts, mailboxes, queue
from mailbox_appliance.store.blobs import DEFAULT_INLINE_MAX, BlobRef, BlobStore
from mailbox_appliance.store.db import Database
from mailbox_appliance.store.delivery import Delivered, Delivery, Outcome, deliver_many_txn
from mailbox_appliance.store.quota import FIXED, QuotaPolicy
from mailbox_appliance.store.recipients import Resolution, resolve_many_txn

T = TypeVar("T")

__all__ = ["Store", "BlobRef", "Outcome", "QuotaPolicy", "Resolution"]


class Store:
    def __init__(
        self,
        reactor,
        database_url: str,
        hot_blob_path: str,
        *,
        reader_threads: int = 4,
        blob_threads: int = 4,
        inline_max: int = DEFAULT_INLINE_MAX,
        quota_policy: QuotaPolicy = FIXED,
    ):
        self.reactor = reactor
        self.quota_policy = quota_policy
        self.db = Database(reactor, database_url, reader_threads=reader_threads)
        self.blobs = BlobStore(
            reactor, self.db, hot_blob_path, threads=blob_threads, inline_max=inline_max
        )

    @classmethod
    def from_config(cls, reactor, config) -> Store:
        return cls(
            reactor,
            config.database_url,
            config.hot_blob_path,
            reader_threads=config.storage.reader_threads,
            blob_threads=config.storage.blob_threads,
            inline_max=config.storage.inline_max,
            quota_policy=QuotaPolicy.from_config(config.quota),
        )

    @inlineCallbacks
    def start(self):
        self.db.start()
        yield self.blobs.start()

    @inlineCallbacks
    def stop(self):
        """Blob threads finish their files first; then queued writes commit and threads end."""
        self.blobs.stop()
        yield self.db.stop()

    def _read(self, fn: Callable[..., T], *args, **kw) -> Deferred[T]:
        return self.db.read(_bind(fn, args, kw))

    def _write(self, fn: Callable[..., T], *args, **kw) -> Deferred[T]:
        return self.db.write(_bind(fn, args, kw))

    # -- domains ---------------------------------------------------------------------------

    def add_domain(self, name: str) -> Deferred[str]:
        return self._write(accounts.add_domain_txn, name)

    def list_domains(self) -> Deferred[list[dict[str, Any]]]:
        return self._read(accounts.list_domains_txn)

    def remove_domain(self, name: str) -> Deferred[None]:
        return self._write(accounts.remove_domain_txn, name)

    def is_local_domain(self, name: str) -> Deferred[bool]:
        return self._read(accounts.is_local_domain_txn, name)

    # -- accounts --------------------------------------------------------------------------

    def add_account(self, address: str, password_hash: str, quota: int) -> Deferred[int]:
        return self._write(accounts.add_account_txn, address, password_hash, quota)

    def account(self, address: str) -> Deferred[dict[str, Any]]:
        return self._read(accounts.account_txn, address)

    def list_accounts(self, domain: str | None = None) -> Deferred[list[dict[str, Any]]]:
        return self._read(accounts.list_accounts_txn, domain)

    def set_password(self, address: str, password_hash: str) -> Deferred[None]:
        return self._write(accounts.set_password_txn, address, password_hash)

    def set_quota(self, address: str, quota: int) -> Deferred[None]:
        return self._write(accounts.set_quota_txn, address, quota)

    def remove_account(self, address: str) -> Deferred[None]:
        return self._write(accounts.remove_account_txn, address)

    def list_mailboxes(self, account_id: int) -> Deferred[list[dict[str, Any]]]:
        return self._read(mailboxes.list_mailboxes_txn, account_id)

    # -- aliases ---------------------------------------------------------------------------

    def add_alias(self, address: str, targets: list[str]) -> Deferred[list[str]]:
        return self._write(accounts.add_alias_txn, address, targets)

    def list_aliases(self, address: str | None = None) -> Deferred[list[dict[str, Any]]]:
        return self._read(accounts.list_aliases_txn, address)

    def remove_alias(self, address: str, targets: list[str] | None = None) -> Deferred[int]:
        return self._write(accounts.remove_alias_txn, address, targets)

    # -- mail ------------------------------------------------------------------------------

    def deliver(
        self,
        ref: BlobRef,
        recipients: Sequence[tuple[int, str]],
        *,
        internal_date: datetime.datetime | None = None,
        message_id: str | None = None,
        flags: Sequence[str] = (),
    ) -> Deferred[list[Delivered]]:
        """Durably file a stored blob into each ``(account_id, mailbox)``; fires after commit.

        Deliveries queued together share one batch of statements and one commit.
        """
        item = Delivery(ref, tuple(recipients), internal_date, message_id, tuple(flags))
        d = self.db.write_batched(deliver_many_txn, item)
        d.addCallback(lambda outcome: outcome.delivered)
        return d

    def resolve(self, address: str) -> Deferred[Resolution]:
        """What a normalized envelope address means here: local accounts, remote targets."""
        return self.db.read_batched(resolve_many_txn, address)

    def accept_message(
        self,
        ref: BlobRef,
        *,
        local: Sequence[int],
        remote: Sequence[str],
        sender: str,
        account_id: int | None = None,
        skip_bytes: int = 0,
        message_id: str | None = None,
    ) -> Deferred[Outcome]:
        """File a received message into each local account's INBOX (quota checked, grown by
        the store's policy) and queue it for each remote recipient, in one durable commit.
        """
        item = Delivery(
            ref,
            tuple((account, "INBOX") for account in local),
            message_id=message_id,
            outbound=tuple(remote),
            sender=sender,
            account_id=account_id,
            skip_bytes=skip_bytes,
            quota=self.quota_policy,
        )
        return self.db.write_batched(deliver_many_txn, item)

    def add_bounces(
        self, ref: BlobRef, sender: str, failures: Sequence[tuple[str, str]]
    ) -> Deferred[int]:
        return self._write(queue.add_bounces_txn, ref, sender, failures)

    def list_queue(self) -> Deferred[list[dict[str, Any]]]:
        return self._read(queue.list_queue_txn)

    def health(self) -> Deferred[dict[str, Any]]:
        """A round trip through a reader thread, with the schema revision and commit count."""
        d = self._read(_health_txn)
        d.addCallback(lambda info: {**info, "commits": self.db.commits})
        return d

    def collect_garbage(self, grace_seconds: float) -> Deferred[int]:
        return self.blobs.collect(grace_seconds)


def _health_txn(conn) -> dict[str, Any]:
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return {"schema_revision": revision}


def _bind(fn: Callable[..., T], args: tuple, kw: dict) -> Callable[[Any], T]:
    def _txn(conn):
        return fn(conn, *args, **kw)

    _txn.__name__ = fn.__name__
    return _txn
