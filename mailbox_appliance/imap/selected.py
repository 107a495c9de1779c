"""One session's view of its selected mailbox: sequence numbers, flags, and pending changes.

RFC 3501 §2.3.1.2 and §7.4.1: message sequence numbers change only when this session reports
an EXPUNGE, and an EXPUNGE may not be reported while a FETCH, STORE or SEARCH is answered (nor
when no command is in progress).  So the view keeps messages that other sessions expunged
until it may say so; they are answered from what is known, and the store simply has no row
for them.  New messages, flag changes and expunges come from the store's change feed
(modseqs, RFC 7162), applied in :meth:`SelectedMailbox.apply`.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from mailbox_appliance.imap.replies import IMAPError
from mailbox_appliance.store.mailboxes import SYSTEM_FLAGS

_RECENT = "\\Recent"


def flag_names(bits: int, keywords: str) -> list[str]:
    names = [name for name, bit in SYSTEM_FLAGS.items() if bits & bit]
    if keywords:
        names.extend(keywords.split(" "))
    return names


@dataclass
class Updates:
    """What a refresh found, to be reported as untagged responses."""

    expunged: list[int] = field(default_factory=list)  # sequence numbers, in sending order
    exists: int | None = None
    recent: int | None = None
    flags: list[int] = field(default_factory=list)  # uids whose flags changed


class SelectedMailbox:
    def __init__(self, info: dict, *, read_only: bool):
        self.id: int = info["id"]
        self.name: str = info["name"]
        self.uidvalidity: int = info["uidvalidity"]
        self.uidnext: int = info["uidnext"]
        self.highestmodseq: int = info["highestmodseq"]
        self.read_only = read_only
        self.uids: list[int] = []
        self.flags: dict[int, tuple[int, str]] = {}
        self.modseqs: dict[int, int] = {}
        #: Message sizes: FETCH of FLAGS, UID, RFC822.SIZE and MODSEQ needs no store read.
        self.sizes: dict[int, int] = {}
        for (uid, bits, keywords, modseq), size in zip(info["entries"], info["sizes"], strict=True):
            self.uids.append(uid)
            self.flags[uid] = (bits, keywords)
            self.modseqs[uid] = modseq
            self.sizes[uid] = size
        # SELECT claimed these from the store (RFC 3501 §2.3.2); EXAMINE only looks at them.
        first_recent = info["first_recent"]
        self.recent = {uid for uid in self.uids if uid >= first_recent}
        #: Expunged in the store, not yet reported to the client.
        self.gone: set[int] = set()
        #: A change notification arrived since the last refresh.
        self.dirty = False
        self.watch = None

    # -- numbers ----------------------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def max_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def seq_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def uids_for(self, sequence_set, *, uid: bool) -> list[int]:
        """The UIDs a sequence set names (RFC 3501 §6.4.8 for the UID form), ascending.

        Message numbers past the last message are a client error (RFC 3501 §9, seq-number);
        UIDs past the last are just not there.
        """
        if uid:
            return sequence_set.select(self.uids, self.max_uid)
        if sequence_set.beyond(len(self.uids)):
            raise IMAPError("BAD", f"No such message (the mailbox has {len(self.uids)})")
        seqs = sequence_set.select(range(1, len(self.uids) + 1), len(self.uids))
        return [self.uids[n - 1] for n in seqs]

    def flag_list(self, uid: int) -> list[str]:
        bits, keywords = self.flags.get(uid, (0, ""))
        names = flag_names(bits, keywords)
        if uid in self.recent:
            names.append(_RECENT)
        return names

    def unseen_first(self) -> int | None:
        """Sequence number of the first message without \\Seen (the SELECT UNSEEN code)."""
        seen = SYSTEM_FLAGS["\\Seen"]
        for i, uid in enumerate(self.uids):
            if not self.flags[uid][0] & seen:
                return i + 1
        return None

    def known_flags(self) -> list[str]:
        keywords = sorted({k for _, kw in self.flags.values() if kw for k in kw.split(" ")})
        return list(SYSTEM_FLAGS) + keywords

    # -- changes ----------------------------------------------------------------------------

    def note_flags(self, entries) -> None:
        """Flags this session changed itself (reported by its own STORE answer)."""
        for uid, bits, keywords, modseq in entries:
            if uid in self.flags:
                self.flags[uid] = (bits, keywords)
                self.modseqs[uid] = modseq

    def apply(self, changes: dict, *, allow_expunge: bool) -> Updates:
        """Take in the store's changes since our highest modseq; say what to report."""
        updates = Updates()
        for uid in changes["expunged"]:
            if uid in self.flags:
                self.gone.add(uid)
        new: list[int] = []
        for entry, size in zip(changes["changed"], changes["sizes"], strict=True):
            uid, bits, keywords, modseq = entry
            if uid in self.flags:
                if uid in self.gone:
                    continue
                if self.flags[uid] != (bits, keywords):
                    updates.flags.append(uid)
                self.flags[uid] = (bits, keywords)
                self.modseqs[uid] = modseq
            elif uid > self.max_uid:
                new.append(uid)
                self.flags[uid] = (bits, keywords)
                self.modseqs[uid] = modseq
                self.sizes[uid] = size
        if allow_expunge and self.gone:
            updates.expunged = self._drop(self.gone)
            self.gone = set()
        if new:
            new.sort()
            self.uids.extend(new)
            updates.exists = len(self.uids)
        self.highestmodseq = max(self.highestmodseq, changes["highestmodseq"])
        self.uidnext = max(self.uidnext, changes["uidnext"])
        return updates

    def claim_recent(self, uids: list[int]) -> None:
        self.recent.update(uids)

    def expunged_by_us(self, uids: list[int]) -> list[int]:
        """Entries this session expunged; returns the sequence numbers to report."""
        return self._drop(set(uids) & set(self.flags))

    def _drop(self, uids: set[int]) -> list[int]:
        """Remove messages; the sequence numbers to send, each as of when it is sent."""
        ordered = sorted(uids)
        positions = [bisect_left(self.uids, uid) for uid in ordered]
        numbers = [pos + 1 - i for i, pos in enumerate(positions)]
        self.uids = [uid for uid in self.uids if uid not in uids]
        for uid in ordered:
            self.flags.pop(uid, None)
            self.modseqs.pop(uid, None)
            self.sizes.pop(uid, None)
            self.recent.discard(uid)
        return numbers
