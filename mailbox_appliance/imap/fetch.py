"""FETCH (RFC 3501 §6.4.5, §7.4.2) with CONDSTORE's MODSEQ and CHANGEDSINCE (RFC 7162 §3.1).

Messages are answered in batches: one store read for the batch's metadata, one trip for the
content of its small messages, and big content streamed from its file as the socket takes it
(output.py).  ENVELOPE, BODY and BODYSTRUCTURE come from the structure cached at delivery
(mime/scanner.py); a body section is a byte range of the stored message located through that
structure, so ``BODY[1.2]<0.1000>`` of a 2 GiB message reads 1000 bytes.  Messages stored
before their structure was known get it computed on first use and cached.
"""

from __future__ import annotations

from mailbox_appliance.imap.parser import FetchItem
from mailbox_appliance.imap.replies import IMAPError
from mailbox_appliance.imap.wire import flag_list, internal_date
from mailbox_appliance.mime.scanner import MimeScanner
from mailbox_appliance.mime.sections import filter_header_fields, locate
from mailbox_appliance.store.mailboxes import SYSTEM_FLAGS

#: Messages per batch when only metadata is asked for, and when content is.
META_BATCH = 1000
CONTENT_BATCH = 200
#: Ranges up to this size are read in the batch's one trip; larger ones are streamed.
SMALL_RANGE = 256 * 1024
#: Messages up to this size have their structure computed from one read.
SCAN_IN_ONE_READ = 1024 * 1024
#: A header block filtered for HEADER.FIELDS is read up to this size.
MAX_HEADER_READ = 1024 * 1024

_SEEN = SYSTEM_FLAGS["\\Seen"]
_STRUCTURE_ITEMS = frozenset({"BODY", "BODYSTRUCTURE", "RFC822.HEADER", "RFC822.TEXT"})
#: Items the session's view answers by itself, without reading the store.
_VIEW_ITEMS = frozenset({"UID", "FLAGS", "RFC822.SIZE", "MODSEQ"})


def _needs_structure(item) -> bool:
    if item.name == "BODY" and item.section is not None:
        return bool(item.section.part or item.section.text)  # BODY[] is the whole message
    return item.name in _STRUCTURE_ITEMS


def _sets_seen(item) -> bool:
    """Fetching content marks the message \\Seen unless PEEK (RFC 3501 §6.4.5)."""
    if item.name in ("RFC822", "RFC822.TEXT"):
        return True
    return item.name == "BODY" and item.section is not None and not item.peek


class _Piece:
    """A range of a stored message to send as one FETCH item's literal."""

    __slots__ = ("sha256", "start", "end", "fields", "exclude", "data")

    def __init__(self, sha256, start, end, fields=(), exclude=False):
        self.sha256, self.start, self.end = sha256, start, end
        self.fields, self.exclude = fields, exclude
        self.data: bytes | None = None


async def fetch(session, command):
    box = session.selected
    args = command.args
    items = args.items
    if any(i.name.startswith("BINARY") for i in items):
        raise IMAPError("BAD", "BINARY is not supported here")
    if args.changed_since is not None or any(i.name == "MODSEQ" for i in items):
        session.condstore = True  # RFC 7162 §3.1: a CONDSTORE-enabling command
    if box.dirty:  # answer from the latest state; EXPUNGE must wait (RFC 3501 §7.4.1)
        await session.refresh(allow_expunge=command.uid)
    uids = box.uids_for(args.sequence_set, uid=command.uid)
    if all(i.name in _VIEW_ITEMS for i in items):
        await _answer_from_view(session, box, uids, items, args.changed_since)
        return "FETCH completed"
    marks_seen = not box.read_only and any(_sets_seen(i) for i in items)
    columns = set()
    if any(i.name == "ENVELOPE" for i in items):
        columns.add("envelope")
    if any(_needs_structure(i) for i in items):
        columns.add("structure")
    with_content = any(i.section is not None or i.name.startswith("RFC822") for i in items)
    batch_size = CONTENT_BATCH if with_content else META_BATCH
    missing = False
    for i in range(0, len(uids), batch_size):
        batch = [uid for uid in uids[i : i + batch_size] if uid not in box.gone]
        missing = missing or len(batch) < len(uids[i : i + batch_size])
        if not batch:
            continue
        await session.out.drained()
        newly_seen = set()
        if marks_seen:
            unseen = [uid for uid in batch if not box.flags[uid][0] & _SEEN]
            if unseen:
                result = await session.store.store_flags(box.id, unseen, "+", ["\\Seen"])
                box.note_flags(result["changed"])
                newly_seen = {entry[0] for entry in result["changed"]}
        rows = await session.store.fetch_entries(box.id, batch, frozenset(columns))
        if len(rows) < len(batch):
            missing = True
        if columns:
            await _ensure_structures(session.store, rows, columns)
        await _answer(session, box, rows, items, args.changed_since, newly_seen)
    if missing and not command.uid:
        # RFC 5530: some of the messages were expunged by another session meanwhile.
        raise IMAPError("NO", "Some of the requested messages no longer exist", "EXPUNGEISSUED")
    return "FETCH completed"


