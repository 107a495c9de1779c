"""Mailbox-level commands of the authenticated state (RFC 3501 §6.3) and their extensions.

SELECT/EXAMINE (with CONDSTORE's HIGHESTMODSEQ, RFC 7162 §3.1.2), CREATE/DELETE/RENAME,
SUBSCRIBE, LIST/LSUB with CHILDREN (RFC 3348) and SPECIAL-USE (RFC 6154) attributes, STATUS,
NAMESPACE (RFC 2342) and QUOTA (RFC 9208).  The hierarchy delimiter is ``/``; mailbox names
travel in modified UTF-7 (wire.py) and the store sees them decoded.
"""

from __future__ import annotations

import re

from mailbox_appliance.imap.replies import IMAPError
from mailbox_appliance.imap.selected import SelectedMailbox
from mailbox_appliance.imap.wire import flag_list, mailbox_name, quoted

DELIMITER = "/"
_PERMANENT = "(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)"
_SPECIAL_USES = frozenset({"\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All"})


async def select(session, command):
    """SELECT and EXAMINE (RFC 3501 §6.3.1-2): every response RFC 3501 and RFC 7162 ask for."""
    read_only = command.name == "EXAMINE"
    session.select(None)  # a failed SELECT leaves no mailbox selected (RFC 3501 §6.3.1)
    if command.args.condstore:
        session.condstore = True
    info = await session.store.select_mailbox(
        session.account.account_id, command.args.mailbox, claim_recent=not read_only
    )
    box = SelectedMailbox(info, read_only=read_only)
    lines = [
        b"* FLAGS " + flag_list(box.known_flags()),
        b"* OK [PERMANENTFLAGS " + (b"()" if read_only else _PERMANENT.encode()) + b"] Flags",
        b"* %d EXISTS" % box.exists,
        b"* %d RECENT" % len(box.recent),
    ]
    unseen = box.unseen_first()
    if unseen is not None:
        lines.append(b"* OK [UNSEEN %d] First unseen" % unseen)
    lines += [
        b"* OK [UIDVALIDITY %d] UIDs valid" % box.uidvalidity,
        b"* OK [UIDNEXT %d] Predicted next UID" % box.uidnext,
        b"* OK [HIGHESTMODSEQ %d] Highest" % box.highestmodseq,
    ]
    session.write(b"\r\n".join(lines) + b"\r\n")
    session.select(box)
    mode = "READ-ONLY" if read_only else "READ-WRITE"
    return f"{command.name} completed", mode


async def create(session, command):
    """CREATE (RFC 3501 §6.3.3), with RFC 6154 §5.2's ``USE`` attribute."""
    uses = command.args.special_use
    unknown = [u for u in uses if u not in _SPECIAL_USES]
    if unknown or len(uses) > 1:
        raise IMAPError("NO", "Only one known special-use attribute may be given", "USEATTR")
    name = command.args.mailbox.rstrip(DELIMITER)
    if name == "INBOX":
        raise IMAPError("NO", "INBOX always exists", "ALREADYEXISTS")
    await session.store.create_mailbox(
        session.account.account_id, name, special_use=uses[0] if uses else None
    )
    return "CREATE completed"


async def delete(session, command):
    await session.store.delete_mailbox(session.account.account_id, command.args.mailbox)
    box = session.selected
    if box is not None and box.name == command.args.mailbox:
        session.select(None)  # deleting one's own selected mailbox leaves it unselected
    return "DELETE completed"


async def rename(session, command):
    await session.store.rename_mailbox(
        session.account.account_id, command.args.old, command.args.new
    )
    return "RENAME completed"


async def subscribe(session, command):
    on = command.name == "SUBSCRIBE"
    await session.store.subscribe(session.account.account_id, command.args.mailbox, on)
    return f"{command.name} completed"


def pattern_regex(reference: str, pattern: str) -> re.Pattern:
    """RFC 3501 §6.3.8: ``*`` matches anything, ``%`` anything but the delimiter."""
    full = reference + pattern
    parts = []
    for char in full:
        if char == "*":
            parts.append(".*")
        elif char == "%":
            parts.append("[^/]*")
        else:
            parts.append(re.escape(char))
    text = "".join(parts)
    # INBOX is case-insensitive (RFC 3501 §5.1), also as a pattern's first level.
    if full[:5].upper() == "INBOX":
        text = "(?i:INBOX)" + "".join(parts[5:])
    return re.compile(text + r"\Z", re.DOTALL)


