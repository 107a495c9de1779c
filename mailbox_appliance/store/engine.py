"""Engines: where every database driver quirk lives, and nowhere else.

SQLite: WAL mode, ``synchronous`` (FULL, or NORMAL when the store fsyncs the WAL itself, see
walsync.py), ``busy_timeout``, foreign keys, SQLAlchemy-controlled BEGIN (so SAVEPOINTs work
with pysqlite) and ``BEGIN IMMEDIATE`` for the writer connection (so it never upgrades a read
lock and deadlocks).  PostgreSQL: a connection pool with pre-ping.  Every engine the store
runs refuses SQL on the reactor thread (design rule 1).
"""

from __future__ import annotations

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from twisted.python import threadable


class SQLOnReactorThread(RuntimeError):
    """SQL was about to run on the reactor thread, which must never block (design rule 1)."""


def make_engine(
    url: str, *, guard_reactor_thread: bool = True, wal_synced_by_caller: bool = False
) -> Engine:
    """An engine for ``url`` with this project's settings for its driver.

    ``wal_synced_by_caller``: SQLite commits do not fsync; the caller fsyncs the WAL before it
    reports a commit as done (see walsync.py).  Without it every COMMIT fsyncs.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=32,
            max_overflow=32,
        )
        _configure_sqlite(engine, "NORMAL" if wal_synced_by_caller else "FULL")
    else:
        engine = create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True)
    if guard_reactor_thread:

        @event.listens_for(engine, "before_cursor_execute")
        def _refuse_reactor_thread(conn, cursor, statement, parameters, context, executemany):
            if threadable.isInIOThread():
                raise SQLOnReactorThread(f"SQL on the reactor thread: {statement[:80]!r}")

    return engine


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record):
        # Take BEGIN away from sqlite3 so SAVEPOINT and transactional DDL behave.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("writer") else "BEGIN")
