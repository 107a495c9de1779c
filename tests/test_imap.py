"""The IMAP services end to end: the real appliance on loopback, Python's imaplib and raw sockets.

Each test's client code runs in a thread (imaplib blocks); the server runs in trial's reactor.
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import threading
import time

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support.appliance import PASSWORD, add_account, insecure_tls, port_of, started_appliance
from tests.support.databases import postgres_url
from tests.support.imap_clients import RawIMAP

ALICE = "alice@example.test"
MESSAGE = (
    b"From: Sender <sender@remote.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Subject: hello there\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"Message-ID: <m1@remote.test>\r\n"
    b"\r\n"
    b"Hello Alice.\r\n"
    b".a line that starts with a dot\r\n"
)
MULTIPART = (
    b"From: Bob <bob@remote.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"first part with needle\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAw==\r\n"
    b"--b1--\r\n"
)


class IMAPTestCase(TestCase):
    timeout = 20
    services = ("smtp", "imap", "imaps")
    overrides: dict = {}

    def configuration(self) -> dict:
        """Config overrides for this test's appliance."""
        return self.overrides

    @inlineCallbacks
    def setUp(self):
        self.appliance = yield started_appliance(
            self, services=self.services, **self.configuration()
        )
        self.store = self.appliance.store
        self.alice = yield add_account(self.appliance, ALICE)
        self.imap_port = port_of(self.appliance, "imap")

    def in_thread(self, fn, *args):
        return deferToThread(fn, *args)

    def client(self, login: bool = True) -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
        self.addCleanup(deferToThread, _close, c)
        if login:
            c.login(ALICE, PASSWORD)
        return c

    def tls_client(self) -> imaplib.IMAP4_SSL:
        c = imaplib.IMAP4_SSL(
            "127.0.0.1", port_of(self.appliance, "imaps"), ssl_context=insecure_tls(), timeout=30
        )
        self.addCleanup(deferToThread, _close, c)
        return c

    def deliver(self, message: bytes = MESSAGE, to: str = ALICE) -> None:
        with smtplib.SMTP("127.0.0.1", port_of(self.appliance, "smtp"), timeout=30) as s:
            s.sendmail("sender@remote.test", [to], message)

    def append(self, c, message: bytes = MESSAGE, mailbox="INBOX", flags=None) -> int:
        typ, data = c.append(mailbox, flags, None, message)
        self.assertEqual(typ, "OK", data)
        return int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))


def _close(c) -> None:
    try:
        c.logout()
    except Exception:
        pass


