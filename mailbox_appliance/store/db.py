"""The database engine, its threads, and group commit.

All SQL runs off the reactor thread (design rule 1): reads on a pool of reader threads, writes
on one writer thread.  The writer is where group commit happens (design rule 5): every write
function that is waiting when the writer becomes free runs in one transaction, each inside its
own SAVEPOINT (so one failing write does not fail its neighbours), and that transaction is
committed once (one fsync).  Each caller's Deferred fires only after the commit has returned,
that is, after the data is durable.

Driver quirks live here and nowhere else: SQLite's WAL mode, ``synchronous=FULL``,
``busy_timeout``, SQLAlchemy-controlled BEGIN (so SAVEPOINTs work with pysqlite) and
``BEGIN IMMEDIATE`` for the writer (so it never has to upgrade a read lock and deadlock).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import threadable
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")
log = Logger()

#: How many waiting writes may share one transaction at most.
MAX_BATCH = 512


class StoreStopped(RuntimeError):
    """A read or write arrived after the store was stopped (it would never have run)."""


class SQLOnReactorThread(RuntimeError):
    """SQL was about to run on the reactor thread, which must never block (design rule 1)."""


def on_commit(conn: Connection, callback: Callable[[], None]) -> None:
    """Run ``callback`` on the writer thread once the current write is durably committed."""
    conn.info["_write_hooks"][0].append(callback)


def on_rollback(conn: Connection, callback: Callable[[], None]) -> None:
    """Run ``callback`` on the writer thread if the current write is rolled back."""
    conn.info["_write_hooks"][1].append(callback)


def make_engine(url: str, *, guard_reactor_thread: bool = True) -> Engine:
    """An engine for ``url`` with this project's settings for its driver."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=32,
            max_overflow=32,
        )
        _configure_sqlite(engine)
    else:
        engine = create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True)
    if guard_reactor_thread:

        @event.listens_for(engine, "before_cursor_execute")
        def _refuse_reactor_thread(conn, cursor, statement, parameters, context, executemany):
            if threadable.isInIOThread():
                raise SQLOnReactorThread(f"SQL on the reactor thread: {statement[:80]!r}")

    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record):
        # Take BEGIN away from sqlite3 so SAVEPOINT and transactional DDL behave.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("writer") else "BEGIN")


class _Write:
    __slots__ = ("fn", "deferred", "result", "ok", "commit_hooks", "rollback_hooks")

    def __init__(self, fn: Callable[[Connection], Any], deferred: Deferred):
        self.fn = fn
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
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        self._readers = ThreadPool(minthreads=1, maxthreads=reader_threads, name=f"{name}-read")
        self._writer = ThreadPool(minthreads=1, maxthreads=1, name=f"{name}-write")
        self._pending: list[_Write] = []
        self._lock = threading.Lock()
        self._writer_conn: Connection | None = None
        self.commits = 0  # durable commits made; tests and metrics read it
        self.writes = 0  # write functions committed
        self._running = False

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._readers.start()
        self._writer.start()
        self._running = True

    def stop(self) -> Deferred:
        """Finish queued writes, then stop the threads and close every connection."""
        if not self._running:
            return succeed(None)
        self._running = False

        def _close():
            if self._writer_conn is not None:
                self._writer_conn.close()
                self._writer_conn = None

        d = deferToThreadPool(self.reactor, self._writer, _close)

        def _stop_pools(result):
            self._readers.stop()
            self._writer.stop()
            self.engine.dispose()
            return result

        return d.addBoth(_stop_pools)

    # -- the two doors ---------------------------------------------------------------------

    def read(self, fn: Callable[[Connection], T]) -> Deferred[T]:
        """Run ``fn(conn)`` in a read transaction on a reader thread."""
        if not self._running:
            return fail(StoreStopped("the store is stopped"))
        return deferToThreadPool(self.reactor, self._readers, self._read_thd, fn)

    def write(self, fn: Callable[[Connection], T]) -> Deferred[T]:
        """Run ``fn(conn)`` in the next group commit; fires after the commit is durable."""
        if not self._running:
            return fail(StoreStopped("the store is stopped; nothing was written"))
        d: Deferred[T] = Deferred()
        with self._lock:
            self._pending.append(_Write(fn, d))
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
        if not batch:
            return  # an earlier drain already took these writes
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
        for w in batch:
            if w.ok:
                self._run_hooks(w.commit_hooks)
        self.reactor.callFromThread(self._fire, batch)

    def _commit_batch_thd(self, batch: list[_Write]) -> None:
        conn = self._connection_thd()
        with self._begin_with_retry(conn) as txn:
            for w in batch:
                conn.info["_write_hooks"] = (w.commit_hooks, w.rollback_hooks)
                try:
                    with conn.begin_nested():
                        w.result = w.fn(conn)
                    w.ok = True
                except Exception:
                    w.result = Failure()
                    self._run_hooks(w.rollback_hooks)
                    w.commit_hooks.clear()
            conn.info.pop("_write_hooks", None)
            txn.commit()
        self.commits += 1
        self.writes += sum(1 for w in batch if w.ok)

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
