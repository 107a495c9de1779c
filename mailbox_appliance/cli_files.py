"""``mailbox-appliance files ...``: the file-transfer station's files and share links.

``list`` shows an account's files, ``share`` makes a link anyone holding it can download one
file with (``<public_url>/s/<token>``), ``revoke`` stops a link, ``move`` keeps a file in the
account's cloud drive (it never expires) or puts it back on the station (it expires again),
and ``gc`` removes expired unfinished uploads and expired station files now instead of at the
running appliance's next sweep.  All of it goes through the store, so a running appliance
sees the change at once (share links are read from the database at every download).
"""

from __future__ import annotations

import argparse
import datetime
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from mailbox_appliance.addresses import normalize_address
from mailbox_appliance.config import Config
from mailbox_appliance.errors import UploadGone, UploadTooLarge
from mailbox_appliance.station_url import StationURLError, public_url

#: Share tokens are base32 now (store/transfers.py ``new_token``); older ones URL-safe base64.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class FilesError(Exception):
    """A one-line message for the user; exit status 1 (see cli.run)."""


def add_parsers(commands) -> None:
    files = commands.add_parser("files", help="the file-transfer station").add_subparsers(
        dest="action", required=True
    )
    files.add_parser("list", help="an account's files").add_argument("address")
    share = files.add_parser("share", help="make a download link to one file")
    share.add_argument("address")
    share.add_argument("id", help="the file's id ('files list'), or its upload URL's last segment")
    share.add_argument(
        "--expires", type=_days, metavar="DAYS", help="days the link works (default: "
        "transfer.share_expires; never past the file's own expiry)"
    )  # fmt: skip
    secret = share.add_mutually_exclusive_group()
    secret.add_argument("--password", metavar="P", help="ask downloaders for this password")
    secret.add_argument(
        "--password-stdin", action="store_true", help="read the link's password from stdin"
    )
    share.add_argument("--max-downloads", type=_positive, metavar="N")
    files.add_parser("revoke", help="stop a share link").add_argument("link", metavar="URL|TOKEN")
    move = files.add_parser("move", help="move a file to the cloud drive or to the station")
    move.add_argument("address")
    move.add_argument("id", help="the file's id ('files list'), or its upload URL's last segment")
    move.add_argument(
        "kind", choices=["cloud", "station"], help="cloud: kept until deleted; station: expires"
    )
    files.add_parser("gc", help="remove expired uploads and station files now")


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value > 36500:
        raise argparse.ArgumentTypeError(f"expected a number of days above 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _when(value: datetime.datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def token_of(link: str) -> str:
    """The token of a share link given as its URL (``.../s/TOKEN``) or as the bare token."""
    text = link.strip()
    if "/" in text:
        path = urlsplit(text).path.rstrip("/")
        head, _, text = path.rpartition("/")
        if not head.endswith("/s") and head != "s":
            raise FilesError(f"{link!r} is not a share link (expected .../s/TOKEN)")
    if not _TOKEN.match(text):
        raise FilesError(f"{link!r} is not a share link or token")
    return text


# -- commands ------------------------------------------------------------------------------


async def files_command(
    store, args, out, human: Callable[[int], str], config: Config, passwords, read_password
) -> None:
    """Run ``files ACTION``; ``read_password`` is cli.read_password (stdin, never argv)."""
    if args.action == "list":
        account = await store.account(args.address)
        rows = await store.list_files(account["id"])
        for row in rows:
            print(
                f"{row['id']}\t{row['name']}\t{human(row['size'])}\t{row['kind']}"
                f"\t{_when(row['created'])}\t{_when(row['expires'])}",
                file=out,
            )
        print(f"{len(rows)} file(s)", file=out)
    elif args.action == "share":
        await _share(store, args, out, config, passwords, read_password)
    elif args.action == "move":
        await _move(store, args, out)
    elif args.action == "revoke":
        token = token_of(args.link)
        link = await store.share(token)
        if link is None:
            raise FilesError(f"no share link {token}")
        if link["revoked"]:
            raise FilesError(f"share link {token} was already revoked")
        if not await store.revoke_share(token):  # revoked by someone else just now
            raise FilesError(f"share link {token} was already revoked")
        print(f"revoked share link {token} to {link['name']}", file=out)
    else:
        gone = await store.reap_transfers()
        print(
            f"removed {gone['uploads']} expired unfinished upload(s)"
            f" and {gone['files']} expired station file(s)",
            file=out,
        )
        if gone["files"]:
            print(
                "their content is deleted at the appliance's next garbage collection"
                f" (storage.gc_interval, after storage.gc_grace of {config.storage.gc_grace} s)",
                file=out,
            )


async def _share(store, args, out, config: Config, passwords, read_password) -> None:
    account = await store.account(args.address)
    address = normalize_address(args.address)
    file = await store.file_or_upload(args.id, account["id"])
    if file is None:  # absent, or another account's: the same answer, no hint which
        raise FilesError(f"{address} has no file {args.id}")
    try:  # before anything is written: a config problem stops here
        base = public_url(config)
    except StationURLError as e:
        raise FilesError(str(e)) from None
    now = datetime.datetime.now(datetime.UTC)
    seconds = args.expires * 86400 if args.expires else config.transfer.share_expires
    expires = now + datetime.timedelta(seconds=seconds)
    capped = file["expires"] is not None and file["expires"] < expires
    if capped:  # a link cannot outlive the file it leads to
        expires = file["expires"]
    if expires <= now:
        raise FilesError(f"file {args.id} has expired (files gc removes it)")
    password = args.password
    if args.password_stdin:
        password = read_password(True)
    if password == "":
        raise FilesError("empty password refused")
    password_hash = None if password is None else await passwords.hash(password)
    link = await store.create_share(file["id"], expires, password_hash, args.max_downloads)
    print(f"{base}/s/{link['token']}", file=out)
    limits = [f"expires {_when(expires)} UTC" + (" (with the file)" if capped else "")]
    if password_hash:
        limits.append("password required")
    if args.max_downloads:
        limits.append(f"at most {args.max_downloads} download(s)")
    print(f"{file['name']}: {'; '.join(limits)}", file=out)


async def _move(store, args, out) -> None:
    account = await store.account(args.address)
    missing = FilesError(f"{normalize_address(args.address)} has no file {args.id}")
    where = "the cloud drive" if args.kind == "cloud" else "the station"
    file = await store.file_or_upload(args.id, account["id"])
    if file is None:  # absent, or another account's: the same answer, no hint which
        raise missing
    if file["kind"] == args.kind:
        print(f"{file['name']} is already in {where}", file=out)
        return
    try:
        moved = await store.move_file(file["id"], account["id"], args.kind)
    except UploadTooLarge as e:
        raise FilesError(f"cannot move {file['name']} to {where}: {e}") from None
    except UploadGone:
        raise FilesError(f"file {args.id} has expired (files gc removes it)") from None
    if moved is None:  # deleted meanwhile
        raise missing
    expiry = "" if moved["expires"] is None else f" (expires {_when(moved['expires'])} UTC)"
    print(f"moved {moved['name']} to {where}{expiry}", file=out)
