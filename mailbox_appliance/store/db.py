"""The store's database door: its threads, and group commit.

All SQL runs off the reactor thread (design rule 1): reads on a pool of reader threads, writes
on one writer thread.  The writer is where group commit happens (design rule 5): every write
function that is waiting when the writer becomes free runs in one transaction, each inside its
own SAVEPOINT (so one failing write does not fail its neighbours), and that transaction is
committed once (one fsync).  Writes that can share statements (``write_batched``) run as one
call per batch.  Each caller's Deferred fires only after the commit is durable: on PostgreSQL
when COMMIT returns; on SQLite once the ``store-sync`` thread has fsync'd the WAL after the
commit, while the writer already runs the next batch (see walsync.py).

Driver settings live in engine.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from mailbox_appliance.store.engine import make_engine
from mailbox_appliance.store.walsync import WalSyncer, sqlite_file

T = TypeVar("T")
log = Logger()

#: How many waiting writes may share one transaction at most.
MAX_BATCH = 512


class StoreStopped(RuntimeError):
    """A read or write arrived after the store was stopped (it would never have run)."""


class StoreBroken(RuntimeError):
    """Durability can no longer be promised (a log fsync failed); the store refuses writes."""


class TransactionLost(RuntimeError):
    """The database ended the batch's transaction by itself; no write of it was kept."""


