"""The mailbox hierarchy of an account: create, delete, rename, subscribe.

Names use "/" as the hierarchy delimiter; the caller has already normalised "INBOX" (RFC 3501
§5.1: only INBOX is case-insensitive).  Every level of a name is a real mailbox: CREATE makes
missing parents (RFC 3501 §6.3.3), and DELETE refuses a mailbox that has children, as Dovecot
does, so there are no \\Noselect placeholders to keep.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.engine import Connection

from mailbox_appliance.errors import MailboxError, NoSuchAccount
from mailbox_appliance.store import schema
from mailbox_appliance.store.journal import record_txn
from mailbox_appliance.store.mailboxes import (
    add_used_txn,
    all_entry_rows_txn,
    create_mailbox_txn,
    mailbox_by_id_txn,
    mailbox_txn,
    release_messages_txn,
    transfer_txn,
)
from mailbox_appliance.store.notify import changed_txn

DELIMITER = "/"
INBOX = "INBOX"
#: The ``name`` column's width.
MAX_NAME = 1024
#: Mailboxes one account may have (CREATE beyond it answers [LIMIT], RFC 5530).
MAX_MAILBOXES = 10_000
#: RFC 6154 §2 attributes a mailbox may be created with.
SPECIAL_USES = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)

_m, _e, _x = schema.mailboxes, schema.mailbox_entries, schema.mailbox_expunges


def _cannot(reason: str) -> MailboxError:
    return MailboxError(MailboxError.CANNOT, reason)


def check_name(name: str) -> None:
    """Refuse names this store cannot hold or that IMAP cannot express (LIST wildcards)."""
    if not name:
        raise _cannot("a mailbox name cannot be empty")
    if len(name) > MAX_NAME:
        raise _cannot(f"a mailbox name is at most {MAX_NAME} characters")
    if "*" in name or "%" in name:
        raise _cannot("a mailbox name cannot contain '*' or '%'")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise _cannot("a mailbox name cannot contain control characters")
    if "" in name.split(DELIMITER):
        raise _cannot(
            f"a mailbox name cannot begin or end with {DELIMITER!r} or have an empty level"
        )


def parents(name: str) -> list[str]:
    """The names above ``name``, top first: ``a/b/c`` -> ``[a, a/b]``."""
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:i]) for i in range(1, len(levels))]


def _names_txn(conn: Connection, account_id: int) -> dict[str, int]:
    if conn.execute(select(schema.accounts.c.id).where(schema.accounts.c.id == account_id)).first():
        rows = conn.execute(select(_m.c.name, _m.c.id).where(_m.c.account_id == account_id))
        return {row.name: row.id for row in rows}
    raise NoSuchAccount(f"no account {account_id}")


def _make_txn(
    conn: Connection,
    account_id: int,
    names: dict[str, int],
    wanted: list[str],
    special_use: str | None = None,
) -> list[int]:
    """Create each name in ``wanted`` that is missing (the last one with ``special_use``),
    adding it to ``names``; returns the new ids."""
    missing = [name for name in wanted if name not in names]
    if len(names) + len(missing) > MAX_MAILBOXES:
        raise MailboxError(
            MailboxError.LIMIT, f"an account may have at most {MAX_MAILBOXES} mailboxes"
        )
    created = []
    for name in missing:
        use = special_use if name == wanted[-1] else None
        names[name] = create_mailbox_txn(conn, account_id, name, use)
        created.append(names[name])
    return created


def create_txn(
    conn: Connection, account_id: int, name: str, special_use: str | None = None
) -> dict[str, Any]:
    """CREATE (RFC 3501 §6.3.3), making missing parents; returns the new mailbox row."""
    check_name(name)
    if special_use is not None and special_use not in SPECIAL_USES:
        raise _cannot(f"unknown special-use attribute {special_use!r}")
    names = _names_txn(conn, account_id)
    if name in names:
        raise MailboxError(MailboxError.ALREADYEXISTS, f"mailbox {name} already exists")
    created = _make_txn(conn, account_id, names, [*parents(name), name], special_use)
    changed_txn(conn, [(account_id, box) for box in created])
    return dict(mailbox_by_id_txn(conn, names[name])._mapping)


def delete_txn(conn: Connection, account_id: int, name: str) -> None:
    """DELETE (RFC 3501 §6.3.4): the mailbox and its entries; messages and blobs no longer
    referenced are released, and the account's use shrinks."""
    if name == INBOX:
        raise _cannot("INBOX cannot be deleted")
    box = mailbox_txn(conn, account_id, name)
    if box is None:
        raise MailboxError(MailboxError.NONEXISTENT, f"no such mailbox: {name}")
    names = _names_txn(conn, account_id)
    if any(other.startswith(name + DELIMITER) for other in names):
        raise _cannot(f"mailbox {name} has children; delete them first")
    rows = all_entry_rows_txn(conn, box.id)
    conn.execute(delete(_e).where(_e.c.mailbox_id == box.id))
    conn.execute(delete(_x).where(_x.c.mailbox_id == box.id))
    conn.execute(delete(_m).where(_m.c.id == box.id))
    release_messages_txn(conn, Counter(row.message_id for row in rows))
    add_used_txn(conn, account_id, -sum(row.size for row in rows))
    record_txn(
        conn,
        "mailbox.delete",
        {"id": box.id, "account_id": account_id, "name": name, "entries": len(rows)},
    )
    changed_txn(conn, [(account_id, box.id)])


