"""One mail transaction (RFC 5321 §3.3): its envelope, its content stream, and its outcome.

The content goes straight into the blob store through a :class:`BlobWriter` (design rule 3):
one blob, with our trace fields in front, serves every recipient.  Local copies start at the
Return-Path line; copies that leave skip it (``skip_bytes``), since only final delivery adds one.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from mailbox_appliance.errors import UploadTooLarge
from mailbox_appliance.smtp.paths import MailParams
from mailbox_appliance.store.delivery import GONE, OVER_QUOTA
from mailbox_appliance.store.recipients import LocalTarget

log = Logger()

#: Bytes of content kept to find the Message-ID field in the header.
_HEAD_BYTES = 16 * 1024
_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(?:\r\n[ \t]+)?(<[^>\r\n]{1,250}>)")


class Reply(NamedTuple):
    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


#: What the store's reasons for refusing a recipient after the data mean in SMTP.
_REFUSALS = {
    OVER_QUOTA: Reply(552, "5.2.2", "Mailbox full"),
    GONE: Reply(550, "5.1.1", "Mailbox no longer exists"),
}


class Recipient(NamedTuple):
    address: str
    local: tuple[LocalTarget, ...]
    remote: tuple[str, ...]


class MailTransaction:
    def __init__(self, sender: str, params: MailParams, size_limit: int):
        self.sender = sender
        self.params = params
        self.size_limit = size_limit
        self.recipients: list[Recipient] = []
        #: "DATA" or "BDAT" once content has started (RFC 3030 §2: they do not mix).
        self.mode: str | None = None
        self.writer = None
        self.size = 0
        self.too_big = False
        self.skip_bytes = 0
        #: Names this transaction in the Received field, the reply and the log.
        self.queue_id = os.urandom(6).hex().upper()
        self._head = bytearray()

    def begin_content(self, writer, return_path: bytes, trace: bytes, mode: str) -> None:
        self.mode = mode
        self.writer = writer
        self.skip_bytes = len(return_path)
        writer.write(return_path + trace)

    def write(self, data: bytes) -> None:
        """Content as it arrives; past the size limit the rest is counted and dropped."""
        if not data:
            return
        self.size += len(data)
        if self.too_big:
            return
        if self.size > self.size_limit:
            self.too_big = True
            # Partial content discarded (RFC 1870 §6.3).
            self.writer.abort().addErrback(_abort_failed, self.queue_id)
            return
        if len(self._head) < _HEAD_BYTES:
            self._head += data[: _HEAD_BYTES - len(self._head)]
        self.writer.write(data)

    def abort(self) -> None:
        """Drop the content; its temporary file goes (or, if the store is stopping, the next
        start removes it)."""
        if self.writer is not None and not self.too_big:
            self.writer.abort().addErrback(_abort_failed, self.queue_id)
        self.writer = None

    def message_id(self) -> str | None:
        # A leading CRLF lets an empty header section (content starting with a blank line) end
        # at once, so a Message-ID line in the body is never taken for the field.
        header = (b"\r\n" + bytes(self._head)).split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(header)
        return found.group(1).decode("ascii", "replace") if found else None

    def _outbound_sender(self, account_id: int | None, srs) -> str:
        """The sender for copies that leave: forwarded by an alias (the MX took it, so the
        sender is not ours), it gets an SRS address at the alias's domain, so that the
        destination's SPF check passes and a bounce comes back here (smtp/srs.py)."""
        if srs is None or account_id is not None or not self.sender:
            return self.sender
        for recipient in self.recipients:
            if recipient.remote:
                alias_domain = recipient.address.rpartition("@")[2]
                if not srs.reverse(recipient.address):  # not a bounce we are returning
                    return srs.forward(self.sender, alias_domain)
        return self.sender

    @inlineCallbacks
    def commit(
        self, store, account_id: int | None, srs=None, detacher=None
    ) -> Deferred[tuple[Reply, object]]:
        """Make the content and every local copy durable; the reply for the end of data.

        The ``250`` is only given once the blob is fsync'd and the delivering transaction is
        committed (design rules 1 and 5).  Submitted mail (``account_id`` set) goes through
        ``detacher`` first (smtp/detach.py): large attachments become download links.
        """
        if self.too_big:
            return Reply(552, "5.3.4", "Message size exceeds fixed maximum message size"), None
        scanner = self.writer.observer
        ref = yield self.writer.finish()
        self.writer = None
        structure = scanner.close() if scanner is not None else None
        files = ()
        if detacher is not None and account_id is not None and scanner is not None:
            detached = yield Deferred.fromCoroutine(detacher.detach(ref, scanner.root))
            if detached is not None:
                ref, structure, files = detached
        owners: dict[int, str] = {}  # account -> the address the client gave for it
        accounts: dict[int, str] = {}  # account -> its own address
        remote: dict[str, None] = {}
        for recipient in self.recipients:
            for target in recipient.local:
                owners.setdefault(target.account_id, recipient.address)
                accounts[target.account_id] = target.address
            for address in recipient.remote:
                remote.setdefault(address)
        try:
            outcome = yield store.accept_message(
                ref,
                local=list(owners),
                remote=list(remote),
                sender=self._outbound_sender(account_id, srs) if remote else self.sender,
                account_id=account_id,
                skip_bytes=self.skip_bytes,
                message_id=self.message_id(),
                structure=structure,
                queue_id=self.queue_id,
                files=files,
            )
        except UploadTooLarge as e:
            return Reply(552, "5.3.4", f"Large attachments go to your file station: {e}"), None
        for file in files:
            log.info(
                "{queue_id}: attachment {name} ({size} bytes) sent as link {token}",
                queue_id=self.queue_id,
                name=file.name,
                size=file.ref.size,
                token=file.token,
            )
        for account, old, new in outcome.grown:
            log.info(
                "{queue_id}: quota of {account} grew from {old} to {new} bytes",
                queue_id=self.queue_id,
                account=accounts.get(account, account),
                old=old,
                new=new,
            )
        failures = [(owners[account], _REFUSALS[why]) for account, why in outcome.refused]
        if failures and not outcome.delivered and not outcome.queued:
            return _REFUSALS[outcome.refused[0][1]], ref
        if failures:
            # Accepted for some: the others are owed a bounce (RFC 5321 §6.1), durably.
            refusals = [(a, str(r)) for a, r in failures]
            yield store.add_bounces(ref, self.sender, refusals, self.queue_id)
        linked = f"; {len(files)} attachment(s) sent as download links" if files else ""
        return Reply(250, "2.0.0", f"Ok: queued as {self.queue_id}{linked}"), ref


def _abort_failed(failure, queue_id: str) -> None:
    log.info(
        "{queue_id}: partial content not removed now ({why}); the next start removes it",
        queue_id=queue_id,
        why=failure.getErrorMessage(),
    )
