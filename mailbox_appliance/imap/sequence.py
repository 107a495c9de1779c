"""Sequence sets of message numbers or UIDs (RFC 3501 §9 ``sequence-set``, §6.4.8).

``1,3:5,7:*``: ``*`` is the largest number in use, a range may be given in either order
(``4:2`` is ``2:4``), so ``n:*`` always includes the largest number even when ``n`` is past it
(``3:*`` on a two-message mailbox is ``2:3``).  Ranges are never expanded into lists: a set is
resolved against the largest number into sorted, merged ``(low, high)`` pairs, and selection
from a sorted list of numbers bisects, so ``1:4294967295`` costs as much as ``1``.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from .wire import MAX_NUMBER, ParseError

_NUMBER = rb"(?:[1-9][0-9]*|\*)"
_SET = re.compile(rb"%s(?::%s)?(?:,%s(?::%s)?)*" % ((_NUMBER,) * 4))
#: Characters a sequence set is made of; the reader takes this run, then parses it.
SET_CHARS = re.compile(rb"[0-9*:,]+")

Item = tuple[int | None, int | None]  # None stands for "*"


class SequenceSet:
    """A parsed sequence set; ``items`` keeps the client's order, ``None`` for ``*``."""

    __slots__ = ("items", "_cache")

    def __init__(self, items: Iterable[Item]):
        self.items: tuple[Item, ...] = tuple(items)
        self._cache: tuple[int, list[tuple[int, int]], list[int]] | None = None

    @classmethod
    def parse(cls, text: bytes | str) -> SequenceSet:
        """Parse ``sequence-set``; 0, leading zeros and numbers past 2**32-1 are errors."""
        if isinstance(text, str):
            text = text.encode("ascii", "replace")
        if not _SET.fullmatch(text):
            raise ParseError(f"invalid sequence set {text[:40].decode('ascii', 'replace')!r}")
        items: list[Item] = []
        append = items.append
        for part in text.split(b","):
            if b":" in part:
                low, high = part.split(b":")
                append((None if low == b"*" else int(low), None if high == b"*" else int(high)))
            else:
                n = None if part == b"*" else int(part)
                append((n, n))
        for low, high in items:
            if (low or 0) > MAX_NUMBER or (high or 0) > MAX_NUMBER:
                raise ParseError("sequence number out of range")
        return cls(items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SequenceSet):
            return NotImplemented
        return self.items == other.items

    def __hash__(self) -> int:
        return hash(self.items)

    def __str__(self) -> str:
        def one(n: int | None) -> str:
            return "*" if n is None else str(n)

        return ",".join(one(lo) if lo == hi else f"{one(lo)}:{one(hi)}" for lo, hi in self.items)

    def __repr__(self) -> str:
        return f"SequenceSet.parse({str(self)!r})"

    @property
    def has_star(self) -> bool:
        return any(lo is None or hi is None for lo, hi in self.items)

    def _resolved(self, max_value: int) -> tuple[list[tuple[int, int]], list[int]]:
        if self._cache is not None and self._cache[0] == max_value:
            return self._cache[1], self._cache[2]
        spans = []
        for lo, hi in self.items:
            lo = max_value if lo is None else lo
            hi = max_value if hi is None else hi
            if lo > hi:
                lo, hi = hi, lo
            lo = max(lo, 1)
            if lo <= hi:
                spans.append((lo, hi))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        starts = [lo for lo, _ in merged]
        self._cache = (max_value, merged, starts)
        return merged, starts

    def resolve(self, max_value: int) -> list[tuple[int, int]]:
        """Sorted, merged, inclusive ranges with ``*`` as ``max_value``; 0 is dropped."""
        return list(self._resolved(max_value)[0])

    def contains(self, n: int, max_value: int) -> bool:
        ranges, starts = self._resolved(max_value)
        i = bisect_right(starts, n) - 1
        return i >= 0 and n <= ranges[i][1]

    def select(self, sorted_values: list[int], max_value: int) -> list[int]:
        """The members of ``sorted_values`` (ascending) in this set, in ascending order."""
        out: list[int] = []
        start = 0
        for lo, hi in self._resolved(max_value)[0]:
            i = bisect_left(sorted_values, lo, start)
            j = bisect_right(sorted_values, hi, i)
            out.extend(sorted_values[i:j])
            start = j
            if start >= len(sorted_values):
                break
        return out

    def beyond(self, max_value: int) -> bool:
        """Whether a number is past ``max_value``, or ``*`` is used while it is 0.

        RFC 3501 §9 (seq-number): message sequence numbers past the number of messages,
        including ``*`` in an empty mailbox, get a tagged BAD; UIDs past it are ignored.
        """
        if max_value == 0 and self.has_star:
            return True
        ranges = self._resolved(max_value)[0]
        return bool(ranges) and ranges[-1][1] > max_value


def format_set(sorted_ints: Iterable[int]) -> str:
    """``[1, 2, 3, 5, 7, 8]`` → ``"1:3,5,7:8"`` (for COPYUID/APPENDUID, RFC 4315 §3)."""
    parts: list[str] = []
    first = last = None
    for n in sorted_ints:
        if last is not None and n == last + 1:
            last = n
            continue
        if last is not None and n == last:
            continue
        if first is not None:
            parts.append(str(first) if first == last else f"{first}:{last}")
        first = last = n
    if first is not None:
        parts.append(str(first) if first == last else f"{first}:{last}")
    return ",".join(parts)
