"""Local delivery: filing stored messages into mailboxes, many messages per statement.

Delivery is the hottest write of a mail server, so it is written for batches: the store's
writer hands every delivery queued at that moment to one :func:`deliver_many_txn` call
(``Database.write_batched``), which runs a fixed number of statements for the whole batch
(``executemany``) instead of a dozen per message.  A single delivery is a batch of one; there
is no second code path.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from mailbox_appliance.errors import StoreError
from mailbox_appliance.store import schema
from mailbox_appliance.store.blob_rows import BlobRef, reference_many_txn, utcnow
from mailbox_appliance.store.journal import record_many_txn
from mailbox_appliance.store.mailboxes import flag_bits


class Delivery(NamedTuple):
    """One message for one or more ``(account_id, mailbox_name)`` recipients."""

    ref: BlobRef
    recipients: tuple[tuple[int, str], ...]
    internal_date: datetime.datetime | None = None
    message_id: str | None = None
    flags: tuple[str, ...] = ()
    envelope: Any = None
    mime_structure: Any = None


class Delivered(NamedTuple):
    account_id: int
    mailbox_id: int
    uid: int


_m, _e, _a = schema.mailboxes, schema.mailbox_entries, schema.accounts
_msg = schema.messages

_INSERT_MESSAGES = _msg.insert().returning(_msg.c.id, sort_by_parameter_order=True)
_MAILBOXES_OF = select(_m.c.id, _m.c.account_id, _m.c.name, _m.c.uidnext).where(
    _m.c.account_id.in_(bindparam("accounts", expanding=True))
)
_INSERT_ENTRIES = _e.insert()
_ADVANCE_MAILBOX = (
    update(_m)
    .where(_m.c.id == bindparam("d_mailbox"))
    .values(uidnext=bindparam("d_uidnext"), highestmodseq=bindparam("d_modseq"))
)
_ADD_USED = (
    update(_a)
    .where(_a.c.id == bindparam("d_account"))
    .values(used_bytes=_a.c.used_bytes + bindparam("d_size"))
)


def deliver_many_txn(conn: Connection, items: Sequence[Delivery]) -> list[list[Delivered]]:
    """File each delivery; returns, per delivery, where each recipient's copy went."""
    results: list[list[Delivered]] = [[] for _ in items]
    live = [(i, item) for i, item in enumerate(items) if item.recipients]
    if not live:
        return results
    blob_changes = reference_many_txn(conn, [item.ref for _, item in live])
    now = utcnow()
    message_ids = list(
        conn.execute(
            _INSERT_MESSAGES,
            [
                {
                    "blob_sha256": item.ref.sha256,
                    "size": item.ref.size,
                    "internal_date": item.internal_date or now,
                    "message_id": item.message_id,
                    "envelope": item.envelope,
                    "mime_structure": item.mime_structure,
                    "refcount": len(item.recipients),
                }
                for _, item in live
            ],
        ).scalars()
    )
    accounts = sorted({account for _, item in live for account, _ in item.recipients})
    boxes = {
        (row.account_id, row.name): [row.id, row.uidnext]
        for row in conn.execute(_MAILBOXES_OF, {"accounts": accounts})
    }
    entries, changes, used = [], [], defaultdict(int)
    for (i, item), message_id in zip(live, message_ids, strict=True):
        bits, keywords = flag_bits(item.flags)
        for account_id, mailbox_name in item.recipients:
            box = boxes.get((account_id, mailbox_name))
            if box is None:
                raise StoreError(f"account {account_id} has no mailbox {mailbox_name!r}")
            mailbox_id, uid = box[0], box[1]
            box[1] += 1
            payload = {
                "mailbox_id": mailbox_id,
                "uid": uid,
                "message_id": message_id,
                "sha256": item.ref.sha256,
            }
            changes.append(("message.add", payload))
            entries.append(
                {
                    "mailbox_id": mailbox_id,
                    "uid": uid,
                    "message_id": message_id,
                    "flags": bits,
                    "keywords": keywords,
                }
            )
            used[account_id] += item.ref.size
            results[i].append(Delivered(account_id, mailbox_id, uid))
    # One journal insert for the batch; blob additions come before the messages using them.
    modseqs = record_many_txn(conn, blob_changes + changes)[len(blob_changes) :]
    highest: dict[int, int] = {}
    for entry, modseq in zip(entries, modseqs, strict=True):
        entry["modseq"] = modseq
        highest[entry["mailbox_id"]] = modseq
    conn.execute(_INSERT_ENTRIES, entries)
    uidnext = {mailbox_id: next_uid for mailbox_id, next_uid in boxes.values()}
    conn.execute(
        _ADVANCE_MAILBOX,
        [
            {"d_mailbox": box, "d_uidnext": uidnext[box], "d_modseq": modseq}
            for box, modseq in highest.items()
        ],
    )
    conn.execute(_ADD_USED, [{"d_account": a, "d_size": size} for a, size in used.items()])
    return results
