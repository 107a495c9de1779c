"""The change journal (design rule 6): an ordered log written in every mutation's transaction.

The journal feeds replication to the standby and change notification (IMAP IDLE, CONDSTORE
modseqs).  Its ``seq`` is the order of changes; ``epoch`` is the pairing epoch the change was
made in, so a standby can tell changes of different active periods apart.
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import BigInteger, bindparam, cast, func, select
from sqlalchemy.engine import Connection

from mailbox_appliance.store import schema

EPOCH_KEY = "epoch"


def _epoch_query():
    meta = schema.store_meta
    return select(cast(meta.c.value, BigInteger)).where(meta.c.key == EPOCH_KEY).scalar_subquery()


# Built once: every mutation runs it (see blob_rows on why statements are prebuilt).
_INSERT = schema.journal.insert().values(
    epoch=func.coalesce(_epoch_query(), 1),
    kind=bindparam("j_kind"),
    payload=bindparam("j_payload", type_=schema.journal.c.payload.type),
    created=bindparam("j_created"),
)


def record_txn(conn: Connection, kind: str, payload: dict[str, Any]) -> int:
    """Append one change to the journal; returns its sequence number."""
    result = conn.execute(
        _INSERT,
        {"j_kind": kind, "j_payload": payload, "j_created": datetime.datetime.now(datetime.UTC)},
    )
    return result.inserted_primary_key[0]


_EPOCH = select(cast(schema.store_meta.c.value, BigInteger)).where(
    schema.store_meta.c.key == EPOCH_KEY
)
_INSERT_MANY = schema.journal.insert().returning(schema.journal.c.seq, sort_by_parameter_order=True)
_INSERT_PLAIN = schema.journal.insert()
_LAST_SEQ = select(func.max(schema.journal.c.seq))


def record_many_txn(conn: Connection, changes: list[tuple[str, dict[str, Any]]]) -> list[int]:
    """Append several changes in one statement; returns their sequence numbers, in order."""
    if not changes:
        return []
    epoch = conn.execute(_EPOCH).scalar() or 1
    now = datetime.datetime.now(datetime.UTC)
    rows = [{"epoch": epoch, "kind": k, "payload": p, "created": now} for k, p in changes]
    if conn.dialect.name == "sqlite" and len(rows) > 1:
        # SQLAlchemy can only keep RETURNING in parameter order on SQLite by inserting one
        # row at a time.  The store has one writer, and SQLite gives a rowid table's new
        # rows max(rowid) + 1, so one executemany yields the next len(rows) numbers in order.
        last = conn.execute(_LAST_SEQ).scalar() or 0
        conn.execute(_INSERT_PLAIN, rows)
        if conn.execute(_LAST_SEQ).scalar() != last + len(rows):
            raise RuntimeError("journal sequence numbers were not allocated in order")
        return list(range(last + 1, last + len(rows) + 1))
    return list(conn.execute(_INSERT_MANY, rows).scalars())


def changes_since_txn(conn: Connection, seq: int, limit: int = 1000) -> list[dict[str, Any]]:
    """Journal entries after ``seq``, oldest first, as plain dicts."""
    j = schema.journal
    rows = conn.execute(select(j).where(j.c.seq > seq).order_by(j.c.seq).limit(limit))
    return [dict(row._mapping) for row in rows]
