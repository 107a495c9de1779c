"""A mailbox's entries as IMAP sees them: select, fetch, flags, copy/move, expunge, append.

``*_txn`` functions for the IMAP server (RFC 3501, CONDSTORE RFC 7162, UIDPLUS RFC 4315,
MOVE RFC 6851).  An entry is ``(uid, flag_bits, keywords, modseq)``; modseqs are journal
sequence numbers (see mailboxes.py), so every change below journals first and stamps its
entries with the sequence numbers it got.  Expunged entries leave tombstones
(``mailbox_expunges``), so "what changed since modseq N" includes what went.

Mailboxes hold up to tens of thousands of entries and ``1:*`` is a common message set, so
each operation is a fixed handful of statements (``executemany`` for the per-entry writes)
and a UID set is never sent as thousands of bind parameters: a large set reads the UID range
and filters in Python (:func:`_uid_rows`).
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql import Select

from mailbox_appliance.errors import MailboxError, NoSuchAccount
from mailbox_appliance.store import schema
from mailbox_appliance.store.delivery import GONE, OVER_QUOTA, Delivery, deliver_many_txn
from mailbox_appliance.store.journal import record_many_txn, record_txn
from mailbox_appliance.store.mailboxes import (
    ENTRY_ROWS,
    SYSTEM_FLAGS,
    add_used_txn,
    drop_entries_txn,
    flag_bits,
    mailbox_by_id_txn,
    mailbox_txn,
    release_messages_txn,
    split_structure,
    transfer_txn,
)
from mailbox_appliance.store.notify import changed_txn
from mailbox_appliance.store.quota import QuotaPolicy, admit

#: ``(uid, flag_bits, keywords, modseq)``
Entry = tuple[int, int, str, int]

_m, _e, _msg, _x, _a = (
    schema.mailboxes,
    schema.mailbox_entries,
    schema.messages,
    schema.mailbox_expunges,
    schema.accounts,
)
_ENTRY = (_e.c.uid, _e.c.flags, _e.c.keywords, _e.c.modseq)
#: Entries with their message's size: a session answers FLAGS/RFC822.SIZE listings from them.
_ENTRY_SIZED = (*_ENTRY, _msg.c.size)
_WITH_MESSAGE = _e.join(_msg, _msg.c.id == _e.c.message_id)
SEEN, DELETED = SYSTEM_FLAGS["\\Seen"], SYSTEM_FLAGS["\\Deleted"]
#: Up to this many UIDs go to the database as a list; more read their UID range instead.
IN_LIST_MAX = 100


def _nonexistent(what: Any) -> MailboxError:
    return MailboxError(MailboxError.NONEXISTENT, f"no such mailbox: {what}")


def _snapshot(conn: Connection) -> None:
    """Let the statements of one read see one snapshot of the database.

    SQLite's read transactions already do; PostgreSQL's default READ COMMITTED gives each
    statement its own, so a mailbox row and its entries could disagree.  Only on readers:
    the writer is the only one changing mailboxes, and has run statements already.
    """
    if conn.dialect.name == "postgresql" and not conn.info.get("writer"):
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


def _entries(rows: Iterable[Row]) -> list[Entry]:
    return [(row[0], row[1], row[2], row[3]) for row in rows]


def _sized_entries(rows: Iterable[Row]) -> tuple[list[Entry], list[int]]:
    """Entries, and their message sizes in the same order."""
    rows = list(rows)
    return _entries(rows), [row[4] for row in rows]


def _uid_rows(conn: Connection, query: Select, uids: Collection[int]) -> list[Row]:
    """Run ``query`` (which selects ``uid`` first) for the entries with these UIDs only."""
    wanted = set(uids)
    if not wanted:
        return []
    if len(wanted) <= IN_LIST_MAX:
        return conn.execute(query.where(_e.c.uid.in_(sorted(wanted))).order_by(_e.c.uid)).all()
    rows = conn.execute(
        query.where(_e.c.uid.between(min(wanted), max(wanted))).order_by(_e.c.uid)
    ).all()
    return [row for row in rows if row.uid in wanted]


# -- reading ------------------------------------------------------------------------------


def status_txn(conn: Connection, account_id: int, name: str) -> dict[str, Any]:
    """RFC 3501 §6.3.10 STATUS items of one mailbox, plus its HIGHESTMODSEQ and size."""
    _snapshot(conn)
    box = mailbox_txn(conn, account_id, name)
    if box is None:
        raise _nonexistent(name)
    counts = conn.execute(
        select(
            func.count(),
            func.sum(case((_e.c.uid >= box.first_recent, 1), else_=0)),
            func.sum(case((_e.c.flags.bitwise_and(SEEN) == 0, 1), else_=0)),
            func.sum(case((_e.c.flags.bitwise_and(DELETED) != 0, 1), else_=0)),
            func.sum(_msg.c.size),
        )
        .select_from(_e.join(_msg, _msg.c.id == _e.c.message_id))
        .where(_e.c.mailbox_id == box.id)
    ).one()
    messages, recent, unseen, deleted, size = (int(value or 0) for value in counts)
    return {
        "id": box.id,
        "messages": messages,
        "recent": recent,
        "uidnext": box.uidnext,
        "uidvalidity": box.uidvalidity,
        "unseen": unseen,
        "deleted": deleted,
        "highestmodseq": box.highestmodseq,
        "size": size,
    }


def select_txn(conn: Connection, account_id: int, name: str) -> dict:
    """The mailbox and all its entries (with their sizes), for SELECT or EXAMINE.

    SELECT then takes the \\Recent messages for its session with ``claim_recent_txn``
    (RFC 3501 §2.3.2).
    """
    _snapshot(conn)
    box = mailbox_txn(conn, account_id, name)
    if box is None:
        raise _nonexistent(name)
    entries, sizes = _sized_entries(
        conn.execute(
            select(*_ENTRY_SIZED)
            .select_from(_WITH_MESSAGE)
            .where(_e.c.mailbox_id == box.id)
            .order_by(_e.c.uid)
        )
    )
    return {
        "id": box.id,
        "name": box.name,
        "uidvalidity": box.uidvalidity,
        "uidnext": box.uidnext,
        "highestmodseq": box.highestmodseq,
        "special_use": box.special_use,
        "first_recent": box.first_recent,
        "entries": entries,
        "sizes": sizes,
    }


def _set_first_recent_txn(conn: Connection, mailbox_id: int, first_recent: int) -> None:
    conn.execute(update(_m).where(_m.c.id == mailbox_id).values(first_recent=first_recent))
    record_txn(conn, "mailbox.recent", {"id": mailbox_id, "first_recent": first_recent})


def claim_recent_txn(conn: Connection, mailbox_id: int, upto_uidnext: int) -> int:
    """Claim \\Recent for UIDs below ``upto_uidnext`` (RFC 3501 §2.3.2); returns the old
    ``first_recent``: this session's recent UIDs are those from it up to ``upto_uidnext``."""
    old = conn.execute(select(_m.c.first_recent).where(_m.c.id == mailbox_id)).scalar()
    if old is None:
        raise _nonexistent(mailbox_id)
    if upto_uidnext > old:
        _set_first_recent_txn(conn, mailbox_id, upto_uidnext)
    return old


