"""Commands on messages: APPEND (RFC 3501 §6.3.11), the selected state's CHECK, CLOSE,
UNSELECT (RFC 3691), EXPUNGE and UID EXPUNGE (RFC 4315), SEARCH, STORE (with RFC 7162's
UNCHANGEDSINCE), COPY and MOVE (RFC 6851) with UIDPLUS's COPYUID and APPENDUID, and FETCH
(fetch.py).
"""

from __future__ import annotations

import datetime
import io

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from mailbox_appliance.imap import fetch as fetching
from mailbox_appliance.imap.replies import IMAPError
from mailbox_appliance.imap.search import BadCharset, matches, needs, uses_flags, uses_modseq
from mailbox_appliance.imap.sequence import format_set
from mailbox_appliance.imap.wire import flag_list
from mailbox_appliance.mime.scanner import MimeScanner
from mailbox_appliance.mime.search import header_values, text_chunks

#: Messages looked at per store read during SEARCH.
SEARCH_BATCH = 1000
#: Messages up to this size are searched from one read; larger ones part by part.
SEARCH_IN_ONE_READ = 1024 * 1024
_STORE_MODES = {"add": "+", "remove": "-", "replace": "="}
_RECENT = frozenset({"\\Recent"})


# -- APPEND -------------------------------------------------------------------------------


@implementer(IPushProducer)
class _DiskHold:
    """Pauses reading from the client while the blob writer is behind."""

    def __init__(self, session):
        self.session = session

    def pauseProducing(self):
        self.session.hold("disk")

    def resumeProducing(self):
        self.session.release("disk")

    def stopProducing(self):
        pass


class AppendSink:
    """Where an APPEND's literal streams: the blob store, with its MIME structure scanned."""

    def __init__(self, session, size: int):
        self.session = session
        self.size = size
        self.writer = session.store.blobs.open_writer(observer=MimeScanner())
        self.writer.registerProducer(_DiskHold(session), True)
        self._finished = False

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def finish(self) -> Deferred:
        """Fires with (BlobRef, structure) once the message is durable."""
        self._finished = True
        self.writer.unregisterProducer()
        self.session.release("disk")
        d = self.writer.finish()
        d.addCallback(lambda ref: (ref, self.writer.observer.close()))
        return d

    def abort(self) -> None:
        if not self._finished:
            self._finished = True
            self.writer.unregisterProducer()
            self.session.release("disk")
            self.writer.abort()


async def append(session, command):
    args = command.args
    sink = args.message.ref
    if not isinstance(sink, AppendSink):  # the message came as a plain (tiny) literal
        sink = AppendSink(session, len(args.message.data))
        sink.write(args.message.data)
    ref, structure = await sink.finish()
    date = args.date or datetime.datetime.now(datetime.UTC)
    result = await session.store.append_message(
        session.account.account_id,
        args.mailbox,
        ref,
        flags=args.flags,
        internal_date=date,
        structure=structure,
    )
    return "APPEND completed", f"APPENDUID {result['uidvalidity']} {result['uid']}"


# -- state ----------------------------------------------------------------------------------


async def check(session, command):
    return "CHECK completed"


async def close(session, command):
    """CLOSE expunges silently (RFC 3501 §6.4.2); UNSELECT does not (RFC 3691)."""
    box = session.selected
    if command.name == "CLOSE" and not box.read_only:
        await session.store.expunge(box.id)
    session.select(None)
    return f"{command.name} completed"


def _writable(box) -> None:
    if box.read_only:
        raise IMAPError("NO", "The mailbox is read-only (EXAMINE)", "READ-ONLY")


async def expunge(session, command):
    box = session.selected
    _writable(box)
    uids = None
    if command.args.uids is not None:
        uids = box.uids_for(command.args.uids, uid=True)
        if not uids:
            return "EXPUNGE completed"
    expunged = await session.store.expunge(box.id, uids)
    _report_expunged(session, expunged)
    return "EXPUNGE completed"


def _report_expunged(session, uids: list[int]) -> None:
    numbers = session.selected.expunged_by_us(uids)
    if numbers:
        session.write("".join(f"* {n} EXPUNGE\r\n" for n in numbers).encode())


# -- STORE ------------------------------------------------------------------------------------


async def store(session, command):
    box = session.selected
    _writable(box)
    args = command.args
    if args.unchanged_since is not None:
        session.condstore = True
    uids = [u for u in box.uids_for(args.sequence_set, uid=command.uid) if u not in box.gone]
    if not uids:
        return "STORE completed"
    result = await session.store.store_flags(
        box.id, uids, _STORE_MODES[args.mode], list(args.flags), args.unchanged_since
    )
    box.note_flags(result["changed"])
    changed = {entry[0] for entry in result["changed"]}
    failed = set(result["failed"])
    lines = []
    for uid in uids:
        if uid in failed or uid not in box.flags:
            continue
        if args.silent and not (session.condstore and uid in changed):
            continue
        items = [f"UID {uid}"] if command.uid else []
        if not args.silent:
            items.append("FLAGS " + flag_list(box.flag_list(uid)).decode())
        if session.condstore:
            items.append(f"MODSEQ ({box.modseqs[uid]})")
        lines.append(f"* {box.seq_of(uid)} FETCH ({' '.join(items)})\r\n")
    session.write("".join(lines).encode())
    if failed:
        if command.uid:
            numbers = sorted(failed)
        else:
            numbers = sorted(box.seq_of(uid) for uid in failed)
        return "Conditional STORE failed", f"MODIFIED {format_set(numbers)}"
    return "STORE completed"


# -- COPY, MOVE -----------------------------------------------------------------------------