async def list_mailboxes(session, command):
    """LIST and LSUB (RFC 3501 §6.3.8-9), with the LIST-EXTENDED options parser.py accepts."""
    args = command.args
    lsub = command.name == "LSUB"
    verb = "LSUB" if lsub else "LIST"
    if not lsub and args.patterns == ("",):
        # The hierarchy delimiter and root (RFC 3501 §6.3.8).
        session.untagged('LIST (\\Noselect) "/" ""')
        return "LIST completed"
    boxes = await session.store.list_mailboxes(session.account.account_id)
    names = {box["name"] for box in boxes}
    subscribed_only = lsub or "SUBSCRIBED" in args.selection
    special_only = "SPECIAL-USE" in args.selection
    show_subscribed = "SUBSCRIBED" in args.return_options or "SUBSCRIBED" in args.selection
    regexes = [pattern_regex(args.reference, p) for p in args.patterns]
    lines = []
    for box in boxes:
        name = box["name"]
        if not any(r.match(name) for r in regexes):
            continue
        if subscribed_only and not box["subscribed"]:
            continue
        if special_only and not box["special_use"]:
            continue
        attrs = []
        if not lsub:
            prefix = name + DELIMITER
            has_children = any(other.startswith(prefix) for other in names)
            attrs.append("\\HasChildren" if has_children else "\\HasNoChildren")
            if box["special_use"]:
                attrs.append(box["special_use"])
            if show_subscribed and box["subscribed"]:
                attrs.append("\\Subscribed")
        line = f'* {verb} ({" ".join(attrs)}) "/" '.encode() + mailbox_name(name) + b"\r\n"
        lines.append(line)
    session.write(b"".join(lines))
    return f"{verb} completed"


_STATUS_KEYS = {
    "MESSAGES": "messages",
    "RECENT": "recent",
    "UIDNEXT": "uidnext",
    "UIDVALIDITY": "uidvalidity",
    "UNSEEN": "unseen",
    "HIGHESTMODSEQ": "highestmodseq",
    "SIZE": "size",
    "DELETED": "deleted",
}


async def status(session, command):
    """STATUS (RFC 3501 §6.3.10; HIGHESTMODSEQ of RFC 7162, SIZE of RFC 8438)."""
    args = command.args
    if "HIGHESTMODSEQ" in args.items:
        session.condstore = True
    info = await session.store.mailbox_status(session.account.account_id, args.mailbox)
    values = " ".join(f"{item} {info[_STATUS_KEYS[item]]}" for item in args.items)
    session.write(b"* STATUS " + mailbox_name(args.mailbox) + f" ({values})\r\n".encode())
    return "STATUS completed"


async def namespace(session, command):
    """RFC 2342: one personal namespace, no shared ones."""
    session.untagged('NAMESPACE (("" "/")) NIL NIL')
    return "NAMESPACE completed"


async def _quota_line(session) -> tuple[bytes, str]:
    """The one quota root "" covers the account (RFC 9208 §4.2), in KiB."""
    quota = await session.store.quota(session.account.account_id)
    used, limit = -(-quota["used"] // 1024), quota["quota"] // 1024
    line = b'* QUOTA "" (STORAGE %d %d)\r\n' % (used, limit)
    grows = ""
    if quota["max"] > quota["quota"]:
        grows = f"; the limit grows by itself as mail arrives, up to {quota['max'] // 1024} KiB"
    return line, grows


async def getquotaroot(session, command):
    line, grows = await _quota_line(session)
    session.write(b"* QUOTAROOT " + mailbox_name(command.args.mailbox) + b' ""\r\n' + line)
    return "GETQUOTAROOT completed" + grows


async def getquota(session, command):
    if command.args.root != "":
        raise IMAPError("NO", "No such quota root", "NONEXISTENT")
    line, grows = await _quota_line(session)
    session.write(line)
    return "GETQUOTA completed" + grows


async def setquota(session, command):
    raise IMAPError("NO", "Quotas are set by the administrator", "NOPERM")


HANDLERS = {
    "SELECT": select,
    "EXAMINE": select,
    "CREATE": create,
    "DELETE": delete,
    "RENAME": rename,
    "SUBSCRIBE": subscribe,
    "UNSUBSCRIBE": subscribe,
    "LIST": list_mailboxes,
    "LSUB": list_mailboxes,
    "STATUS": status,
    "NAMESPACE": namespace,
    "GETQUOTAROOT": getquotaroot,
    "GETQUOTA": getquota,
    "SETQUOTA": setquota,
}

__all__ = ["HANDLERS", "quoted"]
