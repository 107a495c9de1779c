"""The sent date of a message: the day its Date field names (RFC 5322 §3.3, RFC 3501 §6.4.4).

SENTBEFORE, SENTON and SENTSINCE compare days "disregarding time and timezone", so only the
calendar date as written in the field is kept, as ``YYYY-MM-DD``.
"""

from __future__ import annotations

import datetime
from email.utils import parsedate_tz


def sent_date(value: str | None) -> str | None:
    """``YYYY-MM-DD`` of a Date field value, or None when there is none or it is unreadable."""
    if not value:
        return None
    try:
        parsed = parsedate_tz(" ".join(value.split()))
        if parsed is None:
            return None
        return datetime.date(parsed[0], parsed[1], parsed[2]).isoformat()
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