async def copy(session, command):
    box = session.selected
    move = command.name == "MOVE"
    if move:
        _writable(box)
    named = box.uids_for(command.args.sequence_set, uid=command.uid)
    uids = [u for u in named if u not in box.gone]
    if not uids:
        return f"{command.name} completed"
    result = await session.store.copy_messages(
        session.account.account_id, box.id, uids, command.args.mailbox, move=move
    )
    pairs = result["pairs"]
    code = None
    if pairs:
        sources = format_set([src for src, _ in pairs])
        targets = format_set([dest for _, dest in pairs])
        code = f"COPYUID {result['uidvalidity']} {sources} {targets}"
    if not move:
        return "COPY completed", code
    if code:  # RFC 6851 §4.3: COPYUID goes in an untagged OK before the expunges
        session.write(f"* OK [{code}] Moved\r\n".encode())
    _report_expunged(session, result["expunged"])
    return "MOVE completed"


# -- SEARCH ---------------------------------------------------------------------------------


class _Message:
    """What SEARCH looks at for one message (search.SearchMessage)."""

    __slots__ = (
        "seq",
        "uid",
        "flags",
        "recent",
        "internal_date",
        "size",
        "modseq",
        "max_seq",
        "max_uid",
        "structure",
        "content",
        "_plain_header",
    )

    def header_values(self, name: str) -> list[str]:
        return header_values(self.structure.get("hdr", ""), name)

    def has_header(self, name: str) -> bool:
        return bool(self.header_values(name))

    def might_contain(self, needle: str) -> bool:
        """False when the raw header block, unfolded, cannot hold ``needle``: no encoded
        words to decode (RFC 2047) and an ASCII needle that is not in it."""
        plain = getattr(self, "_plain_header", None)
        if plain is None:
            hdr = self.structure.get("hdr", "")
            plain = "" if "=?" in hdr else hdr.replace("\r\n", "").replace("\n", "").casefold()
            self._plain_header = plain
        return not plain or not needle.isascii() or needle in plain

    def sent_date(self) -> datetime.date | None:
        sent = self.structure.get("sent")
        return datetime.date.fromisoformat(sent) if sent else None

    def body_contains(self, needle: str) -> bool:
        return self._contains(needle, False)

    def text_contains(self, needle: str) -> bool:
        return self._contains(needle, True)

    def _contains(self, needle: str, headers: bool) -> bool:
        tail = ""
        for chunk in text_chunks(self.content, self.structure, headers):
            text = tail + chunk.casefold()
            if needle in text:
                return True
            tail = text[-len(needle) :] if needle else ""
        return False


async def search(session, command):
    """SEARCH (RFC 3501 §6.4.4), answered from the index and the cached structure; message
    content is read only for BODY and TEXT, and then searched on a blob thread."""
    box = session.selected
    args = command.args
    key = args.key
    wanted = needs(key)
    with_modseq = uses_modseq(key)
    if with_modseq:
        session.condstore = True
    columns = frozenset({"structure"}) if wanted else frozenset()
    with_flags = uses_flags(key)
    uids = [u for u in box.uids if u not in box.gone]
    hits: list[int] = []
    highest = 0
    max_seq, max_uid = box.exists, box.max_uid
    for i in range(0, len(uids), SEARCH_BATCH):
        rows = await session.store.fetch_entries(box.id, uids[i : i + SEARCH_BATCH], columns)
        if wanted:
            await fetching._ensure_structures(session.store, rows, columns)
        messages = []
        for row in rows:
            m = _Message()
            m.uid = row["uid"]
            m.seq = box.seq_of(m.uid)
            m.flags = frozenset(box.flag_list(m.uid)) - _RECENT if with_flags else frozenset()
            m.recent = m.uid in box.recent
            m.internal_date = row["internal_date"]
            m.size = row["size"]
            m.modseq = row["modseq"]
            m.max_seq, m.max_uid = max_seq, max_uid
            m.structure = row.get("structure") or {}
            m.content = None
            messages.append((m, row))
        if "body" in wanted or "text" in wanted:
            matched = await _search_content(session.store, key, messages)
        else:
            matched = [m for m, _ in messages if matches(key, m)]
        for m in matched:
            hits.append(m.uid if command.uid else m.seq)
            highest = max(highest, m.modseq)
    text = "SEARCH" + "".join(f" {n}" for n in hits)
    if with_modseq and hits:
        text += f" (MODSEQ {highest})"
    session.untagged(text)
    return "SEARCH completed"


async def _search_content(store, key, messages) -> list:
    """Small messages: one read and one blob-thread trip per batch; big ones one by one."""
    small = [(m, row) for m, row in messages if row["size"] <= SEARCH_IN_ONE_READ]
    big = [(m, row) for m, row in messages if row["size"] > SEARCH_IN_ONE_READ]
    matched = []
    if small:
        contents = await store.blobs.read_ranges([(r["sha256"], 0, r["size"]) for _, r in small])
        batch = [(m, io.BytesIO(data)) for (m, _), data in zip(small, contents, strict=True)]
        matched = await store.blobs.run(_match_all, key, batch)
    for m, row in big:
        if await store.blobs.with_file(row["sha256"], lambda f, m=m: _match_all(key, [(m, f)])):
            matched.append(m)
    return sorted(matched, key=lambda m: m.uid)


def _match_all(key, batch) -> list:
    matched = []
    for message, f in batch:
        message.content = f
        try:
            if matches(key, message):
                matched.append(message)
        finally:
            message.content = None
    return matched


__all__ = ["BadCharset"]

SELECTED_HANDLERS = {
    "CHECK": check,
    "CLOSE": close,
    "UNSELECT": close,
    "EXPUNGE": expunge,
    "SEARCH": search,
    "FETCH": fetching.fetch,
    "STORE": store,
    "COPY": copy,
    "MOVE": copy,
}
AUTH_HANDLERS = {"APPEND": append}
