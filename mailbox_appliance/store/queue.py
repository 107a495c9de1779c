"""The outbound queue's persistent state: rows waiting to leave, and bounces owed.

Relay rows are written by delivery (``delivery._enqueue_txn``) in the transaction that accepts
the message; each row holds one reference to the message's blob, so the content stays until
the row is done.  The queue runner (smtp/runner.py) claims due rows, and settles each claimed
row when it knows its fate: sent (removed), retry later, or bounce (the row becomes a
"bounce" row, which the runner turns into a DSN to the sender).  Claims are cleared when a
runner starts, so rows in hand when a process died are simply due again: at least once,
never lost.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import bindparam, case, delete, false, or_, select, true, update
from sqlalchemy.engine import Connection

from mailbox_appliance.store import schema
from mailbox_appliance.store.blob_rows import (
    BlobRef,
    decref_many_txn,
    reference_many_txn,
    utcnow,
)
from mailbox_appliance.store.delivery import Delivery, Outcome, deliver_many_txn
from mailbox_appliance.store.journal import record_many_txn

_q = schema.outbound_queue


def add_bounces_txn(
    conn: Connection,
    ref: BlobRef,
    sender: str,
    failures: Sequence[tuple[str, str]],
    queue_id: str | None = None,
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
            "queue_id": queue_id,
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
            _q.c.queue_id,
            _q.c.kind,
            _q.c.sender,
            _q.c.recipient,
            _q.c.created,
            _q.c.next_attempt,
            _q.c.attempts,
            _q.c.reason,
            _q.c.status,
            _q.c.remote_mta,
            _q.c.last_attempt,
            (b.c.size - _q.c.skip_bytes).label("size"),
        )
        .join(b, b.c.sha256 == _q.c.blob_sha256)
        .order_by(_q.c.id)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


# -- the queue runner ----------------------------------------------------------------------

#: Inline content up to this size is returned by claim_due_txn (the runner keeps at most
#: a few thousand rows in hand, so this bounds the memory they take).
INLINE_WITH_CLAIM = 32 * 1024
_CLAIMABLE = (
    select(
        _q.c.id,
        _q.c.kind,
        _q.c.blob_sha256,
        _q.c.skip_bytes,
        _q.c.queue_id,
        _q.c.sender,
        _q.c.recipient,
        _q.c.account_id,
        _q.c.created,
        _q.c.attempts,
        _q.c.reason,
        _q.c.status,
        _q.c.remote_mta,
        _q.c.last_attempt,
        _q.c.delay_notified,
        (schema.blobs.c.size - _q.c.skip_bytes).label("size"),
        # Small content comes with the claim: no trip to a reader thread per message.
        case((schema.blobs.c.size <= INLINE_WITH_CLAIM, schema.blobs.c.data), else_=None).label(
            "content"
        ),
    )
    .join(schema.blobs, schema.blobs.c.sha256 == _q.c.blob_sha256)
    .where(_q.c.claimed == false(), _q.c.next_attempt <= bindparam("now"))
    .order_by(_q.c.next_attempt, _q.c.id)
)


def release_claims_txn(conn: Connection) -> int:
    """At the runner's start: rows a previous run had in hand (it crashed) are due again."""
    return conn.execute(update(_q).where(_q.c.claimed == true()).values(claimed=False)).rowcount


