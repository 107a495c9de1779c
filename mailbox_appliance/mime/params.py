"""MIME header values: Content-Type, parameters, disposition, language, encoding.

RFC 2045 §5.1 (Content-Type and its parameters), RFC 2231 §3-4 (parameter continuations and
charset/language marking), RFC 2183 (Content-Disposition), RFC 3282 (Content-Language),
RFC 2045 §6.1 (Content-Transfer-Encoding).

Values keep the case they were written in: BODYSTRUCTURE reports them as sent.  Broken
parameter lists are recovered from as Dovecot 2.3 does (``rfc2231-parser.c``): a bad parameter
is skipped one character at a time until the next one parses.  RFC 2231 continuations are
joined (``name*0``, ``name*1``... in index order) but their percent-encoding is left for the
client, the key keeping its trailing ``*`` when a segment was extended.
"""

from __future__ import annotations

from mailbox_appliance.mime.rfc822 import Cursor

Params = list[tuple[str, str]]


def _content_param(c: Cursor) -> tuple[int, str, str]:
    """One ``; key=value`` (RFC 2045 §5.1): (1 ok / 0 end / -1 broken, key, value)."""
    if c.i >= c.n:
        return 0, "", ""
    if c.s[c.i] != ";":
        return -1, "", ""
    c.i += 1
    if c.skip_lwsp() <= 0:
        return -1, "", ""
    key: list[str] = []
    if c.parse_token(key) <= 0:
        return -1, "", ""
    if c.s[c.i] != "=":
        return -1, "", ""
    c.i += 1
    value: list[str] = []
    ret = c.skip_lwsp()
    if ret <= 0:
        pass  # no value
    elif c.s[c.i] == '"':
        ret = c.parse_quoted_string(value)
    elif c.s[c.i] == "=":
        # Broken but common: name==?utf-8?b?...?= (an unquoted encoded word).
        start = c.i
        while c.i < c.n and c.s[c.i] not in "; \t\r\n":
            c.i += 1
        value.append(c.s[start : c.i])
    else:
        ret = c.parse_token(value)
    return (-1 if ret < 0 else 1), "".join(key), "".join(value)


def parse_parameters(c: Cursor) -> Params:
    """The parameter list after a type or disposition, RFC 2231 continuations merged."""
    plain: Params = []
    indexed: list[tuple[str, int, bool, str]] = []
    idx = 0  # Dovecot keeps the previous index for a bare "key*" (quirk kept for parity)
    while True:
        ret, key, value = _content_param(c)
        if ret == 0:
            break
        if ret < 0:
            if c.i >= c.n:
                break
            c.i += 1
            continue
        star = key.find("*")
        if star < 0:
            plain.append((key, value))
            continue
        p = star
        if p + 1 < len(key):
            p += 1
            idx = 0
            while p < len(key) and key[p].isdigit() and key[p].isascii():
                idx = idx * 10 + ord(key[p]) - 48
                p += 1
        extended = p < len(key) and key[p] == "*"
        if extended:
            p += 1
        if p != len(key):
            plain.append((key, value))
        else:
            indexed.append((key[:star], idx, extended, value))
    if not indexed:
        return plain
    indexed.sort(key=lambda item: (item[0].encode("latin-1"), item[1]))
    i = 0
    while i < len(indexed):
        name = indexed[i][0].lower()
        j = i
        while j < len(indexed) and indexed[j][0].lower() == name:
            j += 1
        group = indexed[i:j]
        if any(item[1] != n for n, item in enumerate(group)):
            for key, index, extended, value in group:
                plain.append((f"{key}*{index}*" if extended else f"{key}*{index}", value))
        else:
            have_extended = any(item[2] for item in group)
            parts = ["''"] if have_extended and not group[0][2] else []
            for _key, _index, extended, value in group:
                parts.append(value.replace("%", "%25") if have_extended and not extended else value)
            plain.append((group[0][0] + ("*" if have_extended else ""), "".join(parts)))
        i = j
    return plain


def parse_content_type(value: str) -> tuple[str, bool, Params]:
    """``("type/subtype" as written, parsed_ok, params)``; params only when the type parsed.

    A type without subtype ("text") or an empty value comes back with ``parsed_ok`` False,
    like Dovecot, which then reports the type as far as it got and no parameters.
    """
    c = Cursor(value)
    c.skip_lwsp()
    out: list[str] = []
    ok = False
    if c.skip_lwsp() > 0 and c.parse_token(out) > 0 and c.s[c.i] == "/":
        c.i += 1
        if c.skip_lwsp() > 0:
            out.append("/")
            ok = c.parse_token(out) >= 0
    text = "".join(out)
    return text, ok, (parse_parameters(c) if ok else [])


def split_type(text: str) -> tuple[str, str]:
    slash = text.find("/")
    if slash < 0:
        return text, ""
    return text[:slash], text[slash + 1 :]


def parse_transfer_encoding(value: str) -> str | None:
    """The encoding token, or None when the value is not exactly one token."""
    c = Cursor(value)
    c.skip_lwsp()
    out: list[str] = []
    if c.parse_token(out) >= 0 and c.skip_lwsp() == 0 and out[0]:
        return out[0]
    return None


def parse_disposition(value: str) -> tuple[str, Params] | None:
    c = Cursor(value)
    c.skip_lwsp()
    out: list[str] = []
    if c.parse_token(out) < 0:
        return None
    return out[0], parse_parameters(c)


def parse_language(value: str) -> list[str] | None:
    """Content-Language tags, in order (RFC 3282 §2)."""
    c = Cursor(value)
    c.skip_lwsp()
    langs: list[str] = []
    while True:
        out: list[str] = []
        if c.parse_atom(out) < 0:
            break
        langs.append("".join(out))
        if c.i >= c.n or c.s[c.i] != ",":
            break
        c.i += 1
        c.skip_lwsp()
    return langs or None
