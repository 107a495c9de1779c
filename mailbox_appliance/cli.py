"""The admin command line: ``mailbox-appliance [--config PATH] COMMAND ...``.

It uses the same store as the running appliance (SQLite allows one writer at a time and waits
for the other; PostgreSQL does not mind), through the same Deferred-returning store functions,
run under ``twisted.internet.task.react``.  Anything a user got wrong is one line on stderr and
exit status 1; argument errors exit 2; never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError
from twisted.internet.defer import ensureDeferred

from mailbox_appliance import cli_files, cli_queue
from mailbox_appliance.addresses import normalize_address, split_address
from mailbox_appliance.auth import Passwords
from mailbox_appliance.config import SERVICES, Config, ConfigError, load_config, parse_size
from mailbox_appliance.config_types import human_size as _human
from mailbox_appliance.datadir import initialise
from mailbox_appliance.errors import DuplicateAccount, NoSuchAccount, StoreError, UnknownDomain
from mailbox_appliance.store import Store, migrate


class CommandError(Exception):
    """A one-line message for the user; exit status 1."""


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def read_password(from_stdin: bool, stdin=None) -> str:
    """One password from standard input (first line), or typed twice at a terminal."""
    stdin = stdin or sys.stdin
    if from_stdin:
        password = stdin.readline().rstrip("\r\n")
    elif stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise CommandError("the passwords do not match")
    else:
        raise CommandError("no terminal to ask for a password; use --password-stdin")
    if not password:
        raise CommandError("empty password refused")
    return password


# -- commands that need a running store --------------------------------------------------


async def _domain(store: Store, args, out) -> None:
    if args.action == "add":
        name = await store.add_domain(args.name)
        print(f"added domain {name}", file=out)
    elif args.action == "remove":
        await store.remove_domain(args.name)
        print(f"removed domain {args.name}", file=out)
    else:
        for row in await store.list_domains():
            print(f"{row['name']}\t{row['accounts']} account(s)", file=out)


async def _user(store: Store, args, out, passwords: Passwords, config: Config) -> None:
    if args.action == "list":
        growth = config.quota.grow_by > 0
        for row in await store.list_accounts(args.domain):
            state = "disabled" if row["disabled"] else "active"
            quota = row["quota_bytes"]
            grows = (
                f" (grows to {_human(config.quota.max)})"
                if growth and quota < config.quota.max
                else ""
            )
            print(
                f"{row['address']}\t{_human(row['used_bytes'])} of {_human(quota)}{grows}\t{state}",
                file=out,
            )
        return
    if args.action in ("add", "passwd"):
        if args.action == "add":
            await _check_new_address(store, args.address)  # before asking for a password
        else:
            await store.account(args.address)
        password = read_password(args.password_stdin)
        password_hash = await passwords.hash(password)
        if args.action == "add":
            quota = args.quota if args.quota is not None else config.quota.default
            await store.add_account(args.address, password_hash, quota)
            print(
                f"added account {normalize_address(args.address)} (quota {_human(quota)})", file=out
            )
        else:
            await store.set_password(args.address, password_hash)
            print(f"changed the password of {normalize_address(args.address)}", file=out)
    elif args.action == "remove":
        await store.remove_account(args.address)
        print(f"removed account {normalize_address(args.address)} and its mail", file=out)
    elif args.action == "quota":
        await store.set_quota(args.address, args.size)
        print(f"quota of {normalize_address(args.address)} is now {_human(args.size)}", file=out)


async def _check_new_address(store: Store, address: str) -> None:
    """Refuse what add_account would refuse, before anyone types a password."""
    _, domain = split_address(address)
    if not await store.is_local_domain(domain):
        raise UnknownDomain(f"{domain} is not a local domain (add it with: domain add {domain})")
    try:
        await store.account(address)
    except NoSuchAccount:
        return
    raise DuplicateAccount(f"account {normalize_address(address)} already exists")


async def _alias(store: Store, args, out) -> None:
    if args.action == "add":
        added = await store.add_alias(args.address, args.targets)
        print(f"alias {normalize_address(args.address)} -> {', '.join(added)}", file=out)
    elif args.action == "remove":
        removed = await store.remove_alias(args.address, args.targets or None)
        print(f"removed {removed} target(s) of alias {normalize_address(args.address)}", file=out)
    else:
        for row in await store.list_aliases(args.address):
            print(f"{row['address']}\t{row['target']}", file=out)


# -- commands that work on the configuration or schema only ------------------------------


def _check_config(config: Config, out) -> None:
    print(f"configuration OK ({config.source or 'built-in defaults'})", file=out)
    print(f"  data_dir: {config.data_dir}", file=out)
    print(f"  database: {config.database_url}", file=out)
    for service in SERVICES:
        endpoints = config.listen.get(service, ())
        print(f"  listen.{service}: {', '.join(endpoints) if endpoints else 'off'}", file=out)


def _db(config: Config, args, out) -> None:
    status = migrate.schema_status(config.database_url)
    if status.current is None and not status.foreign:
        initialise(config)
        status = migrate.schema_status(config.database_url)
    if args.action == "status":
        print(status.describe(), file=out)
        if status.foreign or (status.current and not migrate.is_known(status.current)):
            raise CommandError("this software cannot use that database")
        if not status.up_to_date:
            raise CommandError("the schema needs an upgrade: mailbox-appliance db upgrade")
        return
    before, after = migrate.upgrade(config.database_url)
    if before == after:
        print(f"schema already at revision {after}", file=out)
    else:
        print(f"upgraded the schema from revision {before} to {after}", file=out)


# -- plumbing ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailbox-appliance", description="Administer a mailbox-appliance."
    )
    parser.add_argument("--config", "-c", help="YAML configuration (default: built-in)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("init", help="prepare the data directory, schema and certificate")
    commands.add_parser("check-config", help="validate the configuration and show listeners")

    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="action", required=True
    )
    db.add_parser("upgrade", help="migrate the schema to this version's revision")
    db.add_parser("status", help="show the schema revision (exit 1 if an upgrade is needed)")

    domain = commands.add_parser("domain", help="local domains").add_subparsers(
        dest="action", required=True
    )
    domain.add_parser("add").add_argument("name")
    domain.add_parser("list")
    domain.add_parser("remove").add_argument("name")

    user = commands.add_parser("user", help="accounts").add_subparsers(dest="action", required=True)
    add = user.add_parser("add")
    add.add_argument("address")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument("--quota", type=_size_arg, help="e.g. '2 GiB' (default: quota.default)")
    listing = user.add_parser("list")
    listing.add_argument("--domain")
    passwd = user.add_parser("passwd")
    passwd.add_argument("address")
    passwd.add_argument("--password-stdin", action="store_true")
    user.add_parser("remove").add_argument("address")
    quota = user.add_parser("quota")
    quota.add_argument("address")
    quota.add_argument("size", type=_size_arg)

    alias = commands.add_parser("alias", help="aliases").add_subparsers(
        dest="action", required=True
    )
    alias_add = alias.add_parser("add")
    alias_add.add_argument("address")
    alias_add.add_argument("targets", nargs="+", metavar="TARGET")
    alias.add_parser("list").add_argument("address", nargs="?")
    alias_remove = alias.add_parser("remove")
    alias_remove.add_argument("address")
    alias_remove.add_argument("targets", nargs="*", metavar="TARGET")

    cli_queue.add_parsers(commands)
    cli_files.add_parsers(commands)
    return parser


async def _with_store(reactor, config: Config, work: Callable) -> None:
    store = Store.from_config(reactor, config)
    passwords = Passwords(reactor, config.auth.password_hash, threads=1)
    store.db.start()
    passwords.start()
    try:
        await work(store, passwords)
    finally:
        passwords.stop()
        await store.db.stop()


def run(argv: list[str], out=None) -> int:
    """Run one command; returns the exit status."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        if args.command == "check-config":
            _check_config(config, out)
            return 0
        if args.command == "db":
            _db(config, args, out)
            return 0
        for note in initialise(config):
            if args.command == "init":
                print(note, file=out)
        if args.command == "init":
            return 0
        return _run_store_command(config, args, out)
    except ConfigError as e:
        for line in e.errors:
            print(f"mailbox-appliance: {line}", file=sys.stderr)
        return 1
    except (CommandError, StoreError, cli_queue.NoSuchRow, cli_files.FilesError) as e:
        print(f"mailbox-appliance: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"mailbox-appliance: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 1
    except SQLAlchemyError as e:  # e.g. the database server is down: one line, no traceback
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        print(f"mailbox-appliance: database: {reason}", file=sys.stderr)
        return 1


def _run_store_command(config: Config, args, out) -> int:
    from twisted.internet import reactor

    async def work(store: Store, passwords: Passwords) -> None:
        if args.command == "domain":
            await _domain(store, args, out)
        elif args.command == "user":
            await _user(store, args, out, passwords, config)
        elif args.command == "queue":
            await cli_queue.queue_command(store, args, out, _human)
        elif args.command == "routes":
            await cli_queue.routes_command(store, config, out)
        elif args.command == "files":
            await cli_files.files_command(
                store, args, out, _human, config, passwords, read_password
            )
        else:
            await _alias(store, args, out)

    outcome: list = []
    d = ensureDeferred(_with_store(reactor, config, work))
    d.addBoth(outcome.append)
    d.addBoth(lambda _: reactor.stop())
    if not outcome:
        reactor.run(installSignalHandlers=False)
    result = outcome[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(sys.argv[1:] if argv is None else argv))
