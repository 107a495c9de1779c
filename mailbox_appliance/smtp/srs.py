"""The Sender Rewriting Scheme for mail an alias forwards to another domain.

A forwarded message keeps its original envelope sender, but leaves from this box, so the
destination's SPF check (RFC 7208) of the sender's domain fails.  SRS (Shevek's scheme, as
postsrsd and Exim implement it) sends it instead from

    SRS0=HHHH=TT=sender.domain=sender-local@forwarding.domain

where TT is the day (base32, modulo 1024) and HHHH a keyed hash (HMAC-SHA1, base64) of
TT, the domain and the local part, so that only this box can make such an address.  A bounce
to it comes back here; :meth:`SRS.reverse` checks the hash and the age and gives the original
sender, to whom the bounce is then relayed.  An address that is already SRS0/SRS1 is left as
it is: its bounce goes to the forwarder before us, who can decode it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable

_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_DAY = 86400
_CYCLE = 1024  # TT wraps every 1024 days
#: Days an SRS address stays valid: bounces come back within days (RFC 5321 §4.5.4.1: 4-5).
MAX_AGE_DAYS = 21


class SRS:
    def __init__(
        self, secret: bytes, max_age_days: int = MAX_AGE_DAYS, clock: Callable = time.time
    ):
        self._secret = secret
        self._max_age = max_age_days
        self._clock = clock

    def forward(self, sender: str, domain: str) -> str:
        """The SRS0 address, at ``domain`` (a local domain), that stands for ``sender``."""
        local, _, sender_domain = sender.rpartition("@")
        if not local or not sender_domain or is_srs(local):
            return sender
        stamp = self._stamp(int(self._clock() // _DAY))
        digest = self._hash(stamp, sender_domain, local)
        return f"SRS0={digest}={stamp}={sender_domain}={local}@{domain}"

    def reverse(self, address: str) -> str | None:
        """The original sender an SRS0 address of ours stands for; None if it is not one
        (not SRS0, forged hash, or older than the allowed age)."""
        local, _, _ = address.rpartition("@")
        parts = local.split("=", 4)
        if len(parts) != 5 or parts[0].upper() != "SRS0":
            return None
        _, digest, stamp, sender_domain, sender_local = parts
        if not sender_domain or not sender_local or len(stamp) != 2:
            return None
        expected = self._hash(stamp.upper(), sender_domain, sender_local)
        # Some MTAs lower-case addresses: the hash is compared without case (24 bits left).
        if not hmac.compare_digest(expected.lower(), digest.lower()):
            return None
        age = _age_in_days(stamp.upper(), int(self._clock() // _DAY))
        if age is None or age > self._max_age:
            return None
        return f"{sender_local}@{sender_domain}"

    def _hash(self, stamp: str, domain: str, local: str) -> str:
        data = (stamp + domain + local).lower().encode("utf-8")
        mac = hmac.new(self._secret, data, hashlib.sha1).digest()
        return base64.b64encode(mac).decode("ascii")[:4]

    @staticmethod
    def _stamp(day: int) -> str:
        day %= _CYCLE
        return _BASE32[day >> 5] + _BASE32[day & 31]


def is_srs(local: str) -> bool:
    return local[:5].upper() in ("SRS0=", "SRS1=")


def _age_in_days(stamp: str, today: int) -> int | None:
    try:
        then = (_BASE32.index(stamp[0]) << 5) | _BASE32.index(stamp[1])
    except ValueError:
        return None
    return (today - then) % _CYCLE


def load_secret(path: str) -> bytes:
    """The secret from ``path``, made (random, mode 0600) when the file does not exist.

    Two paired boxes must share it (``delivery.srs_secret_file``), or each refuses the
    other's bounces."""
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except FileNotFoundError:
        secret = secrets.token_hex(32).encode("ascii")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret + b"\n")
            f.flush()
            os.fsync(f.fileno())
    if not secret:
        raise ValueError(f"{path}: the SRS secret file is empty")
    return secret
