"""BODY[section] byte ranges from a stored structure (RFC 3501 §6.4.5).

``locate`` maps a section spec (the text between the brackets) onto ``[start, end)`` of the
raw message, so the answer can be read straight from the blob file:

* ``""`` is the whole message, ``HEADER`` its header with the blank line that ends it,
  ``TEXT`` its body; ``HEADER.FIELDS (...)`` and ``HEADER.FIELDS.NOT (...)`` give the header
  range too (``filter_header_fields`` then picks the fields).
* Part numbers: a multipart's parts are numbered from 1; a message that is not multipart has
  one part, 1, its body.  For a message/rfc822 part ``n``, ``n`` is the whole embedded
  message, ``n.HEADER``/``n.TEXT`` its header/body and ``n.1`` its first part.
* ``n.MIME`` is the MIME header of part ``n`` (for part 1 of a non-multipart message, the
  message header, which carries its Content-* fields).

A part that does not exist gives None; the caller answers with an empty string, as Dovecot
does.  A leaf part has no sub-parts ("2.1" of a text/plain part 2 is None; Dovecot treats it
as part 2 itself, which RFC 3501 does not ask for).
"""

from __future__ import annotations

import re

_FIELD_NAME = re.compile(rb"([^:\r\n]*?)[ \t]*:")
_LINES = re.compile(rb"[^\n]*\n|[^\n]+")


def _message_parts(message: dict) -> list[dict]:
    """The numbered parts of a message: a multipart's parts, else the message itself."""
    return message["sub"] if "sub" in message else [message]


def locate(structure: dict, section: str) -> tuple[int, int] | None:
    """``(start, end)`` of a section of the message described by ``structure``, or None."""
    message = structure["part"]
    spec = section.strip().upper()
    if spec == "":
        return 0, message["e"]
    parts = spec.split(".")
    part: dict | None = None
    children = _message_parts(message)
    i = 0
    while i < len(parts) and parts[i].isascii() and parts[i].isdigit():
        number = int(parts[i])
        if children is None or not 1 <= number <= len(children):
            return None
        part = children[number - 1]
        if "msg" in part:
            children = _message_parts(part["msg"])
        elif "sub" in part:
            children = part["sub"]
        else:
            children = None
        i += 1
    rest = ".".join(parts[i:])
    if part is None:
        target = message
    elif rest in ("HEADER", "TEXT") or rest.startswith("HEADER.FIELDS"):
        if "msg" not in part:
            return None
        target = part["msg"]
    elif rest == "MIME":
        return part["h"], part["b"]
    elif rest == "":
        return part["b"], part["e"]
    else:
        return None
    if rest == "TEXT":
        return target["b"], target["e"]
    if rest == "HEADER" or rest.startswith("HEADER.FIELDS"):
        return target["h"], target["b"]
    return None


def filter_header_fields(header: bytes, names: list[str], exclude: bool) -> bytes:
    """The fields of ``header`` named in ``names`` (or all others, with ``exclude``), each with
    its continuation lines, then the blank line (RFC 3501 §6.4.5 HEADER.FIELDS[.NOT])."""
    wanted = {name.strip().lower().encode("latin-1", "replace") for name in names}
    out: list[bytes] = []
    keep = False
    for line in _LINES.findall(header):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        m = _FIELD_NAME.match(line)
        name = m.group(1).lower() if m else None
        keep = (name in wanted) != exclude if name is not None else exclude
        if keep:
            out.append(line)
    return b"".join(out) + b"\r\n"
