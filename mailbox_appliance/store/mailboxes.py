"""Mailboxes, messages and mailbox entries: ``*_txn`` functions used by delivery, IMAP and POP3.

A message row is one stored message (one blob, its cached ENVELOPE and MIME structure); a
mailbox entry puts it in a mailbox under a UID with flags.  One message serves every recipient
it was delivered to: its refcount counts entries, and it holds one reference to its blob.
Modseqs (RFC 7162) are journal sequence numbers, so they are ordered across the whole store.
"""

from __future__ import annotations

import datetime
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.engine import Connection, Row

from mailbox_appliance.store import schema
from mailbox_appliance.store.blob_rows import decref_txn, utcnow
from mailbox_appliance.store.journal import record_many_txn, record_txn
from mailbox_appliance.store.notify import changed_txn

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
    x = schema.mailbox_expunges
    conn.execute(delete(x).where(x.c.mailbox_id.in_(box_ids)))
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


# -- shared by folders.py and entries.py ---------------------------------------------------

_m, _e, _msg, _a, _blobs = (
    schema.mailboxes,
    schema.mailbox_entries,
    schema.messages,
    schema.accounts,
    schema.blobs,
)
_BY_NAME = select(_m).where(
    _m.c.account_id == bindparam("m_account"), _m.c.name == bindparam("m_name")
)
_BY_ID = select(_m).where(_m.c.id == bindparam("m_id"))


def mailbox_txn(conn: Connection, account_id: int, name: str) -> Row | None:
    """The mailbox row named ``name`` of an account, or None."""
    return conn.execute(_BY_NAME, {"m_account": account_id, "m_name": name}).first()


def mailbox_by_id_txn(conn: Connection, mailbox_id: int) -> Row | None:
    return conn.execute(_BY_ID, {"m_id": mailbox_id}).first()


def split_structure(structure: dict[str, Any] | None) -> tuple[Any, Any]:
    """``(envelope, mime_structure)`` for the message row from a parsed structure dict.

    The envelope (a string, the IMAP ENVELOPE) has a column of its own; the rest of the dict
    (BODYSTRUCTURE and whatever else the parser caches) goes to ``mime_structure``.
    """
    if structure is None:
        return None, None
    rest = {key: value for key, value in structure.items() if key != "envelope"}
    return structure.get("envelope"), rest


_DELETE_ENTRY = delete(_e).where(_e.c.id == bindparam("e_id"))
_INSERT_TOMBSTONE = schema.mailbox_expunges.insert()
_SET_HIGHEST = (
    update(_m).where(_m.c.id == bindparam("m_id")).values(highestmodseq=bindparam("m_modseq"))
)


def drop_entries_txn(
    conn: Connection, mailbox_id: int, rows: Sequence[Row], modseqs: Sequence[int]
) -> None:
    """Remove entries (rows with ``id`` and ``uid``), leaving a tombstone for each.

    ``modseqs`` are the journal sequence numbers of their ``message.expunge`` changes, in
    order; the mailbox's HIGHESTMODSEQ becomes the last (RFC 7162 §3.1.9: an expunge is a
    change).  The messages themselves are the caller's: see ``release_messages_txn``.
    """
    conn.execute(_DELETE_ENTRY, [{"e_id": row.id} for row in rows])
    conn.execute(
        _INSERT_TOMBSTONE,
        [
            {"mailbox_id": mailbox_id, "uid": row.uid, "modseq": modseq}
            for row, modseq in zip(rows, modseqs, strict=True)
        ],
    )
    conn.execute(_SET_HIGHEST, {"m_id": mailbox_id, "m_modseq": modseqs[-1]})


_ADD_MESSAGE_REFS = (
    update(_msg)
    .where(_msg.c.id == bindparam("g_id"))
    .values(refcount=_msg.c.refcount + bindparam("g_count"))
)
_DEAD_MESSAGES = select(_msg.c.id, _msg.c.blob_sha256).where(
    _msg.c.id.in_(bindparam("g_ids", expanding=True)), _msg.c.refcount <= 0
)
_DELETE_MESSAGE = delete(_msg).where(_msg.c.id == bindparam("g_id"))
# The batch form of blob_rows.decref_txn: one executemany for a whole expunge.
_DECREF_BLOB = (
    update(_blobs)
    .where(_blobs.c.sha256 == bindparam("b_sha256"))
    .values(refcount=_blobs.c.refcount - bindparam("b_count"))
)
_MARK_BLOB_ZERO = (
    update(_blobs)
    .where(_blobs.c.sha256 == bindparam("b_sha256"), _blobs.c.refcount <= 0)
    .values(refcount=0, zero_since=bindparam("b_now"))
)
_ADD_USED = (
    update(_a)
    .where(_a.c.id == bindparam("u_account"))
    .values(used_bytes=_a.c.used_bytes + bindparam("u_size"))
)
#: Message ids per SELECT when looking for messages that lost their last entry.
_CHUNK = 500


