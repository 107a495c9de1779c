"""Quotas that grow by themselves: the one rule, used at RCPT time and in the delivering write.

An account's quota is the capacity it has today.  When a delivery would take its use past
``grow_at`` of that capacity, the capacity grows by ``grow_by`` (as often as the message needs)
until ``max``; only a message that does not fit even then is refused.  The RCPT check (with a
declared SIZE, RFC 1870) and the delivery transaction call the same function, so they agree.
"""

from __future__ import annotations

from typing import NamedTuple


class QuotaPolicy(NamedTuple):
    grow_at: float = 0.9
    grow_by: int = 0
    max: int = 0

    @classmethod
    def from_config(cls, quota) -> QuotaPolicy:
        return cls(quota.grow_at, quota.grow_by, quota.max)


#: Quotas stay what the admin set.
FIXED = QuotaPolicy()


def admit(used: int, quota: int, size: int, policy: QuotaPolicy) -> tuple[bool, int]:
    """Whether ``size`` more bytes fit, and the quota to record (grown if that was needed)."""
    after = used + size
    if policy.grow_by > 0:
        while after > quota * policy.grow_at and quota < policy.max:
            quota = min(quota + policy.grow_by, policy.max)
    return after <= quota, quota
