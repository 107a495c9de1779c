"""Mailboxes, messages and mailbox entries: ``*_txn`` functions used by delivery, IMAP and POP3.

A message row is one stored message (one blob, its cached ENVELOPE and MIME structure); a
mailbox entry puts it in a mailbox under a UID with flags.  One message serves every recipient
it was delivered to: its refcount counts entries, and it holds one reference to its blob.
Modseqs (RFC 7162) are journal sequence numbers, so they are ordered across the whole store.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from mailbox_appliance.store import schema
from mailbox_appliance.store.blob_rows import decref_txn
from mailbox_appliance.store.journal import record_txn

#: RFC 3501 §2.3.2 system flags, stored as bits of ``mailbox_entries.flags``.
SYSTEM_FLAGS = {
    "\\Seen": 1,
    "\\Answered": 2,
    "\\Flagged": 4,
    "\\Deleted": 8,
    "\\Draft": 16,
}
UIDVALIDITY_KEY = "next_uidvalidity"


def flag_bits(flags: Sequence[str]) -> tuple[int, str]:
    """Split IMAP flags into the system-flag bit set and the keyword string."""
    bits, keywords = 0, []
    for flag in flags:
        bit = next((b for name, b in SYSTEM_FLAGS.items() if name.lower() == flag.lower()), None)
        if bit is not None:
            bits |= bit
        elif flag not in keywords:
            keywords.append(flag)
    return bits, " ".join(keywords)


def _next_uidvalidity_txn(conn: Connection) -> int:
    """A UIDVALIDITY never given out before in this store (RFC 3501 §2.3.1.1)."""
    meta = schema.store_meta
    current = conn.execute(select(meta.c.value).where(meta.c.key == UIDVALIDITY_KEY)).scalar()
    value = max(int(current) if current else 0, int(time.time()) & 0x7FFFFFFF, 1)
    if current is None:
        conn.execute(meta.insert().values(key=UIDVALIDITY_KEY, value=str(value + 1)))
    else:
        conn.execute(update(meta).where(meta.c.key == UIDVALIDITY_KEY).values(value=str(value + 1)))
    return value


def create_mailbox_txn(
    conn: Connection, account_id: int, name: str, special_use: str | None = None
) -> int:
    uidvalidity = _next_uidvalidity_txn(conn)
    mailbox_id = conn.execute(
        schema.mailboxes.insert().values(
            account_id=account_id,
            name=name,
            uidvalidity=uidvalidity,
            uidnext=1,
            highestmodseq=1,
            subscribed=True,
            special_use=special_use,
            created=datetime.datetime.now(datetime.UTC),
        )
    ).inserted_primary_key[0]
    record_txn(
        conn,
        "mailbox.create",
        {"id": mailbox_id, "account_id": account_id, "name": name, "uidvalidity": uidvalidity},
    )
    return mailbox_id


def list_mailboxes_txn(conn: Connection, account_id: int) -> list[dict[str, Any]]:
    m = schema.mailboxes
    rows = conn.execute(select(m).where(m.c.account_id == account_id).order_by(m.c.name))
    return [dict(row._mapping) for row in rows]


def delete_account_mail_txn(conn: Connection, account_id: int) -> None:
    """Remove every mailbox and entry of an account, releasing messages and blobs."""
    m, e, msg = schema.mailboxes, schema.mailbox_entries, schema.messages
    box_ids = select(m.c.id).where(m.c.account_id == account_id).scalar_subquery()
    counts = conn.execute(
        select(e.c.message_id, func.count())
        .where(e.c.mailbox_id.in_(box_ids))
        .group_by(e.c.message_id)
    ).all()
    conn.execute(delete(e).where(e.c.mailbox_id.in_(box_ids)))
    for message_id, count in counts:
        conn.execute(
            update(msg).where(msg.c.id == message_id).values(refcount=msg.c.refcount - count)
        )
        row = conn.execute(
            select(msg.c.refcount, msg.c.blob_sha256).where(msg.c.id == message_id)
        ).one()
        if row.refcount <= 0:
            conn.execute(delete(msg).where(msg.c.id == message_id))
            decref_txn(conn, row.blob_sha256)
    conn.execute(delete(m).where(m.c.account_id == account_id))