def add_message_refs_txn(conn: Connection, counts: dict[int, int]) -> None:
    """``counts[message_id]`` more mailbox entries point at each message."""
    if counts:
        conn.execute(_ADD_MESSAGE_REFS, [{"g_id": m, "g_count": n} for m, n in counts.items()])


def release_messages_txn(conn: Connection, counts: dict[int, int]) -> int:
    """``counts[message_id]`` entries of each message went; returns how many messages went.

    A message whose last entry went is deleted and drops its reference to its blob, which
    garbage collection takes after the grace period (design rule 4).
    """
    if not counts:
        return 0
    conn.execute(_ADD_MESSAGE_REFS, [{"g_id": m, "g_count": -n} for m, n in counts.items()])
    ids = sorted(counts)
    dead: list[Row] = []
    for start in range(0, len(ids), _CHUNK):
        dead += conn.execute(_DEAD_MESSAGES, {"g_ids": ids[start : start + _CHUNK]}).all()
    if not dead:
        return 0
    conn.execute(_DELETE_MESSAGE, [{"g_id": row.id} for row in dead])
    blobs: dict[str, int] = {}
    for row in dead:
        blobs[row.blob_sha256] = blobs.get(row.blob_sha256, 0) + 1
    conn.execute(_DECREF_BLOB, [{"b_sha256": sha, "b_count": n} for sha, n in blobs.items()])
    now = utcnow()
    conn.execute(_MARK_BLOB_ZERO, [{"b_sha256": sha, "b_now": now} for sha in blobs])
    return len(dead)


def add_used_txn(conn: Connection, account_id: int, size: int) -> None:
    """Count ``size`` more (or, negative, fewer) bytes against the account's quota."""
    if size:
        conn.execute(_ADD_USED, {"u_account": account_id, "u_size": size})


#: Entries with what moving or releasing them needs; ``:e_mailbox`` is the mailbox.
ENTRY_ROWS = (
    select(
        _e.c.uid,
        _e.c.id,
        _e.c.flags,
        _e.c.keywords,
        _e.c.message_id,
        _msg.c.size,
        _msg.c.blob_sha256,
    )
    .select_from(_e.join(_msg, _msg.c.id == _e.c.message_id))
    .where(_e.c.mailbox_id == bindparam("e_mailbox"))
)
_INSERT_ENTRY = _e.insert()
_ADVANCE = (
    update(_m)
    .where(_m.c.id == bindparam("m_id"))
    .values(uidnext=bindparam("m_uidnext"), highestmodseq=bindparam("m_modseq"))
)


def all_entry_rows_txn(conn: Connection, mailbox_id: int) -> list[Row]:
    return conn.execute(ENTRY_ROWS.order_by(_e.c.uid), {"e_mailbox": mailbox_id}).all()


def transfer_txn(
    conn: Connection, src: Row, dest: Row, rows: Sequence[Row], move: bool
) -> list[tuple[int, int]]:
    """Put the entries ``rows`` of ``src`` into ``dest`` under new UIDs, flags kept; with
    ``move`` the sources are expunged (tombstones) in the same transaction (RFC 6851).

    Returns ``(source uid, new uid)`` pairs (RFC 4315 COPYUID).  Quota is the caller's.
    """
    first = dest.uidnext
    pairs = [(row.uid, first + i) for i, row in enumerate(rows)]
    changes = [
        (
            "message.add",
            {
                "mailbox_id": dest.id,
                "uid": uid,
                "message_id": row.message_id,
                "sha256": row.blob_sha256,
            },
        )
        for row, (_, uid) in zip(rows, pairs, strict=True)
    ]
    if move:
        changes += [
            (
                "message.expunge",
                {"mailbox_id": src.id, "uid": row.uid, "message_id": row.message_id},
            )
            for row in rows
        ]
    modseqs = record_many_txn(conn, changes)
    conn.execute(
        _INSERT_ENTRY,
        [
            {
                "mailbox_id": dest.id,
                "uid": uid,
                "message_id": row.message_id,
                "flags": row.flags,
                "keywords": row.keywords,
                "modseq": modseq,
            }
            for row, (_, uid), modseq in zip(rows, pairs, modseqs[: len(rows)], strict=True)
        ],
    )
    conn.execute(
        _ADVANCE,
        {"m_id": dest.id, "m_uidnext": first + len(rows), "m_modseq": modseqs[len(rows) - 1]},
    )
    if move:  # each message keeps its number of entries, and the account its use
        drop_entries_txn(conn, src.id, rows, modseqs[len(rows) :])
        changed_txn(conn, [(dest.account_id, dest.id), (src.account_id, src.id)])
    else:
        add_message_refs_txn(conn, Counter(row.message_id for row in rows))
        add_used_txn(conn, dest.account_id, sum(row.size for row in rows))
        changed_txn(conn, [(dest.account_id, dest.id)])
    return pairs
