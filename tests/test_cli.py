"""The admin command line, run as a real child process against a real data directory.

Every user error is one line on stderr and exit status 1; argument errors exit 2; never a
traceback.  Each child costs most of a second, so one invocation serves several checks.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support.config import config_data
from tests.support.processes import REPO_ROOT, Twistd, child_env, free_port, write_config

SAMPLE = os.path.join(REPO_ROOT, "etc", "appliance.yaml")
PASSWORD = "correct horse ☃ battery staple"


@dataclass
class Result:
    code: int
    out: str
    err: str


class _CLITestCase(SynchronousTestCase):
    def setUp(self):
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.data_dir = os.path.join(self.workdir, "var")
        self.config_path = self.write_config()

    def write_config(self, name: str = "appliance.yaml", **overrides) -> str:
        data = config_data(overrides.pop("data_dir", self.data_dir), **overrides)
        return write_config(os.path.join(self.workdir, name), data)

    def cli(self, *args: str, stdin: str | None = None, config: str | None = None) -> Result:
        """Run ``python -m mailbox_appliance --config CONFIG ARGS``; stdin is never a terminal."""
        argv = [sys.executable, "-m", "mailbox_appliance", "--config", config or self.config_path]
        done = subprocess.run(
            [*argv, *args],
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            text=True,
            cwd=self.workdir,
            env=child_env(),
            timeout=120,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, stdin: str | None = None, config: str | None = None) -> str:
        """Run a command that must succeed quietly; returns its stdout."""
        result = self.cli(*args, stdin=stdin, config=config)
        self.assertEqual((result.code, result.err), (0, ""), result)
        return result.out

    def fails(self, *args: str, stdin: str | None = None, config: str | None = None) -> str:
        """Run a command that must fail with exit 1 and exactly one line on stderr."""
        result = self.cli(*args, stdin=stdin, config=config)
        self.assertEqual(result.code, 1, result)
        self.assertEqual(result.out, "", result)
        self.assertNotIn("Traceback", result.err)
        lines = result.err.splitlines()
        self.assertEqual(len(lines), 1, result.err)
        self.assertTrue(lines[0].startswith("mailbox-appliance: "), lines[0])
        return lines[0]

    def query(self, sql: str, *params) -> list[tuple]:
        """Read the appliance's database directly, as a second process would."""
        conn = sqlite3.connect(os.path.join(self.data_dir, "appliance.sqlite3"))
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def stored_hash(self, address: str) -> str:
        (row,) = self.query("SELECT password_hash FROM accounts WHERE address = ?", address)
        return row[0]


class InitTests(_CLITestCase):
    def test_init_creates_data_dir_schema_and_certificate_and_is_repeatable(self):
        out = self.ok("init")
        self.assertIn(f"created data directory {self.data_dir}", out)
        self.assertIn("created a new database schema at revision", out)
        self.assertIn("generated a self-signed TLS certificate for mail.example.test", out)
        self.assertEqual(self.query("SELECT count(*) FROM alembic_version"), [(1,)])
        self.assertTrue(os.path.isdir(os.path.join(self.data_dir, "blobs", "hot")))
        key = os.path.join(self.data_dir, "tls", "key.pem")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        with open(os.path.join(self.data_dir, "tls", "cert.pem"), "rb") as f:
            cert = f.read()

        again = self.ok("init")
        self.assertIn("database schema at revision", again)
        self.assertNotIn("created", again)
        self.assertNotIn("generated", again)
        with open(os.path.join(self.data_dir, "tls", "cert.pem"), "rb") as f:
            self.assertEqual(f.read(), cert)

    def test_init_into_a_data_dir_that_cannot_be_created_is_one_line(self):
        blocker = os.path.join(self.workdir, "file")
        with open(blocker, "w") as f:
            f.write("x")
        config = self.write_config("nested.yaml", data_dir=os.path.join(blocker, "var"))
        line = self.fails("init", config=config)
        self.assertIn(blocker, line)


