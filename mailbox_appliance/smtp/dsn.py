"""Delivery status notifications (RFC 3464): the bounces and delay warnings the queue runner sends.

A DSN is a multipart/report (RFC 6522 §3) with three parts: a human-readable explanation, the
machine-readable message/delivery-status fields, and the original message's header section as
text/rfc822-headers (RFC 6522 §4).  The MIME structure is assembled by hand, as bytes, because
the original headers must go through unchanged: they may hold raw UTF-8 or undecodable bytes and
lines far longer than the stdlib generator would leave alone.

Everything here is pure and synchronous, so it can run on a worker thread.
"""

from __future__ import annotations

import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, make_msgid

HEADER_LIMIT = 64 * 1024
"""The most header bytes a DSN returns, so a hostile message cannot make its bounce huge."""

ACTIONS = frozenset({"failed", "delayed"})

_FAILED_SUBJECT = "Undelivered Mail Returned to Sender"
_DELAYED_SUBJECT = "Delayed Mail (still being retried)"

# RFC 3463 §2: class "." subject "." detail, with class 2, 4 or 5 and up to three digits each.
_STATUS_RE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
# Any run of controls (CR and LF among them) or whitespace: collapsed to one space so that no
# value can start a new field or a new block (RFC 3464 §2.1).
_BREAKS = re.compile(r"[\x00-\x20\x7f\x85\u2028\u2029]+")
# RFC 5322 §2.1.1: no line may exceed 998 octets; keep the delivery-status lines well inside it.
_FIELD_LIMIT = 990
# Characters, not octets: 200 UTF-8 characters are at most 800 octets.
_WORD_LIMIT = 200

# RFC 3463 §3: what the subject digit of a status code is about.
_SUBJECTS = {
    "0": "other or undefined status",
    "1": "addressing status",
    "2": "mailbox status",
    "3": "mail system status",
    "4": "network and routing status",
    "5": "mail delivery protocol status",
    "6": "message content or media status",
    "7": "security or policy status",
}


@dataclass(frozen=True)
class RecipientStatus:
    """What happened to one recipient; becomes one per-recipient block (RFC 3464 §2.3).

    ``will_retry_until`` is reported only for ``delayed`` recipients (RFC 3464 §2.3.9).
    """

    recipient: str
    action: str
    status: str
    diagnostic: str | None = None
    remote_mta: str | None = None
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {sorted(ACTIONS)}, not {self.action!r}")
        if not isinstance(self.status, str) or not _STATUS_RE.fullmatch(self.status):
            raise ValueError(f"status must look like 5.1.1 (RFC 3463 §2), not {self.status!r}")
        if not _one_line(self.recipient):
            raise ValueError("a recipient address is required")


def header_block(head: bytes) -> bytes:
    """The header section of a message from its first bytes, line ends normalised to CRLF.

    The section ends before the first empty line (RFC 5322 §2.1); lines may end in CRLF or a bare
    LF, and a stray CR inside a line becomes a space so the result never holds a bare CR or LF.
    Without an empty line the whole input is header.  The result is cut at the last whole line
    that fits in HEADER_LIMIT bytes, so passing the first HEADER_LIMIT bytes of a message is
    enough (a line cut off by the read never fits and is dropped).
    """
    lines = head[:HEADER_LIMIT].split(b"\n")
    kept: list[bytes] = []
    size = 0
    for index, raw in enumerate(lines):
        if index == len(lines) - 1 and not raw:
            break  # the input ended with a line end
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line:
            break  # the empty line that separates header and body
        line = line.replace(b"\r", b" ")
        if size + len(line) + 2 > HEADER_LIMIT:
            break
        kept.append(line + b"\r\n")
        size += len(line) + 2
    return b"".join(kept)


