"""Recipient resolution: what an address in the envelope means to this store.

An address is local when its domain is one of ours; then it names an account, or an alias
whose targets are accounts, further aliases (followed to a bounded depth, loops ignored) and
remote addresses.  The SMTP server decides relaying and replies from the result; this module
knows no protocol.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from mailbox_appliance.addresses import split_address
from mailbox_appliance.store import schema

#: How many alias hops are followed, and how many addresses one alias may expand to.
MAX_ALIAS_DEPTH = 8
MAX_EXPANSION = 1000


class LocalTarget(NamedTuple):
    account_id: int
    address: str
    quota_bytes: int
    used_bytes: int


class Resolution(NamedTuple):
    local_domain: bool
    local: tuple[LocalTarget, ...] = ()
    remote: tuple[str, ...] = ()

    @property
    def exists(self) -> bool:
        return bool(self.local or self.remote)


_a, _al, _d = schema.accounts, schema.aliases, schema.domains
_DOMAIN = select(_d.c.id).where(_d.c.name == bindparam("r_domain"))
_ACCOUNTS_NAMED = select(
    _a.c.id, _a.c.address, _a.c.quota_bytes, _a.c.used_bytes, _a.c.disabled
).where(_a.c.address.in_(bindparam("r_addresses", expanding=True)))
_ACCOUNTS = select(_a.c.id, _a.c.address, _a.c.quota_bytes, _a.c.used_bytes).where(
    _a.c.address.in_(bindparam("r_addresses", expanding=True)), _a.c.disabled.is_(False)
)
_ALIAS_TARGETS = select(_al.c.address, _al.c.target).where(
    _al.c.address.in_(bindparam("r_addresses", expanding=True))
)
_LOCAL_DOMAINS = select(_d.c.name).where(_d.c.name.in_(bindparam("r_domains", expanding=True)))


def resolve_many_txn(conn: Connection, addresses: list[str]) -> list[Resolution]:
    """Resolve normalized addresses (see ``addresses.normalize_address``), in order.

    The common case, an account, costs one query for the whole batch (an account implies a
    local domain); anything else is resolved on its own.
    """
    accounts = {
        row.address: row for row in conn.execute(_ACCOUNTS_NAMED, {"r_addresses": addresses})
    }
    results = []
    for address in addresses:
        row = accounts.get(address)
        if row is None:
            results.append(_resolve_other_txn(conn, address))
        elif row.disabled:
            results.append(Resolution(local_domain=True))
        else:
            target = LocalTarget(row.id, row.address, row.quota_bytes, row.used_bytes)
            results.append(Resolution(True, (target,)))
    return results


def _resolve_other_txn(conn: Connection, address: str) -> Resolution:
    """An address that is not an account: an alias, an unknown user, or not ours at all."""
    _, domain = split_address(address)
    if conn.execute(_DOMAIN, {"r_domain": domain}).first() is None:
        return Resolution(local_domain=False)
    local: dict[int, LocalTarget] = {}
    remote: dict[str, None] = {}
    seen = {address}
    frontier = [address]
    for _ in range(MAX_ALIAS_DEPTH + 1):
        if not frontier:
            break
        for row in conn.execute(_ACCOUNTS, {"r_addresses": frontier}):
            local.setdefault(
                row.id, LocalTarget(row.id, row.address, row.quota_bytes, row.used_bytes)
            )
        targets = [row.target for row in conn.execute(_ALIAS_TARGETS, {"r_addresses": frontier})]
        targets = [t for t in targets if t not in seen][: MAX_EXPANSION - len(seen)]
        seen.update(targets)
        domains = {split_address(t)[1] for t in targets}
        ours = set(conn.execute(_LOCAL_DOMAINS, {"r_domains": list(domains)}).scalars())
        frontier = []
        for target in targets:
            if split_address(target)[1] in ours:
                frontier.append(target)
            else:
                remote.setdefault(target)
    return Resolution(True, tuple(local.values()), tuple(remote))
