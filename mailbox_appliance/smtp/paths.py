"""The arguments of MAIL and RCPT: a path in angle brackets, then ESMTP parameters.

Pure functions, no I/O.  Everything the client sends is refused with the SMTP reply to give
(:class:`SMTPReplyError`), so the protocol code only has to write ``str(error)`` back.

Why this is strict: the path is the input of the relay decision.  Source routes are parsed and
thrown away (RFC 5321 §4.1.1.3, Appendix C), and ``%`` and ``!`` are ordinary atext that never
route, so the domain the caller judges is always the one after the last mailbox's ``@``.
Anything we cannot read unambiguously (a trailing dot, a general address literal, invalid UTF-8)
is refused rather than guessed at.

The command line arrives as bytes; the caller decodes it as UTF-8, strictly or with
``surrogateescape``.  A lone surrogate in the text therefore means invalid UTF-8 on the wire,
which is always a syntax error; valid non-ASCII in a path needs SMTPUTF8 (RFC 6531).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import idna

__all__ = [
    "NULL_PATH",
    "MailParams",
    "Path",
    "SMTPReplyError",
    "is_valid_domain",
    "parse_mail",
    "parse_rcpt",
]

# RFC 5321 §4.5.3.1.1-3: size limits, in octets.
_MAX_LOCAL_PART = 64
_MAX_DOMAIN = 255
_MAX_PATH = 256  # including the angle brackets and any source route

# RFC 6531 §3.3: UTF8-non-ascii.  Lone surrogates are refused before any of these regexes run.
_UTF8_NON_ASCII = r"\u0080-\U0010ffff"
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")

_MAIL_KEYWORD_RE = re.compile(r"FROM: ?", re.IGNORECASE | re.ASCII)
_RCPT_KEYWORD_RE = re.compile(r"TO: ?", re.IGNORECASE | re.ASCII)
# The path up to its closing '>', which may itself occur inside a quoted local part.  When this
# fails (an unterminated quote, say), the loose form finds the '>' so the error can be 5.1.3.
_PATH_RE = re.compile(r'<((?:"(?:[^"\\]|\\.)*"|[^<>"])*)>', re.DOTALL)
_LOOSE_PATH_RE = re.compile(r"<([^>]*)>")

# RFC 5321 §4.1.2 Dot-string over RFC 5322 §3.2.3 atext, extended by RFC 6531 §3.3.
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~" + _UTF8_NON_ASCII + "]+"
_DOT_STRING_RE = re.compile(_ATOM + r"(?:\." + _ATOM + ")*")
# RFC 5321 §4.1.2 Quoted-string: qtextSMTP (plus UTF8-non-ascii) and quoted-pairSMTP.
_QUOTED_STRING_RE = re.compile(
    r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e' + _UTF8_NON_ASCII + r"]|\\[\x20-\x7e])*)" + '"'
)
_QUOTED_PAIR_RE = re.compile(r"\\([\x20-\x7e])")
_NEEDS_ESCAPE_RE = re.compile(r'(["\\])')

# RFC 5321 §4.1.2 Domain, applied to the lower-cased A-label form.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(_LABEL + r"(?:\." + _LABEL + ")*")
_RAW_IDN_RE = re.compile(r"[A-Za-z0-9.\-" + _UTF8_NON_ASCII + "]+")

# RFC 5321 §4.1.3 address literals.
_IPV4_LITERAL_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_IPV6_LITERAL_RE = re.compile(r"IPv6:(.*)", re.IGNORECASE | re.ASCII | re.DOTALL)
_IPV6_CHARS_RE = re.compile(r"[0-9A-Fa-f:.]+")
_GENERAL_LITERAL_RE = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+")

# RFC 5321 §4.1.2 esmtp-param; RFC 6531 §3.3 lets esmtp-value carry UTF8-non-ascii.
_PARAM_RE = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e" + _UTF8_NON_ASCII + "]+))?"
)
_SIZE_RE = re.compile(r"[0-9]{1,20}")  # RFC 1870 §3: at most 20 digits
_XTEXT_RE = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-Fa-f]{2})+")  # RFC 3461 §4
_BODY_TYPES = frozenset({"7BIT", "8BITMIME"})  # RFC 6152; BINARYMIME (RFC 3030) is not offered


class SMTPReplyError(Exception):
    """A refusal with its SMTP reply: code (int), enhanced status ("5.1.3"), text.

    ``str(error)`` is the reply line without CRLF, e.g. ``501 5.1.3 Invalid domain name``.
    """

    def __init__(self, code: int, enhanced: str, text: str):
        super().__init__(code, enhanced, text)
        self.code = code
        self.enhanced = enhanced
        self.text = text

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


@dataclass(frozen=True)
class Path:
    """A mailbox from a MAIL or RCPT path, with any source route already discarded.

    ``local`` is the local part with quoting removed, in the case it was sent (RFC 5321 §2.4:
    local parts are case-sensitive).  ``domain`` is ASCII: the lower-case A-label form of the
    domain (RFC 5890), or an address literal with its brackets, normalized as
    ``[192.0.2.1]`` / ``[IPv6:2001:db8::1]`` (the tag spelled as in RFC 5321 §4.1.3, the
    address as ``ipaddress`` compresses it: lower-case hex, longest zero run as ``::``).
    ``domain`` is ``""`` only for RCPT TO:<postmaster>.
    ``quoted`` says whether the local part was sent as a Quoted-string.
    """

    local: str
    domain: str
    quoted: bool

    @property
    def address(self) -> str:
        """``local@domain``, the local part re-quoted if it was quoted (RFC 5321 §4.1.2).

        A quoted local part stays quoted even when it would also be a Dot-string, so the
        address is written back the way the client chose to spell it.
        """
        local = self.local
        if self.quoted:
            local = '"' + _NEEDS_ESCAPE_RE.sub(r"\\\1", local) + '"'
        return f"{local}@{self.domain}" if self.domain else local

    @property
    def is_ascii(self) -> bool:
        """Whether the address can be sent without SMTPUTF8 (RFC 6531 §3.2).

        The domain is always kept as A-labels, so this is about the local part.
        """
        return self.local.isascii() and self.domain.isascii()

    @property
    def is_address_literal(self) -> bool:
        """Whether the domain is an address literal such as ``[192.0.2.1]`` (RFC 5321 §4.1.3)."""
        return self.domain.startswith("[")


NULL_PATH = None  # MAIL FROM:<> (RFC 5321 §4.5.5) parses to reverse-path None


@dataclass(frozen=True)
class MailParams:
    """The MAIL parameters we offer in EHLO.

    ``size``: RFC 1870 SIZE.  ``body``: RFC 6152 BODY, upper-cased.  ``smtputf8``: RFC 6531
    §3.4.  ``auth``: RFC 4954 §5 AUTH, kept verbatim (still xtext-encoded, or ``"<>"``).
    """

    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    auth: str | None = None


def parse_mail(arg: str) -> tuple[Path | None, MailParams]:
    """Parse the argument of MAIL, e.g. ``FROM:<a@b.example> SIZE=100 BODY=8BITMIME``.

    RFC 5321 §4.1.1.2.  Returns ``(reverse_path, params)``; the reverse path is
    :data:`NULL_PATH` (None) for ``FROM:<>``.  Leading spaces are ignored, as is one space
    between the colon and ``<``.  The parameters are read first because SMTPUTF8 among them
    decides whether the path may contain non-ASCII (RFC 6531 §3.4).
    """
    content, rest = _split_command(arg, _MAIL_KEYWORD_RE, "Syntax: MAIL FROM:<address>")
    params = _mail_params(_split_params(rest))
    return _parse_path(content, params.smtputf8, is_rcpt=False), params


def parse_rcpt(arg: str, smtputf8: bool) -> Path:
    """Parse the argument of RCPT, e.g. ``TO:<a@b.example>``.

    RFC 5321 §4.1.1.3.  ``smtputf8`` says whether this transaction's MAIL had SMTPUTF8.
    ``TO:<postmaster>`` (any case, no domain, RFC 5321 §4.5.1) gives
    ``Path("postmaster", "", False)``; the caller decides which postmaster that is.
    No RCPT parameters are offered (DSN is not), so any parameter is refused.
    """
    content, rest = _split_command(arg, _RCPT_KEYWORD_RE, "Syntax: RCPT TO:<address>")
    params = _split_params(rest)
    if params:
        raise SMTPReplyError(555, "5.5.4", f"Unsupported parameter {params[0][0]}")
    path = _parse_path(content, smtputf8, is_rcpt=True)
    assert path is not None  # the empty path was refused for RCPT
    return path


def is_valid_domain(domain: str) -> bool:
    """Whether ``domain`` is a plain-ASCII (A-label) domain name or a supported address literal.

    For sanity checks of the EHLO/HELO argument (RFC 5321 §4.1.1.1, §4.1.4) and elsewhere:
    U-labels are not accepted here (RFC 6531 §3.7.1 wants A-labels there), nor trailing dots.
    """
    if not isinstance(domain, str) or not domain.isascii():
        return False
    try:
        _parse_domain(domain, smtputf8=False, allow_literal=True)
    except SMTPReplyError:
        return False
    return True


def _bad_address(text: str) -> SMTPReplyError:
    """RFC 3463 X.1.3, bad address syntax; for senders too (X.1.7 would be more specific)."""
    return SMTPReplyError(501, "5.1.3", text)


def _bad_syntax(text: str) -> SMTPReplyError:
    """RFC 3463 X.5.4, invalid command arguments."""
    return SMTPReplyError(501, "5.5.4", text)


def _split_command(arg: str, keyword: re.Pattern[str], usage: str) -> tuple[str, str]:
    """``(path content between the brackets, text after the '>')``, or a 501 5.5.4."""
    if _SURROGATE_RE.search(arg):
        raise _bad_syntax("Invalid UTF-8 in command")
    arg = arg.lstrip(" ")
    match = keyword.match(arg)
    if match is None:
        raise _bad_syntax(usage)
    path = _PATH_RE.match(arg, match.end()) or _LOOSE_PATH_RE.match(arg, match.end())
    if path is None:
        raise _bad_syntax(usage)
    return path.group(1), arg[path.end() :]


def _split_params(rest: str) -> list[tuple[str, str | None]]:
    """The ``(KEYWORD, value)`` pairs after the path (RFC 5321 §4.1.2 esmtp-param).

    Keywords are upper-cased; a duplicate or anything that is not a space-separated list of
    parameters is a 501 5.5.4.  Extra and trailing spaces are tolerated.
    """
    if not rest.strip(" "):
        return []
    if not rest.startswith(" "):
        raise _bad_syntax("Syntax error in parameters")
    params: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for token in filter(None, rest.split(" ")):
        match = _PARAM_RE.fullmatch(token)
        if match is None:
            raise _bad_syntax("Syntax error in parameters")
        keyword = match.group(1).upper()
        if keyword in seen:
            raise _bad_syntax(f"Duplicate parameter {keyword}")
        seen.add(keyword)
        params.append((keyword, match.group(2)))
    return params


def _mail_params(params: list[tuple[str, str | None]]) -> MailParams:
    """Interpret the MAIL parameters we offer; any other is 555 5.5.4 (RFC 5321 §4.1.1.11)."""
    size: int | None = None
    body: str | None = None
    smtputf8 = False
    auth: str | None = None
    for keyword, value in params:
        if keyword == "SIZE":
            if value is None or not _SIZE_RE.fullmatch(value):
                raise _bad_syntax("Syntax: SIZE=<number of octets>")
            size = int(value)
        elif keyword == "BODY":
            if value is None:
                raise _bad_syntax("Syntax: BODY=7BIT|8BITMIME")
            # isascii first: str.upper() maps some non-ASCII letters onto ASCII ones.
            if not value.isascii() or value.upper() not in _BODY_TYPES:
                raise SMTPReplyError(555, "5.5.4", "Unsupported BODY type")
            body = value.upper()
        elif keyword == "SMTPUTF8":
            if value is not None:
                raise _bad_syntax("SMTPUTF8 takes no value")
            smtputf8 = True
        elif keyword == "AUTH":
            if value is None or not _XTEXT_RE.fullmatch(value):
                raise _bad_syntax("Syntax: AUTH=<xtext mailbox> or AUTH=<>")
            auth = value
        else:
            raise SMTPReplyError(555, "5.5.4", f"Unsupported parameter {keyword}")
    return MailParams(size=size, body=body, smtputf8=smtputf8, auth=auth)


def _parse_path(content: str, smtputf8: bool, *, is_rcpt: bool) -> Path | None:
    """The mailbox of a path (RFC 5321 §4.1.2 Path), its source route discarded."""
    if not content:
        if is_rcpt:
            raise _bad_address("Empty recipient address")
        return NULL_PATH
    if not smtputf8 and not content.isascii():
        # RFC 6531 §3.5; RFC 6533 §3 defines X.6.7.
        raise SMTPReplyError(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
    if len(content.encode("utf-8")) + 2 > _MAX_PATH:
        raise _bad_address("Path too long")
    if is_rcpt and content.isascii() and content.lower() == "postmaster":
        return Path("postmaster", "", False)
    if content.startswith("@"):
        content = _strip_source_route(content, smtputf8)
    return _parse_mailbox(content, smtputf8)


def _strip_source_route(content: str, smtputf8: bool) -> str:
    """The mailbox after an A-d-l source route, which is checked and then ignored.

    RFC 5321 §4.1.1.3 and Appendix C: servers SHOULD accept the route syntax and MAY ignore
    the route.  Ignoring it is what makes ``<@us:victim@elsewhere>`` a relay request for
    ``elsewhere`` and nothing else.
    """
    route, colon, mailbox = content.partition(":")
    if not colon:
        raise _bad_address("Malformed source route")
    for hop in route.split(","):
        if not hop.startswith("@"):
            raise _bad_address("Malformed source route")
        try:
            _parse_domain(hop[1:], smtputf8, allow_literal=False)
        except SMTPReplyError:
            raise _bad_address("Malformed source route") from None
    return mailbox


def _parse_mailbox(content: str, smtputf8: bool) -> Path:
    """RFC 5321 §4.1.2 Mailbox: a Dot-string or Quoted-string local part, '@', a domain."""
    if content.startswith('"'):
        match = _QUOTED_STRING_RE.match(content)
        if match is None:
            raise _bad_address("Invalid quoted local part")
        end = match.end()
        local = _QUOTED_PAIR_RE.sub(lambda pair: pair.group(1), match.group(1))
        quoted = True
    else:
        end = content.find("@")
        if end < 0:
            end = len(content)
        local = content[:end]
        if not _DOT_STRING_RE.fullmatch(local):
            raise _bad_address("Invalid local part")
        quoted = False
    # RFC 5321 §4.5.3.1.1, counted as sent: UTF-8 octets, including any quotes.
    if len(content[:end].encode("utf-8")) > _MAX_LOCAL_PART:
        raise _bad_address("Local part too long")
    if end == len(content):
        raise _bad_address("Address has no domain")
    if content[end] != "@":
        raise _bad_address("Invalid local part")
    domain = _parse_domain(content[end + 1 :], smtputf8, allow_literal=True)
    return Path(local, domain, quoted)


def _parse_domain(text: str, smtputf8: bool, *, allow_literal: bool) -> str:
    """The lower-case A-label form of a domain, or a normalized address literal.

    RFC 5321 §4.1.2 Domain: LDH labels, at least one, no empty label (so no trailing dot),
    each at most 63 octets (RFC 1035 §2.3.4), the whole at most 255 (RFC 5321 §4.5.3.1.2).
    With SMTPUTF8, U-labels are converted with IDNA2008 and UTS #46 (RFC 6531 §3.3).
    """
    if not text:
        raise _bad_address("Address has no domain")
    if text.startswith("["):
        if not allow_literal:
            raise _bad_address("Address literal not allowed here")
        return _parse_address_literal(text)
    if text.endswith("."):
        raise _bad_address("Trailing dot in domain")
    if text.isascii():
        domain = text.lower()
    elif not smtputf8:
        raise SMTPReplyError(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
    else:
        if not _RAW_IDN_RE.fullmatch(text) or "" in text.split("."):
            raise _bad_address("Invalid domain name")
        try:
            domain = idna.encode(text, uts46=True).decode("ascii").lower()
        except ValueError:  # idna.IDNAError is a UnicodeError, hence a ValueError
            raise _bad_address("Invalid internationalized domain name") from None
    if len(domain) > _MAX_DOMAIN or not _DOMAIN_RE.fullmatch(domain):
        raise _bad_address("Invalid domain name")
    return domain


def _parse_address_literal(text: str) -> str:
    """An RFC 5321 §4.1.3 IPv4 or IPv6 address literal, normalized, brackets kept.

    Leading zeros in IPv4 octets are refused (``ipaddress`` does, and they invite octal
    misreadings); so are zone ids and General-address-literals, which we cannot deliver to.
    """
    if not text.endswith("]"):
        raise _bad_address("Invalid address literal")
    inner = text[1:-1]
    if _IPV4_LITERAL_RE.fullmatch(inner):
        try:
            return f"[{ipaddress.IPv4Address(inner)}]"
        except ValueError:
            raise _bad_address("Invalid address literal") from None
    ipv6 = _IPV6_LITERAL_RE.fullmatch(inner)
    if ipv6 is not None:
        if not _IPV6_CHARS_RE.fullmatch(ipv6.group(1)):
            raise _bad_address("Invalid address literal")
        try:
            return f"[IPv6:{ipaddress.IPv6Address(ipv6.group(1)).compressed}]"
        except ValueError:
            raise _bad_address("Invalid address literal") from None
    if _GENERAL_LITERAL_RE.fullmatch(inner):
        raise _bad_address("Unsupported address literal")
    raise _bad_address("Invalid address literal")
