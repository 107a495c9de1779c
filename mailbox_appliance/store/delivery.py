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

from mailbox_appliance.errors import MailboxError
from mailbox_appliance.store import schema
from mailbox_appliance.store.blob_rows import BlobRef, reference_many_txn, utcnow
from mailbox_appliance.store.journal import record_many_txn
from mailbox_appliance.store.mailboxes import flag_bits, split_structure
from mailbox_appliance.store.notify import changed_txn
from mailbox_appliance.store.quota import QuotaPolicy, admit


class Delivery(NamedTuple):
    """One message for one or more ``(account_id, mailbox_name)`` recipients."""

    ref: BlobRef
    recipients: tuple[tuple[int, str], ...]
    internal_date: datetime.datetime | None = None
    message_id: str | None = None
    flags: tuple[str, ...] = ()
    envelope: Any = None
    mime_structure: Any = None
    #: Remote recipients: each gets a row in the outbound queue, holding the blob.
    outbound: tuple[str, ...] = ()
    #: The envelope sender ("" for the null reverse-path) and the submitting account, if any.
    sender: str = ""
    account_id: int | None = None
    #: Bytes at the start of the blob that only local copies carry (the Return-Path line).
    skip_bytes: int = 0
    #: The ID the message was accepted under, kept with its queue rows for the log.
    queue_id: str | None = None
    #: Check (and grow) the recipients' quotas; None files the message regardless.
    quota: QuotaPolicy | None = None
    #: The parsed message (IMAP ENVELOPE under "envelope", BODYSTRUCTURE and the rest) to
    #: cache in the message row; overrides ``envelope`` and ``mime_structure``.
    structure: dict[str, Any] | None = None


class Delivered(NamedTuple):
    account_id: int
    mailbox_id: int
    uid: int


OVER_QUOTA = "over quota"
GONE = "gone"


class Outcome(NamedTuple):
    """What became of one delivery, recipient by recipient."""

    delivered: list[Delivered]
    #: (account id, why) for each account that did not get the message: ``OVER_QUOTA`` (it
    #: does not fit even after growing) or ``GONE`` (the account was removed meanwhile).
    refused: list[tuple[int, str]]
    #: Rows added to the outbound queue.
    queued: int
    #: (account id, old quota, new quota) for every quota that grew.
    grown: list[tuple[int, int, int]]


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
_QUOTAS_OF = select(_a.c.id, _a.c.quota_bytes, _a.c.used_bytes).where(
    _a.c.id.in_(bindparam("accounts", expanding=True))
)
_SET_QUOTA = (
    update(_a).where(_a.c.id == bindparam("d_account")).values(quota_bytes=bindparam("d_quota"))
)
_ENQUEUE = schema.outbound_queue.insert()


def deliver_many_txn(conn: Connection, items: Sequence[Delivery]) -> list[Outcome]:
    """File each delivery; returns, per delivery, what became of each recipient."""
    accepted, refused, grown = _apply_quotas_txn(conn, items)
    results = [Outcome([], refused[i], len(item.outbound), []) for i, item in enumerate(items)]
    for i, changes in grown.items():
        results[i].grown.extend(changes)
    live = [
        (i, item._replace(recipients=accepted[i])) for i, item in enumerate(items) if accepted[i]
    ]
    queued = [item for item in items if item.outbound]
    if not live and not queued:
        return results
    refs = [item.ref for _, item in live] + [item.ref for item in queued for _ in item.outbound]
    # Journal order: blobs first, then what refers to them.
    earlier = reference_many_txn(conn, refs) + (_enqueue_txn(conn, queued) if queued else [])
    if not live:
        record_many_txn(conn, earlier)
        return results
    accounts = sorted({account for _, item in live for account, _ in item.recipients})
    boxes = {
        (row.account_id, row.name): [row.id, row.uidnext]
        for row in conn.execute(_MAILBOXES_OF, {"accounts": accounts})
    }
    for _, item in live:
        for account_id, mailbox_name in item.recipients:
            if (account_id, mailbox_name) not in boxes:
                # RFC 3501 §6.3.11: APPEND to a missing mailbox answers [TRYCREATE].
                raise MailboxError(
                    MailboxError.TRYCREATE,
                    f"account {account_id} has no mailbox {mailbox_name!r}",
                )
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
                    "envelope": envelope,
                    "mime_structure": mime_structure,
                    "refcount": len(item.recipients),
                }
                for _, item in live
                for envelope, mime_structure in [_cached_structure(item)]
            ],
        ).scalars()
    )
    entries, changes, used = [], [], defaultdict(int)
    for (i, item), message_id in zip(live, message_ids, strict=True):
        bits, keywords = flag_bits(item.flags)
        for account_id, mailbox_name in item.recipients:
            box = boxes[(account_id, mailbox_name)]
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
            results[i].delivered.append(Delivered(account_id, mailbox_id, uid))
    # One journal insert for the batch.
    modseqs = record_many_txn(conn, earlier + changes)[len(earlier) :]
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
    changed_txn(conn, {(d.account_id, d.mailbox_id) for r in results for d in r.delivered})
    return results


