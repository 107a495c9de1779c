"""The store: the only door to SQL and blob files.  Every public method returns a Deferred.

Protocol code (smtp/, imap/, pop3/, web/) and the CLI call these methods; the work runs on the
store's own threads (see db.py and blobs.py) and results come back as plain data.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from sqlalchemy import text
from twisted.internet.defer import Deferred, ensureDeferred, inlineCallbacks

from mailbox_appliance.store import accounts, entries, folders, mailboxes, queue, transfers
from mailbox_appliance.store.blobs import DEFAULT_INLINE_MAX, BlobRef, BlobStore
from mailbox_appliance.store.db import Database
from mailbox_appliance.store.delivery import Delivered, Delivery, Outcome, deliver_many_txn
from mailbox_appliance.store.detached import deliver_with_files_txn
from mailbox_appliance.store.notify import Notifier, Watch
from mailbox_appliance.store.quota import FIXED, QuotaPolicy
from mailbox_appliance.store.recipients import Resolution, resolve_many_txn
from mailbox_appliance.store.uploads import UploadStore

T = TypeVar("T")

#: Blobs deleted per garbage-collection transaction.
GC_SWEEP = 1000

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
        max_file_size: int = 32 * 1024**3,
        station_capacity: int = 32 * 1024**3,
        cloud_capacity: int = 1024**3,
        upload_expires: float = 7 * 86400,
        station_expiry: float = 30 * 86400,
    ):
        self.reactor = reactor
        self.quota_policy = quota_policy
        self.db = Database(reactor, database_url, reader_threads=reader_threads)
        self.blobs = BlobStore(
            reactor, self.db, hot_blob_path, threads=blob_threads, inline_max=inline_max
        )
        #: Tells watchers of a mailbox (IMAP IDLE, POP3) when a commit changed it.
        self.notifier = Notifier(reactor)
        #: Called (no arguments) after a commit that queued outbound mail or a bounce: the
        #: queue runner, so new mail leaves at once instead of at its next poll.
        self.queue_listeners: list[Callable[[], object]] = []
        self.notifier.attach(self.db.engine)
        #: The file-transfer station's uploads (interfaces.IUploadBackend; web/tus.py).
        self.uploads = UploadStore(
            reactor,
            self.db,
            self.blobs,
            max_file_size=max_file_size,
            station_capacity=station_capacity,
            cloud_capacity=cloud_capacity,
            upload_expires=upload_expires,
            station_expiry=station_expiry,
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
            max_file_size=config.transfer.max_file_size,
            station_capacity=config.transfer.station_capacity,
            cloud_capacity=config.transfer.cloud_capacity,
            upload_expires=config.transfer.upload_expires,
            station_expiry=config.transfer.file_expires,
        )

    @inlineCallbacks
    def start(self):
        self.db.start()
        yield self.blobs.start()
        yield self.uploads.start()

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
        structure: dict[str, Any] | None = None,
    ) -> Deferred[list[Delivered]]:
        """Durably file a stored blob into each ``(account_id, mailbox)``; fires after commit.

        Deliveries queued together share one batch of statements and one commit.
        ``structure``: the parsed message to cache (see ``Delivery.structure``).
        """
        item = Delivery(
            ref, tuple(recipients), internal_date, message_id, tuple(flags), structure=structure
        )
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
        structure: dict[str, Any] | None = None,
        queue_id: str | None = None,
        files: Sequence[transfers.StationFile] = (),
    ) -> Deferred[Outcome]:
        """File a received message into each local account's INBOX (quota checked, grown by
        the store's policy) and queue it for each remote recipient, in one durable commit.

        ``files``: attachments detached from the message (smtp/detach.py), added to the
        sending account's station with their share links in the same commit; fails with
        UploadTooLarge, filing nothing, when they do not fit.
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
            structure=structure,
            queue_id=queue_id,
        )
        if files:
            limits = self.uploads.max_file_size, self.uploads.station_capacity
            d = self._write(deliver_with_files_txn, item, files, *limits)
        else:
            d = self.db.write_batched(deliver_many_txn, item)
        if remote:
            d.addCallback(self._queued)
        return d

    def _queued(self, result: T) -> T:
        for listener in list(self.queue_listeners):
            listener()
        return result

    # -- IMAP: mailboxes ---------------------------------------------------------------------
    # Refusals fail with errors.MailboxError; its ``code`` is the IMAP response code.

    def create_mailbox(
        self, account_id: int, name: str, special_use: str | None = None
    ) -> Deferred[dict[str, Any]]:
        """CREATE, with missing parents; fires with the new mailbox row."""
        return self._write(folders.create_txn, account_id, name, special_use)

    def delete_mailbox(self, account_id: int, name: str) -> Deferred[None]:
        return self._write(folders.delete_txn, account_id, name)

    def rename_mailbox(self, account_id: int, old: str, new: str) -> Deferred[None]:
        return self._write(folders.rename_txn, account_id, old, new)

    def subscribe(self, account_id: int, name: str, subscribed: bool) -> Deferred[None]:
        return self._write(folders.subscribe_txn, account_id, name, subscribed)

    def mailbox_status(self, account_id: int, name: str) -> Deferred[dict[str, Any]]:
        """dict(id, messages, recent, uidnext, uidvalidity, unseen, deleted, highestmodseq,
        size)."""
        return self._read(entries.status_txn, account_id, name)

    def select_mailbox(
        self, account_id: int, name: str, claim_recent: bool
    ) -> Deferred[dict[str, Any]]:
        """dict(id, name, uidvalidity, uidnext, highestmodseq, special_use, first_recent,
        entries: [(uid, flag_bits, keywords, modseq)] in UID order, sizes: [message size]
        in the same order).

        ``claim_recent`` (SELECT, not EXAMINE) also takes the recent messages for the
        caller: UIDs >= the returned ``first_recent`` are its \\Recent.  The entries are read
        on a reader thread; only when there is something to claim does a (small) write
        follow, so a SELECT neither waits for the writer nor holds it up.
        """
        d = self._read(entries.select_txn, account_id, name)
        if not claim_recent:
            return d

        def _claim(info: dict[str, Any]):
            if info["uidnext"] <= info["first_recent"]:
                return info
            claimed = self.claim_recent(info["id"], info["uidnext"])
            return claimed.addCallback(lambda first: {**info, "first_recent": first})

        return d.addCallback(_claim)

    def mailbox_changes(self, mailbox_id: int, since_modseq: int) -> Deferred[dict[str, Any]]:
        """dict(highestmodseq, uidnext, exists, changed: [entry], sizes: [size of each
        changed entry's message], expunged: [uid])."""
        return self._read(entries.changes_txn, mailbox_id, since_modseq)

    def claim_recent(self, mailbox_id: int, upto_uidnext: int) -> Deferred[int]:
        """The old first_recent; UIDs from it below ``upto_uidnext`` are now the caller's."""
        return self._write(entries.claim_recent_txn, mailbox_id, upto_uidnext)

    def watch(self, mailbox_id: int, callback: Callable[[int], object]) -> Watch:
        """Call ``callback(mailbox_id)`` on the reactor after each commit that changed the
        mailbox's entries, flags or existence; ``.cancel()`` the returned handle."""
        return self.notifier.watch(mailbox_id, callback)

    def watch_account(
        self, account_id: int, callback: Callable[[int, frozenset[int]], object]
    ) -> Watch:
        """Call ``callback(account_id, mailbox_ids)`` after each commit that changed any
        mailbox of the account."""
        return self.notifier.watch_account(account_id, callback)

    # -- IMAP: entries ---------------------------------------------------------------------

    def fetch_entries(
        self, mailbox_id: int, uids: Collection[int], columns: Collection[str] = frozenset()
    ) -> Deferred[list[dict[str, Any]]]:
        """dicts of uid, flags, keywords, modseq, message_row, size, internal_date (UTC),
        sha256, and "envelope" / "structure" when asked for in ``columns``; UID order."""
        return self._read(entries.fetch_txn, mailbox_id, list(uids), frozenset(columns))

    def store_flags(
        self,
        mailbox_id: int,
        uids: Collection[int],
        mode: str,
        flags: Sequence[str],
        unchanged_since: int | None = None,
    ) -> Deferred[dict[str, list]]:
        """dict(changed: [entry], failed: [uid]); ``mode`` is "+", "-" or "="."""
        return self._write(
            entries.store_flags_txn, mailbox_id, list(uids), mode, tuple(flags), unchanged_since
        )

    def copy_messages(
        self,
        account_id: int,
        src_mailbox_id: int,
        uids: Collection[int],
        dest_name: str,
        move: bool = False,
    ) -> Deferred[dict[str, Any]]:
        """dict(uidvalidity (of dest), pairs: [(src_uid, dest_uid)], expunged: [src uid])."""
        return self._write(
            entries.copy_txn,
            account_id,
            src_mailbox_id,
            list(uids),
            dest_name,
            move,
            self.quota_policy,
        )

    def expunge(self, mailbox_id: int, uids: Collection[int] | None = None) -> Deferred[list]:
        """Remove the entries flagged \\Deleted (only among ``uids`` if given); fires with
        their UIDs, ascending."""
        return self._write(entries.expunge_txn, mailbox_id, None if uids is None else list(uids))

    def append_message(
        self,
        account_id: int,
        mailbox_name: str,
        ref: BlobRef,
        flags: Sequence[str] = (),
        internal_date: datetime.datetime | None = None,
        structure: dict[str, Any] | None = None,
    ) -> Deferred[dict[str, int]]:
        """APPEND a stored blob; dict(mailbox_id, uidvalidity, uid).  Quota is checked and
        grown by the store's policy."""
        if internal_date is not None:  # stored as UTC on every backend
            if internal_date.tzinfo is None:
                internal_date = internal_date.replace(tzinfo=datetime.UTC)
            internal_date = internal_date.astimezone(datetime.UTC)
        item = Delivery(
            ref,
            ((account_id, mailbox_name),),
            internal_date,
            flags=tuple(flags),
            quota=self.quota_policy,
            structure=structure,
        )
        return self._write(entries.append_txn, item)

    def set_structure(self, message_row: int, structure: dict[str, Any]) -> Deferred[None]:
        """Cache the parsed structure of a message stored without one."""
        return self._write(entries.set_structure_txn, message_row, structure)

    def quota(self, account_id: int) -> Deferred[dict[str, int]]:
        """dict(used, quota, max): max is how far the policy grows quotas (0: they do not)."""
        limit = self.quota_policy.max if self.quota_policy.grow_by > 0 else 0
        d = self._read(entries.quota_txn, account_id)
        d.addCallback(lambda r: {"used": r[0], "quota": r[1], "max": limit})
        return d

    def add_bounces(
        self,
        ref: BlobRef,
        sender: str,
        failures: Sequence[tuple[str, str]],
        queue_id: str | None = None,
    ) -> Deferred[int]:
        return self._write(queue.add_bounces_txn, ref, sender, failures, queue_id).addCallback(
            self._queued
        )

    def list_queue(self) -> Deferred[list[dict[str, Any]]]:
        return self._read(queue.list_queue_txn)

    # -- the outbound queue (smtp/runner.py and ``mailbox-appliance queue``) -----------------

    def release_claims(self) -> Deferred[int]:
        return self._write(queue.release_claims_txn)

    def claim_due(
        self, limit: int, skip_domains: Collection[str] = ()
    ) -> Deferred[list[dict[str, Any]]]:
        return self._write(queue.claim_due_txn, queue.utcnow(), limit, sorted(skip_domains))

    def settle(self, settlements: Sequence[queue.Settlement]) -> Deferred[int]:
        """Record the fate of claimed rows; many runners' calls share one commit."""
        return self.db.write_batched(queue.settle_many_txn, list(settlements))

    def dsn_sent(self, ids: Sequence[int], item: Delivery | None) -> Deferred[Outcome | None]:
        d = self._write(queue.dsn_sent_txn, ids, item)
        if item is not None and item.outbound:
            d.addCallback(self._queued)
        return d

    def queue_row(self, row_id: int) -> Deferred[dict[str, Any] | None]:
        return self._read(queue.queue_row_txn, row_id)

    def retry_queued(self, row_id: int | None) -> Deferred[int]:
        return self._write(queue.retry_now_txn, row_id).addCallback(self._queued)

    def delete_queued(self, row_id: int) -> Deferred[bool]:
        return self._write(queue.delete_row_txn, row_id)

    def bounce_queued(self, row_id: int, reason: str) -> Deferred[str | None]:
        return self._write(queue.bounce_row_txn, row_id, reason).addCallback(self._queued)

    def routing_state(self) -> Deferred[list[dict[str, Any]]]:
        return self._read(queue.routing_state_txn)

    def save_routing_state(self, rows: Sequence[dict[str, Any]]) -> Deferred[None]:
        return self._write(queue.save_routing_state_txn, rows)

    # -- the file-transfer station: files and share links (web/, ``files`` CLI) -------------
    # Uploads themselves go through ``self.uploads`` (interfaces.IUploadBackend).

    def list_files(self, account_id: int, kind: str | None = None) -> Deferred[list[dict]]:
        """The account's files (dicts of id, name, size, blob_sha256, kind, created,
        expires), newest first; ``kind``: "station" or "cloud" only."""
        return self._read(transfers.files_txn, account_id, kind)

    def file(self, file_id: str, account_id: int | None = None) -> Deferred[dict | None]:
        """A file by id (only if it is ``account_id``'s, when given); None if absent."""
        return self._read(transfers.file_txn, file_id, account_id)

    def file_or_upload(self, file_or_upload_id: str, account_id: int) -> Deferred[dict | None]:
        """The account's file with this id, or the file its upload with this id became."""

        def _txn(conn):
            return transfers.file_txn(
                conn, file_or_upload_id, account_id
            ) or transfers.file_of_upload_txn(conn, file_or_upload_id, account_id)

        return self._read(_txn)

    def delete_file(self, file_id: str) -> Deferred[bool]:
        """Delete a file with its share links; its blob goes to garbage collection."""
        return self._write(transfers.delete_file_txn, file_id)

    def move_file(self, file_id: str, account_id: int, kind: str) -> Deferred[dict | None]:
        """Move the account's file to the cloud drive ("cloud": kept until deleted) or back to
        the station ("station": it expires after ``station_expiry`` from now); the moved file,
        or None when the account has no such file.  Fails with UploadTooLarge when it does not
        fit there, UploadGone when it is a station file that has expired."""
        uploads = self.uploads
        now = uploads.clock()
        return self._write(
            transfers.move_file_txn,
            file_id,
            account_id,
            kind,
            now,
            now + uploads.station_expiry,
            uploads.station_capacity,
            uploads.cloud_capacity,
        )

    def claim_existing(
        self, account_id: int, sha256: str, size: int, name: str
    ) -> Deferred[dict | None]:
        """A new station file of content the account already holds, or None."""
        return self.uploads.claim_existing(account_id, sha256, size, name)

    def create_share(
        self,
        file_id: str,
        expires: datetime.datetime,
        password_hash: str | None = None,
        max_downloads: int | None = None,
    ) -> Deferred[dict]:
        """A new share link (dict with its ``token``); check the file's owner first."""
        now = datetime.datetime.now(datetime.UTC)
        return self._write(
            transfers.create_share_txn, file_id, now, expires, password_hash, max_downloads
        )

    def share(self, token: str) -> Deferred[dict | None]:
        """A share link with its file's name, size, blob_sha256 and account_id."""
        return self._read(transfers.share_txn, token)

    def shares(self, file_id: str) -> Deferred[list[dict]]:
        return self._read(transfers.shares_txn, file_id)

    def revoke_share(self, token: str, account_id: int | None = None) -> Deferred[bool]:
        return self._write(transfers.revoke_share_txn, token, account_id)

    def count_download(self, token: str) -> Deferred[bool]:
        """Count one download; False when the link is revoked, expired or used up."""
        now = datetime.datetime.now(datetime.UTC)
        return self._write(transfers.count_download_txn, token, now)

    def station_usage(self, account_id: int) -> Deferred[int]:
        """Bytes the account holds on the station (files and unfinished uploads)."""
        return self._read(transfers.station_usage_txn, account_id)

    def cloud_usage(self, account_id: int) -> Deferred[int]:
        """Bytes the account keeps in its cloud drive."""
        return self._read(transfers.cloud_usage_txn, account_id)

    def reap_transfers(self, now: datetime.datetime | None = None) -> Deferred[dict[str, int]]:
        """Delete expired unfinished uploads and expired station files (``files gc``)."""
        return self.uploads.reap_expired(now)

    def health(self) -> Deferred[dict[str, Any]]:
        """A round trip through a reader thread, with the schema revision and commit count."""
        d = self._read(_health_txn)
        d.addCallback(lambda info: {**info, "commits": self.db.commits})
        return d

    def collect_garbage(self, grace_seconds: float) -> Deferred[int]:
        """Delete every blob unreferenced for ``grace_seconds``, in sweeps of a bounded size
        (each its own commit, so deliveries are not held up behind one long transaction)."""
        return ensureDeferred(self._collect_all(grace_seconds))

    async def _collect_all(self, grace_seconds: float) -> int:
        total = 0
        while True:
            removed = await self.blobs.collect(grace_seconds, GC_SWEEP)
            total += removed
            if removed < GC_SWEEP:
                return total


def _health_txn(conn) -> dict[str, Any]:
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return {"schema_revision": revision}


def _bind(fn: Callable[..., T], args: tuple, kw: dict) -> Callable[[Any], T]:
    def _txn(conn):
        return fn(conn, *args, **kw)

    _txn.__name__ = fn.__name__
    return _txn
