"""Making SQLite commits durable off the writer thread: pipelined group commit.

With ``synchronous=FULL`` SQLite fsyncs its write-ahead log inside every COMMIT, on the one
writer thread, and no other write can run meanwhile.  Instead the store runs SQLite with
``synchronous=NORMAL`` (a COMMIT appends the transaction to the WAL without fsync; checkpoints
still fsync the WAL before copying it and the database after) and fsyncs the WAL file itself
on a thread of its own, *after* the commit and *before* any caller of that commit hears back.
The writer meanwhile runs the next batch.  An acknowledged transaction is therefore always in
a WAL that was fsync'd after its commit frame was written, or already checkpointed into a
synced database file: exactly what ``synchronous=FULL`` promises, with the fsync of one batch
overlapping the work of the next.

Readers may see a committed transaction a moment before its fsync returns; no acknowledgement
(a 250, an OK, a 204) is given before it.
"""

from __future__ import annotations

import os

from sqlalchemy.engine import make_url


def sqlite_file(url: str) -> str | None:
    """The database file of an SQLite URL, or None (another database, or in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return os.path.abspath(parsed.database)


class WalSyncer:
    """fsyncs ``<database>-wal``; call ``sync_thd`` on a thread after each commit."""

    def __init__(self, database_path: str):
        self.wal_path = database_path + "-wal"
        self._fd: int | None = None
        self._inode: int | None = None

    def sync_thd(self) -> None:
        """Make every commit made before this call durable."""
        try:
            inode = os.stat(self.wal_path).st_ino
        except FileNotFoundError:
            return  # no WAL: everything was checkpointed into the (synced) database file
        if inode != self._inode:
            self.close()
            self._fd = os.open(self.wal_path, os.O_RDONLY | os.O_CLOEXEC)
            self._inode = inode
            # A new WAL file must survive a power loss as a directory entry too.
            directory = os.open(os.path.dirname(self.wal_path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        assert self._fd is not None
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._inode = None
