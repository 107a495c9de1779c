"""Filing a message whose large attachments became links, with the files they lead to.

One transaction (smtp/detach.py): the message is delivered and queued as any other
(``deliver_many_txn``), and each detached attachment becomes a station file of the sender with
the share link the message names.  If no recipient takes the message, no file is added; if
the files do not fit in the sender's station, nothing is filed and the sender is told why.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from sqlalchemy.engine import Connection

from mailbox_appliance.errors import UploadTooLarge
from mailbox_appliance.store import transfers
from mailbox_appliance.store.delivery import Delivery, Outcome, deliver_many_txn


def deliver_with_files_txn(
    conn: Connection,
    item: Delivery,
    files: Sequence[transfers.StationFile],
    max_file_size: int,
    capacity: int,
) -> Outcome:
    for file in files:
        if file.ref.size > max_file_size:
            raise UploadTooLarge(
                f"{file.name} is {file.ref.size} bytes, larger than the largest file the"
                f" station takes ({max_file_size} bytes)"
            )
    owner = item.account_id
    transfers.check_capacity_txn(conn, owner, sum(f.ref.size for f in files), capacity)
    [outcome] = deliver_many_txn(conn, [item])
    if not outcome.delivered and not outcome.queued:
        return outcome
    now = datetime.datetime.now(datetime.UTC)
    for file in files:
        row = transfers.add_file_txn(
            conn,
            owner,
            file.name,
            file.ref.sha256,
            file.ref.size,
            transfers.STATION,
            now,
            file.expires,
            ref=file.ref,
        )
        transfers.create_share_txn(conn, row["id"], now, file.expires, token=file.token)
    return outcome