class SessionTests(IMAPTestCase):
    def test_greeting_and_capabilities(self):
        def run():
            c = self.client(login=False)
            caps = c.capabilities
            self.assertIn("STARTTLS", caps)
            self.assertIn("AUTH=PLAIN", caps)  # loopback may log in without TLS
            c.login(ALICE, PASSWORD)
            typ, data = c.capability()
            caps = data[0].decode().split()
            for cap in (
                "IMAP4rev1 IDLE UIDPLUS MOVE NAMESPACE SPECIAL-USE LITERAL+ ENABLE ID UNSELECT "
                "CONDSTORE QUOTA SASL-IR"
            ).split():
                self.assertIn(cap, caps)
            self.assertTrue(any(c.startswith("APPENDLIMIT=") for c in caps))

        return self.in_thread(run)

    def test_bad_password_is_refused(self):
        def run():
            c = self.client(login=False)
            with self.assertRaises(imaplib.IMAP4.error) as e:
                c.login(ALICE, "wrong")
            self.assertIn("AUTHENTICATIONFAILED", str(e.exception))

        self.appliance.login_throttle.settings = self.appliance.login_throttle.settings
        return self.in_thread(run)

    def test_authenticate_plain_with_initial_response(self):
        def run():
            raw = RawIMAP(self.imap_port)
            self.addCleanup(raw.close)
            import base64

            token = base64.b64encode(b"\0" + ALICE.encode() + b"\0" + PASSWORD.encode())
            lines = raw.command(b"a1", b"AUTHENTICATE PLAIN " + token)
            self.assertTrue(lines[-1].startswith(b"a1 OK"), lines)
            lines = raw.command(b"a2", b"SELECT INBOX")
            self.assertTrue(lines[-1].startswith(b"a2 OK [READ-WRITE]"), lines)

        return self.in_thread(run)

    def test_starttls_then_login(self):
        def run():
            c = self.client(login=False)
            c.starttls(ssl_context=insecure_tls())
            c.login(ALICE, PASSWORD)
            self.assertEqual(c.select("INBOX")[0], "OK")

        return self.in_thread(run)

    def test_implicit_tls(self):
        def run():
            c = self.tls_client()
            c.login(ALICE, PASSWORD)
            self.assertEqual(c.select("INBOX")[0], "OK")

        return self.in_thread(run)

    def test_long_line_gets_bad_and_session_continues(self):
        def run():
            raw = RawIMAP(self.imap_port)
            self.addCleanup(raw.close)
            raw.send(b"a1 NOOP " + b"x" * 200_000 + b"\r\n")
            line = raw.line()
            self.assertTrue(line.startswith(b"a1 BAD"), line)
            lines = raw.command(b"a2", b"NOOP")
            self.assertTrue(lines[-1].startswith(b"a2 OK"), lines)

        return self.in_thread(run)

    def test_syntax_error_is_bad_with_reason(self):
        def run():
            raw = RawIMAP(self.imap_port)
            self.addCleanup(raw.close)
            lines = raw.command(b"a1", b"FROBNICATE")
            self.assertTrue(lines[-1].startswith(b"a1 BAD "), lines)
            lines = raw.command(b"a2", b"SELECT INBOX")
            self.assertTrue(lines[-1].startswith(b"a2 BAD"), lines)  # not logged in

        return self.in_thread(run)