def changes_txn(conn: Connection, mailbox_id: int, since_modseq: int) -> dict[str, Any]:
    """What changed in a mailbox after ``since_modseq`` (RFC 7162): entries added or whose
    flags changed, and UIDs expunged.  ``exists`` is False once the mailbox is deleted."""
    _snapshot(conn)
    box = conn.execute(
        select(_m.c.highestmodseq, _m.c.uidnext).where(_m.c.id == mailbox_id)
    ).first()
    if box is None:
        return {
            "highestmodseq": 0,
            "uidnext": 0,
            "exists": False,
            "changed": [],
            "sizes": [],
            "expunged": [],
        }
    changed, sizes = _sized_entries(
        conn.execute(
            select(*_ENTRY_SIZED)
            .select_from(_WITH_MESSAGE)
            .where(_e.c.mailbox_id == mailbox_id, _e.c.modseq > since_modseq)
            .order_by(_e.c.uid)
        )
    )
    expunged = conn.execute(
        select(_x.c.uid)
        .where(_x.c.mailbox_id == mailbox_id, _x.c.modseq > since_modseq)
        .order_by(_x.c.uid)
    ).scalars()
    return {
        "highestmodseq": box.highestmodseq,
        "uidnext": box.uidnext,
        "exists": True,
        "changed": changed,
        "sizes": sizes,
        "expunged": list(expunged),
    }


