"""SASL PLAIN (RFC 4616) and LOGIN decoding, shared by SMTP AUTH and, later, IMAP and POP3.

Only the decoding lives here; each protocol frames the exchange its own way (SMTP: RFC 4954
334 continuations).  Credentials are handed to twisted.cred as ``UsernamePassword``.
"""

from __future__ import annotations

import base64
import binascii

MECHANISMS = ("PLAIN", "LOGIN")
#: The prompts of the LOGIN mechanism (draft-murchison-sasl-login), as clients expect them.
LOGIN_USERNAME = b"Username:"
LOGIN_PASSWORD = b"Password:"


class SASLError(Exception):
    """The client's response cannot be decoded (a 501 in SMTP)."""


class SASLAborted(SASLError):
    """The client sent ``*`` (RFC 4954 §4)."""


def decode_response(line: bytes) -> bytes:
    """A client response: base64, ``=`` for an empty one, ``*`` to abort."""
    line = line.strip()
    if line == b"*":
        raise SASLAborted("authentication aborted")
    if line == b"=":
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SASLError("invalid base64") from e


def encode_challenge(data: bytes) -> bytes:
    return base64.b64encode(data)


def parse_plain(message: bytes) -> tuple[str, str]:
    """``[authzid] NUL authcid NUL passwd`` → (authcid, passwd); no proxy authorization."""
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise SASLError("malformed PLAIN response")
    authzid, authcid, password = (_text(p) for p in parts)
    if not authcid or not password:
        raise SASLError("empty user name or password")  # RFC 4616 §2: both 1*SAFE
    if authzid and authzid.lower() != authcid.lower():
        raise SASLError("authorization identity differs from the user")
    return authcid, password


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SASLError("not UTF-8") from e