class CheckConfigTests(_CLITestCase):
    def test_ok_output_lists_every_listener_and_touches_nothing(self):
        config = self.write_config(
            "listen.yaml", listen={"smtp": ["tcp:2525:interface=127.0.0.1"], "imap": []}
        )
        out = self.ok("check-config", config=config)
        self.assertIn(f"configuration OK ({config})", out)
        self.assertIn("listen.smtp: tcp:2525:interface=127.0.0.1", out)
        self.assertIn("listen.imap: off", out)
        self.assertIn(f"data_dir: {self.data_dir}", out)
        self.assertIn(f"database: sqlite:///{self.data_dir}/appliance.sqlite3", out)
        self.assertFalse(os.path.exists(self.data_dir), "check-config must not create anything")

    def test_bad_config_exits_1_with_each_error_on_its_own_line(self):
        config = self.write_config(
            "bad.yaml",
            hostname=5,
            listen={"smtpp": ["tcp:25"], "smtp": ["tcp:notaport"]},
            quota={"default": "lots"},
        )
        result = self.cli("check-config", config=config)
        self.assertEqual((result.code, result.out), (1, ""))
        self.assertNotIn("Traceback", result.err)
        lines = result.err.splitlines()
        self.assertEqual(
            sorted(line.split(": ")[1] for line in lines),
            ["hostname", "listen.smtp[0]", "listen.smtpp", "quota.default"],
        )
        for line in lines:
            self.assertTrue(line.startswith("mailbox-appliance: "), line)

    def test_missing_config_file_is_one_line_naming_it(self):
        missing = os.path.join(self.workdir, "missing.yaml")
        self.assertIn(f"{missing}: cannot read", self.fails("domain", "list", config=missing))

    def test_invalid_yaml_is_one_line_naming_the_file(self):
        path = os.path.join(self.workdir, "broken.yaml")
        with open(path, "w") as f:
            f.write("listen: [\n  smtp: {\n")
        self.assertIn(f"{path}: not valid YAML", self.fails("check-config", config=path))

    def test_sample_config_loads_cleanly(self):
        out = self.ok("check-config", config=SAMPLE)
        self.assertIn("configuration OK", out)
        self.assertIn("listen.smtp: tcp:10025:interface=127.0.0.1", out)
        self.assertIn("listen.admin: tcp:10081:interface=127.0.0.1", out)

    def test_environment_variable_names_the_config_when_no_option_does(self):
        done = subprocess.run(
            [sys.executable, "-m", "mailbox_appliance", "check-config"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.workdir,
            env=child_env(MAILBOX_APPLIANCE_CONFIG=self.config_path),
            timeout=120,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"configuration OK ({self.config_path})", done.stdout)


class DatabaseTests(_CLITestCase):
    def test_db_status_on_a_new_dir_creates_the_schema_then_upgrade_has_nothing_to_do(self):
        self.assertIn("(newest)", self.ok("db", "status"))
        ((revision,),) = self.query("SELECT version_num FROM alembic_version")
        self.assertEqual(self.ok("db", "upgrade"), f"schema already at revision {revision}\n")

    def test_db_upgrade_on_a_new_dir_then_status_says_newest(self):
        self.assertIn("schema already at revision", self.ok("db", "upgrade"))
        ((revision,),) = self.query("SELECT version_num FROM alembic_version")
        self.assertEqual(self.ok("db", "status"), f"schema revision {revision} (newest)\n")

    def test_schema_newer_than_the_software_is_refused_in_one_line(self):
        self.ok("init")
        conn = sqlite3.connect(os.path.join(self.data_dir, "appliance.sqlite3"))
        with conn:
            conn.execute("UPDATE alembic_version SET version_num = '9999'")
        conn.close()
        self.assertIn("newer than this software", self.fails("db", "upgrade"))
        self.assertIn("newer than this software", self.fails("domain", "list"))
        status = self.cli("db", "status")
        self.assertEqual(status.code, 1, status)
        self.assertIn("schema revision 9999", status.out)
        self.assertIn("this software cannot use that database", status.err)
        self.assertNotIn("db upgrade", status.err)

    def test_database_server_that_cannot_be_reached_is_one_line(self):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise SkipTest("psycopg is not installed (the postgresql extra)") from None
        url = f"postgresql+psycopg://nobody:secret@127.0.0.1:{free_port()}/mail"
        config = self.write_config("pg.yaml", database=url)
        line = self.fails("domain", "list", config=config)
        self.assertTrue(line.startswith("mailbox-appliance: database: "), line)
        self.assertNotIn("secret", line)


class DomainTests(_CLITestCase):
    def test_domain_add_list_remove_round_trip(self):
        self.assertEqual(self.ok("domain", "add", "Example.ORG"), "added domain example.org\n")
        self.assertIn("already exists", self.fails("domain", "add", "example.org"))
        self.ok("user", "add", "alice@example.org", "--password-stdin", stdin=PASSWORD + "\n")
        self.assertEqual(self.ok("domain", "list"), "example.org\t1 account(s)\n")
        line = self.fails("domain", "remove", "example.org")
        self.assertIn("still has 1 account(s)", line)
        self.ok("user", "remove", "alice@example.org")
        self.assertEqual(self.ok("domain", "remove", "example.org"), "removed domain example.org\n")
        self.assertEqual(self.ok("domain", "list"), "")
        self.assertIn("not a local domain", self.fails("domain", "remove", "example.org"))


class UserTests(_CLITestCase):
    def setUp(self):
        super().setUp()
        self.ok("domain", "add", "example.org")

    def test_user_add_reads_the_password_from_stdin_and_never_shows_it(self):
        result = self.cli("user", "add", "Alice@Example.ORG", "--password-stdin", stdin=PASSWORD)
        self.assertEqual(result.code, 0, result)
        self.assertEqual(result.out, "added account alice@example.org (quota 1.0 GiB)\n")
        self.assertEqual(result.err, "")
        stored = self.stored_hash("alice@example.org")
        self.assertTrue(stored.startswith("$argon2id$"), stored)
        self.assertTrue(PasswordHasher().verify(stored, PASSWORD))
        mailboxes = self.query(
            "SELECT m.name FROM mailboxes m JOIN accounts a ON a.id = m.account_id"
            " WHERE a.address = ?",
            "alice@example.org",
        )
        self.assertIn(("INBOX",), mailboxes)

        refusals = [
            ("account alice@example.org already exists", "alice@example.org"),
            ("invalid address", "alice@@example.org"),
            ("elsewhere.test is not a local domain", "bob@elsewhere.test"),
        ]
        for expected, address in refusals:
            with self.subTest(address=address):
                line = self.fails("user", "add", address, "--password-stdin", stdin=PASSWORD)
                self.assertIn(expected, line)
                self.assertNotIn(PASSWORD, line)
        # A duplicate is refused before a password is asked for (stdin is not a terminal).
        line = self.fails("user", "add", "alice@example.org")
        self.assertIn("account alice@example.org already exists", line)
        line = self.fails("user", "add", "bob@example.org")  # stdin is not a terminal
        self.assertIn("no terminal to ask for a password; use --password-stdin", line)
        self.assertEqual(self.query("SELECT address FROM accounts"), [("alice@example.org",)])

    def test_queue_list_shows_what_waits_to_leave(self):
        self.assertEqual(self.ok("queue", "list"), "0 queued\n")
        conn = sqlite3.connect(os.path.join(self.data_dir, "appliance.sqlite3"))
        with conn:  # as if submission had queued a 2 KiB message for a remote recipient
            conn.execute(
                "INSERT INTO blobs (sha256, size, tier, refcount, created, last_access)"
                " VALUES ('ab', 2100, 'hot', 1, '2026-11-28 10:00:00', '2026-11-28 10:00:00')"
            )
            conn.execute(
                "INSERT INTO outbound_queue (kind, blob_sha256, skip_bytes, sender, recipient,"
                " created, next_attempt, attempts) VALUES ('relay', 'ab', 52, 'alice@example.org',"
                " 'bob@remote.test', '2026-11-28 10:00:00', '2026-11-28 10:00:00', 0)"
            )
        conn.close()
        self.assertEqual(
            self.ok("queue", "list"),
            "1\trelay\t2026-11-28 10:00:00\t2.0 KiB\t<alice@example.org> -> <bob@remote.test>"
            "\tattempts 0\n1 queued\n",
        )

    def _queue_two_rows(self) -> None:
        conn = sqlite3.connect(os.path.join(self.data_dir, "appliance.sqlite3"))
        with conn:
            conn.execute(
                "INSERT INTO blobs (sha256, size, tier, refcount, created, last_access)"
                " VALUES ('ab', 2100, 'hot', 2, '2026-11-28 10:00:00', '2026-11-28 10:00:00')"
            )
            for sender, recipient in (("alice@example.org", "bob@remote.test"), ("", "x@r.test")):
                conn.execute(
                    "INSERT INTO outbound_queue (kind, blob_sha256, skip_bytes, sender,"
                    " recipient, created, next_attempt, attempts, reason, status) VALUES"
                    " ('relay', 'ab', 0, ?, ?, '2026-11-28 10:00:00', '2099-01-01 00:00:00', 3,"
                    " '451 4.3.2 later', '4.3.2')",
                    (sender, recipient),
                )
        conn.close()

    def test_queue_show_retry_bounce_and_delete(self):
        self._queue_two_rows()
        shown = self.ok("queue", "show", "1")
        self.assertIn("recipient: bob@remote.test\n", shown)
        self.assertIn("status: 4.3.2\n", shown)
        self.assertIn("next_attempt: 2099-01-01 00:00:00", shown)
        self.assertIn("sender: <> (a delivery status notification)", self.ok("queue", "show", "2"))
        self.assertEqual(self.ok("queue", "retry", "1"), "1 due now\n")
        self.assertNotIn("2099", self.ok("queue", "show", "1"))
        self.assertEqual(self.ok("queue", "retry", "--all"), "2 due now\n")
        self.assertEqual(
            self.ok("queue", "bounce", "1"),
            "1 bounced: the sender gets a delivery status notification\n",
        )
        self.assertIn("kind: bounce", self.ok("queue", "show", "1"))
        self.assertIn("nobody to tell", self.ok("queue", "bounce", "2"))
        self.assertEqual(self.ok("queue", "delete", "1"), "deleted 1\n")
        self.assertEqual(self.ok("queue", "list"), "0 queued\n")
        self.assertEqual(self.query("SELECT refcount FROM blobs"), [(0,)])
        for command in (("show", "7"), ("retry", "7"), ("delete", "7"), ("bounce", "7")):
            self.assertIn("no queued", self.fails("queue", *command))

    def test_routes_says_the_policy_and_what_was_measured(self):
        out = self.ok("routes")
        self.assertEqual(out, "policy: direct; routes: direct\nno attempts measured yet\n")
        conn = sqlite3.connect(os.path.join(self.data_dir, "appliance.sqlite3"))
        with conn:
            conn.execute(
                "INSERT INTO routing_state (route, domain, state, updated) VALUES"
                " ('direct', 'remote.test', ?, '2026-11-28 10:00:00')",
                ('{"samples": 4, "connect": 0.01, "throughput": 2000000, "failure": 0.25}',),
            )
        conn.close()
        out = self.ok("routes")
        self.assertIn("remote.test", out)
        self.assertIn("25", out)  # the failure rate, in percent

    def test_user_list_shows_quota_and_usage_and_quota_takes_a_human_size(self):
        self.ok("domain", "add", "other.test")
        self.ok(
            "user",
            "add",
            "bob@example.org",
            "--password-stdin",
            "--quota",
            "512 MiB",
            stdin=PASSWORD,
        )
        self.ok("user", "add", "carol@other.test", "--password-stdin", stdin=PASSWORD)
        conn = sqlite3.connect(os.path.join(self.data_dir, "appliance.sqlite3"))
        with conn:  # as if 1.5 KiB of mail had been delivered
            conn.execute("UPDATE accounts SET used_bytes = 1536 WHERE address = 'bob@example.org'")
        conn.close()
        self.assertEqual(
            self.ok("user", "list"),
            "bob@example.org\t1.5 KiB of 512.0 MiB (grows to 10.0 GiB)\tactive\n"
            "carol@other.test\t0 B of 1.0 GiB (grows to 10.0 GiB)\tactive\n",
        )
        self.assertEqual(
            self.ok("user", "list", "--domain", "Other.Test"),
            "carol@other.test\t0 B of 1.0 GiB (grows to 10.0 GiB)\tactive\n",
        )
        out = self.ok("user", "quota", "Carol@other.test", "2 GiB")
        self.assertEqual(out, "quota of carol@other.test is now 2.0 GiB\n")
        self.assertEqual(
            self.query("SELECT quota_bytes FROM accounts WHERE address = 'carol@other.test'"),
            [(2 * 1024**3,)],
        )

    def test_user_passwd_replaces_the_hash_and_remove_deletes_the_account(self):
        self.ok("user", "add", "alice@example.org", "--password-stdin", stdin=PASSWORD)
        old = self.stored_hash("alice@example.org")
        result = self.cli(
            "user", "passwd", "alice@example.org", "--password-stdin", stdin="new secret\n"
        )
        self.assertEqual(
            (result.code, result.out, result.err),
            (0, "changed the password of alice@example.org\n", ""),
        )
        new = self.stored_hash("alice@example.org")
        self.assertNotEqual(new, old)
        self.assertTrue(PasswordHasher().verify(new, "new secret"))
        with self.assertRaises(VerifyMismatchError):
            PasswordHasher().verify(new, PASSWORD)
        line = self.fails("user", "passwd", "nobody@example.org", "--password-stdin", stdin="x")
        self.assertEqual(line, "mailbox-appliance: no account nobody@example.org")
        self.assertIn("--password-stdin", self.fails("user", "passwd", "alice@example.org"))
        self.assertEqual(self.stored_hash("alice@example.org"), new)

        out = self.ok("user", "remove", "Alice@example.org")
        self.assertEqual(out, "removed account alice@example.org and its mail\n")
        self.assertEqual(self.query("SELECT count(*) FROM accounts"), [(0,)])
        self.assertEqual(self.query("SELECT count(*) FROM mailboxes"), [(0,)])
        self.assertIn("no account", self.fails("user", "remove", "alice@example.org"))


class AliasTests(_CLITestCase):
    def setUp(self):
        super().setUp()
        self.ok("domain", "add", "example.org")
        self.ok("user", "add", "alice@example.org", "--password-stdin", stdin=PASSWORD)

    def test_alias_add_list_remove_with_local_and_remote_targets(self):
        out = self.ok(
            "alias", "add", "PostMaster@example.org", "alice@example.org", "Friend@Remote.TEST"
        )
        self.assertEqual(
            out, "alias postmaster@example.org -> alice@example.org, friend@remote.test\n"
        )
        self.ok("alias", "add", "abuse@example.org", "alice@example.org")
        self.assertEqual(
            self.ok("alias", "list"),
            "abuse@example.org\talice@example.org\n"
            "postmaster@example.org\talice@example.org\n"
            "postmaster@example.org\tfriend@remote.test\n",
        )
        out = self.ok("alias", "remove", "postmaster@example.org", "friend@remote.test")
        self.assertEqual(out, "removed 1 target(s) of alias postmaster@example.org\n")
        self.assertEqual(
            self.ok("alias", "list", "postmaster@example.org"),
            "postmaster@example.org\talice@example.org\n",
        )
        self.ok("alias", "remove", "postmaster@example.org")
        self.assertEqual(
            self.query("SELECT address, target FROM aliases"),
            [("abuse@example.org", "alice@example.org")],
        )
        self.assertIn("no alias", self.fails("alias", "remove", "postmaster@example.org"))

    def test_alias_refusals_are_one_line(self):
        self.ok("alias", "add", "postmaster@example.org", "alice@example.org")
        line = self.fails("alias", "add", "alice@example.org", "friend@remote.test")
        self.assertIn("alice@example.org is an account", line)
        line = self.fails("alias", "add", "x@unknown.test", "alice@example.org")
        self.assertIn("unknown.test is not a local domain", line)
        line = self.fails(
            "user", "add", "postmaster@example.org", "--password-stdin", stdin=PASSWORD
        )
        self.assertIn("already an alias", line)
        line = self.fails("domain", "remove", "example.org")
        self.assertIn("1 account(s) and 1 alias(es)", line)
        self.assertEqual(
            self.query("SELECT address, target FROM aliases"),
            [("postmaster@example.org", "alice@example.org")],
        )


class ArgumentErrorTests(_CLITestCase):
    def test_argument_errors_exit_2_with_usage_and_no_traceback(self):
        for args in [(), ("frobnicate",), ("user", "quota", "alice@example.org", "2 parsecs")]:
            with self.subTest(args=args):
                result = self.cli(*args)
                self.assertEqual((result.code, result.out), (2, ""), result)
                self.assertNotIn("Traceback", result.err)
                lines = result.err.splitlines()
                self.assertTrue(lines[0].startswith("usage: mailbox-appliance"), result.err)
                self.assertIn(": error: ", lines[-1])
        self.assertFalse(os.path.exists(self.data_dir), "a usage error must not touch data")


class ConcurrencyTests(_CLITestCase):
    def popen(self, *args: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailbox_appliance", "--config", self.config_path, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.workdir,
            env=child_env(),
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        return process

    def test_command_waits_for_another_process_holding_the_write_lock(self):
        self.ok("init")
        holder = sqlite3.connect(
            os.path.join(self.data_dir, "appliance.sqlite3"), isolation_level=None
        )
        self.addCleanup(holder.close)
        holder.execute("BEGIN IMMEDIATE")
        process = self.popen("domain", "add", "example.org")
        time.sleep(3)  # a free database answers in well under a second
        still_waiting = process.poll() is None
        holder.execute("COMMIT")
        out, err = process.communicate(timeout=60)
        self.assertTrue(still_waiting, f"finished despite the lock: {out!r} {err!r}")
        self.assertEqual((process.returncode, out, err), (0, "added domain example.org\n", ""))

    def test_commands_started_at_once_all_succeed(self):
        self.ok("domain", "add", "example.org")
        started = [
            (self.popen("domain", "add", "d0.example"), ""),
            (self.popen("domain", "add", "d1.example"), ""),
            (self.popen("user", "add", "alice@example.org", "--password-stdin"), PASSWORD),
            (self.popen("user", "add", "bob@example.org", "--password-stdin"), PASSWORD),
        ]
        for process, stdin in started:
            out, err = process.communicate(stdin, timeout=60)
            self.assertEqual((process.returncode, err), (0, ""), out)
        self.assertEqual(
            self.query("SELECT name FROM domains ORDER BY name"),
            [("d0.example",), ("d1.example",), ("example.org",)],
        )
        self.assertEqual(
            self.query("SELECT address FROM accounts ORDER BY address"),
            [("alice@example.org",), ("bob@example.org",)],
        )

    def test_commands_work_while_the_appliance_runs(self):
        port = free_port()
        self.config_path = self.write_config(listen={"admin": [f"tcp:{port}:interface=127.0.0.1"]})
        twistd = Twistd(self.workdir, "--config", self.config_path)
        self.addCleanup(twistd.stop)
        twistd.wait_for("admin listening on")
        self.ok("domain", "add", "example.org")
        self.ok("user", "add", "alice@example.org", "--password-stdin", stdin=PASSWORD)
        self.assertIn("alice@example.org\t0 B of 1.0 GiB", self.ok("user", "list"))
        self.assertIsNone(twistd.process.poll(), twistd.output())
