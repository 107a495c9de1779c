"""The IMAP wire syntax both ways: reading tokens of a command, writing response values.

Everything here follows the formal syntax of RFC 3501 §9: atoms and ASTRING-CHAR, quoted
strings (7-bit only, no CR/LF, ``\\`` escapes only ``"`` and ``\\``), literals (``{N}`` and the
LITERAL+ ``{N+}`` of RFC 7888), numbers, date-time, flags, and mailbox names in modified UTF-7
(RFC 3501 §5.1.3, with ``INBOX`` case-insensitive).  Reading and writing live side by side so
that what the server writes is, by construction, what its own parser reads back.

The modified UTF-7 codec is Twisted's (``twisted.mail.imap4`` registers ``imap4-utf-7``).  It is
lenient when decoding (it accepts ``&AGE-`` for ``a``, unterminated shifts, adjacent shifts) and
encodes TAB, CR and LF wrongly, so both directions here check that decoding and encoding give
each other back: only the canonical form of RFC 3501 §5.1.3 is accepted or produced.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable

import twisted.mail.imap4  # noqa: F401  (registers the "imap4-utf-7" codec)

MUTF7 = "imap4-utf-7"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = {m.upper(): i + 1 for i, m in enumerate(MONTHS)}
#: The flags of RFC 3501 §2.3.2 a client may set, in their canonical spelling.
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SYSTEM = {f.upper(): f for f in SYSTEM_FLAGS}
MAX_NUMBER = 2**32 - 1  # number, nz-number (RFC 3501 §9)
MAX_NUMBER64 = 2**63 - 1  # number64, mod-sequence-value (RFC 9051 §9, RFC 7162 §7)

# ATOM-CHAR: any CHAR (0x01-0x7F) except atom-specials: ( ) { SP CTL % * " \ ]
_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_ASTRING = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')  # ATOM-CHAR / "]"
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00\x80-\xff]|\\["\\])*)"')
_QUOTED_ESCAPE = re.compile(rb'\\(["\\])')
_LITERAL_SPEC = re.compile(rb"\{(\d+)(\+?)\}\Z")
_DIGITS = re.compile(rb"\d+")
_DATE_TIME = re.compile(
    rb'"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"'
)


class ParseError(Exception):
    """A command the server answers with ``tag BAD <message>`` (RFC 3501 §7.1.5).

    ``tag`` is the command's tag as sent (bytes) when it could be read, else None.
    """

    def __init__(self, message: str, tag: bytes | None = None):
        super().__init__(message)
        self.message = message
        self.tag = tag


class Literal:
    """A literal (RFC 3501 §4.3) the protocol read after a line ending in ``{N}``/``{N+}``.

    ``data`` holds the octets; for APPEND the protocol may stream the message elsewhere and
    pass ``data=None`` with ``size`` and ``ref`` set, which the parser carries through as is.
    """

    __slots__ = ("data", "size", "ref")

    def __init__(self, data: bytes | None = None, size: int | None = None, ref: object = None):
        self.data = data
        self.size = len(data) if size is None and data is not None else size
        self.ref = ref

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Literal):
            return NotImplemented
        return (self.data, self.size, self.ref) == (other.data, other.size, other.ref)

    def __hash__(self) -> int:
        return hash((self.data, self.size))

    def __repr__(self) -> str:
        return f"Literal(data={self.data!r}, size={self.size!r}, ref={self.ref!r})"


def literal_at_end(line: bytes) -> tuple[int, bool] | None:
    """(size, non_synchronizing) when ``line`` ends with ``{N}`` or ``{N+}`` (RFC 7888 §3)."""
    m = _LITERAL_SPEC.search(line)
    if m is None:
        return None
    size = int(m.group(1))
    if size > MAX_NUMBER64:
        raise ParseError("literal too large")
    return size, bool(m.group(2))


class Reader:
    """A cursor over a command's pieces: line text (bytes, without CRLF) and Literals.

    Each bytes piece that ends in a literal spec is followed by its Literal and then by the
    next line's text.  Methods raise ParseError naming what was expected.
    """

    def __init__(self, pieces: bytes | list[bytes | Literal]):
        self.pieces = [pieces] if isinstance(pieces, bytes) else list(pieces)
        if not self.pieces or not isinstance(self.pieces[0], bytes):
            raise ParseError("empty command")
        self.index = 0
        self.pos = 0

    @property
    def line(self) -> bytes:
        return self.pieces[self.index]

    def peek(self, n: int = 1) -> bytes:
        return self.line[self.pos : self.pos + n]

    def at_end(self) -> bool:
        return self.pos >= len(self.line) and self.index + 1 >= len(self.pieces)

    def match(self, pattern: re.Pattern[bytes]) -> re.Match[bytes] | None:
        m = pattern.match(self.line, self.pos)
        if m is not None:
            self.pos = m.end()
        return m

    def token(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        m = self.match(pattern)
        if m is None:
            raise ParseError(f"expected {what}")
        return m.group(0)

    def skip(self, text: bytes) -> bool:
        """Consume ``text`` (case-insensitive) when it comes next."""
        if self.line[self.pos : self.pos + len(text)].upper() == text.upper():
            self.pos += len(text)
            return True
        return False

    def expect(self, text: bytes, what: str | None = None) -> None:
        if not self.skip(text):
            raise ParseError(f"expected {what or text.decode()}")

    def sp(self, what: str = "an argument") -> None:
        """The single space before an argument (RFC 3501 §9 SP)."""
        c = self.peek()
        if c != b" ":
            missing = self.at_end() or c in (b")", b"]")
            raise ParseError(f"missing {what}" if missing else f"expected SP before {what}")
        self.pos += 1

    def end(self) -> None:
        if not self.at_end():
            raise ParseError("unexpected extra arguments")

    def atom(self, what: str = "an atom") -> bytes:
        return self.token(_ATOM, what)

    def number(self, what: str = "a number", limit: int = MAX_NUMBER) -> int:
        value = int(self.token(_DIGITS, what))
        if value > limit:
            raise ParseError(f"{what} out of range")
        return value

    def string(self, what: str = "a string") -> bytes:
        """``string = quoted / literal``."""
        c = self.peek()
        if c == b'"':
            m = self.match(_QUOTED)
            if m is None:
                raise ParseError(f"bad quoted string for {what} (8-bit data needs a literal)")
            return _QUOTED_ESCAPE.sub(rb"\1", m.group(1))
        if c == b"{":
            literal = self.literal(what)
            if literal.data is None or b"\x00" in literal.data:
                raise ParseError(f"bad literal for {what}")
            return literal.data
        raise ParseError(f"expected {what}")

    def astring(self, what: str = "a string") -> bytes:
        m = self.match(_ASTRING)
        return m.group(0) if m is not None else self.string(what)

    def nstring(self, what: str = "a string") -> bytes | None:
        if self.peek(3).upper() == b"NIL" and self.peek(4)[3:] in (b"", b" ", b")"):
            self.pos += 3
            return None
        return self.string(what)

    def literal(self, what: str = "a literal") -> Literal:
        """A literal whose ``{N}`` spec ends the current piece; moves to the next line."""
        m = _LITERAL_SPEC.match(self.line, self.pos)
        if m is None:
            raise ParseError(f"expected a literal for {what}")
        size = int(m.group(1))
        if self.index + 1 >= len(self.pieces) or not isinstance(
            self.pieces[self.index + 1], Literal
        ):
            raise ParseError(f"literal for {what} is missing")
        literal = self.pieces[self.index + 1]
        if literal.size != size:
            raise ParseError(f"literal for {what} has the wrong size")
        if self.index + 2 >= len(self.pieces):
            self.pieces.append(b"")
        elif not isinstance(self.pieces[self.index + 2], bytes):
            raise ParseError("a literal must be followed by the rest of the line")
        self.index += 2
        self.pos = 0
        return literal

    def text(self, what: str = "a string") -> str:
        """An astring as UTF-8 text (RFC 3501 strings are 7-bit or UTF-8 in literals)."""
        return utf8(self.astring(what), what)

    def mailbox(self) -> str:
        return decode_mailbox(self.astring("a mailbox name"))

    def date_time(self) -> datetime.datetime:
        """``date-time`` of RFC 3501 §9, as an aware datetime."""
        m = self.match(_DATE_TIME)
        if m is None:
            raise ParseError('expected a date-time like "17-Jul-1996 02:44:25 -0700"')
        day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
        try:
            if int(zm) > 59:
                raise ValueError("zone minutes out of range")
            zone = datetime.timedelta(hours=int(zh), minutes=int(zm))
            tz = datetime.timezone(-zone if sign == b"-" else zone)
            return datetime.datetime(
                int(year), month(mon), int(day), int(hh), int(mm), int(ss), tzinfo=tz
            )
        except ValueError as e:
            raise ParseError(f"bad date-time: {e}") from None


def month(name: bytes) -> int:
    try:
        return _MONTH[name.upper().decode("ascii")]
    except (KeyError, UnicodeDecodeError):
        raise ParseError("bad month name") from None


def utf8(value: bytes, what: str = "a string") -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"{what} is not UTF-8") from None


def normalise_inbox(name: str) -> str:
    """``INBOX`` is case-insensitive, also as the first hierarchy level (RFC 3501 §5.1)."""
    head, sep, rest = name.partition("/")
    return "INBOX" + sep + rest if head.upper() == "INBOX" else name


def decode_mailbox(raw: bytes) -> str:
    """A mailbox name off the wire: canonical modified UTF-7 only (RFC 3501 §5.1.3)."""
    if re.search(rb"[^\x20-\x7e]", raw):
        raise ParseError("mailbox name has characters outside printable US-ASCII")
    try:
        name = raw.decode(MUTF7)
        canonical = name.encode(MUTF7) == raw
    except (UnicodeError, ValueError):
        canonical = False
    if not canonical:
        raise ParseError("mailbox name is not valid modified UTF-7")
    return normalise_inbox(name)


def parse_flag(raw: bytes) -> str:
    """A storable ``flag`` (RFC 3501 §9): a system flag in canonical case, or a keyword.

    ``\\Recent`` and unknown ``\\`` flags are refused: no client can set them.
    """
    if raw[:1] == b"\\":
        canonical = _SYSTEM.get(raw.decode("ascii").upper())
        if canonical is None:
            raise ParseError(f"flag {raw.decode('ascii')} cannot be stored")
        return canonical
    return raw.decode("ascii")


_FLAG = re.compile(rb'\\?[^\x00-\x20\x7f-\xff(){%*"\\\]]+')


def read_flag(reader: Reader) -> str:
    return parse_flag(reader.token(_FLAG, "a flag"))


def read_flag_list(reader: Reader) -> tuple[str, ...]:
    """``flag-list = "(" [flag *(SP flag)] ")"``; duplicates are dropped."""
    reader.expect(b"(", "a flag list")
    flags: list[str] = []
    if not reader.skip(b")"):
        while True:
            flags.append(read_flag(reader))
            if reader.skip(b")"):
                break
            reader.sp("a flag")
    return dedupe(flags)


def dedupe(items: Iterable) -> tuple:
    return tuple(dict.fromkeys(items))


# --- writing (RFC 3501 §4 data formats, §7 responses) ---------------------------------------


def _bytes(s: str | bytes) -> bytes:
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)


def _quotable(b: bytes) -> bool:
    return re.search(rb"[\x00\r\n\x80-\xff]", b) is None


def quoted(s: str | bytes) -> bytes:
    """A quoted string; ValueError when the value needs a literal (8-bit, CR, LF, NUL)."""
    b = _bytes(s)
    if not _quotable(b):
        raise ValueError("value cannot be quoted; use a literal")
    return b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(b: bytes) -> bytes:
    return b"{%d}\r\n%b" % (len(b), b)


def string(s: str | bytes) -> bytes:
    """Quoted when possible, else a literal."""
    b = _bytes(s)
    return quoted(b) if _quotable(b) else literal(b)


def astring(s: str | bytes) -> bytes:
    """An atom when safe (never ``NIL``, which a reader of nstring would take as nil)."""
    b = _bytes(s)
    if _ASTRING.fullmatch(b) and b.upper() != b"NIL":
        return b
    return string(b)


def nstring(v: str | bytes | None) -> bytes:
    return b"NIL" if v is None else string(v)


def mailbox_name(name: str) -> bytes:
    """A mailbox name in modified UTF-7 (RFC 3501 §5.1.3) as an astring."""
    name = normalise_inbox(name)
    encoded = name.encode(MUTF7)
    if encoded.decode(MUTF7) != name:
        raise ValueError(f"mailbox name {name!r} cannot be encoded")
    return astring(encoded)


def flag_list(flags: Iterable[str]) -> bytes:
    """``(\\Seen foo)``: system flags first, then keywords, each group sorted."""
    ordered = sorted(set(flags), key=lambda f: (not f.startswith("\\"), f.casefold()))
    for flag in ordered:
        if flag != "\\*" and not (flag.isascii() and _FLAG.fullmatch(flag.encode("ascii"))):
            raise ValueError(f"not a flag: {flag!r}")
    return b"(" + " ".join(ordered).encode("ascii") + b")"


def internal_date(dt: datetime.datetime) -> bytes:
    """``"17-Jul-1996 02:44:25 -0700"`` (RFC 3501 §9 date-time, day padded with a space)."""
    offset = dt.utcoffset()
    if offset is None:
        raise ValueError("internal date must be timezone-aware")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    text = (
        f'"{dt.day:2d}-{MONTHS[dt.month - 1]}-{dt.year:04d} '
        f'{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} {sign}{hh:02d}{mm:02d}"'
    )
    return text.encode("ascii")
