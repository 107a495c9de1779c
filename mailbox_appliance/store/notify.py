"""Change notification: who is told when a mailbox changes, and when.

IMAP IDLE and NOOP (and POP3 later) want to hear that a mailbox changed without polling.  A
``*_txn`` function that changes a mailbox's entries, flags or existence calls
:func:`changed_txn`; once the write is durably committed (``db.on_commit``: never for a write
that is rolled back), the changes go to the :class:`Notifier`, which calls each watcher on the
reactor thread.  A watcher hears about one write at most once, however many of its changes
touched the mailbox; and changes of writes committed together are merged while the reactor has
not yet run the call for the first (the usual case: the commit hooks of a batch run back to
back on one store thread), so a group commit normally costs each watcher one call.
Watchers then ask the store what changed (``Store.mailbox_changes``); the notice itself
carries no data.

The notifier is found through the connection: ``Notifier.attach(engine)`` puts it in every
connection's ``info``, so every write on the store's engine notifies, whatever path it took.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from twisted.logger import Logger

from mailbox_appliance.store.db import on_commit

log = Logger()

_INFO_KEY = "mailbox_notifier"
_PENDING_KEY = "mailbox_changes"


def changed_txn(conn: Connection, changes: Iterable[tuple[int, int]]) -> None:
    """Say that the current write changed each ``(account_id, mailbox_id)``.

    Watchers hear about it after the commit; nothing is said if the write is rolled back.
    """
    notifier: Notifier | None = conn.info.get(_INFO_KEY)
    write = conn.info.get("_write_hooks")  # set by db.Database for each write it runs
    if notifier is None or write is None:
        return  # not a store write (a migration, a test's own engine): nobody is watching
    # One commit hook per write, however many changes it reports.
    current = conn.info.get(_PENDING_KEY)
    if current is None or current[0] is not write:
        current = conn.info[_PENDING_KEY] = (write, set())
        pending = current[1]
        on_commit(conn, lambda: notifier.committed_thd(pending))
    current[1].update(changes)


class Watch:
    """A registration; ``cancel()`` stops the calls (idempotent)."""

    __slots__ = ("_registry", "key", "callback")

    def __init__(self, registry: dict[int, set[Watch]], key: int, callback: Callable):
        self._registry = registry
        self.key = key
        self.callback = callback

    def cancel(self) -> None:
        watchers = self._registry.get(self.key)
        if watchers is not None:
            watchers.discard(self)
            if not watchers:
                del self._registry[self.key]


class Notifier:
    """Calls watchers of mailboxes and accounts on the reactor thread after commits."""

    def __init__(self, reactor):
        self.reactor = reactor
        self._mailboxes: dict[int, set[Watch]] = {}
        self._accounts: dict[int, set[Watch]] = {}
        self._lock = threading.Lock()
        self._pending: set[tuple[int, int]] = set()
        self._scheduled = False

    def attach(self, engine: Engine) -> None:
        """Make every connection of ``engine`` report its writes' changes here."""

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, connection_record):
            connection_record.info[_INFO_KEY] = self

    # -- on the reactor thread --------------------------------------------------------------

    def watch(self, mailbox_id: int, callback: Callable[[int], object]) -> Watch:
        """Call ``callback(mailbox_id)`` after each commit that changed the mailbox."""
        w = Watch(self._mailboxes, mailbox_id, callback)
        self._mailboxes.setdefault(mailbox_id, set()).add(w)
        return w

    def watch_account(
        self, account_id: int, callback: Callable[[int, frozenset[int]], object]
    ) -> Watch:
        """Call ``callback(account_id, mailbox_ids)`` after each commit that changed any of
        the account's mailboxes (``mailbox_ids``: which)."""
        w = Watch(self._accounts, account_id, callback)
        self._accounts.setdefault(account_id, set()).add(w)
        return w

    def _deliver(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, set()
            self._scheduled = False
        by_account: dict[int, set[int]] = {}
        for account_id, mailbox_id in sorted(pending):
            by_account.setdefault(account_id, set()).add(mailbox_id)
        for mailbox_id in sorted({mailbox_id for _, mailbox_id in pending}):
            for w in list(self._mailboxes.get(mailbox_id, ())):
                self._call(w, mailbox_id)
        for account_id, mailbox_ids in by_account.items():
            for w in list(self._accounts.get(account_id, ())):
                self._call(w, account_id, frozenset(mailbox_ids))

    @staticmethod
    def _call(w: Watch, *args) -> None:
        try:
            w.callback(*args)
        except Exception:
            log.failure("a mailbox watcher failed ({args})", args=args)

    # -- on a store thread ------------------------------------------------------------------

    def committed_thd(self, changes: set[tuple[int, int]]) -> None:
        """A commit hook: queue the changes, and one call to the reactor if none is waiting."""
        if not changes:
            return
        with self._lock:
            self._pending |= changes
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            self.reactor.callFromThread(self._deliver)
