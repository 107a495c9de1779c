"""``mailbox-appliance files ...``: listing, sharing, revoking, moving and reaping station files.

The link arithmetic (public URL, tokens) is checked in-process; the commands run as real child
processes against a data directory whose files are put in with sqlite, as an upload would have
left them (the uploads themselves are tested in test_uploads_store and test_web_tus).
"""

from __future__ import annotations

import datetime
import os
import sqlite3

from argon2 import PasswordHasher
from twisted.trial.unittest import SynchronousTestCase

from mailbox_appliance.cli_files import FilesError, token_of
from mailbox_appliance.station_url import StationURLError, endpoint_port, public_url
from tests.support.config import make_config
from tests.test_cli import PASSWORD, _CLITestCase

TOKEN = "Abc-_0123456789abcdefghijklmnopqr"  # 32 URL-safe characters, like transfers.new_token
FUTURE = "2099-01-01 00:00:00"
PAST = "2001-01-01 00:00:00"


class PublicURLTests(SynchronousTestCase):
    def config(self, **overrides):
        return make_config(os.path.abspath(self.mktemp()), **overrides)

    def test_configured_public_url_wins_without_its_trailing_slash(self):
        config = self.config(
            transfer={"public_url": "https://files.example.org/"},
            listen={"https": ["tcp:10443"]},
        )
        self.assertEqual(public_url(config), "https://files.example.org")

    def test_default_is_the_hostname_with_the_first_https_port(self):
        config = self.config(listen={"https": ["tcp:10443:interface=127.0.0.1", "tcp:9443"]})
        self.assertEqual(public_url(config), "https://mail.example.test:10443")

    def test_port_443_is_left_out(self):
        config = self.config(listen={"https": ["tcp:port=443:interface=0.0.0.0"]})
        self.assertEqual(public_url(config), "https://mail.example.test")

    def test_no_https_listener_is_the_bare_hostname(self):
        self.assertEqual(public_url(self.config()), "https://mail.example.test")

    def test_endpoint_ports_follow_twisted_endpoint_syntax(self):
        self.assertEqual(endpoint_port(r"tcp6:8443:interface=\:\:1"), 8443)
        self.assertEqual(endpoint_port("tcp:interface=127.0.0.1:port=8443"), 8443)
        self.assertIsNone(endpoint_port("systemd:domain=INET:index=0"))
        self.assertIsNone(endpoint_port("unix:/run/station.sock"))

    def test_a_listener_without_a_port_asks_for_public_url(self):
        config = self.config(listen={"https": ["unix:/run/station.sock"]})
        with self.assertRaises(StationURLError) as caught:
            public_url(config)
        self.assertIn("set transfer.public_url", str(caught.exception))

    def test_token_from_a_link_or_bare(self):
        self.assertEqual(token_of(f"https://mail.example.test:10443/s/{TOKEN}"), TOKEN)
        self.assertEqual(token_of(f"https://files.example.org/s/{TOKEN}/?x=1"), TOKEN)
        self.assertEqual(token_of(f" {TOKEN}\n"), TOKEN)
        for bad in (f"https://mail.example.test/files/{TOKEN}", "not a token!", ""):
            with self.assertRaises(FilesError):
                token_of(bad)


