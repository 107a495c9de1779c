"""What takes a detached attachment's place in the mail: the link, name, size and expiry.

The replacement is a ``multipart/alternative`` part (RFC 2046 §5.1.4) with a text/plain and a
text/html version, both quoted-printable so the message stays 7-bit whatever the name.  The
attachment's own name comes from its header as any mail client reads it: ``filename`` of
Content-Disposition, else ``name`` of Content-Type, with RFC 2231 and RFC 2047 encodings
undone (the standard library's ``email`` package does both).
"""

from __future__ import annotations

import datetime
import email.policy
import html
import mimetypes
import secrets
from email.header import decode_header, make_header
from email.message import MIMEPart
from email.parser import BytesHeaderParser
from typing import NamedTuple

from mailbox_appliance.config_types import human_size
from mailbox_appliance.store.transfers import file_name


class Notice(NamedTuple):
    """One detached attachment as the message will describe it."""

    name: str
    size: int
    sha256: str
    url: str
    expires: datetime.datetime


def attachment_name(header: bytes, media_type: str, number: int) -> str:
    """The file name a mail client would show for a part with this header; never a path.

    Without a name the part is called ``attachment-N`` with the media type's usual extension
    (``message.eml`` style for an attached message).
    """
    fields = BytesHeaderParser(policy=email.policy.default).parsebytes(header)
    raw = fields.get_filename()
    if raw and "=?" in raw:  # RFC 2047 inside a parameter: not standard, but Outlook's way
        try:
            raw = str(make_header(decode_header(raw)))
        except (ValueError, LookupError):
            pass
    if media_type in ("message/rfc822", "message/global"):
        extension = ".eml"
    else:
        extension = mimetypes.guess_extension(media_type, strict=False) or ".bin"
    default = f"attachment-{number}{extension}"
    return file_name({"filename": raw.encode("utf-8")}, default) if raw else default


def choose_boundary(avoid: tuple[bytes, ...]) -> str | None:
    """A boundary for the notice that none of the enclosing boundaries ``avoid`` is a prefix
    of (RFC 2046 §5.1.1), or None after a few draws: only a message built to block every
    draw gets there, and its part then stays as it is."""
    for _ in range(20):
        boundary = f"{secrets.token_hex(16)}.detached"
        if not any(outer and boundary.encode("ascii").startswith(outer) for outer in avoid):
            return boundary
    return None


def notice_part(notice: Notice, boundary: str, newline: bytes = b"\r\n") -> bytes:
    """The replacement part: its header, a blank line and its body, without a final newline."""
    until = f"{notice.expires:%A, %d %B %Y, %H:%M} UTC"
    size = human_size(notice.size)
    text = (
        f"The attachment {notice.name} ({size}) was too large to send by mail.\n"
        f"Download it here until {until}:\n\n"
        f"    {notice.url}\n\n"
        f"SHA-256: {notice.sha256}\n"
    )
    page = (
        "<!DOCTYPE html>\n<html><body>\n"
        f"<p>The attachment <strong>{html.escape(notice.name)}</strong> ({size}) was too large"
        " to send by mail.</p>\n"
        f'<p><a href="{html.escape(notice.url)}">Download {html.escape(notice.name)}</a>'
        f" until {until}.</p>\n"
        f'<p style="color:#666;font-size:smaller">SHA-256: {notice.sha256}</p>\n'
        "</body></html>\n"
    )
    part = MIMEPart(policy=email.policy.SMTP)
    part.set_content(text, cte="quoted-printable")
    part.add_alternative(page, subtype="html", cte="quoted-printable")
    part.set_boundary(boundary)
    data = part.as_bytes().rstrip(b"\r\n")
    return data if newline == b"\r\n" else data.replace(b"\r\n", newline)
