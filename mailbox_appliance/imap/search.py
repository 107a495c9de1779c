"""SEARCH criteria: parsing into a small AST and evaluating it (RFC 3501 §6.4.4, §9).

Every search key of RFC 3501 is supported, plus ``MODSEQ`` of RFC 7162 §3.1.5.  Derived keys
are rewritten at parse time so the evaluator stays small: ``UNSEEN`` is ``Not(HasFlag(\\Seen))``,
``OLD`` is ``Not(Recent())``, ``NEW`` is ``Recent() AND UNSEEN``, FROM/TO/CC/BCC/SUBJECT are
``Header`` keys, and several keys in a row (or in parentheses) are an ``And``.

String matching is case-insensitive substring matching with ``str.casefold`` (RFC 3501
§6.4.4: "case-insensitive").  Dates disregard time and timezone: the internal date is taken in
UTC; a message without a usable Date header uses its internal date as its sent date (as
RFC 5256 §2.2 does for SORT).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Protocol, Union

from .sequence import SET_CHARS, SequenceSet
from .wire import MAX_NUMBER64, Literal, ParseError, Reader, month, parse_flag, utf8

CHARSETS = ("UTF-8", "US-ASCII")
MAX_DEPTH = 64
_DATE = re.compile(rb'(\d{1,2})-([A-Za-z]{3})-(\d{4})(?=[ )]|\Z)|"(\d{1,2})-([A-Za-z]{3})-(\d{4})"')
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 ftext: printable except ":"


class BadCharset(ParseError):
    """CHARSET other than UTF-8/US-ASCII: answer ``NO [BADCHARSET (UTF-8 US-ASCII)]``.

    A ParseError subclass so that a server that forgets it still answers BAD; catch it first.
    """

    def __init__(self, charset: str, tag: bytes | None = None):
        super().__init__(f"unsupported charset {charset}", tag)
        self.charset = charset
        self.supported = CHARSETS


class SearchMessage(Protocol):
    """What the evaluator needs to know about one message.

    ``flags`` holds system flags in canonical spelling (``\\Seen``) and keywords; keywords are
    compared case-insensitively.  ``header_values(name)`` and ``has_header(name)`` get the field
    name in lower case and answer for every occurrence of the field; values are decoded
    (RFC 2047) and unfolded.  ``body_contains`` (the body only) and ``text_contains`` (header and
    body) receive the needle already ``str.casefold()``-ed and must compare it against their
    casefolded decoded text.  ``sent_date`` is the Date header's own calendar date, or None.
    """

    seq: int
    uid: int
    flags: frozenset[str]
    recent: bool
    internal_date: datetime.datetime
    size: int
    modseq: int
    max_seq: int
    max_uid: int

    def header_values(self, name: str) -> list[str]: ...

    def has_header(self, name: str) -> bool: ...

    def sent_date(self) -> datetime.date | None: ...

    def body_contains(self, needle: str) -> bool: ...

    def text_contains(self, needle: str) -> bool: ...

    # Optional: ``might_contain(needle)`` may answer False when the message's header block
    # certainly does not contain the (casefolded) needle, sparing a parse of its fields.


# --- the AST --------------------------------------------------------------------------------


@dataclass(frozen=True)
class All:
    pass


@dataclass(frozen=True)
class And:
    keys: tuple[Key, ...]


@dataclass(frozen=True)
class Or:
    left: Key
    right: Key


@dataclass(frozen=True)
class Not:
    key: Key


@dataclass(frozen=True)
class HasFlag:
    """A system flag (canonical spelling) or a keyword (KEYWORD)."""

    flag: str


@dataclass(frozen=True)
class Recent:
    pass


@dataclass(frozen=True)
class Header:
    """HEADER name value; FROM/TO/CC/BCC/SUBJECT too.  ``name`` is lower case."""

    name: str
    value: str
    folded: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "folded", self.value.casefold())


@dataclass(frozen=True)
class Contains:
    """BODY (``where="body"``) or TEXT (``where="text"``)."""

    where: str
    value: str
    folded: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "folded", self.value.casefold())


@dataclass(frozen=True)
class Date:
    """BEFORE/ON/SINCE (``sent=False``) and SENTBEFORE/SENTON/SENTSINCE (``sent=True``)."""

    sent: bool
    op: str  # "before", "on", "since"
    date: datetime.date


@dataclass(frozen=True)
class Size:
    op: str  # "larger", "smaller"
    size: int


@dataclass(frozen=True)
class Numbers:
    """A bare sequence set (``uid=False``) or ``UID`` set."""

    uid: bool
    set: SequenceSet


@dataclass(frozen=True)
class ModSeq:
    """MODSEQ [entry-name entry-type] n (RFC 7162 §3.1.5); ``entry`` is the flag or None."""

    value: int
    entry: str | None = None
    entry_type: str | None = None


Key = Union[All, And, Or, Not, HasFlag, Recent, Header, Contains, Date, Size, Numbers, ModSeq]


@dataclass(frozen=True)
class Search:
    """SEARCH arguments: the charset (``UTF-8``, ``US-ASCII`` or None) and one key."""

    charset: str | None
    key: Key


# --- parsing --------------------------------------------------------------------------------

_FLAG_KEYS = {
    b"ANSWERED": "\\Answered",
    b"DELETED": "\\Deleted",
    b"DRAFT": "\\Draft",
    b"FLAGGED": "\\Flagged",
    b"SEEN": "\\Seen",
}
_HEADER_KEYS = {b"FROM": "from", b"TO": "to", b"CC": "cc", b"BCC": "bcc", b"SUBJECT": "subject"}
_OTHER_KEYS = (b"HEADER", b"BODY", b"TEXT", b"LARGER", b"SMALLER", b"KEYWORD", b"UNKEYWORD")
_OTHER_KEYS += (b"UID", b"NOT", b"OR", b"MODSEQ")
_DATE_KEYS = {
    b"BEFORE": (False, "before"),
    b"ON": (False, "on"),
    b"SINCE": (False, "since"),
    b"SENTBEFORE": (True, "before"),
    b"SENTON": (True, "on"),
    b"SENTSINCE": (True, "since"),
}
_ARGUMENT_KEYS = frozenset(_HEADER_KEYS) | frozenset(_DATE_KEYS) | frozenset(_OTHER_KEYS)


def parse_search(pieces: bytes | list[bytes | Literal]) -> Search:
    """Parse the arguments of SEARCH (what follows ``SEARCH SP``)."""
    reader = Reader(pieces)
    search = read_search(reader)
    reader.end()
    return search


def read_search(reader: Reader) -> Search:
    """``[CHARSET SP astring SP] search-key *(SP search-key)`` (RFC 3501 §6.4.4)."""
    charset = None
    if reader.skip(b"CHARSET "):
        name = reader.astring("a charset").decode("ascii", "replace")
        charset = next((c for c in CHARSETS if c == name.upper()), None)
        if charset is None:
            raise BadCharset(name)
        reader.sp("a search key")
    keys = [read_key(reader, 0)]
    while not reader.at_end():
        if reader.peek() == b")":
            raise ParseError("unbalanced ) in search criteria")
        reader.sp("a search key")
        keys.append(read_key(reader, 0))
    return Search(charset, keys[0] if len(keys) == 1 else And(tuple(keys)))


def read_key(reader: Reader, depth: int) -> Key:
    if depth > MAX_DEPTH:
        raise ParseError("search key nested too deeply")
    c = reader.peek()
    if c == b"(":
        reader.pos += 1
        keys = [read_key(reader, depth + 1)]
        while not reader.skip(b")"):
            reader.sp("a search key")
            keys.append(read_key(reader, depth + 1))
        return keys[0] if len(keys) == 1 else And(tuple(keys))
    if c == b"*" or c.isdigit():
        return Numbers(False, SequenceSet.parse(reader.token(SET_CHARS, "a sequence set")))
    name = reader.atom("a search key").upper()
    if name in _FLAG_KEYS:
        return HasFlag(_FLAG_KEYS[name])
    if name.startswith(b"UN") and name[2:] in _FLAG_KEYS:
        return Not(HasFlag(_FLAG_KEYS[name[2:]]))
    simple = {b"ALL": All(), b"RECENT": Recent(), b"OLD": Not(Recent())}
    if name in simple:
        return simple[name]
    if name == b"NEW":
        return And((Recent(), Not(HasFlag("\\Seen"))))
    if name not in _ARGUMENT_KEYS:
        raise ParseError(f"unknown search key {name.decode('ascii', 'replace')}")
    reader.sp(f"the argument of {name.decode()}")
    if name in _HEADER_KEYS:
        return Header(_HEADER_KEYS[name], _text(reader))
    if name == b"HEADER":
        field_name = reader.astring("a header field name")
        if not _FIELD_NAME.fullmatch(field_name):
            raise ParseError("bad header field name")
        reader.sp("a header value")
        return Header(field_name.decode("ascii").lower(), _text(reader))
    if name in (b"BODY", b"TEXT"):
        return Contains(name.decode().lower(), _text(reader))
    if name in _DATE_KEYS:
        sent, op = _DATE_KEYS[name]
        return Date(sent, op, _date(reader))
    if name in (b"LARGER", b"SMALLER"):
        return Size(name.decode().lower(), reader.number("a size"))
    if name in (b"KEYWORD", b"UNKEYWORD"):
        keyword = reader.atom("a keyword")
        key = HasFlag(keyword.decode("ascii"))
        return key if name == b"KEYWORD" else Not(key)
    if name == b"UID":
        return Numbers(True, SequenceSet.parse(reader.token(SET_CHARS, "a UID set")))
    if name == b"NOT":
        return Not(read_key(reader, depth + 1))
    if name == b"OR":
        left = read_key(reader, depth + 1)
        reader.sp("the second key of OR")
        return Or(left, read_key(reader, depth + 1))
    return _modseq(reader)  # MODSEQ


def _text(reader: Reader) -> str:
    return utf8(reader.astring("a search string"), "search string")


def _date(reader: Reader) -> datetime.date:
    """``date = date-text / DQUOTE date-text DQUOTE``, e.g. ``1-Feb-1994``."""
    m = reader.match(_DATE)
    if m is None:
        raise ParseError("expected a date like 1-Feb-1994")
    day, mon, year = m.group(1, 2, 3) if m.group(1) else m.group(4, 5, 6)
    try:
        return datetime.date(int(year), month(mon), int(day))
    except ValueError as e:
        raise ParseError(f"bad date: {e}") from None


def _modseq(reader: Reader) -> ModSeq:
    """``MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer`` (RFC 7162 §7)."""
    entry = entry_type = None
    if reader.peek() == b'"':
        name = reader.string("an entry name")
        if not name.startswith(b"/flags/"):
            raise ParseError("MODSEQ entry name must be /flags/<flag>")
        raw = name[len(b"/flags/") :]
        if not re.fullmatch(rb'\\?[^\x00-\x20\x7f-\xff(){%*"\\\]]+', raw):
            raise ParseError("bad flag in MODSEQ entry name")
        entry = parse_flag(raw)
        reader.sp("an entry type")
        entry_type = reader.atom("an entry type").decode("ascii").lower()
        if entry_type not in ("priv", "shared", "all"):
            raise ParseError("MODSEQ entry type must be priv, shared or all")
        reader.sp("a mod-sequence")
    return ModSeq(reader.number("a mod-sequence", MAX_NUMBER64), entry, entry_type)


# --- evaluation -----------------------------------------------------------------------------


def _has_flag(key: HasFlag, msg: SearchMessage) -> bool:
    if key.flag in msg.flags:
        return True
    if key.flag.startswith("\\"):
        return False
    wanted = key.flag.casefold()
    return any(f.casefold() == wanted for f in msg.flags if not f.startswith("\\"))


def _header(key: Header, msg: SearchMessage) -> bool:
    if not key.folded:
        return msg.has_header(key.name)
    might_contain = getattr(msg, "might_contain", None)
    if might_contain is not None and not might_contain(key.folded):
        return False  # a cheap look at the raw header block rules it out
    return any(key.folded in v.casefold() for v in msg.header_values(key.name))


def _date_matches(key: Date, msg: SearchMessage) -> bool:
    day = msg.sent_date() if key.sent else None
    if day is None:
        day = msg.internal_date.astimezone(datetime.UTC).date()
    if key.op == "before":
        return day < key.date
    if key.op == "on":
        return day == key.date
    return day >= key.date


def _numbers(key: Numbers, msg: SearchMessage) -> bool:
    if key.uid:
        return key.set.contains(msg.uid, msg.max_uid)
    return key.set.contains(msg.seq, msg.max_seq)


_EVAL = {
    All: lambda k, m: True,
    And: lambda k, m: all(matches(sub, m) for sub in k.keys),
    Or: lambda k, m: matches(k.left, m) or matches(k.right, m),
    Not: lambda k, m: not matches(k.key, m),
    HasFlag: _has_flag,
    Recent: lambda k, m: m.recent,
    Header: _header,
    Contains: lambda k, m: (m.body_contains if k.where == "body" else m.text_contains)(k.folded),
    Date: _date_matches,
    Size: lambda k, m: m.size > k.size if k.op == "larger" else m.size < k.size,
    Numbers: _numbers,
    ModSeq: lambda k, m: m.modseq >= k.value,
}


def matches(key: Key, msg: SearchMessage) -> bool:
    """Whether ``msg`` satisfies ``key`` (RFC 3501 §6.4.4)."""
    return _EVAL[type(key)](key, msg)


def _children(key: Key) -> tuple[Key, ...]:
    if isinstance(key, And):
        return key.keys
    if isinstance(key, Or):
        return (key.left, key.right)
    if isinstance(key, Not):
        return (key.key,)
    return ()


def needs(key: Key) -> set[str]:
    """Which message data ``matches`` reads beyond the index: headers, body, text, sent."""
    found: set[str] = set()
    stack = [key]
    while stack:
        k = stack.pop()
        if isinstance(k, Header):
            found.add("headers")
        elif isinstance(k, Contains):
            found.add(k.where)
        elif isinstance(k, Date) and k.sent:
            found.add("sent")
        stack.extend(_children(k))
    return found


def uses_flags(key: Key) -> bool:
    """Whether a flag or keyword key is anywhere in ``key`` (so flags must be looked up)."""
    stack = [key]
    while stack:
        k = stack.pop()
        if isinstance(k, HasFlag):
            return True
        stack.extend(_children(k))
    return False


def uses_modseq(key: Key) -> bool:
    """A MODSEQ key anywhere: the response then ends with ``(MODSEQ n)`` (RFC 7162 §3.1.5)."""
    stack = [key]
    while stack:
        k = stack.pop()
        if isinstance(k, ModSeq):
            return True
        stack.extend(_children(k))
    return False