def build_dsn(
    *,
    reporting_mta: str,
    to: str,
    original_headers: bytes,
    recipients: Sequence[RecipientStatus],
    arrival_date: datetime,
    now: datetime,
    envelope_id: str | None = None,
) -> bytes:
    """The whole DSN message, CRLF line ends, ready to store and send with a null reverse-path.

    ``to`` is the original envelope sender (RFC 3461 §6.1); it may be a UTF-8 address, which is
    kept as UTF-8 (RFC 6532 §3.2), so such a DSN must be relayed with SMTPUTF8.
    ``envelope_id`` is the decoded ENVID the sender gave (RFC 3461 §4.4).
    ``original_headers`` goes through header_block, so raw message bytes are fine too.
    """
    if not isinstance(reporting_mta, str) or not _HOST_RE.fullmatch(reporting_mta):
        raise ValueError(f"reporting_mta must be a host name, not {reporting_mta!r}")
    sender = _one_line(to).removeprefix("<").removesuffix(">")
    if not sender:
        # RFC 5321 §4.5.5: notifications go out with <> so that none is ever answered.
        raise ValueError("no DSN is sent to the null reverse-path")
    if not recipients:
        raise ValueError("a DSN needs at least one recipient")

    failed = any(r.action == "failed" for r in recipients)
    subject = _FAILED_SUBJECT if failed else _DELAYED_SUBJECT
    parts = [
        _part(b"text/plain; charset=utf-8", _explanation(reporting_mta, recipients)),
        _part(
            b"message/delivery-status",
            _delivery_status(reporting_mta, recipients, arrival_date, envelope_id),
        ),
        _part(b"text/rfc822-headers", header_block(original_headers)),
    ]
    boundary = _boundary(parts)
    eight_bit = any(not body.isascii() for _, body in parts)
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: {make_msgid(domain=reporting_mta)}",
        "MIME-Version: 1.0",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5: no auto-reply to this one
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}",
    ]
    out = ["\r\n".join(head).encode("utf-8", "replace"), b"\r\n\r\n"]
    out.append(b"This is a MIME-encapsulated delivery status notification (RFC 3464).\r\n")
    delimiter = b"--" + boundary.encode("ascii")
    for headers, body in parts:
        # RFC 2046 §5.1.1: the CRLF before a delimiter belongs to the delimiter.
        out += [b"\r\n", delimiter, b"\r\n", headers, body]
    out += [b"\r\n", delimiter, b"--\r\n"]
    return b"".join(out)


def _part(content_type: bytes, body: bytes) -> tuple[bytes, bytes]:
    """Part headers (ending in the empty line) and body; 8bit only when the body needs it."""
    encoding = b"7bit" if body.isascii() else b"8bit"
    headers = b"Content-Type: " + content_type + b"\r\nContent-Transfer-Encoding: " + encoding
    return headers + b"\r\n\r\n", body


def _boundary(parts: Sequence[tuple[bytes, bytes]]) -> str:
    """A random boundary that occurs in no part (RFC 2046 §5.1.1)."""
    while True:
        boundary = "=_dsn_" + secrets.token_hex(16)
        if not any(boundary.encode("ascii") in body for _, body in parts):
            return boundary


def _one_line(text: str | None) -> str:
    """``text`` with every run of controls and whitespace turned into one space."""
    return _BREAKS.sub(" ", text or "").strip()


def _ascii(text: str) -> str:
    """Non-ASCII characters as RFC 5137 ``\\x{HEX}`` escapes, as RFC 6533 §3 does."""
    return "".join(c if c.isascii() else f"\\x{{{ord(c):02X}}}" for c in text)


def _address_field(address: str) -> str:
    """An address-type and address (RFC 3464 §2.3.2): ``rfc822`` unless it is not ASCII.

    message/delivery-status is 7-bit, so a UTF-8 address takes the ``utf-8`` type in its
    utf-8-addr-xtext form (RFC 6533 §3), which also escapes ``+``, ``=`` and ``\\``.
    """
    address = _one_line(address).replace(" ", "")
    if address.isascii():
        return f"rfc822; {address}"
    return "utf-8; " + "".join(
        f"\\x{{{ord(c):02X}}}" if not c.isascii() or c in "+=\\" else c for c in address
    )


def _field(name: str, value: str) -> bytes:
    """One ``Name: value`` line, single-line ASCII and short enough for RFC 5322 §2.1.1."""
    line = f"{name}: {_ascii(_one_line(value))}"
    if len(line) > _FIELD_LIMIT:
        line = line[: _FIELD_LIMIT - 3] + "..."
    return line.encode("ascii") + b"\r\n"


