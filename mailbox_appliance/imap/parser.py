"""IMAP commands: pieces of a command in, a ``Command`` with typed arguments out.

The grammar is RFC 3501 §9, strictly, with the syntax of the extensions the server offers:
LITERAL+ (RFC 7888), CONDSTORE (RFC 7162 §3.1), UIDPLUS (RFC 4315: UID EXPUNGE), MOVE
(RFC 6851), QUOTA (RFC 9208), SPECIAL-USE (RFC 6154: CREATE USE, LIST selection/RETURN), ID
(RFC 2971), ENABLE (RFC 5161), UNSELECT (RFC 3691), IDLE (RFC 2177), NAMESPACE (RFC 2342),
SASL-IR (RFC 4959).  Whether a command is allowed in the current state is the server's business.

The protocol hands over a command as ``list[bytes | Literal]``: line text without CRLF (ending
in ``{N}``/``{N+}`` when a literal follows), each Literal, then the next line's text.  Tokens
(atoms, strings, flags, dates, mailbox names) are read by ``wire.Reader``; SEARCH criteria by
``search``; sequence sets by ``sequence``.

``Command.args`` by command name (``Command.uid`` is True for the UID forms)::

    CAPABILITY NOOP LOGOUT STARTTLS CHECK CLOSE UNSELECT IDLE NAMESPACE   NoArgs
    AUTHENTICATE Authenticate      LOGIN Login          SELECT EXAMINE   Select
    CREATE Create                  RENAME Rename        LIST LSUB        ListArgs
    DELETE SUBSCRIBE UNSUBSCRIBE GETQUOTAROOT  MailboxArgs
    STATUS Status    APPEND Append    EXPUNGE Expunge    SEARCH search.Search
    FETCH Fetch      STORE Store      COPY MOVE Copy     ENABLE Enable    ID Id
    GETQUOTA QuotaRoot                SETQUOTA SetQuota
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass

from .search import BadCharset, Search, read_search
from .sequence import SET_CHARS, SequenceSet
from .wire import (
    MAX_NUMBER64,
    Literal,
    ParseError,
    Reader,
    astring,
    decode_mailbox,
    dedupe,
    literal_at_end,
    read_flag,
    read_flag_list,
    utf8,
)

__all__ = ["BadCharset", "Command", "Literal", "ParseError", "literal_at_end", "parse_command"]

_TAG = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')  # ASTRING-CHAR except "+"
_WORD = re.compile(rb"[A-Za-z0-9.-]+")
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 field-name
_PART = re.compile(rb"[1-9][0-9]*(?:\.[1-9][0-9]*)*")
_SECTION_TEXT = re.compile(rb"[A-Za-z.]*")
_PARTIAL = re.compile(rb"<([0-9]+)\.([1-9][0-9]*)>")
_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_LIST_PATTERN = re.compile(rb'[^\x00-\x20\x7f-\xff(){"\\]+')  # list-char
_STORE_ATT = re.compile(rb"([+-]?)FLAGS(\.SILENT)?(?=[ ]|\Z)", re.IGNORECASE)

STATUS_ITEMS = frozenset(
    # RFC 3501 §6.3.10, RFC 7162 §3.1.10, RFC 8438, RFC 9208 §4.2
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE"}
    | {"DELETED", "DELETED-STORAGE"}
)
USE_ATTRS = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
LIST_SELECT_OPTIONS = frozenset({"SPECIAL-USE"})  # RFC 6154 §5.1
LIST_RETURN_OPTIONS = frozenset({"SPECIAL-USE"})
SIMPLE_FETCH = ("ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE")
SIMPLE_FETCH += ("RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ")
MACROS = {  # RFC 3501 §6.4.5
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}


@dataclass(frozen=True)
class Command:
    tag: str
    name: str  # upper case; "FETCH" for UID FETCH too
    args: object
    uid: bool = False


@dataclass(frozen=True)
class NoArgs:
    """CAPABILITY NOOP LOGOUT STARTTLS CHECK CLOSE UNSELECT IDLE NAMESPACE."""


@dataclass(frozen=True)
class Authenticate:
    """``initial`` is the SASL-IR initial response (RFC 4959 §7) as sent: base64 or ``=``,
    checked for syntax only, so that it is decoded like every later response
    (``sasl.decode_response``); None when absent."""

    mechanism: str  # upper case
    initial: bytes | None


@dataclass(frozen=True)
class Login:
    user: str
    password: str


@dataclass(frozen=True)
class Select:
    """SELECT / EXAMINE."""

    mailbox: str
    condstore: bool = False


@dataclass(frozen=True)
class Create:
    mailbox: str
    special_use: tuple[str, ...] = ()  # RFC 6154 §5.2; unknown ones kept for a NO [USEATTR]


@dataclass(frozen=True)
class MailboxArgs:
    """DELETE SUBSCRIBE UNSUBSCRIBE GETQUOTAROOT."""

    mailbox: str


@dataclass(frozen=True)
class Rename:
    old: str
    new: str


@dataclass(frozen=True)
class ListArgs:
    """LIST (basic and RFC 5258 forms) and LSUB; patterns are mailbox names with % and *."""

    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()
    return_options: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Status:
    mailbox: str
    items: tuple[str, ...]  # upper case, client's order, no duplicates


@dataclass(frozen=True)
class Append:
    mailbox: str
    flags: tuple[str, ...]
    date: datetime.datetime | None
    message: Literal


@dataclass(frozen=True)
class Expunge:
    """EXPUNGE (``uids`` None) and UID EXPUNGE (RFC 4315 §2.1)."""

    uids: SequenceSet | None = None


@dataclass(frozen=True)
class Section:
    """A body section (RFC 3501 §6.4.5): part numbers, then HEADER/HEADER.FIELDS[.NOT]/TEXT/MIME."""

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()  # upper case, for HEADER.FIELDS[.NOT]

    @property
    def spec(self) -> str:
        """The canonical section text, as the response echoes it (RFC 3501 §7.4.2)."""
        words = [".".join(map(str, self.part))] if self.part else []
        if self.text:
            words.append(self.text)
        spec = ".".join(words)
        if self.fields:
            spec += " (" + " ".join(astring(f).decode("ascii") for f in self.fields) + ")"
        return spec


@dataclass(frozen=True)
class FetchItem:
    """One fetch-att.  BODY.PEEK / BINARY.PEEK are ``BODY`` / ``BINARY`` with ``peek``."""

    name: str
    section: Section | None = None  # BODY without one is the non-extensible BODYSTRUCTURE
    partial: tuple[int, int] | None = None  # (origin, length)
    peek: bool = False

    @property
    def label(self) -> str:
        """The response data item name: ``BODY[HEADER.FIELDS (FROM)]<0>`` (RFC 3501 §7.4.2)."""
        if self.section is None:
            return self.name
        origin = f"<{self.partial[0]}>" if self.partial else ""
        return f"{self.name}[{self.section.spec}]{origin}"


@dataclass(frozen=True)
class Fetch:
    """FETCH; ``items`` has macros expanded, and the implicit items appended when missing:
    UID for UID FETCH (RFC 3501 §6.4.8), MODSEQ with CHANGEDSINCE (RFC 7162 §3.1.4.1)."""

    sequence_set: SequenceSet
    items: tuple[FetchItem, ...]
    changed_since: int | None = None  # CHANGEDSINCE (RFC 7162 §3.1.4.1)
    vanished: bool = False  # VANISHED (RFC 7162 §3.2.6), UID FETCH only


@dataclass(frozen=True)
class Store:
    sequence_set: SequenceSet
    mode: str  # "replace" (FLAGS), "add" (+FLAGS), "remove" (-FLAGS)
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None  # RFC 7162 §3.1.3


@dataclass(frozen=True)
class Copy:
    """COPY and MOVE (RFC 6851)."""

    sequence_set: SequenceSet
    mailbox: str


@dataclass(frozen=True)
class Enable:
    capabilities: tuple[str, ...]  # upper case


@dataclass(frozen=True)
class Id:
    params: tuple[tuple[str, str | None], ...] | None  # None for "ID NIL"


@dataclass(frozen=True)
class QuotaRoot:
    """GETQUOTA."""

    root: str


@dataclass(frozen=True)
class SetQuota:
    root: str
    limits: tuple[tuple[str, int], ...] = ()  # (resource name in upper case, limit)


def parse_command(pieces: bytes | list[bytes | Literal]) -> Command:
    """Parse one complete command; raise ParseError (with ``.tag`` when readable)."""
    reader = Reader(pieces)
    m = reader.match(_TAG)
    if m is None or reader.peek() not in (b"", b" "):
        raise ParseError("invalid tag")
    tag = m.group(0)
    try:
        reader.sp("command name")
        name = reader.atom("a command name").upper().decode("ascii")
        uid = name == "UID"
        if uid:
            reader.sp("a command after UID")
            name = reader.atom("a command after UID").upper().decode("ascii")
            if name not in _UID_COMMANDS:
                raise ParseError("UID needs COPY, MOVE, FETCH, SEARCH, STORE or EXPUNGE")
        handler = _COMMANDS.get(name)
        if handler is None:
            raise ParseError("unknown command")
        args = handler(reader, uid)
        reader.end()
    except ParseError as e:
        if e.tag is None:
            e.tag = tag
        raise
    return Command(tag.decode("ascii"), name, args, uid)


# --- helpers --------------------------------------------------------------------------------


def _word(reader: Reader, what: str) -> str:
    return reader.token(_WORD, what).upper().decode("ascii")


def _paren_list(reader: Reader, item: Callable[[Reader], object], what: str, empty=True) -> list:
    """``"(" [item *(SP item)] ")"``."""
    reader.expect(b"(", f"( before {what}")
    items: list = []
    if reader.skip(b")"):
        if not empty:
            raise ParseError(f"empty list of {what}")
        return items
    while True:
        items.append(item(reader))
        if reader.skip(b")"):
            return items
        if reader.at_end():
            raise ParseError(f"missing ) after {what}")
        reader.sp(what)


def _seq(reader: Reader) -> SequenceSet:
    reader.sp("a sequence set")
    return SequenceSet.parse(reader.token(SET_CHARS, "a sequence set"))


def _mailbox(reader: Reader) -> str:
    reader.sp("a mailbox name")
    return reader.mailbox()


def _none(reader: Reader, uid: bool) -> NoArgs:
    return NoArgs()


# --- commands -------------------------------------------------------------------------------


def _authenticate(r: Reader, uid: bool) -> Authenticate:
    r.sp("a SASL mechanism")
    mechanism = r.atom("a SASL mechanism").upper().decode("ascii")
    if r.at_end():
        return Authenticate(mechanism, None)
    r.sp("an initial response")
    data = b"=" if r.skip(b"=") else r.token(_BASE64, "base64 initial response")
    if not data:
        raise ParseError("expected base64 initial response")
    return Authenticate(mechanism, data)


def _login(r: Reader, uid: bool) -> Login:
    r.sp("a user name")
    userid = r.text("a user name")
    r.sp("a password")
    return Login(userid, r.text("a password"))


def _select(r: Reader, uid: bool) -> Select:
    mailbox = _mailbox(r)
    params: list[str] = []
    if not r.at_end():
        r.sp("select parameters")
        params = _paren_list(r, _select_param, "select parameters", False)
    return Select(mailbox, bool(params))


def _select_param(r: Reader) -> str:
    """``select-param`` (RFC 4466 §2.1); CONDSTORE (RFC 7162 §3.1.8) is the only one."""
    param = _word(r, "a select parameter")
    if param != "CONDSTORE":
        raise ParseError(f"unknown select parameter {param}")
    return param


def _use_attr(r: Reader) -> str:
    """``use-attr`` (RFC 6154 §6): ``\\`` atom, known ones in canonical case."""
    r.expect(b"\\", "a special-use attribute")
    attr = "\\" + r.atom("a special-use attribute").decode("ascii")
    return next((a for a in USE_ATTRS if a.upper() == attr.upper()), attr)


def _create(r: Reader, uid: bool) -> Create:
    mailbox = _mailbox(r)
    uses: list[str] = []
    if not r.at_end():
        r.sp("create parameters")
        r.expect(b"(", "( before create parameters")
        if _word(r, "a create parameter") != "USE":
            raise ParseError("unknown create parameter")
        r.sp("special-use attributes")
        uses = _paren_list(r, _use_attr, "special-use attributes")
        r.expect(b")")
    return Create(mailbox, dedupe(uses))


def _one_mailbox(r: Reader, uid: bool) -> MailboxArgs:
    return MailboxArgs(_mailbox(r))


def _rename(r: Reader, uid: bool) -> Rename:
    return Rename(_mailbox(r), _mailbox(r))


def _pattern(r: Reader) -> str:
    m = r.match(_LIST_PATTERN)
    raw = m.group(0) if m is not None else r.string("a mailbox pattern")
    return decode_mailbox(raw)


def _options(r: Reader, allowed: frozenset[str], what: str) -> frozenset[str]:
    options = frozenset(_paren_list(r, lambda r: _word(r, what), what))
    unknown = options - allowed
    if unknown:
        raise ParseError(f"unsupported {what} {sorted(unknown)[0]}")
    return options


def _list(r: Reader, uid: bool) -> ListArgs:
    selection: frozenset[str] = frozenset()
    r.sp("a reference name")
    if r.peek() == b"(":
        selection = _options(r, LIST_SELECT_OPTIONS, "LIST selection option")
        r.sp("a reference name")
    reference = r.mailbox()
    r.sp("a mailbox pattern")
    if r.peek() == b"(":
        patterns = tuple(_paren_list(r, _pattern, "mailbox patterns", False))
    else:
        patterns = (_pattern(r),)
    return_options: frozenset[str] = frozenset()
    if not r.at_end():
        r.sp("RETURN options")
        r.expect(b"RETURN ", "RETURN (options)")
        return_options = _options(r, LIST_RETURN_OPTIONS, "LIST return option")
    return ListArgs(reference, patterns, selection, return_options)


def _lsub(r: Reader, uid: bool) -> ListArgs:
    reference = _mailbox(r)
    r.sp("a mailbox pattern")
    return ListArgs(reference, (_pattern(r),))


def _status(r: Reader, uid: bool) -> Status:
    mailbox = _mailbox(r)
    r.sp("status items")
    items = _paren_list(r, lambda r: _word(r, "a status item"), "status items", False)
    for item in items:
        if item not in STATUS_ITEMS:
            raise ParseError(f"unknown status item {item}")
    return Status(mailbox, dedupe(items))


def _append(r: Reader, uid: bool) -> Append:
    mailbox = _mailbox(r)
    r.sp("the message")
    flags: tuple[str, ...] = ()
    date = None
    if r.peek() == b"(":
        flags = read_flag_list(r)
        r.sp("the message")
    if r.peek() == b'"':
        date = r.date_time()
        r.sp("the message")
    return Append(mailbox, flags, date, r.literal("the message"))


def _expunge(r: Reader, uid: bool) -> Expunge:
    return Expunge(_seq(r) if uid else None)


def _search(r: Reader, uid: bool) -> Search:
    r.sp("search criteria")
    return read_search(r)


def _section(r: Reader, binary: bool) -> Section:
    """``section`` (or ``section-binary``, part numbers only) after the ``[``."""
    m = r.match(_PART)
    part = tuple(int(p) for p in m.group(0).split(b".")) if m else ()
    if any(p > 2**32 - 1 for p in part):
        raise ParseError("section part out of range")
    text, fields = None, ()
    if not binary and (not part or r.skip(b".")):
        text = r.token(_SECTION_TEXT, "a section").upper().decode("ascii")
        allowed = {"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"}
        if text == "MIME" and part:
            pass
        elif text == "" and not part:
            text = None
        elif text not in allowed:
            raise ParseError(f"bad section {text or 'after part number'}")
        if text and text.startswith("HEADER.FIELDS"):
            r.sp("header field names")
            fields = dedupe(_paren_list(r, _field_name, "header field names", False))
    r.expect(b"]", "] after section")
    return Section(part, text, fields)


def _field_name(r: Reader) -> str:
    name = r.astring("a header field name")
    if not _FIELD.fullmatch(name):
        raise ParseError("bad header field name")
    return name.decode("ascii").upper()


def _fetch_att(r: Reader) -> FetchItem:
    name = _word(r, "a fetch item")
    peek = name.endswith(".PEEK")
    base = name[: -len(".PEEK")] if peek else name
    if r.peek() != b"[":
        if name not in SIMPLE_FETCH:
            raise ParseError(f"unknown fetch item {name}")
        return FetchItem(name)
    if base not in ("BODY", "BINARY") and name != "BINARY.SIZE":
        raise ParseError(f"unknown fetch item {name}[")
    r.pos += 1
    section = _section(r, binary=base != "BODY")
    partial = None
    m = r.match(_PARTIAL) if name != "BINARY.SIZE" else None
    if m is not None:
        origin, length = int(m.group(1)), int(m.group(2))
        if origin > 2**32 - 1 or length > 2**32 - 1:
            raise ParseError("partial range out of range")
        partial = (origin, length)
    return FetchItem(base, section, partial, peek)


def _fetch(r: Reader, uid: bool) -> Fetch:
    seq = _seq(r)
    r.sp("fetch items")
    if r.peek() == b"(":
        items = _paren_list(r, _fetch_att, "fetch items", False)
    else:
        start = (r.index, r.pos)
        word = _word(r, "a fetch item")
        if word in MACROS:
            items = [FetchItem(n) for n in MACROS[word]]
        else:
            r.index, r.pos = start
            items = [_fetch_att(r)]
    changed_since, vanished = None, False
    if not r.at_end():
        r.sp("fetch modifiers")
        for modifier in _paren_list(r, _fetch_modifier, "fetch modifiers", False):
            if modifier == "VANISHED" and not vanished:
                vanished = True
            elif isinstance(modifier, int) and changed_since is None:
                changed_since = modifier
            else:
                raise ParseError("repeated fetch modifier")
    if vanished and (not uid or changed_since is None):
        raise ParseError("VANISHED needs UID FETCH and CHANGEDSINCE")
    if uid:
        items.append(FetchItem("UID"))
    if changed_since is not None:
        items.append(FetchItem("MODSEQ"))
    return Fetch(seq, dedupe(items), changed_since, vanished)


def _fetch_modifier(r: Reader) -> int | str:
    word = _word(r, "a fetch modifier")
    if word == "VANISHED":
        return word
    if word != "CHANGEDSINCE":
        raise ParseError(f"unknown fetch modifier {word}")
    r.sp("a mod-sequence")
    return r.number("a mod-sequence", MAX_NUMBER64)


def _store(r: Reader, uid: bool) -> Store:
    seq = _seq(r)
    r.sp("FLAGS")
    unchanged_since = None
    if r.peek() == b"(":
        r.pos += 1
        if _word(r, "a store modifier") != "UNCHANGEDSINCE":
            raise ParseError("unknown store modifier")
        r.sp("a mod-sequence")
        unchanged_since = r.number("a mod-sequence", MAX_NUMBER64)
        r.expect(b")")
        r.sp("FLAGS")
    m = r.match(_STORE_ATT)
    if m is None:
        raise ParseError("expected FLAGS, +FLAGS or -FLAGS")
    mode = {b"": "replace", b"+": "add", b"-": "remove"}[m.group(1)]
    r.sp("flags")
    if r.peek() == b"(":
        flags = read_flag_list(r)
    else:
        flags = [read_flag(r)]
        while not r.at_end():
            r.sp("a flag")
            flags.append(read_flag(r))
        flags = dedupe(flags)
    return Store(seq, mode, bool(m.group(2)), flags, unchanged_since)


def _copy(r: Reader, uid: bool) -> Copy:
    return Copy(_seq(r), _mailbox(r))


def _enable(r: Reader, uid: bool) -> Enable:
    caps = []
    while not caps or not r.at_end():
        r.sp("a capability")
        caps.append(r.atom("a capability").upper().decode("ascii"))
    return Enable(dedupe(caps))


def _id_pair(r: Reader) -> tuple[str, str | None]:
    name = utf8(r.string("an ID field"), "ID field")
    r.sp("an ID value")
    value = r.nstring("an ID value")
    if len(name.encode()) > 30 or (value is not None and len(value) > 1024):
        raise ParseError("ID field or value too long")  # RFC 2971 §3.3
    return name, None if value is None else utf8(value, "ID value")


def _id(r: Reader, uid: bool) -> Id:
    r.sp("ID parameters")
    if r.skip(b"NIL"):
        return Id(None)
    params = tuple(_paren_list(r, _id_pair, "ID parameters"))
    if len(params) > 30:
        raise ParseError("more than 30 ID parameters")
    return Id(params)


def _getquota(r: Reader, uid: bool) -> QuotaRoot:
    r.sp("a quota root")
    return QuotaRoot(r.text("a quota root"))


def _setquota(r: Reader, uid: bool) -> SetQuota:
    r.sp("a quota root")
    root = r.text("a quota root")
    r.sp("resource limits")

    def limit(r: Reader) -> tuple[str, int]:
        name = r.atom("a resource name").upper().decode("ascii")
        r.sp("a resource limit")
        return name, r.number("a resource limit", MAX_NUMBER64)

    return SetQuota(root, tuple(_paren_list(r, limit, "resource limits")))


_COMMANDS: dict[str, Callable[[Reader, bool], object]] = {
    **dict.fromkeys(
        ("CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT", "IDLE"),
        _none,
    ),
    "NAMESPACE": _none,
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "SELECT": _select,
    "EXAMINE": _select,
    "CREATE": _create,
    "DELETE": _one_mailbox,
    "SUBSCRIBE": _one_mailbox,
    "UNSUBSCRIBE": _one_mailbox,
    "GETQUOTAROOT": _one_mailbox,
    "RENAME": _rename,
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "EXPUNGE": _expunge,
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy,
    "MOVE": _copy,
    "ENABLE": _enable,
    "ID": _id,
    "GETQUOTA": _getquota,
    "SETQUOTA": _setquota,
}
_UID_COMMANDS = frozenset({"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE"})