async def _answer_from_view(session, box, uids, items, changed_since) -> None:
    """FLAGS, UID, RFC822.SIZE and MODSEQ of many messages: from memory, a line each.

    Messages expunged by others but not yet reported are answered from what the view knows,
    as RFC 2180 §4.1.2 allows.
    """
    names = [item.name for item in items]
    flag_text: dict[tuple, str] = {}
    seq_of = {uid: n for n, uid in enumerate(box.uids, 1)} if len(uids) > 64 else None
    lines = []
    for uid in uids:
        modseq = box.modseqs[uid]
        if changed_since is not None and modseq <= changed_since:
            continue
        parts = []
        for name in names:
            if name == "UID":
                parts.append(f"UID {uid}")
            elif name == "FLAGS":
                key = (box.flags[uid], uid in box.recent)
                text = flag_text.get(key)
                if text is None:
                    text = flag_text[key] = flag_list(box.flag_list(uid)).decode("utf-8")
                parts.append("FLAGS " + text)
            elif name == "RFC822.SIZE":
                parts.append(f"RFC822.SIZE {box.sizes[uid]}")
            else:
                parts.append(f"MODSEQ ({modseq})")
        seq = seq_of[uid] if seq_of is not None else box.seq_of(uid)
        lines.append(f"* {seq} FETCH ({' '.join(parts)})\r\n")
        if len(lines) >= META_BATCH:
            session.write("".join(lines).encode("utf-8"))
            lines = []
            await session.out.drained()
    session.write("".join(lines).encode("utf-8"))


async def _answer(session, box, rows, items, changed_since, newly_seen) -> None:
    pieces: list[list] = []
    small: list[_Piece] = []
    for row in rows:
        uid = row["uid"]
        if changed_since is not None and row["modseq"] <= changed_since:
            pieces.append([])
            continue
        box.note_flags([(uid, row["flags"], row["keywords"], row["modseq"])])
        parts = _items_of(box, row, items, uid in newly_seen)
        for part in parts:
            if isinstance(part, _Piece) and part.end - part.start <= SMALL_RANGE:
                small.append(part)
        pieces.append(parts)
    if small:
        contents = await session.store.blobs.read_ranges(
            [(p.sha256, p.start, p.end) for p in small]
        )
        for piece, data in zip(small, contents, strict=True):
            if piece.fields:
                data = filter_header_fields(data, list(piece.fields), piece.exclude)
            piece.data = data
    out = session.out
    pending: list[bytes] = []
    for parts in pieces:
        for part in parts:
            if not isinstance(part, _Piece):
                pending.append(part)
            elif part.data is not None:
                pending.append(b"{%d}\r\n" % len(part.data))
                pending.append(part.data)
            else:
                pending.append(b"{%d}\r\n" % (part.end - part.start))
                out.write(b"".join(pending))
                pending = []
                await out.stream(part.sha256, part.start, part.end)
    if pending:
        out.write(b"".join(pending))


