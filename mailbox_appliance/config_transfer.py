"""The ``transfer`` section: limits and lifetimes of the HTTP file-transfer station."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from mailbox_appliance.config_types import Size

DAY = 86400


@dataclass(frozen=True)
class TransferConfig:
    #: What one account may keep in the station (uploads that expire).
    station_capacity: Size = Size(32 * 1024**3)
    #: What one account may keep in its cloud drive (files that do not expire).
    cloud_capacity: Size = Size(1024**3)
    #: The largest single file.
    max_file_size: Size = Size(32 * 1024**3)
    #: Seconds a station file is kept after its upload finished (30 days).
    file_expires: int = 30 * DAY
    #: Seconds an unfinished upload may wait to be resumed (7 days).
    upload_expires: int = 7 * DAY
    #: Seconds a share link works unless its creator says otherwise (30 days).
    share_expires: int = 30 * DAY
    #: Attachments above this size in submitted mail are moved into the sender's station and
    #: replaced by a download link; 0 = never.
    detach_threshold: Size = Size(25 * 1024**2)
    #: The station's address as users reach it (links in mail, share links, the CLI); null =
    #: https://<hostname>, with the port of the first ``https`` listener unless it is 443.
    public_url: str | None = None


def check_transfer(transfer: TransferConfig, errors: list[str]) -> None:
    for name in ("file_expires", "upload_expires", "share_expires"):
        if getattr(transfer, name) < 1:
            errors.append(f"transfer.{name}: expected at least 1 second")
    if transfer.max_file_size < 1:
        errors.append("transfer.max_file_size: expected at least 1 byte")
    if transfer.public_url is not None:
        parts = urlsplit(transfer.public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            errors.append(
                f"transfer.public_url: expected an http(s) URL such as "
                f"https://files.example.org, got {transfer.public_url!r}"
            )