def on_commit(conn: Connection, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the current write is durably committed, before its Deferred fires.

    It runs on a store thread (the sync thread on SQLite, the writer on PostgreSQL), in commit
    order.  If the commit fails, the rollback hooks run instead.
    """
    conn.info["_write_hooks"][0].append(callback)


def on_rollback(conn: Connection, callback: Callable[[], None]) -> None:
    """Run ``callback`` on the writer thread if the current write is rolled back."""
    conn.info["_write_hooks"][1].append(callback)


class _Write:
    __slots__ = (
        "fn",
        "batch_fn",
        "item",
        "deferred",
        "result",
        "ok",
        "commit_hooks",
        "rollback_hooks",
    )

    def __init__(
        self,
        fn: Callable[[Connection], Any],
        deferred: Deferred,
        batch_fn: Callable[[Connection, list], list] | None = None,
        item: Any = None,
    ):
        self.fn = fn
        self.batch_fn = batch_fn
        self.item = item
        self.deferred = deferred
        self.result: Any = None
        self.ok = False
        self.commit_hooks: list[Callable[[], None]] = []
        self.rollback_hooks: list[Callable[[], None]] = []


class Database:
    """The store's SQL connection: ``read(fn)`` and ``write(fn)`` return Deferreds.

    ``fn`` receives a SQLAlchemy Connection inside a transaction, runs on a store thread,
    and must return plain data.
    """

    def __init__(self, reactor, url: str, *, reader_threads: int = 4, name: str = "store"):
        self.reactor = reactor
        self.url = url
        database_file = sqlite_file(url)
        self._wal = WalSyncer(database_file) if database_file else None
        self.engine = make_engine(url, wal_synced_by_caller=self._wal is not None)
        self.dialect = self.engine.dialect.name
        # fsyncs of committed batches, in commit order, while the writer goes on (walsync.py)
        self._syncer = ThreadPool(minthreads=1, maxthreads=1, name=f"{name}-sync")
        self._readers = ThreadPool(minthreads=1, maxthreads=reader_threads, name=f"{name}-read")
        self._writer = ThreadPool(minthreads=1, maxthreads=1, name=f"{name}-write")
        self._pending: list[_Write] = []
        self._drain_scheduled = False
        self._broken: Failure | None = None  # set for good by a failed WAL fsync
        self._lock = threading.Lock()
        self._writer_conn: Connection | None = None
        self._read_batches: dict[Callable, list[tuple[Any, Deferred]]] = {}
        self._reading: set[Callable] = set()
        self.commits = 0  # durable commits made; tests and metrics read it
        self.writes = 0  # write functions committed
        self._running = False

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._readers.start()
        self._writer.start()
        self._syncer.start()
        self._running = True

    def stop(self) -> Deferred:
        """Finish queued writes, then stop the threads and close every connection."""
        if not self._running:
            return succeed(None)
        self._running = False

        def _close_thd():
            while self._pending:  # every write queued before stop() still runs
                self._drain_thd()
            if self._writer_conn is not None:
                self._writer_conn.close()
                self._writer_conn = None

        def _stop_pools_thd():
            # Joining threads and the last SQLite close (a checkpoint) may block: not on
            # the reactor.  The sync thread stops after the writer: every batch gets its fsync.
            self._readers.stop()
            self._writer.stop()
            self._syncer.stop()
            if self._wal is not None:
                self._wal.close()
            self.engine.dispose()

        d = deferToThreadPool(self.reactor, self._writer, _close_thd)
        outside = self.reactor.getThreadPool()
        d.addBoth(
            lambda result: deferToThreadPool(self.reactor, outside, _stop_pools_thd).addCallback(
                lambda _: result
            )
        )
        return d

    # -- the two doors ---------------------------------------------------------------------

    def read(self, fn: Callable[[Connection], T]) -> Deferred[T]:
        """Run ``fn(conn)`` in a read transaction on a reader thread."""
        if not self._running:
            return fail(StoreStopped("the store is stopped"))
        return deferToThreadPool(self.reactor, self._readers, self._read_thd, fn)

    def read_batched(self, batch_fn: Callable[[Connection, list], list], item: Any) -> Deferred:
        """Like ``read``, for lookups that can share one trip to a reader thread.

        While one call ``batch_fn(conn, items)`` runs, further items wait and then go together
        in the next: a busy server makes one thread hop and one transaction for many lookups
        (the read side of group commit).  ``batch_fn`` returns one result per item, in order;
        if it fails, each item is looked up alone so that a bad item fails alone.
        """
        d: Deferred = Deferred()
        self._read_batches.setdefault(batch_fn, []).append((item, d))
        if batch_fn not in self._reading:
            self._next_read_batch(batch_fn)
        return d

    def _next_read_batch(self, batch_fn: Callable) -> None:
        waiting = self._read_batches.pop(batch_fn, None)
        if not waiting:
            self._reading.discard(batch_fn)
            return
        self._reading.add(batch_fn)
        items = [item for item, _ in waiting]
        d = self.read(lambda conn: batch_fn(conn, items))

        def answer(results):
            if isinstance(results, Failure):
                for item, waiter in waiting:
                    self.read(lambda conn, item=item: batch_fn(conn, [item])[0]).chainDeferred(
                        waiter
                    )
            else:
                for (_, waiter), result in zip(waiting, results, strict=True):
                    waiter.callback(result)
            self._next_read_batch(batch_fn)

        d.addBoth(answer)

    def write(self, fn: Callable[[Connection], T]) -> Deferred[T]:
        """Run ``fn(conn)`` in the next group commit; fires after the commit is durable."""
        return self._queue(_Write(fn, Deferred()))

    def write_batched(self, batch_fn: Callable[[Connection, list], list], item: Any) -> Deferred:
        """Like ``write``, for writes that can share one call with their neighbours.

        Writes queued together with the same ``batch_fn`` run as one call
        ``batch_fn(conn, items)``, which returns one result per item, in order: a statement
        per batch instead of per item (``executemany``).  If that call fails, each item runs
        again alone, so a failing item fails alone.
        """

        def alone(conn: Connection):
            return batch_fn(conn, [item])[0]

        return self._queue(_Write(alone, Deferred(), batch_fn, item))

    def _queue(self, write: _Write) -> Deferred:
        if not self._running:
            return fail(StoreStopped("the store is stopped; nothing was written"))
        if self._broken is not None:
            return fail(self._broken)
        d = write.deferred
        with self._lock:
            self._pending.append(write)
            schedule, self._drain_scheduled = not self._drain_scheduled, True
        if schedule:  # one drain waiting at a time: it takes everything queued by then
            self._writer.callInThread(self._drain_thd)
        return d

    def call_on_writer(self, fn: Callable[[], T]) -> Deferred[T]:
        """Run plain ``fn()`` on the writer thread, outside any transaction (for DDL tools)."""
        return deferToThreadPool(self.reactor, self._writer, fn)

    # -- on store threads ------------------------------------------------------------------

    def _read_thd(self, fn):
        with self.engine.connect() as conn:
            with conn.begin():
                return fn(conn)

    def _connection_thd(self) -> Connection:
        if self._writer_conn is None:
            conn = self.engine.connect()
            conn.info["writer"] = True
            self._writer_conn = conn
        return self._writer_conn

    def _drain_thd(self) -> None:
        with self._lock:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            if self._pending:  # more than one batch was waiting: drain again right after
                self._writer.callInThread(self._drain_thd)
            else:
                self._drain_scheduled = False
        if not batch:
            return
        try:
            self._commit_batch_thd(batch)
        except BaseException:
            failure = Failure()
            log.failure("group commit of {n} writes failed", failure, n=len(batch))
            if self._writer_conn is not None:
                self._writer_conn.invalidate()
                self._writer_conn = None
            for w in batch:
                if w.ok:
                    self._run_hooks(w.rollback_hooks)
                w.ok, w.result = False, failure
        if self._wal is not None and any(w.ok for w in batch):
            self._syncer.callInThread(self._sync_then_fire_thd, batch)
        else:
            self._committed(batch)

    def _committed(self, batch: list[_Write]) -> None:
        """The batch's outcome is durable: commit hooks, then the callers hear back."""
        for w in batch:
            if w.ok:
                self._run_hooks(w.commit_hooks)
        self.reactor.callFromThread(self._fire, batch)

    def _sync_then_fire_thd(self, batch: list[_Write]) -> None:
        """fsync the WAL, then answer the batch's callers (commit order is kept).

        After one failed fsync nothing later can be trusted (the kernel may have dropped the
        dirty pages, and the WAL's frame checksums chain later commits to the lost ones), so
        the store refuses every write from then on until it is restarted.
        """
        if self._broken is None:
            try:
                self._wal.sync_thd()
            except BaseException:
                self._broken = Failure(
                    StoreBroken("an fsync of the database log failed; restart the appliance")
                )
                log.failure("fsync of the SQLite WAL failed; the store refuses all writes now")
        if self._broken is not None:
            for w in batch:
                w.ok, w.result = False, self._broken
        self._committed(batch)

    def _commit_batch_thd(self, batch: list[_Write]) -> None:
        conn = self._connection_thd()
        groups = _group_batchable(batch)
        if len(groups) == 1 and len(groups[0]) > 1:
            # The common case, a batch of deliveries: one call, no SAVEPOINT.  If it fails,
            # the transaction is rolled back whole and every item runs again alone below.
            if self._commit_sole_group_thd(conn, groups[0]):
                return
            groups = [[w] for w in batch]
        # A lone write needs no SAVEPOINT either: if it fails, nothing is committed.
        isolate = len(groups) > 1
        with self._begin_with_retry(conn) as txn:
            for group in groups:
                if len(group) > 1 and self._run_group_thd(conn, group, savepoint=True):
                    continue
                for w in group:
                    self._run_isolated_thd(conn, w, isolate or len(group) > 1)
            conn.info.pop("_write_hooks", None)
            if not any(w.ok for w in batch):
                txn.rollback()
                return
            self._check_still_in_transaction(conn)
            txn.commit()
        self._count(batch)

    def _commit_sole_group_thd(self, conn: Connection, group: list[_Write]) -> bool:
        with self._begin_with_retry(conn) as txn:
            ok = self._run_group_thd(conn, group, savepoint=False)
            conn.info.pop("_write_hooks", None)
            if not ok:
                txn.rollback()
                return False
            self._check_still_in_transaction(conn)
            txn.commit()
        self._count(group)
        return True

    def _count(self, batch: list[_Write]) -> None:
        self.commits += 1
        self.writes += sum(1 for w in batch if w.ok)

    def _run_isolated_thd(self, conn: Connection, w: _Write, isolate: bool) -> None:
        conn.info["_write_hooks"] = (w.commit_hooks, w.rollback_hooks)
        try:
            self._run_write_thd(conn, w, isolate)
        except TransactionLost:
            raise
        except Exception:
            w.result = Failure()
            self._run_hooks(w.rollback_hooks)
            w.commit_hooks.clear()
            if isolate:
                self._check_still_in_transaction(conn)

    @staticmethod
    def _check_still_in_transaction(conn: Connection) -> None:
        """SQLite rolls back a whole transaction by itself on some errors (SQLITE_FULL,
        IOERR, BUSY...); then nothing before is kept and the batch must fail as a whole."""
        dbapi = conn.connection.dbapi_connection
        if getattr(dbapi, "in_transaction", True) is False:
            raise TransactionLost("the database rolled the transaction back")

    @staticmethod
    def _run_group_thd(conn: Connection, group: list[_Write], savepoint: bool) -> bool:
        """One ``batch_fn`` call for the whole group; False (nothing kept) if it failed.

        Without ``savepoint`` a failure leaves the transaction for the caller to roll back.
        """
        first = group[0]
        conn.info["_write_hooks"] = (first.commit_hooks, first.rollback_hooks)
        if savepoint:
            conn.exec_driver_sql("SAVEPOINT g")
        try:
            results = first.batch_fn(conn, [w.item for w in group])
            if len(results) != len(group):
                raise AssertionError(f"{first.batch_fn!r} gave {len(results)} results")
        except Exception:
            log.warn(
                "a batched write failed ({error}); running its {n} items one by one",
                error=Failure().getErrorMessage(),
                n=len(group),
            )
            if savepoint:
                _rollback_to_savepoint(conn, "g")
                Database._check_still_in_transaction(conn)
            Database._run_hooks(first.rollback_hooks)
            first.commit_hooks.clear()
            first.rollback_hooks.clear()
            return False
        if savepoint:
            conn.exec_driver_sql("RELEASE SAVEPOINT g")
        for w, result in zip(group, results, strict=True):
            w.result, w.ok = result, True
        return True

    @staticmethod
    def _run_write_thd(conn: Connection, w: _Write, isolate: bool) -> None:
        # Plain SAVEPOINT statements: SQLAlchemy's begin_nested() costs several times more
        # Python per write, and this runs for every write on the one writer thread.
        if isolate:
            conn.exec_driver_sql("SAVEPOINT w")
        try:
            w.result = w.fn(conn)
        except BaseException:
            if isolate:
                _rollback_to_savepoint(conn, "w")
            raise
        if isolate:
            conn.exec_driver_sql("RELEASE SAVEPOINT w")
        w.ok = True

    def _begin_with_retry(self, conn: Connection):
        """BEGIN (IMMEDIATE on SQLite); retry with backoff while another process holds the lock."""
        delay = 0.01
        for attempt in range(8):
            try:
                return conn.begin()
            except OperationalError as e:
                if "locked" not in str(e) or attempt == 7:
                    raise
                conn.rollback()
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    @staticmethod
    def _run_hooks(hooks: list[Callable[[], None]]) -> None:
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.failure("store commit hook failed")

    @staticmethod
    def _fire(batch: list[_Write]) -> None:
        for w in batch:
            if w.ok:
                w.deferred.callback(w.result)
            else:
                w.deferred.errback(w.result)


def _group_batchable(batch: list[_Write]) -> list[list[_Write]]:
    """Consecutive writes with the same ``batch_fn`` form one group; others stand alone."""
    groups: list[list[_Write]] = []
    for w in batch:
        if w.batch_fn is not None and groups and groups[-1][0].batch_fn is w.batch_fn:
            groups[-1].append(w)
        else:
            groups.append([w])
    return groups


def _rollback_to_savepoint(conn: Connection, name: str) -> None:
    """Undo one write or batch; if even that fails, the whole transaction is lost."""
    try:
        conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
        conn.exec_driver_sql(f"RELEASE SAVEPOINT {name}")
    except Exception as e:
        raise TransactionLost(f"cannot roll back to savepoint {name}: {e}") from e
