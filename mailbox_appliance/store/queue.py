"""The outbound queue's persistent state: rows waiting to leave, and bounces owed.

Relay rows are written by delivery (``delivery._enqueue_txn``) in the transaction that accepts
the message; each row holds one reference to the message's blob, so the content stays until
the row is done.  The queue runner of the outbound issue consumes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from mailbox_appliance.store import schema
from mailbox_appliance.store.blob_rows import BlobRef, reference_many_txn, utcnow
from mailbox_appliance.store.journal import record_many_txn

_q = schema.outbound_queue


def add_bounces_txn(
    conn: Connection, ref: BlobRef, sender: str, failures: Sequence[tuple[str, str]]
) -> int:
    """Owe ``sender`` a delivery status notification for each (recipient, reason).

    Used when a message was accepted for some recipients and then could not be filed for
    others (RFC 5321 §6.1: once accepted, a failure must be reported, not dropped).
    """
    if not sender or not failures:
        return 0
    now = utcnow()
    rows = [
        {
            "kind": "bounce",
            "blob_sha256": ref.sha256,
            "skip_bytes": 0,
            "sender": sender,
            "recipient": recipient,
            "account_id": None,
            "created": now,
            "next_attempt": now,
            "attempts": 0,
            "reason": reason,
        }
        for recipient, reason in failures
    ]
    changes = reference_many_txn(conn, [ref] * len(rows))
    conn.execute(_q.insert(), rows)
    changes += [("queue.add", {"sha256": ref.sha256, "recipient": r["recipient"]}) for r in rows]
    record_many_txn(conn, changes)
    return len(rows)


def list_queue_txn(conn: Connection) -> list[dict[str, Any]]:
    """Every queued row, oldest first, with the size of its content."""
    b = schema.blobs
    query = (
        select(
            _q.c.id,
            _q.c.kind,
            _q.c.sender,
            _q.c.recipient,
            _q.c.created,
            _q.c.next_attempt,
            _q.c.attempts,
            _q.c.reason,
            (b.c.size - _q.c.skip_bytes).label("size"),
        )
        .join(b, b.c.sha256 == _q.c.blob_sha256)
        .order_by(_q.c.id)
    )
    return [dict(row._mapping) for row in conn.execute(query)]