_RENAME = update(_m).where(_m.c.id == bindparam("m_id")).values(name=bindparam("m_name"))


def rename_txn(conn: Connection, account_id: int, old: str, new: str) -> None:
    """RENAME (RFC 3501 §6.3.5): the mailbox and its inferiors keep UIDVALIDITY and UIDs;
    missing parents of the new name are made.  Renaming INBOX moves its messages to a new
    mailbox instead and leaves INBOX (and its inferiors) in place."""
    check_name(new)
    src = mailbox_txn(conn, account_id, old)
    if src is None:
        raise MailboxError(MailboxError.NONEXISTENT, f"no such mailbox: {old}")
    names = _names_txn(conn, account_id)
    if new in names:
        raise MailboxError(MailboxError.ALREADYEXISTS, f"mailbox {new} already exists")
    if old == INBOX:
        created = _make_txn(conn, account_id, names, [*parents(new), new])
        dest = mailbox_by_id_txn(conn, names[new])
        rows = all_entry_rows_txn(conn, src.id)
        if rows:
            transfer_txn(conn, src, dest, rows, move=True)
        changed_txn(conn, [(account_id, box) for box in created])
        return
    if new.startswith(old + DELIMITER):
        raise _cannot(f"mailbox {old} cannot be moved under itself")
    moving = {
        name: box for name, box in names.items() if name == old or name.startswith(old + DELIMITER)
    }
    targets = {name: new + name[len(old) :] for name in moving}
    taken = sorted(target for target in targets.values() if target in names)
    if taken:
        raise MailboxError(MailboxError.ALREADYEXISTS, f"mailbox {taken[0]} already exists")
    if any(len(target) > MAX_NAME for target in targets.values()):
        raise _cannot(f"a mailbox name is at most {MAX_NAME} characters")
    created = _make_txn(conn, account_id, names, parents(new))
    conn.execute(_RENAME, [{"m_id": moving[name], "m_name": targets[name]} for name in moving])
    record_txn(
        conn,
        "mailbox.rename",
        {
            "account_id": account_id,
            "renamed": [[moving[name], name, targets[name]] for name in sorted(moving)],
        },
    )
    changed_txn(conn, [(account_id, box) for box in [*created, *moving.values()]])


def subscribe_txn(conn: Connection, account_id: int, name: str, subscribed: bool) -> None:
    """SUBSCRIBE / UNSUBSCRIBE (RFC 3501 §6.3.6-7) of an existing mailbox."""
    result = conn.execute(
        update(_m)
        .where(_m.c.account_id == account_id, _m.c.name == name)
        .values(subscribed=subscribed)
    )
    if result.rowcount != 1:
        raise MailboxError(MailboxError.NONEXISTENT, f"no such mailbox: {name}")
    record_txn(
        conn,
        "mailbox.subscribe",
        {"account_id": account_id, "name": name, "subscribed": subscribed},
    )
