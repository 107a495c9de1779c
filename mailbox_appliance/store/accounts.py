"""Domains, accounts and aliases: ``*_txn`` functions that run on a store thread.

Each returns plain data (dicts, lists, ints), never result rows that outlive the transaction,
and each mutation writes its journal entry in the same transaction.
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from mailbox_appliance.addresses import normalize_address, normalize_domain, split_address
from mailbox_appliance.errors import (
    DomainInUse,
    DuplicateAccount,
    DuplicateAlias,
    DuplicateDomain,
    NoSuchAccount,
    NoSuchAlias,
    UnknownDomain,
)
from mailbox_appliance.store import schema
from mailbox_appliance.store.journal import record_txn
from mailbox_appliance.store.mailboxes import create_mailbox_txn, delete_account_mail_txn
from mailbox_appliance.store.transfers import delete_account_transfers_txn

#: The mailboxes every new account gets, with their RFC 6154 special-use attributes.
DEFAULT_MAILBOXES = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# -- domains ------------------------------------------------------------------------------


def domain_id_txn(conn: Connection, name: str) -> int:
    domain_id = conn.execute(
        select(schema.domains.c.id).where(schema.domains.c.name == name)
    ).scalar()
    if domain_id is None:
        raise UnknownDomain(f"{name} is not a local domain (add it with: domain add {name})")
    return domain_id


def add_domain_txn(conn: Connection, name: str) -> str:
    name = normalize_domain(name)
    if conn.execute(select(schema.domains.c.id).where(schema.domains.c.name == name)).first():
        raise DuplicateDomain(f"domain {name} already exists")
    conn.execute(schema.domains.insert().values(name=name, created=_now()))
    record_txn(conn, "domain.add", {"name": name})
    return name


def list_domains_txn(conn: Connection) -> list[dict[str, Any]]:
    d, a = schema.domains, schema.accounts
    count = select(func.count()).select_from(a).where(a.c.domain_id == d.c.id).scalar_subquery()
    rows = conn.execute(select(d.c.name, d.c.created, count.label("accounts")).order_by(d.c.name))
    return [dict(row._mapping) for row in rows]


def remove_domain_txn(conn: Connection, name: str) -> None:
    name = normalize_domain(name)
    domain_id = domain_id_txn(conn, name)
    users = conn.execute(
        select(func.count())
        .select_from(schema.accounts)
        .where(schema.accounts.c.domain_id == domain_id)
    ).scalar()
    aliases = conn.execute(
        select(func.count())
        .select_from(schema.aliases)
        .where(schema.aliases.c.domain_id == domain_id)
    ).scalar()
    if users or aliases:
        raise DomainInUse(
            f"domain {name} still has {users} account(s) and {aliases} alias(es); remove them first"
        )
    conn.execute(delete(schema.domains).where(schema.domains.c.id == domain_id))
    record_txn(conn, "domain.remove", {"name": name})


def is_local_domain_txn(conn: Connection, name: str) -> bool:
    return (
        conn.execute(select(schema.domains.c.id).where(schema.domains.c.name == name)).first()
        is not None
    )


# -- accounts -----------------------------------------------------------------------------


def add_account_txn(conn: Connection, address: str, password_hash: str, quota: int) -> int:
    """Create an account with its default mailboxes; returns the account id."""
    address = normalize_address(address)
    _, domain = split_address(address)
    domain_id = domain_id_txn(conn, domain)
    a = schema.accounts
    if conn.execute(select(a.c.id).where(a.c.address == address)).first():
        raise DuplicateAccount(f"account {address} already exists")
    if conn.execute(select(schema.aliases.c.id).where(schema.aliases.c.address == address)).first():
        raise DuplicateAccount(f"{address} is already an alias; remove the alias first")
    account_id = conn.execute(
        a.insert().values(
            address=address,
            domain_id=domain_id,
            password_hash=password_hash,
            quota_bytes=quota,
            used_bytes=0,
            created=_now(),
            disabled=False,
        )
    ).inserted_primary_key[0]
    record_txn(conn, "account.add", {"id": account_id, "address": address, "quota": quota})
    for name, special_use in DEFAULT_MAILBOXES:
        create_mailbox_txn(conn, account_id, name, special_use)
    return account_id


def account_txn(conn: Connection, address: str) -> dict[str, Any]:
    """The account row as a dict; NoSuchAccount if there is none."""
    address = normalize_address(address)
    row = conn.execute(select(schema.accounts).where(schema.accounts.c.address == address)).first()
    if row is None:
        raise NoSuchAccount(f"no account {address}")
    return dict(row._mapping)


def list_accounts_txn(conn: Connection, domain: str | None = None) -> list[dict[str, Any]]:
    a = schema.accounts
    query = select(
        a.c.address, a.c.quota_bytes, a.c.used_bytes, a.c.created, a.c.disabled
    ).order_by(a.c.address)
    if domain is not None:
        query = query.where(a.c.domain_id == domain_id_txn(conn, normalize_domain(domain)))
    return [dict(row._mapping) for row in conn.execute(query)]


def set_password_txn(conn: Connection, address: str, password_hash: str) -> None:
    account = account_txn(conn, address)
    conn.execute(
        update(schema.accounts)
        .where(schema.accounts.c.id == account["id"])
        .values(password_hash=password_hash)
    )
    record_txn(conn, "account.password", {"id": account["id"]})


def set_quota_txn(conn: Connection, address: str, quota: int) -> None:
    account = account_txn(conn, address)
    conn.execute(
        update(schema.accounts)
        .where(schema.accounts.c.id == account["id"])
        .values(quota_bytes=quota)
    )
    record_txn(conn, "account.quota", {"id": account["id"], "quota": quota})


def remove_account_txn(conn: Connection, address: str) -> None:
    """Delete an account, its mailboxes and mail; blobs are released to garbage collection."""
    account = account_txn(conn, address)
    delete_account_mail_txn(conn, account["id"])
    delete_account_transfers_txn(conn, account["id"])
    conn.execute(delete(schema.accounts).where(schema.accounts.c.id == account["id"]))
    record_txn(conn, "account.remove", {"id": account["id"], "address": account["address"]})


# -- aliases ------------------------------------------------------------------------------


def add_alias_txn(conn: Connection, address: str, targets: list[str]) -> list[str]:
    """Point ``address`` (in a local domain) at each target, local or remote."""
    address = normalize_address(address)
    _, domain = split_address(address)
    domain_id = domain_id_txn(conn, domain)
    if conn.execute(
        select(schema.accounts.c.id).where(schema.accounts.c.address == address)
    ).first():
        raise DuplicateAlias(f"{address} is an account; an alias cannot take its name")
    al = schema.aliases
    added = []
    for target in targets:
        target = normalize_address(target)
        if target == address:
            raise DuplicateAlias(f"alias {address} cannot point at itself")
        exists = conn.execute(
            select(al.c.id).where(al.c.address == address, al.c.target == target)
        ).first()
        if exists:
            raise DuplicateAlias(f"alias {address} -> {target} already exists")
        conn.execute(
            al.insert().values(address=address, domain_id=domain_id, target=target, created=_now())
        )
        added.append(target)
    record_txn(conn, "alias.add", {"address": address, "targets": added})
    return added


def list_aliases_txn(conn: Connection, address: str | None = None) -> list[dict[str, Any]]:
    al = schema.aliases
    query = select(al.c.address, al.c.target, al.c.created).order_by(al.c.address, al.c.target)
    if address is not None:
        query = query.where(al.c.address == normalize_address(address))
    return [dict(row._mapping) for row in conn.execute(query)]


def remove_alias_txn(conn: Connection, address: str, targets: list[str] | None = None) -> int:
    """Remove some targets of an alias, or the whole alias; returns how many went."""
    address = normalize_address(address)
    al = schema.aliases
    query = delete(al).where(al.c.address == address)
    if targets:
        query = query.where(al.c.target.in_([normalize_address(t) for t in targets]))
    removed = conn.execute(query).rowcount
    if not removed:
        raise NoSuchAlias(f"no alias {address}" + (f" -> {', '.join(targets)}" if targets else ""))
    record_txn(conn, "alias.remove", {"address": address, "targets": targets or []})
    return removed