def claim_due_txn(
    conn: Connection, now: datetime.datetime, limit: int, skip_domains: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Up to ``limit`` rows that are due, oldest first, marked as in hand; none for
    ``skip_domains`` (the runner has enough for them: a slow domain's backlog must not fill
    its hands and hold up mail for every other domain)."""
    query = _CLAIMABLE.limit(limit)
    if skip_domains:
        query = query.where(or_(_q.c.domain.is_(None), _q.c.domain.not_in(list(skip_domains))))
    rows = [dict(r._mapping) for r in conn.execute(query, {"now": now})]
    if rows:
        ids = [r["id"] for r in rows]
        conn.execute(update(_q).where(_q.c.id.in_(ids)).values(claimed=True))
    return rows


class Settlement(NamedTuple):
    """What the runner decided about one claimed row."""

    id: int
    #: "sent" (remove) | "retry" (wait until next_attempt) | "bounce" (tell the sender) |
    #: "release" (untouched: due again now, or at next_attempt) | "done" (a DSN was sent)
    action: str
    next_attempt: datetime.datetime | None = None
    reason: str | None = None
    status: str | None = None
    remote_mta: str | None = None
    #: With "retry": also owe the sender a delay notice (RFC 3464 Action: delayed).
    notify_delay: bool = False


_ROWS = select(_q).where(_q.c.id.in_(bindparam("ids", expanding=True)))


def settle_many_txn(conn: Connection, batches: Sequence[Sequence[Settlement]]) -> list[int]:
    """Apply the runner's decisions; per batch, how many of its rows still existed (an admin
    may have deleted some meanwhile)."""
    settlements = [s for batch in batches for s in batch]
    rows = {r.id: r for r in conn.execute(_ROWS, {"ids": [s.id for s in settlements]})}
    now = utcnow()
    gone: list[Any] = []
    changes: list[tuple[str, dict]] = []
    updates: list[dict[str, Any]] = []
    notices: list[dict[str, Any]] = []
    for s in settlements:
        row = rows.get(s.id)
        if row is None:
            continue
        values = {
            "kind": row.kind,
            "next_attempt": now,
            "attempts": row.attempts,
            "reason": row.reason,
            "status": row.status,
            "remote_mta": row.remote_mta,
            "last_attempt": row.last_attempt,
            "delay_notified": row.delay_notified,
        }
        if s.action in ("sent", "done") or (s.action == "bounce" and not row.sender):
            gone.append(
                row
            )  # a failure of a bounce is never bounced (RFC 3464 §2: no DSN about a DSN)
            changes.append((f"queue.{s.action}", {"id": row.id, "recipient": row.recipient}))
            continue
        if s.action == "release":  # untouched; due again now, or at next_attempt if given
            values["next_attempt"] = s.next_attempt or row.next_attempt
        else:
            values.update(
                attempts=row.attempts + 1,
                reason=s.reason,
                status=s.status,
                remote_mta=s.remote_mta,
                last_attempt=now,
            )
            if s.action == "retry":
                values["next_attempt"] = s.next_attempt
                if s.notify_delay and row.sender and not row.delay_notified:
                    values["delay_notified"] = True
                    notices.append(_notice_row(row, s, now))
            else:
                values["kind"] = "bounce"
            changes.append((f"queue.{s.action}", {"id": row.id, "status": s.status}))
        updates.append({"b_id": row.id, **values})
    if updates:
        conn.execute(_SETTLE, updates)
    if notices:
        reference_many_txn(conn, [BlobRef(n["blob_sha256"], 0) for n in notices])
        conn.execute(_q.insert(), notices)
    _remove_txn(conn, gone)
    record_many_txn(conn, changes)
    counts = []
    for batch in batches:
        counts.append(sum(1 for s in batch if s.id in rows))
    return counts


_SETTLE = (
    update(_q)
    .where(_q.c.id == bindparam("b_id"))
    .values(
        claimed=False,
        kind=bindparam("kind"),
        next_attempt=bindparam("next_attempt"),
        attempts=bindparam("attempts"),
        reason=bindparam("reason"),
        status=bindparam("status"),
        remote_mta=bindparam("remote_mta"),
        last_attempt=bindparam("last_attempt"),
        delay_notified=bindparam("delay_notified"),
    )
)


def _notice_row(row: Any, s: Settlement, now: datetime.datetime) -> dict[str, Any]:
    return {
        "kind": "delay",
        "blob_sha256": row.blob_sha256,
        "skip_bytes": row.skip_bytes,
        "queue_id": row.queue_id,
        "domain": None,
        "sender": row.sender,
        "recipient": row.recipient,
        "account_id": row.account_id,
        "created": row.created,
        "next_attempt": now,
        "attempts": row.attempts + 1,
        "reason": s.reason,
        "status": s.status,
        "remote_mta": s.remote_mta,
        "last_attempt": now,
        "delay_notified": True,
        "claimed": False,
    }


def _remove_txn(conn: Connection, rows: Sequence[Any]) -> None:
    """Delete queue rows and drop the blob reference each held."""
    if not rows:
        return
    conn.execute(delete(_q).where(_q.c.id.in_([r.id for r in rows])))
    decref_many_txn(conn, Counter(r.blob_sha256 for r in rows))


def dsn_sent_txn(conn: Connection, ids: Sequence[int], item: Delivery | None) -> Outcome | None:
    """File or queue a delivery status notification (``item``, from the null sender) and
    remove the bounce/delay rows it reports, in one commit: never both lost, never sent twice
    unless a crash hits between the commit and the runner hearing of it."""
    outcome = deliver_many_txn(conn, [item])[0] if item is not None else None
    rows = conn.execute(_ROWS, {"ids": list(ids)}).all()
    _remove_txn(conn, rows)
    record_many_txn(conn, [("queue.notified", {"id": r.id}) for r in rows])
    return outcome


# -- admin (``mailbox-appliance queue``) ---------------------------------------------------


def queue_row_txn(conn: Connection, row_id: int) -> dict[str, Any] | None:
    b = schema.blobs
    row = conn.execute(
        select(_q, (b.c.size - _q.c.skip_bytes).label("size"))
        .join(b, b.c.sha256 == _q.c.blob_sha256)
        .where(_q.c.id == row_id)
    ).first()
    return dict(row._mapping) if row is not None else None


def retry_now_txn(conn: Connection, row_id: int | None) -> int:
    """Make one row (None: every relay row) due now; returns how many."""
    query = update(_q).where(_q.c.kind == "relay").values(next_attempt=utcnow())
    if row_id is not None:
        query = query.where(_q.c.id == row_id)
    count = conn.execute(query).rowcount
    record_many_txn(conn, [("queue.retry", {"id": row_id, "count": count})])
    return count


def delete_row_txn(conn: Connection, row_id: int) -> bool:
    row = conn.execute(select(_q).where(_q.c.id == row_id)).first()
    if row is None:
        return False
    _remove_txn(conn, [row])
    record_many_txn(conn, [("queue.delete", {"id": row_id, "recipient": row.recipient})])
    return True


def bounce_row_txn(conn: Connection, row_id: int, reason: str) -> str | None:
    """Give up on a relay row now: the sender gets a DSN (a null sender's row is removed).
    Returns what happened ("bounce", "delete") or None for no such relay row."""
    row = conn.execute(select(_q).where(_q.c.id == row_id, _q.c.kind == "relay")).first()
    if row is None:
        return None
    if not row.sender:
        _remove_txn(conn, [row])
        record_many_txn(conn, [("queue.delete", {"id": row_id})])
        return "delete"
    conn.execute(
        update(_q)
        .where(_q.c.id == row_id)
        .values(kind="bounce", status="5.0.0", reason=reason, next_attempt=utcnow())
    )
    record_many_txn(conn, [("queue.bounce", {"id": row_id, "status": "5.0.0"})])
    return "bounce"


# -- routing state -------------------------------------------------------------------------

_rs = schema.routing_state


def routing_state_txn(conn: Connection) -> list[dict[str, Any]]:
    query = select(_rs.c.route, _rs.c.domain, _rs.c.state, _rs.c.updated).order_by(
        _rs.c.route, _rs.c.domain
    )
    return [dict(r._mapping) for r in conn.execute(query)]


def save_routing_state_txn(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Replace the stored scores with the runner's current ones (soft state, not journalled:
    it describes the network, not mail)."""
    now = utcnow()
    conn.execute(delete(_rs))
    if rows:
        conn.execute(
            _rs.insert(),
            [
                {"route": r["route"], "domain": r["domain"], "state": r["state"], "updated": now}
                for r in rows
            ],
        )
