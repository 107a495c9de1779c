"""``mailbox-appliance queue ...`` and ``mailbox-appliance routes``: the outbound side.

Changes take effect in a running appliance at its next look at the queue
(``delivery.poll_interval``); a row a delivery attempt has in hand is settled by that attempt.
"""

from __future__ import annotations

import time

from mailbox_appliance.routing.scores import format_table


class NoSuchRow(Exception):
    pass


def add_parsers(commands) -> None:
    queue = commands.add_parser("queue", help="the outbound queue").add_subparsers(
        dest="action", required=True
    )
    queue.add_parser("list", help="messages waiting to leave, and bounces owed")
    queue.add_parser("show", help="everything about one queued row").add_argument("id", type=int)
    retry = queue.add_parser("retry", help="try again now")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?")
    which.add_argument("--all", action="store_true", help="every row waiting to leave")
    queue.add_parser("delete", help="remove a row: nobody is told").add_argument("id", type=int)
    queue.add_parser("bounce", help="give up now: the sender gets a DSN").add_argument(
        "id", type=int
    )
    commands.add_parser("routes", help="the outbound routes, their state and scores")


async def queue_command(store, args, out, human) -> None:
    if args.action == "list":
        rows = await store.list_queue()
        for row in rows:
            reason = f"\t{row['reason']}" if row["reason"] else ""
            print(
                f"{row['id']}\t{row['kind']}\t{row['created']:%Y-%m-%d %H:%M:%S}"
                f"\t{human(row['size'])}\t<{row['sender']}> -> <{row['recipient']}>"
                f"\tattempts {row['attempts']}{reason}",
                file=out,
            )
        print(f"{len(rows)} queued", file=out)
    elif args.action == "show":
        row = await store.queue_row(args.id)
        if row is None:
            raise NoSuchRow(f"no queued row {args.id}")
        for key in (
            "id", "queue_id", "kind", "sender", "recipient", "size", "created", "attempts",
            "next_attempt", "last_attempt", "status", "remote_mta", "reason", "delay_notified",
            "blob_sha256",
        ):  # fmt: skip
            value = row[key]
            if key == "sender" and not value:
                value = "<> (a delivery status notification)"
            print(f"{key}: {'-' if value is None else value}", file=out)
    elif args.action == "retry":
        count = await store.retry_queued(None if args.all else args.id)
        if not args.all and not count:
            raise NoSuchRow(f"no queued relay row {args.id}")
        print(f"{count} due now", file=out)
    elif args.action == "delete":
        if not await store.delete_queued(args.id):
            raise NoSuchRow(f"no queued row {args.id}")
        print(f"deleted {args.id}", file=out)
    else:
        done = await store.bounce_queued(args.id, "returned to the sender by the administrator")
        if done is None:
            raise NoSuchRow(f"no queued relay row {args.id}")
        if done == "bounce":
            print(f"{args.id} bounced: the sender gets a delivery status notification", file=out)
        else:
            print(f"deleted {args.id} (from the null sender: nobody to tell)", file=out)


async def routes_command(store, config, out) -> None:
    routing = config.routing
    names = [route.name for route in routing.routes]
    if "direct" not in names:
        names.insert(0, "direct")
    print(f"policy: {routing.policy}; routes: {', '.join(names)}", file=out)
    rows = await store.routing_state()
    if not rows:
        print("no attempts measured yet", file=out)
        return
    print(format_table(rows, now=time.time()), file=out)
