"""What becomes of a queued recipient after an attempt: sent, retried later, or bounced.

RFC 5321 §4.5.4.1: a temporary failure (4xx, no answer, DNS trouble) is retried with growing
intervals until ``delivery.retry.give_up_after``; then, or at once on a permanent failure
(5xx, no such domain, null MX), the sender gets a DSN (RFC 3464) with the RFC 3463 status.
The sender may also be told once, after ``delivery.delay_notice``, that mail is delayed.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, NamedTuple

from mailbox_appliance.config_delivery import DeliveryConfig, RetryConfig
from mailbox_appliance.store.queue import Settlement

_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


class Fate(NamedTuple):
    #: "sent" | "temporary" | "permanent"
    kind: str
    status: str = "2.0.0"
    #: The reply or local error, for the log and the DSN's Diagnostic-Code.
    reason: str = ""
    remote_mta: str | None = None


def fate_of_reply(code: int, enhanced: str | None, text: str, host: str | None) -> Fate:
    """A recipient's fate from the reply that decided it (RFC 3463 status from the reply's
    enhanced code when it has one of the right class, else the class's generic one)."""
    kind = "sent" if code < 400 else "temporary" if code < 500 else "permanent"
    cls = str(code)[0]
    status = enhanced if enhanced and _STATUS.match(enhanced) and enhanced[0] == cls else None
    if status is None:
        status = {"2": "2.0.0", "4": "4.0.0", "5": "5.0.0"}.get(cls, "4.0.0")
    said = " ".join(part for part in (str(code), enhanced, " ".join(text.split())) if part)
    return Fate(kind, status, said, host)


def temporary(status: str, reason: str, host: str | None = None) -> Fate:
    return Fate("temporary", status, reason, host)


def permanent(status: str, reason: str, host: str | None = None) -> Fate:
    return Fate("permanent", status, reason, host)


def backoff(retry: RetryConfig, attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (0-based): doubling."""
    return float(min(retry.first * 2 ** min(attempts, 30), retry.max_interval))


def settlement(
    row: dict[str, Any], fate: Fate, now: datetime.datetime, delivery: DeliveryConfig
) -> Settlement:
    """The store decision for one claimed queue row."""
    if fate.kind == "sent":
        return Settlement(row["id"], "sent")
    if fate.kind == "permanent":
        return Settlement(row["id"], "bounce", None, fate.reason, fate.status, fate.remote_mta)
    age = (now - as_utc(row["created"])).total_seconds()
    if age >= delivery.retry.give_up_after:
        # RFC 3463 X.4.7: delivery time expired; the last failure says why.
        reason = f"gave up after {_days(age)}; last attempt: {fate.reason}"
        return Settlement(row["id"], "bounce", None, reason, "4.4.7", fate.remote_mta)
    wait = backoff(delivery.retry, row["attempts"])
    notify = bool(delivery.delay_notice) and age >= delivery.delay_notice
    return Settlement(
        row["id"],
        "retry",
        now + datetime.timedelta(seconds=wait),
        fate.reason,
        fate.status,
        fate.remote_mta,
        notify_delay=notify and not row.get("delay_notified"),
    )


def as_utc(when: datetime.datetime) -> datetime.datetime:
    """SQLite hands back naive datetimes; the store writes UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


def _days(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / 3600:.1f} hours"