def fetch_txn(
    conn: Connection, mailbox_id: int, uids: Collection[int], columns: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Entries with their message's size, INTERNALDATE and blob; ``columns`` may add
    ``envelope`` and ``structure`` (the cached ENVELOPE string and MIME structure dict)."""
    want_envelope, want_structure = "envelope" in columns, "structure" in columns
    cols = [*_ENTRY, _e.c.message_id, _msg.c.size, _msg.c.internal_date, _msg.c.blob_sha256]
    if want_envelope:
        cols.append(_msg.c.envelope)
    if want_structure:
        cols.append(_msg.c.mime_structure)
    query = (
        select(*cols)
        .select_from(_e.join(_msg, _msg.c.id == _e.c.message_id))
        .where(_e.c.mailbox_id == mailbox_id)
    )
    utc = datetime.UTC
    results = []
    for row in _uid_rows(conn, query, uids):
        uid, flags, keywords, modseq, message_row, size, date, sha256, *extra = row
        item = {
            "uid": uid,
            "flags": flags,
            "keywords": keywords,
            "modseq": modseq,
            "message_row": message_row,
            "size": size,
            # SQLite hands back the naive UTC time that was stored; PostgreSQL an aware one.
            "internal_date": date.replace(tzinfo=utc)
            if date.tzinfo is None
            else date.astimezone(utc),
            "sha256": sha256,
        }
        if want_envelope:
            item["envelope"] = extra[0]
        if want_structure:
            item["structure"] = extra[-1]
        results.append(item)
    return results


# -- flags --------------------------------------------------------------------------------

_SET_FLAGS = (
    update(_e)
    .where(_e.c.id == bindparam("e_id"))
    .values(
        flags=bindparam("e_flags"), keywords=bindparam("e_keywords"), modseq=bindparam("e_modseq")
    )
)
_SET_HIGHEST = (
    update(_m).where(_m.c.id == bindparam("m_id")).values(highestmodseq=bindparam("m_modseq"))
)


def _flag_changer(mode: str, flags: Sequence[str]):
    """A function ``(bits, keywords) -> (bits, keywords)`` for STORE ``mode`` (RFC 3501
    §6.4.6: "+" adds, "-" removes, "=" replaces).  Keywords compare case-insensitively;
    \\Recent cannot be stored and is ignored."""
    bits, words = flag_bits([f for f in flags if f.lower() != "\\recent"])
    keywords: list[str] = []
    for word in words.split():
        if word.lower() not in {k.lower() for k in keywords}:
            keywords.append(word)
    lowered = {k.lower() for k in keywords}
    if mode not in ("+", "-", "="):
        raise ValueError(f"STORE mode must be '+', '-' or '=', not {mode!r}")

    def change(old_bits: int, old_keywords: str) -> tuple[int, str]:
        have = old_keywords.split()
        have_lowered = {k.lower() for k in have}
        if mode == "+":
            new = have + [k for k in keywords if k.lower() not in have_lowered]
            return old_bits | bits, " ".join(new)
        if mode == "-":
            return old_bits & ~bits, " ".join(k for k in have if k.lower() not in lowered)
        return bits, old_keywords if have_lowered == lowered else " ".join(keywords)

    return change


def store_flags_txn(
    conn: Connection,
    mailbox_id: int,
    uids: Collection[int],
    mode: str,
    flags: Sequence[str],
    unchanged_since: int | None = None,
) -> dict[str, list]:
    """STORE: change the flags of the given entries (RFC 3501 §6.4.6).

    Only entries whose flags really change get a new modseq; with ``unchanged_since``
    (RFC 7162 §3.1.3), entries modified after it are left alone and listed in ``failed``.
    """
    box = mailbox_by_id_txn(conn, mailbox_id)
    if box is None:
        raise _nonexistent(mailbox_id)
    change = _flag_changer(mode, flags)
    query = select(_e.c.uid, _e.c.flags, _e.c.keywords, _e.c.modseq, _e.c.id).where(
        _e.c.mailbox_id == mailbox_id
    )
    memo: dict[tuple[int, str], tuple[int, str]] = {}
    updates, failed = [], []
    for row in _uid_rows(conn, query, uids):
        if unchanged_since is not None and row.modseq > unchanged_since:
            failed.append(row.uid)
            continue
        old = (row.flags, row.keywords)
        new = memo.get(old)
        if new is None:
            new = memo[old] = change(*old)
        if new != old:
            updates.append((row, new))
    if not updates:
        return {"changed": [], "failed": failed}
    modseqs = record_many_txn(
        conn,
        [
            (
                "message.flags",
                {"mailbox_id": mailbox_id, "uid": row.uid, "flags": bits, "keywords": words},
            )
            for row, (bits, words) in updates
        ],
    )
    conn.execute(
        _SET_FLAGS,
        [
            {"e_id": row.id, "e_flags": bits, "e_keywords": words, "e_modseq": modseq}
            for (row, (bits, words)), modseq in zip(updates, modseqs, strict=True)
        ],
    )
    conn.execute(_SET_HIGHEST, {"m_id": mailbox_id, "m_modseq": modseqs[-1]})
    changed_txn(conn, [(box.account_id, mailbox_id)])
    changed = [
        (row.uid, bits, words, modseq)
        for (row, (bits, words)), modseq in zip(updates, modseqs, strict=True)
    ]
    return {"changed": changed, "failed": failed}


# -- copy, move, expunge ------------------------------------------------------------------


def _charge_quota_txn(conn: Connection, account_id: int, size: int, policy: QuotaPolicy) -> None:
    """Admit ``size`` more bytes for the account (growing its quota as the policy allows,
    as delivery does) or refuse with OVERQUOTA (RFC 9208 §4.3)."""
    row = conn.execute(
        select(_a.c.quota_bytes, _a.c.used_bytes).where(_a.c.id == account_id)
    ).first()
    if row is None:
        raise NoSuchAccount(f"no account {account_id}")
    fits, quota = admit(row.used_bytes, row.quota_bytes, size, policy)
    if not fits:
        raise MailboxError(
            MailboxError.OVERQUOTA,
            f"over quota: {size} more bytes do not fit ({row.used_bytes} of {quota} used)",
        )
    if quota != row.quota_bytes:
        conn.execute(update(_a).where(_a.c.id == account_id).values(quota_bytes=quota))
        record_txn(conn, "account.quota", {"id": account_id, "quota": quota, "grown": True})


def copy_txn(
    conn: Connection,
    account_id: int,
    src_mailbox_id: int,
    uids: Collection[int],
    dest_name: str,
    move: bool,
    policy: QuotaPolicy,
) -> dict[str, Any]:
    """COPY (RFC 3501 §6.4.7, COPYUID of RFC 4315) or MOVE (RFC 6851) entries to a mailbox.

    All or nothing: a copy that does not fit the quota copies nothing.  A move does not
    change the account's use, so it is never refused for quota.
    """
    src = mailbox_by_id_txn(conn, src_mailbox_id)
    if src is None or src.account_id != account_id:
        raise _nonexistent(src_mailbox_id)
    dest = mailbox_txn(conn, account_id, dest_name)
    if dest is None:
        raise MailboxError(MailboxError.TRYCREATE, f"no such mailbox: {dest_name}")
    rows = _uid_rows(conn, ENTRY_ROWS.params(e_mailbox=src.id), uids)
    if not rows:
        return {"uidvalidity": dest.uidvalidity, "pairs": [], "expunged": []}
    if not move:
        _charge_quota_txn(conn, account_id, sum(row.size for row in rows), policy)
    pairs = transfer_txn(conn, src, dest, rows, move)
    return {
        "uidvalidity": dest.uidvalidity,
        "pairs": pairs,
        "expunged": [row.uid for row in rows] if move else [],
    }


def expunge_txn(conn: Connection, mailbox_id: int, uids: Collection[int] | None = None) -> list:
    """EXPUNGE (RFC 3501 §6.4.3), or UID EXPUNGE (RFC 4315 §2.1) with ``uids``: remove the
    entries flagged \\Deleted; returns their UIDs, ascending."""
    box = mailbox_by_id_txn(conn, mailbox_id)
    if box is None:
        raise _nonexistent(mailbox_id)
    query = ENTRY_ROWS.params(e_mailbox=mailbox_id).where(_e.c.flags.bitwise_and(DELETED) != 0)
    if uids is None:
        rows = conn.execute(query.order_by(_e.c.uid)).all()
    else:
        rows = _uid_rows(conn, query, uids)
    if not rows:
        return []
    modseqs = record_many_txn(
        conn,
        [
            (
                "message.expunge",
                {"mailbox_id": mailbox_id, "uid": row.uid, "message_id": row.message_id},
            )
            for row in rows
        ],
    )
    drop_entries_txn(conn, mailbox_id, rows, modseqs)
    release_messages_txn(conn, Counter(row.message_id for row in rows))
    add_used_txn(conn, box.account_id, -sum(row.size for row in rows))
    changed_txn(conn, [(box.account_id, mailbox_id)])
    return [row.uid for row in rows]


# -- append and message data --------------------------------------------------------------


def append_txn(conn: Connection, item: Delivery) -> dict[str, int]:
    """APPEND (RFC 3501 §6.3.11) through the one delivery path; TRYCREATE for a missing
    mailbox, OVERQUOTA when the message does not fit even after the quota grew."""
    ((account_id, name),) = item.recipients
    box = mailbox_txn(conn, account_id, name)
    if box is None:
        raise MailboxError(MailboxError.TRYCREATE, f"no such mailbox: {name}")
    (outcome,) = deliver_many_txn(conn, [item])
    for _, why in outcome.refused:
        if why == OVER_QUOTA:
            raise MailboxError(
                MailboxError.OVERQUOTA, f"over quota: a message of {item.ref.size} bytes"
            )
        if why == GONE:
            raise NoSuchAccount(f"no account {account_id}")
        raise MailboxError(MailboxError.CANNOT, f"not appended: {why}")
    (delivered,) = outcome.delivered
    return {"mailbox_id": box.id, "uidvalidity": box.uidvalidity, "uid": delivered.uid}


def set_structure_txn(conn: Connection, message_row: int, structure: dict[str, Any]) -> None:
    """Cache a structure parsed after the message was stored (it came without one)."""
    envelope, mime_structure = split_structure(structure)
    result = conn.execute(
        update(_msg)
        .where(_msg.c.id == message_row)
        .values(envelope=envelope, mime_structure=mime_structure)
    )
    if result.rowcount != 1:
        raise MailboxError(MailboxError.NONEXISTENT, f"no message {message_row}")
    record_txn(conn, "message.structure", {"id": message_row})


def quota_txn(conn: Connection, account_id: int) -> tuple[int, int]:
    """``(used bytes, quota bytes)`` of an account."""
    row = conn.execute(
        select(_a.c.used_bytes, _a.c.quota_bytes).where(_a.c.id == account_id)
    ).first()
    if row is None:
        raise NoSuchAccount(f"no account {account_id}")
    return row.used_bytes, row.quota_bytes
