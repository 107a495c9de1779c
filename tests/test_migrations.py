"""Schema migrations: the migrated database matches schema.py; stale schemas are refused."""

from __future__ import annotations

from importlib import metadata

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text
from twisted.trial.unittest import SynchronousTestCase

from mailbox_appliance.errors import SchemaError
from mailbox_appliance.store import migrate, schema
from tests.support.databases import PostgreSQLMixin, SQLiteMixin


class _MigrationTests:
    def setUp(self):
        self.url = self.database_url()

    def _engine(self):
        engine = create_engine(self.url)
        self.addCleanup(engine.dispose)
        return engine

    def test_migrated_database_matches_the_model(self):
        migrate.upgrade(self.url)
        with self._engine().connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, schema.metadata)
        self.assertEqual(diff, [], f"schema.py and the migrations disagree: {diff}")

    def test_new_database_is_created_at_the_newest_revision(self):
        note = migrate.ensure_current(self.url, None)
        self.assertIn(migrate.head_revision(), note)
        status = migrate.schema_status(self.url)
        self.assertTrue(status.up_to_date)
        with self._engine().connect() as conn:
            epoch = conn.execute(
                select(schema.store_meta.c.value).where(schema.store_meta.c.key == "epoch")
            ).scalar()
        self.assertEqual(epoch, "1")

    def test_upgrade_twice_changes_nothing(self):
        self.assertEqual(migrate.upgrade(self.url), (None, migrate.head_revision()))
        head = migrate.head_revision()
        self.assertEqual(migrate.upgrade(self.url), (head, head))

    def test_upgrade_from_0001_keeps_data_and_adds_the_outbound_queue(self):
        engine = self._engine()
        with engine.begin() as conn:
            command.upgrade(migrate.alembic_config(conn), "0001")
            conn.execute(
                text("INSERT INTO domains (name, created) VALUES ('a.test', '2026-01-01')")
            )
        status = migrate.schema_status(self.url)
        self.assertEqual((status.current, status.up_to_date), ("0001", False))
        self.assertEqual(migrate.upgrade(self.url), ("0001", migrate.head_revision()))
        with engine.connect() as conn:
            self.assertEqual(
                conn.execute(select(schema.domains.c.name)).scalars().all(), ["a.test"]
            )
            self.assertEqual(conn.execute(select(schema.outbound_queue)).all(), [])

    def test_upgrade_from_0002_keeps_mail_and_adds_imap_state(self):
        engine = self._engine()
        with engine.begin() as conn:
            command.upgrade(migrate.alembic_config(conn), "0002")
            for statement in [
                "INSERT INTO domains (id, name, created) VALUES (1, 'a.test', '2026-01-01')",
                "INSERT INTO accounts (id, address, domain_id, password_hash, quota_bytes,"
                " used_bytes, created, disabled)"
                " VALUES (1, 'u@a.test', 1, 'h', 1000, 10, '2026-01-01', false)",
                "INSERT INTO mailboxes (id, account_id, name, uidvalidity, uidnext,"
                " highestmodseq, subscribed, created)"
                " VALUES (1, 1, 'INBOX', 7, 2, 5, true, '2026-01-01')",
                "INSERT INTO blobs (sha256, size, tier, refcount, created, last_access)"
                " VALUES ('ab', 10, 'hot', 1, '2026-01-01', '2026-01-01')",
                "INSERT INTO messages (id, blob_sha256, size, internal_date, refcount)"
                " VALUES (1, 'ab', 10, '2026-01-01', 1)",
                "INSERT INTO mailbox_entries (id, mailbox_id, uid, message_id, flags, keywords,"
                " modseq) VALUES (1, 1, 1, 1, 1, '', 5)",
            ]:
                conn.execute(text(statement))
        self.assertEqual(migrate.upgrade(self.url), ("0002", migrate.head_revision()))
        m, e = schema.mailboxes, schema.mailbox_entries
        with engine.connect() as conn:
            box = conn.execute(select(m.c.name, m.c.uidnext, m.c.first_recent)).one()
            self.assertEqual(tuple(box), ("INBOX", 2, 1))  # existing mail counts as recent
            self.assertEqual(conn.execute(select(e.c.uid, e.c.modseq)).all(), [(1, 5)])
            self.assertEqual(conn.execute(select(schema.mailbox_expunges)).all(), [])
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("mailbox_entries")}
            self.assertIn("ix_mailbox_entries_mailbox_id_modseq", indexes)
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("mailbox_expunges")}
            self.assertIn("ix_mailbox_expunges_mailbox_id_modseq", indexes)

    def test_upgrade_from_0003_keeps_the_queue_and_adds_delivery_state(self):
        engine = self._engine()
        with engine.begin() as conn:
            command.upgrade(migrate.alembic_config(conn), "0003")
            for statement in [
                "INSERT INTO blobs (sha256, size, tier, refcount, created, last_access)"
                " VALUES ('ab', 10, 'hot', 1, '2026-01-01', '2026-01-01')",
                "INSERT INTO outbound_queue (id, kind, blob_sha256, skip_bytes, sender,"
                " recipient, created, next_attempt, attempts)"
                " VALUES (1, 'relay', 'ab', 0, 'a@a.test', 'b@b.test', '2026-01-01',"
                " '2026-01-01', 2)",
            ]:
                conn.execute(text(statement))
        self.assertEqual(migrate.upgrade(self.url), ("0003", migrate.head_revision()))
        q = schema.outbound_queue
        with engine.connect() as conn:
            row = conn.execute(
                select(q.c.recipient, q.c.attempts, q.c.claimed, q.c.delay_notified, q.c.status)
            ).one()
            self.assertEqual(tuple(row), ("b@b.test", 2, False, False, None))
            self.assertEqual(conn.execute(select(schema.routing_state)).all(), [])

    def test_upgrade_from_0004_keeps_mail_and_adds_the_file_transfer_tables(self):
        engine = self._engine()
        with engine.begin() as conn:
            command.upgrade(migrate.alembic_config(conn), "0004")
            for statement in [
                "INSERT INTO domains (id, name, created) VALUES (1, 'a.test', '2026-01-01')",
                "INSERT INTO accounts (id, address, domain_id, password_hash, quota_bytes,"
                " used_bytes, created, disabled)"
                " VALUES (1, 'u@a.test', 1, 'h', 1000, 10, '2026-01-01', false)",
                "INSERT INTO blobs (sha256, size, tier, refcount, created, last_access)"
                " VALUES ('ab', 10, 'hot', 1, '2026-01-01', '2026-01-01')",
            ]:
                conn.execute(text(statement))
        self.assertEqual(migrate.upgrade(self.url), ("0004", migrate.head_revision()))
        with engine.begin() as conn:
            self.assertEqual(
                conn.execute(select(schema.accounts.c.address)).scalars().all(), ["u@a.test"]
            )
            for table in (schema.uploads, schema.files, schema.share_links):
                self.assertEqual(conn.execute(select(table)).all(), [])
            # The server defaults let rows be written without the new booleans.
            conn.execute(
                text(
                    "INSERT INTO files (id, account_id, name, size, blob_sha256, kind, created)"
                    " VALUES ('f', 1, 'n', 10, 'ab', 'station', '2026-01-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO share_links (token, file_id, created, expires)"
                    " VALUES ('t', 'f', '2026-01-01', '2026-01-02')"
                )
            )
            link = conn.execute(
                select(schema.share_links.c.downloads, schema.share_links.c.revoked)
            ).one()
            self.assertEqual(tuple(link), (0, False))

    def test_stale_schema_is_refused_with_the_upgrade_command(self):
        migrate.upgrade(self.url)
        # Pretend this software is one revision ahead of the database.
        self.patch(migrate, "head_revision", lambda: "9999")
        self.patch(migrate, "is_known", lambda revision: True)
        error = self.assertRaises(
            SchemaError, migrate.ensure_current, self.url, "/etc/mail/appliance.yaml"
        )
        self.assertIn("mailbox-appliance --config /etc/mail/appliance.yaml db upgrade", str(error))

    def test_schema_newer_than_the_software_is_refused(self):
        migrate.upgrade(self.url)
        with self._engine().begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
        error = self.assertRaises(SchemaError, migrate.ensure_current, self.url, None)
        self.assertIn("newer than this software", str(error))
        self.assertRaises(SchemaError, migrate.upgrade, self.url)

    def test_a_foreign_database_is_refused(self):
        with self._engine().begin() as conn:
            conn.execute(text("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY)"))
        error = self.assertRaises(SchemaError, migrate.ensure_current, self.url, None)
        self.assertIn("not a mailbox-appliance schema", str(error))


