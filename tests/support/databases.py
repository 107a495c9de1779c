"""The databases tests run against: a fresh SQLite file, or a fresh PostgreSQL database.

PostgreSQL tests need ``MAILBOX_APPLIANCE_TEST_POSTGRES`` (an SQLAlchemy URL of a server where
the user may create databases; ``.ci/run`` starts one).  Each test gets a database of its own,
dropped afterwards.
"""

from __future__ import annotations

import os
import uuid

from twisted.trial.unittest import SkipTest

POSTGRES_ENV = "MAILBOX_APPLIANCE_TEST_POSTGRES"


def sqlite_url(directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    return "sqlite:///" + os.path.join(os.path.abspath(directory), "test.sqlite3")


def postgres_url(testcase) -> str:
    """A new, empty PostgreSQL database for ``testcase``; dropped at cleanup."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        raise SkipTest(f"no PostgreSQL server: set {POSTGRES_ENV} (.ci/run starts one)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = "t_" + uuid.uuid4().hex[:16]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    testcase.addCleanup(drop)
    return make_url(base).set(database=name).render_as_string(hide_password=False)


class SQLiteMixin:
    """Mix into a TestCase to run its tests on SQLite: ``self.database_url()``."""

    backend = "sqlite"

    def database_url(self) -> str:
        return sqlite_url(self.mktemp())


class PostgreSQLMixin:
    """Mix into a TestCase to run its tests on PostgreSQL (skipped without a server)."""

    backend = "postgresql"

    def database_url(self) -> str:
        return postgres_url(self)