class MailboxTests(IMAPTestCase):
    def test_select_responses(self):
        def run():
            self.deliver()
            raw = RawIMAP(self.imap_port)
            self.addCleanup(raw.close)
            raw.command(b"a", f"LOGIN {ALICE} {_q(PASSWORD)}".encode())
            lines = b"".join(raw.command(b"b", b"SELECT INBOX"))
            for expected in (
                rb"\* FLAGS \(",
                rb"\* OK \[PERMANENTFLAGS \(.*\\\*\)\]",
                rb"\* 1 EXISTS",
                rb"\* 1 RECENT",
                rb"\* OK \[UNSEEN 1\]",
                rb"\* OK \[UIDVALIDITY \d+\]",
                rb"\* OK \[UIDNEXT 2\]",
                rb"\* OK \[HIGHESTMODSEQ \d+\]",
                rb"b OK \[READ-WRITE\]",
            ):
                self.assertRegex(lines, expected)
            # A second session does not see the message as recent any more.
            raw2 = RawIMAP(self.imap_port)
            self.addCleanup(raw2.close)
            raw2.command(b"a", f"LOGIN {ALICE} {_q(PASSWORD)}".encode())
            lines = b"".join(raw2.command(b"b", b"EXAMINE INBOX"))
            self.assertIn(b"* 0 RECENT", lines)
            self.assertIn(b"b OK [READ-ONLY]", lines)

        return self.in_thread(run)

    def test_create_list_rename_delete(self):
        def run():
            c = self.client()
            self.assertEqual(c.create("Projects/2026/Q4")[0], "OK")
            typ, data = c.list('""', "*")
            names = {_list_name(line) for line in data}
            expected = {"INBOX", "Sent", "Projects", "Projects/2026", "Projects/2026/Q4"}
            self.assertTrue(expected <= names, names)
            sent = [line for line in data if _list_name(line) == "Sent"][0]
            self.assertIn(b"\\Sent", sent)
            typ, data = c.list('""', "%")
            self.assertNotIn("Projects/2026", {_list_name(line) for line in data})
            projects = [line for line in data if _list_name(line) == "Projects"][0]
            self.assertIn(b"\\HasChildren", projects)
            self.assertEqual(c.rename("Projects", "Work")[0], "OK")
            names = {_list_name(line) for line in c.list('""', "Work/*")[1]}
            self.assertEqual(names, {"Work/2026", "Work/2026/Q4"})
            typ, data = c.delete("Work")
            self.assertEqual(typ, "NO")  # has children
            c.select("Work/2026/Q4")
            self.assertEqual(c.delete("Work/2026/Q4")[0], "OK")
            self.assertEqual(c.noop()[0], "OK")  # deleting the selected mailbox unselects it
            typ, data = c.select("Nope")
            self.assertEqual(typ, "NO")
            self.assertIn(b"NONEXISTENT", data[0])
            self.assertEqual(c.create("Sent")[0], "NO")

        return self.in_thread(run)

    def test_rename_inbox_moves_its_messages(self):
        def run():
            c = self.client()
            self.append(c)
            self.append(c)
            self.assertEqual(c.rename("INBOX", "Old")[0], "OK")
            self.assertEqual(c.status("INBOX", "(MESSAGES)")[1][0], b"INBOX (MESSAGES 0)")
            self.assertEqual(c.status("Old", "(MESSAGES)")[1][0], b"Old (MESSAGES 2)")

        return self.in_thread(run)

    def test_subscribe_and_lsub(self):
        def run():
            c = self.client()
            c.create("Lists")
            c.unsubscribe("Lists")
            names = {_list_name(line) for line in c.lsub('""', "*")[1]}
            self.assertNotIn("Lists", names)
            c.subscribe("Lists")
            names = {_list_name(line) for line in c.lsub('""', "*")[1]}
            self.assertIn("Lists", names)

        return self.in_thread(run)

    def test_status(self):
        def run():
            c = self.client()
            self.append(c, flags="(\\Seen)")
            self.append(c)
            typ, data = c.status(
                "INBOX", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)"
            )
            self.assertRegex(
                data[0],
                rb"MESSAGES 2 RECENT 2 UIDNEXT 3 UIDVALIDITY \d+ UNSEEN 1 HIGHESTMODSEQ \d+",
            )

        return self.in_thread(run)

    def test_namespace_and_id(self):
        def run():
            c = self.client()
            typ, data = c.namespace()
            self.assertEqual(data[0], b'(("" "/")) NIL NIL')
            imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))
            typ, data = c._simple_command("ID", '("name" "test")')
            self.assertEqual(typ, "OK")

        return self.in_thread(run)

    def test_unicode_mailbox_names_travel_in_modified_utf7(self):
        def run():
            c = self.client()
            self.assertEqual(c.create("&ZeVnLIqe-")[0], "OK")  # 日本語
            names = {_list_name(line) for line in c.list('""', "*")[1]}
            self.assertIn("&ZeVnLIqe-", names)

        return self.in_thread(run)

    def test_quota(self):
        def run():
            c = self.client()
            self.append(c)
            typ, data = c.getquotaroot("INBOX")
            self.assertEqual(typ, "OK")
            flat = b" ".join(x for part in data for x in part)
            self.assertRegex(flat, rb"STORAGE 1 \d+")

        return self.in_thread(run)