class SQLiteMigrationTests(SQLiteMixin, _MigrationTests, SynchronousTestCase):
    pass


class PostgreSQLMigrationTests(PostgreSQLMixin, _MigrationTests, SynchronousTestCase):
    pass


class PackagingTests(SynchronousTestCase):
    def test_migrations_are_installed_with_the_package(self):
        """A non-editable install must carry env.py and every revision, or upgrades fail."""
        try:
            files = metadata.files("mailbox-appliance") or []
        except metadata.PackageNotFoundError:
            self.skipTest("mailbox-appliance is not installed (pip install .)")
        names = {str(f).replace("\\", "/") for f in files}
        if not any(n.startswith("mailbox_appliance/") for n in names):
            self.skipTest("an editable install: files are not listed in the distribution")
        self.assertIn("mailbox_appliance/migrations/env.py", names)
        self.assertIn("mailbox_appliance/migrations/script.py.mako", names)
        self.assertIn("mailbox_appliance/migrations/versions/0001_initial_schema.py", names)
        self.assertIn("mailbox_appliance/migrations/versions/0002_outbound_queue.py", names)
        self.assertIn("mailbox_appliance/migrations/versions/0003_imap_mailbox_state.py", names)
        self.assertIn(
            "mailbox_appliance/migrations/versions/0004_outbound_delivery_state.py", names
        )
        self.assertIn("mailbox_appliance/migrations/versions/0005_file_transfer.py", names)
        self.assertIn("twisted/plugins/mailbox_appliance_plugin.py", names)
        self.assertIn("twisted/plugins/mailbox_appliance_routing.py", names)
