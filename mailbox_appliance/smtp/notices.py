"""Sending the delivery status notifications the queue owes (RFC 3464).

Rows of kind "bounce" (failed) and "delay" (still trying) that report on the same message to
the same sender become one DSN, from the null reverse-path (RFC 5321 §4.5.5), quoting the
original message's header.  The DSN is filed or queued like any mail, and the rows it reports
are removed in the same commit (Store.dsn_sent).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger

from mailbox_appliance.smtp.dsn import HEADER_LIMIT, RecipientStatus, build_dsn, header_block
from mailbox_appliance.smtp.fate import as_utc
from mailbox_appliance.store.blob_rows import utcnow
from mailbox_appliance.store.delivery import Delivery

log = Logger()


def notice_key(row: dict[str, Any]) -> tuple:
    """Rows with the same key go into one DSN."""
    return (row["blob_sha256"], row["skip_bytes"], row["sender"], row["kind"])


async def send_notice(store, config, rows: Sequence[dict[str, Any]], srs=None) -> None:
    """Build, deliver and record one DSN for ``rows`` (same message, sender and kind)."""
    first = rows[0]
    sender = first["sender"]
    start = first["skip_bytes"]
    end = start + min(first["size"], HEADER_LIMIT)
    (head,) = await store.blobs.read_ranges([(first["blob_sha256"], start, end)])
    now = utcnow()
    until = None
    if first["kind"] == "delay":
        give_up = datetime.timedelta(seconds=config.delivery.retry.give_up_after)
        until = as_utc(first["created"]) + give_up
    statuses = [_status(row, until) for row in rows]
    data = await store.blobs.run(
        lambda: build_dsn(
            reporting_mta=config.hostname,
            to=sender,
            original_headers=header_block(head),
            recipients=statuses,
            arrival_date=as_utc(min(row["created"] for row in rows)),
            now=now,
        )
    )
    ref = await store.blobs.put(data)
    ids = [row["id"] for row in rows]
    resolution = await store.resolve(sender.lower())
    original = srs.reverse(sender) if srs is not None and not resolution.exists else None
    if not resolution.local_domain:
        local, remote = (), (sender,)
    elif original is not None:  # mail an alias forwarded: the DSN goes to its real sender
        local, remote = (), (original,)
    elif resolution.exists:
        local = tuple((target.account_id, "INBOX") for target in resolution.local)
        remote = tuple(resolution.remote)
    else:
        log.warn(
            "DSN to <{sender}> dropped: no such address here ({n} recipients)",
            sender=sender,
            n=len(rows),
        )
        await store.dsn_sent(ids, None)
        return
    queue_id = os.urandom(6).hex().upper()  # as SMTP names what it accepts
    item = Delivery(
        ref, local, outbound=remote, sender="", quota=store.quota_policy, queue_id=queue_id
    )
    await store.dsn_sent(ids, item)
    log.info(
        "{queue_id}: DSN ({kind}) about {about} for {n} recipients, to <{sender}>",
        queue_id=queue_id,
        about=first["queue_id"] or "a message",
        kind="failed" if first["kind"] == "bounce" else "delayed",
        n=len(rows),
        sender=sender,
    )


def _status(row: dict[str, Any], until: datetime.datetime | None) -> RecipientStatus:
    failed = row["kind"] == "bounce"
    status = row["status"] or ("5.0.0" if failed else "4.0.0")
    return RecipientStatus(
        recipient=row["recipient"],
        action="failed" if failed else "delayed",
        status=status,
        diagnostic=row["reason"],
        remote_mta=row["remote_mta"],
        last_attempt=as_utc(row["last_attempt"]) if row["last_attempt"] else None,
        will_retry_until=until,
    )