class MessageTests(IMAPTestCase):
    def test_append_then_fetch_every_item(self):
        def run():
            c = self.client()
            uid = self.append(c, MULTIPART, flags="(\\Flagged $Important)")
            c.select("INBOX")
            typ, data = c.uid("FETCH", str(uid), "(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
            head = data[0] if isinstance(data[0], bytes) else data[0][0]
            self.assertIn(b"\\Flagged", head)
            self.assertIn(b"$Important", head)
            self.assertIn(b"RFC822.SIZE %d" % len(MULTIPART), head)
            self.assertIn(b'"=?UTF-8?B?R3LDvMOfZQ==?="', head)
            typ, data = c.fetch("1", "(BODYSTRUCTURE)")
            self.assertIn(b'("TEXT" "PLAIN"', data[0].upper())
            self.assertIn(b'"MIXED"', data[0].upper())
            typ, data = c.fetch("1", "(BODY.PEEK[])")
            self.assertEqual(data[0][1], MULTIPART)
            typ, data = c.fetch("1", "(BODY.PEEK[1])")
            self.assertEqual(data[0][1], b"first part with needle")
            typ, data = c.fetch("1", "(BODY.PEEK[2])")
            self.assertEqual(data[0][1], b"AAECAw==")
            typ, data = c.fetch("1", "(BODY.PEEK[2.MIME])")
            self.assertTrue(data[0][1].startswith(b"Content-Type: application/octet-stream"))
            typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
            self.assertEqual(
                data[0][1],
                b"From: Bob <bob@remote.test>\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\r\n",
            )
            typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT FROM)])")
            self.assertNotIn(b"Subject", data[0][1])
            self.assertIn(b"MIME-Version", data[0][1])
            typ, data = c.fetch("1", "(BODY.PEEK[TEXT]<0.8>)")
            self.assertIn(b"BODY[TEXT]<0>", data[0][0])
            self.assertEqual(data[0][1], b"preamble")
            typ, data = c.fetch("1", "(RFC822.HEADER)")
            self.assertTrue(data[0][1].endswith(b"\r\n\r\n"))
            # Nothing so far set \Seen: every fetch was a PEEK or header.
            typ, data = c.fetch("1", "(FLAGS)")
            self.assertNotIn(b"\\Seen", data[0])
            typ, data = c.fetch("1", "(BODY[TEXT])")
            flat = b"".join(x if isinstance(x, bytes) else b"".join(x) for x in data)
            self.assertIn(b"\\Seen", flat)

        return self.in_thread(run)

    def test_delivered_mail_is_fetched(self):
        def run():
            self.deliver()
            c = self.client()
            c.select("INBOX")
            typ, data = c.fetch("1", "(ENVELOPE BODY[])")
            self.assertIn(b'"hello there"', data[0][0])
            self.assertTrue(data[0][1].endswith(MESSAGE))
            self.assertTrue(data[0][1].startswith(b"Return-Path:"))

        return self.in_thread(run)

    def test_store_and_search(self):
        def run():
            c = self.client()
            for i in range(5):
                self.append(c, MESSAGE.replace(b"hello there", b"subject %d" % i))
            self.append(c, MULTIPART)
            c.select("INBOX")
            typ, data = c.store("2:3", "+FLAGS", "(\\Seen custom)")
            self.assertEqual(typ, "OK")
            self.assertEqual(len([d for d in data if d]), 2)
            self.assertEqual(c.search(None, "SEEN")[1][0], b"2 3")
            self.assertEqual(c.search(None, "UNSEEN")[1][0], b"1 4 5 6")
            self.assertEqual(c.search(None, "KEYWORD", "custom")[1][0], b"2 3")
            self.assertEqual(c.search(None, "SUBJECT", '"subject 4"')[1][0], b"5")
            self.assertEqual(c.search(None, "OR", "SUBJECT", '"subject 1"', "SEEN")[1][0], b"2 3")
            self.assertEqual(c.search(None, "NOT", "SEEN", "NOT", "1:4")[1][0], b"5 6")
            self.assertEqual(c.search(None, "FROM", "bob")[1][0], b"6")
            self.assertEqual(c.search(None, "BODY", "needle")[1][0], b"6")
            self.assertEqual(c.search(None, "TEXT", "needle")[1][0], b"6")
            found = c.search(None, "HEADER", "Message-ID", "m1@remote")[1][0]
            self.assertEqual(found, b"1 2 3 4 5")
            self.assertEqual(c.search(None, "SENTBEFORE", "1-Jan-2000")[1][0], b"1 2 3 4 5")
            self.assertEqual(c.search(None, "LARGER", "1000")[1][0], b"")
            self.assertEqual(c.search("UTF-8", "SUBJECT", '"subject 2"')[1][0], b"3")
            typ, data = c.search("KOI8-R", "ALL")
            self.assertEqual(typ, "NO")
            typ, data = c.uid("SEARCH", "UID", "2:*")
            self.assertEqual(data[0], b"2 3 4 5 6")
            c.store("1", "FLAGS", "(\\Deleted)")
            typ, data = c.expunge()
            self.assertEqual(data, [b"1"])
            self.assertEqual(c.search(None, "ALL")[1][0], b"1 2 3 4 5")

        return self.in_thread(run)

    def test_copy_and_move_report_uids(self):
        def run():
            c = self.client()
            for _ in range(3):
                self.append(c)
            c.create("Archive2")
            c.select("INBOX")
            typ, data = c.copy("1:2", "Archive2")
            self.assertEqual(typ, "OK")
            self.assertRegex(data[0], rb"\[COPYUID \d+ 1:2 1:2\]")
            typ, data = c._simple_command("MOVE", "3", "Archive2")
            self.assertEqual(typ, "OK")
            self.assertEqual(c.untagged_responses.get("EXPUNGE"), [b"3"])
            self.assertIn(b"COPYUID", b" ".join(c.untagged_responses.get("OK", [])))
            self.assertEqual(c.status("Archive2", "(MESSAGES)")[1][0], b"Archive2 (MESSAGES 3)")
            typ, data = c.copy("1", "Missing")
            self.assertEqual(typ, "NO")
            self.assertIn(b"TRYCREATE", data[0])

        return self.in_thread(run)

    def test_message_numbers_past_the_end_are_bad_and_uids_past_it_are_ignored(self):
        def run():
            c = self.client()
            self.append(c)
            c.select("INBOX")
            with self.assertRaises(imaplib.IMAP4.error) as e:
                c.fetch("2", "(FLAGS)")
            self.assertIn("No such message", str(e.exception))
            typ, data = c.uid("FETCH", "5:9", "(FLAGS)")
            self.assertEqual((typ, data), ("OK", [None]))
            c.select("Drafts")
            with self.assertRaises(imaplib.IMAP4.error):
                c.fetch("*", "(FLAGS)")  # "*" in an empty mailbox

        return self.in_thread(run)

    def test_uid_expunge_only_removes_the_given_uids(self):
        def run():
            c = self.client()
            for _ in range(3):
                self.append(c)
            c.select("INBOX")
            c.store("1:3", "+FLAGS", "(\\Deleted)")
            typ, data = c.uid("EXPUNGE", "2")
            self.assertEqual(typ, "OK")
            self.assertEqual(c.untagged_responses.get("EXPUNGE"), [b"2"])
            self.assertEqual(c.uid("SEARCH", "ALL")[1][0], b"1 3")

        return self.in_thread(run)

    def test_condstore(self):
        def run():
            c = self.client()
            self.append(c)
            self.append(c)
            c._simple_command("ENABLE", "CONDSTORE")
            c.select("INBOX")
            typ, data = c.fetch("1:2", "(MODSEQ)")
            modseqs = [int(re.search(rb"MODSEQ \((\d+)\)", d).group(1)) for d in data]
            typ, data = c.store("1", "+FLAGS", "(\\Seen)")
            after = int(re.search(rb"MODSEQ \((\d+)\)", data[0]).group(1))
            self.assertGreater(after, max(modseqs))
            typ, data = c.fetch("1:2", f"(FLAGS) (CHANGEDSINCE {max(modseqs)})")
            self.assertEqual(len([d for d in data if d]), 1)
            typ, data = c._simple_command(
                "STORE", "2", f"(UNCHANGEDSINCE {modseqs[1] - 1})", "+FLAGS", "(\\Flagged)"
            )
            self.assertIn(b"MODIFIED 2", c.untagged_responses.get("OK", [b""])[-1] + data[0])
            self.assertEqual(c.search(None, "MODSEQ", str(after))[1][0], b"1 (MODSEQ %d)" % after)

        return self.in_thread(run)

    def test_append_too_big_is_refused_before_the_data(self):
        def run():
            raw = RawIMAP(self.imap_port)
            self.addCleanup(raw.close)
            raw.command(b"a", f"LOGIN {ALICE} {_q(PASSWORD)}".encode())
            raw.send(b"b APPEND INBOX {99999999999}\r\n")
            line = raw.line()
            self.assertTrue(line.startswith(b"b NO [TOOBIG]"), line)
            lines = raw.command(b"c", b"NOOP")
            self.assertTrue(lines[-1].startswith(b"c OK"))

        return self.in_thread(run)

    def test_literal_plus_append(self):
        def run():
            raw = RawIMAP(self.imap_port)
            self.addCleanup(raw.close)
            raw.command(b"a", f"LOGIN {ALICE} {_q(PASSWORD)}".encode())
            raw.send(b"b APPEND INBOX (\\Seen) {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
            lines = raw.until_tagged(b"b")
            self.assertRegex(lines[-1], rb"b OK \[APPENDUID \d+ 1\]")

        return self.in_thread(run)


class ConcurrencyTests(IMAPTestCase):
    def test_idle_sees_new_mail_within_a_second(self):
        def run():
            raw = RawIMAP(self.imap_port)
            self.addCleanup(raw.close)
            raw.command(b"a", f"LOGIN {ALICE} {_q(PASSWORD)}".encode())
            raw.command(b"b", b"SELECT INBOX")
            raw.send(b"c IDLE\r\n")
            self.assertTrue(raw.line().startswith(b"+"))
            started = time.monotonic()
            threading.Thread(target=self.deliver).start()
            line = raw.line()
            self.assertEqual(line, b"* 1 EXISTS\r\n")
            self.assertLess(time.monotonic() - started, 2.0)
            # Another session's flag change and expunge are pushed too.
            other = self.client()
            other.select("INBOX")
            other.store("1", "+FLAGS", "(\\Deleted)")
            seen = b""
            while b"FETCH" not in seen:
                seen += raw.line()
            other.expunge()
            while b"EXPUNGE" not in seen:
                seen += raw.line()
            self.assertIn(b"* 1 EXPUNGE", seen)
            raw.send(b"DONE\r\n")
            self.assertTrue(raw.until_tagged(b"c")[-1].startswith(b"c OK"))

        return self.in_thread(run)

    def test_no_expunge_during_fetch_and_sequence_numbers_hold(self):
        def run():
            a = self.client()
            for _ in range(3):
                self.append(a)
            a.select("INBOX")
            b = self.client()
            b.select("INBOX")
            b.store("2", "+FLAGS", "(\\Deleted)")
            b.expunge()
            # Session a has not been told: a FETCH keeps the old numbers, without EXPUNGE.
            typ, data = a.fetch("3", "(UID)")
            self.assertIn(b"3 (UID 3)", data[0])
            self.assertNotIn("EXPUNGE", a.untagged_responses)
            typ, data = a.noop()
            self.assertEqual(a.untagged_responses.get("EXPUNGE"), [b"2"])
            typ, data = a.fetch("2", "(UID)")
            self.assertIn(b"2 (UID 3)", data[0])

        return self.in_thread(run)

    def test_other_sessions_flag_changes_reach_noop(self):
        def run():
            a = self.client()
            self.append(a)
            a.select("INBOX")
            b = self.client()
            b.select("INBOX")
            b.store("1", "+FLAGS", "(\\Answered)")
            typ, data = a.noop()
            fetches = a.untagged_responses.get("FETCH", [])
            self.assertTrue(any(b"\\Answered" in f for f in fetches), fetches)

        return self.in_thread(run)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _list_name(line: bytes) -> str:
    m = re.match(rb'\(.*?\) "/" (.*)$', line)
    name = m.group(1)
    return name[1:-1].decode() if name.startswith(b'"') else name.decode()


class PostgreSQLMessageTests(MessageTests):
    """The message tests again with the metadata in PostgreSQL (skipped without a server)."""

    def configuration(self) -> dict:
        return {**self.overrides, "database": postgres_url(self)}


class PostgreSQLConcurrencyTests(ConcurrencyTests):
    def configuration(self) -> dict:
        return {**self.overrides, "database": postgres_url(self)}