class FilesCommandTests(_CLITestCase):
    def setUp(self):
        super().setUp()
        self.config_path = self.write_config(listen={"https": ["tcp:10443:interface=127.0.0.1"]})
        self.ok("domain", "add", "example.org")
        for user in ("alice", "bob"):
            self.ok("user", "add", f"{user}@example.org", "--password-stdin", stdin=PASSWORD)
        self.alice = self.account_id("alice@example.org")
        self.bob = self.account_id("bob@example.org")
        self.add_file("report", self.alice, "report.pdf", 3 * 1024 * 1024, "station", FUTURE)
        self.add_file("photos", self.alice, "photos.zip", 2048, "cloud", None, "09:00")
        self.add_file("bobs", self.bob, "secret.txt", 10, "station", FUTURE)

    def account_id(self, address: str) -> int:
        ((account_id,),) = self.query("SELECT id FROM accounts WHERE address = ?", address)
        return account_id

    def execute(self, sql: str, *params) -> None:
        conn = sqlite3.connect(os.path.join(self.data_dir, "appliance.sqlite3"))
        try:
            with conn:
                conn.execute(sql, params)
        finally:
            conn.close()

    def add_file(
        self,
        file_id: str,
        account_id: int,
        name: str,
        size: int,
        kind: str,
        expires: str | None,
        created: str = "10:00",
    ) -> None:
        """A file as a finished upload leaves it: a blob row holding one reference."""
        sha256 = file_id.ljust(64, "0")
        self.execute(
            "INSERT INTO blobs (sha256, size, tier, refcount, created, last_access)"
            " VALUES (?, ?, 'hot', 1, '2026-11-28 10:00:00', '2026-11-28 10:00:00')",
            sha256,
            size,
        )
        self.execute(
            "INSERT INTO files (id, account_id, name, size, blob_sha256, kind, created, expires)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            file_id,
            account_id,
            name,
            size,
            sha256,
            kind,
            f"2026-11-28 {created}:00",
            expires,
        )

    def share_row(self, token: str) -> tuple:
        (row,) = self.query(
            "SELECT file_id, expires, password_hash, max_downloads, revoked"
            " FROM share_links WHERE token = ?",
            token,
        )
        return row

    def test_share_takes_the_upload_urls_last_segment_too(self):
        upload = "u" * 32
        for owner in (self.alice, self.bob):  # bob's upload of the same id is not alice's
            self.execute(
                'INSERT INTO uploads (id, account_id, length, "offset", metadata, created,'
                " expires, partial, final, sha256, file_id)"
                " VALUES (?, ?, 3, 3, '{}', '2026-11-28 10:00:00', NULL, 0, 0, ?, ?)",
                upload if owner == self.alice else "v" * 32,
                owner,
                "report".ljust(64, "0") if owner == self.alice else "bobs".ljust(64, "0"),
                "report" if owner == self.alice else "bobs",
            )
        url = self.ok("files", "share", "alice@example.org", upload).splitlines()[0]
        self.assertEqual(self.share_row(url.rsplit("/", 1)[1])[0], "report")
        self.assertIn("has no file", self.fails("files", "share", "alice@example.org", "v" * 32))

    def test_list_shows_each_file_of_the_account_only(self):
        self.assertEqual(
            self.ok("files", "list", "Alice@Example.org"),
            "report\treport.pdf\t3.0 MiB\tstation\t2026-11-28 10:00:00\t2099-01-01 00:00:00\n"
            "photos\tphotos.zip\t2.0 KiB\tcloud\t2026-11-28 09:00:00\t-\n"
            "2 file(s)\n",
        )
        self.assertIn(
            "no account carol@example.org", self.fails("files", "list", "carol@example.org")
        )

    def test_share_prints_the_public_link_and_stores_its_limits(self):
        out = self.ok(
            "files", "share", "alice@example.org", "report", "--expires", "2",
            "--password", "open sesame", "--max-downloads", "3",
        )  # fmt: skip
        url, details = out.splitlines()
        prefix = "https://mail.example.test:10443/s/"
        self.assertTrue(url.startswith(prefix), url)
        token = url[len(prefix) :]
        self.assertIn("report.pdf: expires ", details)
        self.assertIn("password required; at most 3 download(s)", details)
        file_id, expires, password_hash, max_downloads, revoked = self.share_row(token)
        self.assertEqual((file_id, max_downloads, revoked), ("report", 3, 0))
        PasswordHasher().verify(password_hash, "open sesame")  # argon2id, like account passwords
        left = datetime.datetime.fromisoformat(expires) - datetime.datetime.now()
        self.assertTrue(datetime.timedelta(days=1.9) < left < datetime.timedelta(days=2.1), left)

    def test_share_without_options_uses_share_expires_and_public_url(self):
        config = self.write_config(
            "public.yaml",
            transfer={"public_url": "https://files.example.org/", "share_expires": 3600},
        )
        url, details = self.ok("files", "share", "alice@example.org", "photos", config=config)[
            :-1
        ].split("\n")
        self.assertTrue(url.startswith("https://files.example.org/s/"), url)
        self.assertNotIn("password", details)
        _, expires, password_hash, max_downloads, _ = self.share_row(url.rsplit("/", 1)[1])
        self.assertEqual((password_hash, max_downloads), (None, None))
        left = datetime.datetime.fromisoformat(expires) - datetime.datetime.now()
        self.assertTrue(datetime.timedelta(minutes=59) < left <= datetime.timedelta(hours=1))

    def test_a_link_never_outlives_its_file(self):
        self.execute("UPDATE files SET expires = ? WHERE id = 'report'", "2030-01-01 00:00:00")
        out = self.ok("files", "share", "alice@example.org", "report", "--expires", "36500")
        self.assertIn("expires 2030-01-01 00:00:00 UTC (with the file)", out)

    def test_share_refuses_a_file_that_is_not_the_accounts(self):
        for file_id in ("bobs", "nonesuch"):
            line = self.fails("files", "share", "alice@example.org", file_id)
            self.assertIn(f"alice@example.org has no file {file_id}", line)
        self.assertIn("no account", self.fails("files", "share", "carol@example.org", "bobs"))
        self.assertEqual(self.query("SELECT count(*) FROM share_links"), [(0,)])

    def test_revoke_by_link_or_token_once(self):
        url = self.ok("files", "share", "bob@example.org", "bobs").splitlines()[0]
        token = url.rsplit("/", 1)[1]
        self.assertEqual(
            self.ok("files", "revoke", url), f"revoked share link {token} to secret.txt\n"
        )
        self.assertEqual(self.share_row(token)[4], 1)
        self.assertIn(
            f"share link {token} was already revoked", self.fails("files", "revoke", token)
        )
        self.assertIn(f"no share link {TOKEN}", self.fails("files", "revoke", TOKEN))
        self.assertIn("is not a share link", self.fails("files", "revoke", "https://x/files/abc"))

    def test_gc_removes_expired_uploads_and_station_files_only(self):
        self.execute("UPDATE files SET expires = ? WHERE id = 'report'", PAST)
        self.execute(
            "INSERT INTO uploads (id, account_id, length, offset, metadata, created, expires,"
            " partial, final) VALUES ('stale', ?, 100, 10, '{}', ?, ?, 0, 0)",
            self.alice,
            PAST,
            PAST,
        )
        out = self.ok("files", "gc")
        self.assertIn("removed 1 expired unfinished upload(s) and 1 expired station file(s)", out)
        self.assertIn("next garbage collection", out)
        self.assertEqual(self.query("SELECT id FROM files ORDER BY id"), [("bobs",), ("photos",)])
        self.assertEqual(self.query("SELECT count(*) FROM uploads"), [(0,)])
        self.assertEqual(
            self.query("SELECT refcount FROM blobs WHERE sha256 LIKE 'report%'"), [(0,)]
        )
        self.assertEqual(
            self.ok("files", "gc"),
            "removed 0 expired unfinished upload(s) and 0 expired station file(s)\n",
        )

    def test_share_of_an_expired_file_is_refused(self):
        self.execute("UPDATE files SET expires = ? WHERE id = 'bobs'", PAST)
        line = self.fails("files", "share", "bob@example.org", "bobs")
        self.assertIn("file bobs has expired (files gc removes it)", line)

    def file_row(self, file_id: str) -> tuple:
        (row,) = self.query("SELECT kind, expires FROM files WHERE id = ?", file_id)
        return row

    def test_move_keeps_a_file_in_the_cloud_drive_and_puts_it_back(self):
        url = self.ok("files", "share", "alice@example.org", "report").splitlines()[0]
        token = url.rsplit("/", 1)[1]
        linked = self.share_row(token)[1]
        self.assertEqual(
            self.ok("files", "move", "Alice@Example.org", "report", "cloud"),
            "moved report.pdf to the cloud drive\n",
        )
        self.assertEqual(self.file_row("report"), ("cloud", None))
        self.assertEqual(self.share_row(token)[1], linked)
        self.assertIn(
            "report\treport.pdf\t3.0 MiB\tcloud\t2026-11-28 10:00:00\t-\n",
            self.ok("files", "list", "alice@example.org"),
        )
        self.assertEqual(
            self.ok("files", "move", "alice@example.org", "report", "cloud"),
            "report.pdf is already in the cloud drive\n",
        )

        before = datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)
        out = self.ok("files", "move", "alice@example.org", "photos", "station")
        prefix, suffix = "moved photos.zip to the station (expires ", " UTC)\n"
        self.assertTrue(out.startswith(prefix) and out.endswith(suffix), out)
        printed = datetime.datetime.fromisoformat(out[len(prefix) : -len(suffix)])
        lifetime = datetime.timedelta(days=30)  # transfer.file_expires
        self.assertTrue(
            before + lifetime <= printed <= before + lifetime + datetime.timedelta(minutes=1)
        )
        kind, expires = self.file_row("photos")
        self.assertEqual(kind, "station")
        self.assertEqual(datetime.datetime.fromisoformat(expires).replace(microsecond=0), printed)

    def test_moving_to_the_station_caps_the_files_share_links(self):
        self.ok("files", "move", "alice@example.org", "report", "cloud")
        url = self.ok("files", "share", "alice@example.org", "report", "--expires", "365")
        token = url.splitlines()[0].rsplit("/", 1)[1]
        self.ok("files", "move", "alice@example.org", "report", "station")
        self.assertEqual(self.share_row(token)[1], self.file_row("report")[1])

    def test_move_refuses_what_is_not_the_accounts_expired_or_too_large(self):
        for file_id in ("bobs", "nonesuch"):
            line = self.fails("files", "move", "alice@example.org", file_id, "cloud")
            self.assertIn(f"alice@example.org has no file {file_id}", line)
        self.assertIn(
            "no account", self.fails("files", "move", "carol@example.org", "bobs", "cloud")
        )
        self.assertEqual(self.file_row("bobs"), ("station", FUTURE))

        small = self.write_config("small.yaml", transfer={"cloud_capacity": "1 MiB"})
        line = self.fails("files", "move", "alice@example.org", "report", "cloud", config=small)
        self.assertIn(
            "cannot move report.pdf to the cloud drive: over the cloud drive capacity of"
            f" {1024 * 1024} bytes for this account (2048 bytes in use, {3 * 1024 * 1024} more"
            " asked for)",
            line,
        )
        self.assertEqual(self.file_row("report"), ("station", FUTURE))

        self.execute("UPDATE files SET expires = ? WHERE id = 'report'", PAST)
        line = self.fails("files", "move", "alice@example.org", "report", "cloud")
        self.assertIn("file report has expired (files gc removes it)", line)
        self.assertEqual(self.file_row("report"), ("station", PAST))