def _items_of(box, row, items, newly_seen: bool) -> list:
    """The response for one message: bytes, and _Piece for each literal of content."""
    uid = row["uid"]
    seq = box.seq_of(uid)
    out: list = []
    text = [f"* {seq} FETCH ("]
    names = {item.name for item in items}
    wanted = list(items)
    if newly_seen and "FLAGS" not in names:
        wanted.append(_FLAGS)  # RFC 3501 §6.4.5: flags that changed are sent along
    for n, item in enumerate(wanted):
        if n:
            text.append(" ")
        value = _simple(item, box, row)
        if value is not None:
            text.append(value)
            continue
        start, end, fields, exclude = _range_of(item, row)
        label = _label(item)
        if start is None:
            text.append(f"{label} NIL")
            continue
        if item.partial is not None:
            origin, length = item.partial
            start = min(start + origin, end)
            end = min(start + length, end)
        text.append(label + " ")
        out.append("".join(text).encode("latin-1"))
        text = []
        out.append(_Piece(row["sha256"], start, end, fields, exclude))
    text.append(")\r\n")
    out.append("".join(text).encode("latin-1"))
    return out


def _simple(item, box, row) -> str | None:
    name = item.name
    if name == "UID":
        return f"UID {row['uid']}"
    if name == "FLAGS":
        return "FLAGS " + flag_list(box.flag_list(row["uid"])).decode("utf-8")
    if name == "INTERNALDATE":
        return "INTERNALDATE " + internal_date(row["internal_date"]).decode("ascii")
    if name == "RFC822.SIZE":
        return f"RFC822.SIZE {row['size']}"
    if name == "MODSEQ":
        return f"MODSEQ ({row['modseq']})"
    if name == "ENVELOPE":
        return "ENVELOPE " + row["envelope"]
    if name == "BODYSTRUCTURE":
        return "BODYSTRUCTURE " + row["structure"]["bodystructure"]
    if name == "BODY" and item.section is None:
        return "BODY " + row["structure"]["body"]
    return None


def _label(item) -> str:
    if item.name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
        return item.name
    return item.label


def _range_of(item, row):
    """(start, end, header fields, exclude) of an item's content; start None: no such part."""
    size = row["size"]
    whole = item.name == "BODY" and not (item.section.part or item.section.text)
    if item.name == "RFC822" or whole:
        return 0, size, (), False
    structure = row["structure"]
    if item.name == "RFC822.HEADER":
        where = locate(structure, "HEADER")
    elif item.name == "RFC822.TEXT":
        where = locate(structure, "TEXT")
    else:
        section = item.section
        spec = ".".join([*map(str, section.part), *([section.text] if section.text else [])])
        where = locate(structure, spec)
        if where is not None and section.fields:
            start, end = where
            return (
                start,
                min(end, start + MAX_HEADER_READ),
                section.fields,
                section.text.endswith(".NOT"),
            )
    if where is None:
        return None, None, (), False
    return where[0], where[1], (), False


_FLAGS = FetchItem("FLAGS")


async def _ensure_structures(store, rows, columns) -> None:
    """Compute and cache the structure of messages stored without one."""
    for row in rows:
        if all(row.get(column) is not None for column in columns):
            continue
        structure = await scan_stored(store, row["sha256"], row["size"])
        await store.set_structure(row["message_row"], structure)
        row["envelope"] = structure.pop("envelope")
        row["structure"] = structure


async def scan_stored(store, sha256: str, size: int) -> dict:
    scanner = MimeScanner()
    if size <= SCAN_IN_ONE_READ:
        (data,) = await store.blobs.read_ranges([(sha256, 0, size)])
        scanner.feed(data)
    else:
        offset = 0
        while offset < size:
            chunk = await store.blobs.read_file_chunk(sha256, offset, SCAN_IN_ONE_READ)
            if not chunk:
                break
            scanner.feed(chunk)
            offset += len(chunk)
    return scanner.close()
