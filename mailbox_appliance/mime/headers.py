"""One header block: its fields (RFC 5322 §2.2) and what MIME and ENVELOPE need from them.

``header_fields`` splits a block into ``(name, raw value)`` pairs: the name as written
(white space before the colon dropped), the value with its folding line breaks still in it
(callers unfold as their output needs, RFC 5322 §2.2.3).  ``PartInfo`` keeps the MIME fields
of a part (RFC 2045 §3) and, for a message, the ENVELOPE fields (RFC 3501 §7.4.2).

Which occurrence counts follows Dovecot 2.3 so answers match it: the first Content-* field of
each kind; the last Date, Subject, Message-ID and In-Reply-To; and every From (To, Cc, ...)
field, their addresses joined, so a second From cannot hide behind the first.
"""

from __future__ import annotations

from mailbox_appliance.mime.addresses import Address, parse_address_list
from mailbox_appliance.mime.params import (
    Params,
    parse_content_type,
    parse_disposition,
    parse_language,
    parse_transfer_encoding,
)

# A NUL in a header is reported as U+FFFD (UTF-8 bytes, held as latin-1 characters).
_NUL_REPLACEMENT = "\xef\xbf\xbd"
_ADDRESS_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc")
_STRING_FIELDS = ("date", "subject", "in-reply-to", "message-id")


def header_fields(block: bytes | str) -> list[tuple[str, str]]:
    """``(name, value)`` for each field of a header block, in order, as latin-1 text.

    The value starts after the colon and its white space (all of a value that is nothing but
    white space is kept but one character, as Dovecot does) and keeps folding CRLFs.
    A line without a colon is a field with an empty name whose value is the whole line.
    """
    text = block.decode("latin-1") if isinstance(block, bytes) else block
    if "\x00" in text:
        text = text.replace("\x00", _NUL_REPLACEMENT)
    result: list[tuple[str, str]] = []
    lines = text.split("\n")
    i, count = 0, len(lines)
    while i < count:
        first = lines[i]
        if first == "" or first == "\r":
            break  # the blank line that ends the header
        j = i + 1
        while j < count and lines[j][:1] in (" ", "\t") and lines[j] != "":
            j += 1
        raw = first if j == i + 1 else "\n".join(lines[i:j])
        if raw.endswith("\r"):
            raw = raw[:-1]
        colon = first.find(":")
        if colon < 0:
            result.append(("", raw))
        else:
            line_value = first[colon + 1 :]
            if line_value.endswith("\r"):
                line_value = line_value[:-1]
            stripped = line_value.lstrip(" \t")
            skip = len(line_value) - len(stripped)
            if not stripped and line_value:
                skip = 1
            result.append((first[:colon].rstrip(" \t"), raw[colon + 1 + skip :]))
        i = j
    return result


class PartInfo:
    """The MIME (and, for a message, ENVELOPE) fields of one part's header.

    ``content_type`` is the type as parsed ("text/plain", possibly partial like "text"),
    ``None`` without a Content-Type field.  ``mime`` says whether Content-* fields count:
    RFC 2045 §4 wants MIME-Version; a Content-Type is taken as enough (common practice),
    and parts of a multipart are always MIME.
    """

    __slots__ = (
        "content_type",
        "type_ok",
        "params",
        "encoding",
        "content_id",
        "description",
        "md5",
        "disposition",
        "language",
        "location",
        "mime",
        "envelope",
        "first_date",
    )

    def __init__(self) -> None:
        self.content_type: str | None = None
        self.type_ok = False
        self.params: Params = []
        self.encoding: str | None = None
        self.content_id: str | None = None
        self.description: str | None = None
        self.md5: str | None = None
        self.disposition: tuple[str, Params] | None = None
        self.language: list[str] | None = None
        self.location: str | None = None
        self.mime = False
        self.envelope: Envelope | None = None
        self.first_date: str | None = None

    def boundary(self) -> str | None:
        """The first "boundary" parameter (RFC 2046 §5.1.1); None if absent."""
        for key, value in self.params:
            if key.lower() == "boundary":
                return value
        return None


class Envelope:
    """The ENVELOPE fields of one message header, raw (RFC 3501 §7.4.2)."""

    __slots__ = ("strings", "addresses")

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.addresses: dict[str, list[Address]] = {}


def parse_part_header(block: bytes, *, message: bool, mime: bool) -> PartInfo:
    """The fields of a part header; ``message`` collects ENVELOPE fields too.

    ``mime`` is True for the parts of a multipart, which are MIME without MIME-Version.
    """
    info = PartInfo()
    envelope = Envelope() if message else None
    seen_version = False
    for name, value in header_fields(block):
        lname = name.lower()
        if lname.startswith("content-"):
            _content_field(info, lname[8:], value)
        elif lname == "mime-version":
            seen_version = True
        if envelope is not None:
            if lname in _STRING_FIELDS:
                envelope.strings[lname] = value
                if lname == "date" and info.first_date is None:
                    info.first_date = value
            elif lname in _ADDRESS_FIELDS:
                envelope.addresses.setdefault(lname, []).extend(parse_address_list(value))
    info.mime = mime or seen_version or info.content_type is not None
    if not info.mime:
        # Without MIME-Version the Content-* fields are not MIME (RFC 2045 §4).
        first_date = info.first_date
        info = PartInfo()
        info.first_date = first_date
    info.envelope = envelope
    return info


def _content_field(info: PartInfo, name: str, value: str) -> None:
    if name == "type":
        if info.content_type is None:
            info.content_type, info.type_ok, info.params = parse_content_type(value)
    elif name == "transfer-encoding":
        if info.encoding is None:
            info.encoding = parse_transfer_encoding(value)
    elif name == "id":
        if info.content_id is None:
            info.content_id = value
    elif name == "description":
        if info.description is None:
            info.description = value
    elif name == "md5":
        if info.md5 is None:
            info.md5 = value
    elif name == "disposition":
        # Dovecot re-reads Content-Disposition until one has parameters; so does this.
        if info.disposition is None or not info.disposition[1]:
            parsed = parse_disposition(value)
            if parsed is not None:
                info.disposition = parsed
    elif name == "language":
        if info.language is None:
            info.language = parse_language(value)
    elif name == "location":
        if info.location is None:
            info.location = value
