"""Connection limits: how many connections in total and per client IP (overload protection).

A listener asks before it serves a connection and releases the slot when the connection ends;
the protocol answers a refused client with its own "busy" reply (SMTP: 421 4.7.0).
"""

from __future__ import annotations

from collections import Counter


class ConnectionLimiter:
    def __init__(self, total: int, per_ip: int):
        self.total = total
        self.per_ip = per_ip
        self.open = 0
        self._by_ip: Counter[str] = Counter()

    def acquire(self, ip: str) -> bool:
        """Take a slot for a connection from ``ip``; False if a limit is reached."""
        if self.open >= self.total or self._by_ip[ip] >= self.per_ip:
            return False
        self.open += 1
        self._by_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        if ip not in self._by_ip:  # not holding a slot: a second release changes nothing
            return
        self.open -= 1
        self._by_ip[ip] -= 1
        if self._by_ip[ip] <= 0:
            del self._by_ip[ip]
