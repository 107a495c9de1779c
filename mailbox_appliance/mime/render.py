"""FETCH BODY, BODYSTRUCTURE and ENVELOPE strings for a scanned message (RFC 3501 §7.4.2).

BODY is the non-extensible form, BODYSTRUCTURE adds the extension data (body MD5 from
Content-MD5, disposition, language, location; RFC 3501 §7.4.2 and §9 ``body-ext-1part`` /
``body-ext-mpart``).  Sizes are octets of the body as stored, still transfer-encoded; text/*
and message/rfc822 parts carry their line count (LF characters in the body).

Layout details follow Dovecot 2.3 (``imap-bodystructure.c``, ``imap-envelope.c``) so that
answers are the same as the reference server's:

* a text part without a charset gets ``"charset" "us-ascii"`` appended (RFC 2045 §5.2);
* a multipart with no parts (no usable boundary, or an immediate close delimiter) is written
  with one empty text/plain part, since RFC 3501 requires at least one;
* message/global (RFC 6532) is written in the basic form: IMAP4rev1 clients only expect
  envelope, body and lines after "MESSAGE" "RFC822";
* a part cut off by the nesting or part-count limits is written as application/octet-stream.
"""

from __future__ import annotations

from mailbox_appliance.mime.addresses import Address
from mailbox_appliance.mime.headers import Envelope, PartInfo
from mailbox_appliance.mime.imapstr import nstring, nstring_nolf, string_for_humans
from mailbox_appliance.mime.params import Params, split_type
from mailbox_appliance.mime.parts import MESSAGE, MULTIPART, Part

_EMPTY_BODY = '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0'


def envelope(env: Envelope | None) -> str:
    """The ENVELOPE list; sender and reply-to default to from (RFC 3501 §7.4.2)."""
    if env is None:
        return "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    s = env.strings
    a = env.addresses
    sender = a.get("from")
    fields = (
        nstring_nolf(s.get("date")),
        string_for_humans(s.get("subject")),
        _addresses(sender),
        _addresses(a.get("sender") or sender),
        _addresses(a.get("reply-to") or sender),
        _addresses(a.get("to")),
        _addresses(a.get("cc")),
        _addresses(a.get("bcc")),
        nstring_nolf(s.get("in-reply-to")),
        nstring_nolf(s.get("message-id")),
    )
    return "(" + " ".join(fields) + ")"


def _addresses(addresses: list[Address] | None) -> str:
    if not addresses:
        return "NIL"
    return (
        "("
        + "".join(
            f"({string_for_humans(name)} {nstring(route)} {nstring(mailbox)} {nstring(host)})"
            for name, route, mailbox, host in addresses
        )
        + ")"
    )


def body(part: Part, extended: bool) -> str:
    """BODY (``extended`` False) or BODYSTRUCTURE (``extended`` True) of a part."""
    if part.kind == MULTIPART:
        return _multipart(part, extended)
    info = part.info or PartInfo()
    rfc822 = part.kind == MESSAGE and (
        info.content_type is None or info.content_type.lower() == "message/rfc822"
    )
    text = False
    if rfc822:
        head = '"message" "rfc822"'
    elif part.truncated or _looks_structured(info):
        head = '"application" "octet-stream"'
    elif info.content_type is None:
        head = '"text" "plain"'
        text = True
    else:
        main, sub = split_type(info.content_type)
        text = main.lower() == "text"
        head = f"{nstring(main)} {nstring(sub)}"
    out = [
        "(",
        head,
        " ",
        _params(info.params, text),
        " ",
        nstring_nolf(info.content_id),
        " ",
        nstring_nolf(info.description),
        " ",
        nstring(info.encoding) if info.encoding is not None else '"7bit"',
        f" {part.e - part.b}",
    ]
    if text:
        out.append(f" {part.lines}")
    elif rfc822 and part.msg is not None:
        out += [" ", envelope(part.msg.info.envelope if part.msg.info else None), " "]
        out += [body(part.msg, extended), f" {part.lines}"]
    if extended:
        out += [" ", nstring_nolf(info.md5), _extension(info)]
    out.append(")")
    return "".join(out)


def _multipart(part: Part, extended: bool) -> str:
    info = part.info or PartInfo()
    if part.children:
        inner = "".join(body(child, extended) for child in part.children)
    else:
        inner = _EMPTY_BODY + (" NIL NIL NIL NIL)" if extended else ")")
    _main, sub = split_type(info.content_type or "")
    out = f"({inner} {nstring(sub)}"
    if extended:
        out += f" {_params(info.params, False)}{_extension(info)}"
    return out + ")"


def _extension(info: PartInfo) -> str:
    """Disposition, language and location (RFC 3501 §9 ``body-ext-*``), with leading spaces."""
    if info.disposition is None:
        disposition = "NIL"
    else:
        value, params = info.disposition
        disposition = f"({nstring(value)} {_params(params, False)})"
    if info.language is None:
        language = "NIL"
    else:
        language = "(" + " ".join(nstring(tag) for tag in info.language) + ")"
    return f" {disposition} {language} {nstring_nolf(info.location)}"


def _params(params: Params, default_charset: bool) -> str:
    if not params and not default_charset:
        return "NIL"
    items = [f"{nstring(key)} {nstring(value)}" for key, value in params]
    if default_charset and not any(key.lower() == "charset" for key, _ in params):
        items.append('"charset" "us-ascii"')
    return "(" + " ".join(items) + ")"


def _looks_structured(info: PartInfo) -> bool:
    """A multipart or message/rfc822 type on a part not parsed as one (limits reached)."""
    if info.content_type is None:
        return False
    main, sub = split_type(info.content_type)
    main = main.lower()
    return main == "multipart" or (main == "message" and sub.lower() == "rfc822")