def _cached_structure(item: Delivery) -> tuple[Any, Any]:
    if item.structure is not None:
        return split_structure(item.structure)
    return item.envelope, item.mime_structure


def _apply_quotas_txn(
    conn: Connection, items: Sequence[Delivery]
) -> tuple[list[tuple[tuple[int, str], ...]], list[list[tuple[int, str]]], dict[int, list]]:
    """Which recipients each delivery may go to, growing quotas where the policy allows.

    Use is tracked across the batch, so two messages that fit one at a time but not together
    are not both accepted.
    """
    accepted = [item.recipients for item in items]
    refused: list[list[tuple[int, str]]] = [[] for _ in items]
    grown: dict[int, list] = defaultdict(list)
    checked = [i for i, item in enumerate(items) if item.quota is not None and item.recipients]
    if not checked:
        return accepted, refused, grown
    ids = sorted({account for i in checked for account, _ in items[i].recipients})
    state = {
        row.id: [row.quota_bytes, row.used_bytes]
        for row in conn.execute(_QUOTAS_OF, {"accounts": ids})
    }
    new_quotas: dict[int, int] = {}
    for i in checked:
        item = items[i]
        keep = []
        for account_id, mailbox in item.recipients:
            if account_id not in state:  # removed since the recipient was looked up
                refused[i].append((account_id, GONE))
                continue
            quota, used = state[account_id]
            fits, new_quota = admit(used, quota, item.ref.size, item.quota)
            if new_quota != quota:
                grown[i].append((account_id, quota, new_quota))
                new_quotas[account_id] = state[account_id][0] = new_quota
            if fits:
                state[account_id][1] += item.ref.size
                keep.append((account_id, mailbox))
            else:
                refused[i].append((account_id, OVER_QUOTA))
        accepted[i] = tuple(keep)
    if new_quotas:
        conn.execute(_SET_QUOTA, [{"d_account": a, "d_quota": q} for a, q in new_quotas.items()])
        record_many_txn(
            conn,
            [
                ("account.quota", {"id": a, "quota": q, "grown": True})
                for a, q in new_quotas.items()
            ],
        )
    return accepted, refused, grown


def _enqueue_txn(conn: Connection, items: Sequence[Delivery]) -> list[tuple[str, dict]]:
    """Queue rows for the remote recipients; returns their journal changes."""
    now = utcnow()
    rows = [
        {
            "kind": "relay",
            "blob_sha256": item.ref.sha256,
            "skip_bytes": item.skip_bytes,
            "queue_id": item.queue_id,
            "domain": recipient.rpartition("@")[2].lower(),
            "sender": item.sender,
            "recipient": recipient,
            "account_id": item.account_id,
            "created": now,
            "next_attempt": now,
            "attempts": 0,
            "reason": None,
        }
        for item in items
        for recipient in item.outbound
    ]
    conn.execute(_ENQUEUE, rows)
    return [("queue.add", {"sha256": r["blob_sha256"], "recipient": r["recipient"]}) for r in rows]
