"""Schema versions: create a new database, refuse a stale one, upgrade on request.

These run before the reactor starts (``twistd`` option checking, the CLI's preparation step),
on an engine of their own, so they may block.  A new, empty database is brought to the newest
revision by running every migration, so new and upgraded databases are built the same way.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection, Engine

from mailbox_appliance.errors import SchemaError
from mailbox_appliance.store import schema
from mailbox_appliance.store.engine import make_engine
from mailbox_appliance.store.journal import EPOCH_KEY

UPGRADE_HINT = "mailbox-appliance{config} db upgrade"


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", "mailbox_appliance:migrations")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None  # None: no schema at all
    head: str
    foreign: bool  # tables exist, but not ours

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        if self.foreign:
            return "the database holds tables that are not a mailbox-appliance schema"
        if self.current is None:
            return f"empty database; the newest schema revision is {self.head}"
        if self.up_to_date:
            return f"schema revision {self.current} (newest)"
        return f"schema revision {self.current}; this software needs {self.head}"


def _engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(os.path.abspath(url[len("sqlite:///") :])), exist_ok=True)
    return make_engine(url, guard_reactor_thread=False)


def _status(conn: Connection) -> SchemaStatus:
    current = MigrationContext.configure(conn).get_current_revision()
    tables = set(inspect(conn).get_table_names())
    foreign = current is None and bool(tables - {"alembic_version"})
    return SchemaStatus(current, head_revision(), foreign)


def schema_status(url: str) -> SchemaStatus:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return _status(conn)
    finally:
        engine.dispose()


def upgrade(url: str) -> tuple[str | None, str]:
    """Bring the database to the newest revision; returns (before, after)."""
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            before = _status(conn)
            if before.foreign:
                raise SchemaError(before.describe())
            if before.current is not None and not is_known(before.current):
                raise SchemaError(
                    f"schema revision {before.current} is newer than this software knows; "
                    "install the newer mailbox-appliance"
                )
            command.upgrade(alembic_config(conn), "head")
            _seed_txn(conn)
        return before.current, head_revision()
    finally:
        engine.dispose()


def is_known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except Exception:
        return False


def _seed_txn(conn: Connection) -> None:
    """Rows every store has from the start."""
    meta = schema.store_meta
    have = set(conn.execute(select(meta.c.key)).scalars())
    seeds = {
        EPOCH_KEY: "1",
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    for key, value in seeds.items():
        if key not in have:
            conn.execute(meta.insert().values(key=key, value=value))


def ensure_current(url: str, config_path: str | None) -> str:
    """Create the schema in an empty database; refuse an old one with the command to run.

    Returns a line for the log saying what was found or done.
    """
    status = schema_status(url)
    if status.foreign:
        raise SchemaError(f"{status.describe()}; point `database` at an empty database")
    if status.current is None:
        upgrade(url)
        return f"created a new database schema at revision {status.head}"
    if status.up_to_date:
        return f"database schema at revision {status.current}"
    if not is_known(status.current):
        raise SchemaError(
            f"database schema revision {status.current} is newer than this software; "
            "install the newer mailbox-appliance"
        )
    hint = UPGRADE_HINT.format(config=f" --config {config_path}" if config_path else "")
    raise SchemaError(f"{status.describe()}; stop here and run: {hint}")