def _delivery_status(
    reporting_mta: str,
    recipients: Sequence[RecipientStatus],
    arrival_date: datetime,
    envelope_id: str | None,
) -> bytes:
    """The message/delivery-status body: per-message fields, then one block per recipient."""
    per_message = [_field("Reporting-MTA", f"dns; {reporting_mta}")]  # RFC 3464 §2.2.2
    if envelope_id:
        per_message.append(_field("Original-Envelope-Id", envelope_id))  # §2.2.1
    per_message.append(_field("Arrival-Date", format_datetime(arrival_date)))  # §2.2.5
    blocks = [b"".join(per_message)]
    for r in recipients:
        fields = [
            _field("Final-Recipient", _address_field(r.recipient)),  # §2.3.2
            _field("Action", r.action),  # §2.3.3
            _field("Status", r.status),  # §2.3.4
        ]
        if r.remote_mta and _one_line(r.remote_mta):
            fields.append(_field("Remote-MTA", f"dns; {r.remote_mta}"))  # §2.3.5
        if r.diagnostic and _one_line(r.diagnostic):
            fields.append(_field("Diagnostic-Code", f"smtp; {r.diagnostic}"))  # §2.3.6
        if r.last_attempt is not None:
            fields.append(_field("Last-Attempt-Date", format_datetime(r.last_attempt)))  # §2.3.7
        if r.action == "delayed" and r.will_retry_until is not None:
            fields.append(_field("Will-Retry-Until", format_datetime(r.will_retry_until)))  # §2.3.9
        blocks.append(b"".join(fields))
    return b"\r\n".join(blocks)


def _explanation(reporting_mta: str, recipients: Sequence[RecipientStatus]) -> bytes:
    """The human-readable first part (RFC 6522 §3): one paragraph per recipient."""
    if any(r.action == "failed" for r in recipients):
        intro = (
            "Your message could not be delivered to one or more of its recipients. "
            "The problems are described below; the headers of your message are attached."
        )
    else:
        intro = (
            "Your message has not been delivered yet to one or more of its recipients. "
            "The mail system is still trying, so you do not need to send it again. "
            "The headers of your message are attached."
        )
    paragraphs = [f"This is the mail delivery system at {reporting_mta}.", intro]
    for r in recipients:
        paragraphs.append(_recipient_paragraph(r))
    text = "\r\n\r\n".join(_wrap(p) for p in paragraphs) + "\r\n"
    return text.encode("utf-8", "replace")


def _recipient_paragraph(r: RecipientStatus) -> str:
    """Why one recipient failed or waits, in words, with the remote server's reply."""
    about = _SUBJECTS.get(r.status.split(".")[1], "status")
    if r.action == "failed":
        sentences = [f"<{_one_line(r.recipient)}>: delivery failed ({r.status}, {about})."]
    else:
        sentences = [f"<{_one_line(r.recipient)}>: delivery is delayed ({r.status}, {about})."]
    diagnostic = _one_line(r.diagnostic)
    remote = _one_line(r.remote_mta)
    if diagnostic:
        who = f"The mail server {remote}" if remote else "The remote mail server"
        sentences.append(f"{who} said: {diagnostic}")
    if r.last_attempt is not None:
        sentences.append(f"Last attempt: {format_datetime(r.last_attempt)}.")
    if r.action == "delayed":
        if r.will_retry_until is not None:
            until = format_datetime(r.will_retry_until)
            sentences.append(f"The mail system will keep trying until {until}.")
        else:
            sentences.append("The mail system will keep trying.")
    return " ".join(sentences)


def _wrap(paragraph: str) -> str:
    """A paragraph wrapped at 72 columns; long words (a URL, a reply) are not split."""
    lines = textwrap.wrap(paragraph, width=72, break_long_words=False, break_on_hyphens=False)
    # A hostile reply can be one huge word: chop it so no line nears 998 octets (RFC 5322 §2.1.1).
    step = _WORD_LIMIT
    chopped = [line[i : i + step] for line in lines for i in range(0, len(line), step)]
    return "\r\n".join(chopped)
