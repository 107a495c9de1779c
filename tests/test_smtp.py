"""The SMTP services end to end: the real appliance on loopback, smtplib and raw sockets."""

from __future__ import annotations

import errno
import os
import shutil
import smtplib
import subprocess
import time

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.appliance import (
    PASSWORD,
    add_account,
    insecure_tls,
    port_of,
    started_appliance,
)
from tests.support.databases import postgres_url
from tests.support.smtp import RawSMTP, body_of, inbox

MESSAGE = (
    b"From: Sender <sender@remote.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Subject: hello\r\n"
    b"Message-ID: <m1@remote.test>\r\n"
    b"\r\n"
    b"Hello Alice.\r\n"
    b".a line that starts with a dot\r\n"
)


def _wait_until(condition, timeout: float = 10) -> bool:
    """Poll (in a client thread) until ``condition()`` is true; whether it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class _SMTPTestCase(TestCase):
    overrides: dict = {}

    def configuration(self) -> dict:
        """Config overrides for this test's appliance."""
        return self.overrides

    @inlineCallbacks
    def setUp(self):
        self.appliance = yield started_appliance(self, **self.configuration())
        self.store = self.appliance.store
        self.alice = yield add_account(self.appliance, "alice@example.test")
        self.bob = yield add_account(self.appliance, "bob@example.test")
        self.mx = port_of(self.appliance, "smtp")
        self.submission = port_of(self.appliance, "submission")
        self.submissions = port_of(self.appliance, "submissions")

    def raw(self, port: int | None = None, tls=None) -> RawSMTP:
        client = RawSMTP(port or self.mx, tls)
        self.addCleanup(client.close)
        return client

    def in_thread(self, fn, *args):
        """Blocking client code runs in a thread: the server shares this reactor."""
        return deferToThread(fn, *args)

    def session(self, *commands, port: int | None = None) -> list[str]:
        """Greeting and EHLO, then each command in turn; their replies (call in a thread)."""
        client = self.raw(port)
        client.reply()
        client.command("EHLO client.test")
        return [client.command(c) for c in commands]


class MXTests(_SMTPTestCase):
    @inlineCallbacks
    def test_a_full_disk_is_452_and_no_message_is_kept(self):
        from mailbox_appliance.store.blobwriter import BlobWriter

        def full(writer, chunk):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(BlobWriter, "_write_thd", full)

        def send():
            with smtplib.SMTP("127.0.0.1", self.mx, timeout=20) as client:
                client.ehlo()
                client.mail("sender@remote.test")
                client.rcpt("alice@example.test")
                return client.data(b"Subject: big\r\n\r\n" + b"x" * 1024 * 1024 + b"\r\n")

        self.assertEqual(
            (yield self.in_thread(send)),
            (452, b"4.3.1 Insufficient system storage, try again later"),
        )
        self.assertEqual(self.flushLoggedErrors(OSError), [])
        self.assertEqual((yield inbox(self.store, self.alice)), [])

    @inlineCallbacks
    def test_smtplib_delivers_to_a_local_account_with_trace_fields(self):
        def send():
            with smtplib.SMTP("127.0.0.1", self.mx, timeout=20) as client:
                refused = client.sendmail("sender@remote.test", ["alice@example.test"], MESSAGE)
                return refused, client.esmtp_features

        refused, features = yield self.in_thread(send)
        self.assertEqual(refused, {})
        for keyword in (
            "pipelining",
            "size",
            "8bitmime",
            "smtputf8",
            "enhancedstatuscodes",
            "chunking",
            "starttls",
        ):
            self.assertIn(keyword, features)
        self.assertEqual(features["size"], str(64 * 1024**2))
        self.assertNotIn("auth", features, "the MX never offers AUTH")
        (message,) = yield inbox(self.store, self.alice)
        self.assertTrue(message.startswith(b"Return-Path: <sender@remote.test>\r\nReceived: from "))
        self.assertIn(b"with ESMTP id ", message)
        self.assertIn(b"for <alice@example.test>;", message)
        # Dot-stuffing undone: the stored content is what the client meant.
        self.assertEqual(body_of(message), MESSAGE)

    @inlineCallbacks
    def test_unknown_local_user_is_550_and_other_recipients_still_get_the_message(self):
        def send():
            with smtplib.SMTP("127.0.0.1", self.mx, timeout=20) as client:
                return client.sendmail(
                    "sender@remote.test",
                    ["alice@example.test", "nobody@example.test", "bob@example.test"],
                    MESSAGE,
                )

        refused = yield self.in_thread(send)
        self.assertEqual(list(refused), ["nobody@example.test"])
        self.assertEqual(refused["nobody@example.test"][0], 550)
        self.assertIn(b"5.1.1", refused["nobody@example.test"][1])
        self.assertEqual(len((yield inbox(self.store, self.alice))), 1)
        self.assertEqual(len((yield inbox(self.store, self.bob))), 1)

    @inlineCallbacks
    def test_one_blob_serves_every_recipient_and_alias_expansion(self):
        yield self.store.add_alias(
            "team@example.test", ["alice@example.test", "bob@example.test", "carol@remote.test"]
        )

        def send():
            with smtplib.SMTP("127.0.0.1", self.mx, timeout=20) as client:
                return client.sendmail("sender@remote.test", ["team@example.test"], MESSAGE)

        self.assertEqual((yield self.in_thread(send)), {})
        (a,) = yield inbox(self.store, self.alice)
        (b,) = yield inbox(self.store, self.bob)
        self.assertEqual(a, b)
        queue = yield self.store.list_queue()
        # An alias may forward to a remote address: the MX queues that copy.
        self.assertEqual(
            [(q["recipient"], q["kind"]) for q in queue], [("carol@remote.test", "relay")]
        )

    @inlineCallbacks
    def test_relay_is_denied_under_the_classic_tricks(self):
        cases = {
            "<victim@remote.test>": "554 5.7.1",
            "<victim%remote.test@example.test>": "550 5.1.1",  # percent hack: a local part
            "<@example.test:victim@remote.test>": "554 5.7.1",  # source route: judged by remote
            "<@example.test,@example.test:victim@remote.test>": "554 5.7.1",
            '<"victim@remote.test"@example.test>': "550 5.1.1",  # quoted @ stays local, unknown
            "<victim@remote.test.>": "501 5.1.3",  # trailing dot refused
            "<victim@[127.0.0.1]>": "554 5.7.1",  # an IP literal is never local
            "<victim!remote.test@example.test>": "550 5.1.1",  # bang path: a local part
            "<victim@remote.test@example.test>": "501 5.1.3",
        }

        def run():
            answers = {}
            for path in cases:  # a session each: the error limit is not what is tested here
                client = self.raw()
                client.reply()
                client.command("EHLO tricks.test")
                client.command("MAIL FROM:<x@remote.test>")
                answers[path] = client.command(f"RCPT TO:{path}")
            return answers

        answers = yield self.in_thread(run)
        for path, expected in cases.items():
            self.assertTrue(answers[path].startswith(expected), f"{path}: {answers[path]}")
        self.assertEqual((yield self.store.list_queue()), [])

    @inlineCallbacks
    def test_pipelined_commands_are_answered_in_order_without_spurious_503(self):
        def run():
            client = self.raw()
            client.reply()
            client.command("EHLO pipeline.test")
            client.send(
                b"MAIL FROM:<s@remote.test>\r\n"
                b"RCPT TO:<alice@example.test>\r\n"
                b"RCPT TO:<nobody@example.test>\r\n"
                b"RCPT TO:<bob@example.test>\r\n"
                b"DATA\r\n"
            )
            first = client.replies(5)
            client.send(
                MESSAGE + b".\r\nMAIL FROM:<t@remote.test>\r\nRCPT TO:<bob@example.test>\r\n"
                b"DATA\r\n"
            )
            second = client.replies(4)
            client.send(b"second\r\n.\r\nQUIT\r\n")
            return first, second, client.replies(2)

        first, second, third = yield self.in_thread(run)
        self.assertEqual(
            [r[:9] for r in first],
            ["250 2.1.0", "250 2.1.5", "550 5.1.1", "250 2.1.5", "354 End d"],
        )
        self.assertEqual(
            [r[:9] for r in second], ["250 2.0.0", "250 2.1.0", "250 2.1.5", "354 End d"]
        )
        self.assertEqual([r[:9] for r in third], ["250 2.0.0", "221 2.0.0"])
        self.assertEqual(len((yield inbox(self.store, self.bob))), 2)

    @inlineCallbacks
    def test_bdat_chunks_stream_into_one_message(self):
        def run():
            client = self.raw()
            client.reply()
            client.command("EHLO chunks.test")
            client.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
            envelope = client.replies(2)
            part1, part2 = MESSAGE[:40], MESSAGE[40:] + b"\r\n.\r\n"  # no stuffing in BDAT
            client.send(b"BDAT %d\r\n%sBDAT %d LAST\r\n%s" % (len(part1), part1, len(part2), part2))
            return envelope, client.replies(2)

        envelope, chunks = yield self.in_thread(run)
        self.assertEqual([r[:3] for r in envelope], ["250", "250"])
        self.assertTrue(chunks[0].startswith("250 2.0.0 40 octets"), chunks)
        self.assertTrue(chunks[1].startswith("250 2.0.0 Ok: queued as"), chunks)
        (message,) = yield inbox(self.store, self.alice)
        self.assertEqual(body_of(message), MESSAGE + b"\r\n.\r\n")

    @inlineCallbacks
    def test_bdat_without_a_transaction_is_read_to_its_end_then_refused(self):
        def run():
            client = self.raw()
            client.reply()
            client.command("EHLO chunks.test")
            client.send(b"BDAT 10\r\nRCPT TO:<xNOOP\r\n")
            return client.replies(2)

        self.assertEqual(
            (yield self.in_thread(run)), ["503 5.5.1 Need MAIL command", "250 2.0.0 Ok"]
        )

    @inlineCallbacks
    def test_declared_size_over_the_limit_is_refused_at_mail(self):
        answers = yield self.in_thread(
            self.session,
            "MAIL FROM:<s@remote.test> SIZE=67108864",
            "RSET",
            f"MAIL FROM:<s@remote.test> SIZE={64 * 1024**2 + 1}",
        )
        self.assertEqual([a[:9] for a in answers], ["250 2.1.0", "250 2.0.0", "552 5.3.4"])

    @inlineCallbacks
    def test_8bit_address_without_smtputf8_is_refused_and_with_it_accepted(self):
        yield add_account(self.appliance, "jörg@example.test")
        answers = yield self.in_thread(
            self.session,
            "MAIL FROM:<jörg@remote.test>",
            "MAIL FROM:<jörg@remote.test> SMTPUTF8",
            "RCPT TO:<jörg@example.test>",
        )
        self.assertEqual([a[:9] for a in answers], ["553 5.6.7", "250 2.1.0", "250 2.1.5"])

    @inlineCallbacks
    def test_bad_input_gets_the_right_codes(self):
        def run():
            client = self.raw()
            client.reply()
            before = client.command("MAIL FROM:<a@b.test>")
            return [before] + self.session(
                "FOO bar",
                "MAIL FROM:a@b.test",
                "RCPT TO:<alice@example.test>",
                "DATA",
                "AUTH PLAIN",
                "MAIL FROM:<a@b.test> RET=FULL",
                "BDAT x",
            )

        answers = yield self.in_thread(run)
        self.assertEqual(
            [a[:9] for a in answers],
            [
                "503 5.5.1",
                "500 5.5.1",
                "501 5.5.4",
                "503 5.5.1",
                "503 5.5.1",
                "503 5.5.1",
                "555 5.5.4",
                "501 5.5.4",
            ],
        )

    @inlineCallbacks
    def test_too_many_errors_close_the_session_with_421(self):
        def run():
            client = self.raw()
            client.reply()
            answers = [client.command("BOGUS") for _ in range(19)]
            client.send(b"BOGUS\r\n")
            return answers, client.replies(2), client.closed_by_server()

        answers, last, closed = yield self.in_thread(run)
        self.assertEqual(set(a[:3] for a in answers), {"500"})
        self.assertEqual(last[1][:9], "421 4.7.0")
        self.assertTrue(closed)

    @inlineCallbacks
    def test_starttls_discards_plaintext_pipelined_behind_it(self):
        def run():
            client = self.raw()
            client.reply()
            client.command("EHLO inject.test")
            # The injected MAIL must not survive into the TLS session (RFC 3207 §4.2).
            client.send(b"STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\n")
            ready = client.replies(1)
            client.starttls(insecure_tls())
            after = client.command("RCPT TO:<alice@example.test>")
            return ready, after, client.sock.version()

        ready, after, version = yield self.in_thread(run)
        self.assertTrue(ready[0].startswith("220 2.0.0"), ready)
        self.assertTrue(after.startswith("503 5.5.1"), after)  # no MAIL (and no EHLO) survived
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))

    @inlineCallbacks
    def test_client_that_disconnects_mid_data_leaves_no_message_and_no_temporary_file(self):
        def run():
            client = self.raw()
            client.reply()
            client.command("EHLO gone.test")
            client.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
            client.replies(3)
            client.send(b"Subject: half\r\n\r\n" + b"x" * 700_000)  # more than one blob chunk
            started = _wait_until(lambda: os.listdir(tmp))  # the content reached a file...
            client.close()  # ...and then the client went away
            return started, _wait_until(lambda: not os.listdir(tmp))

        tmp = self.store.blobs.hot.tmp
        started, cleaned = yield self.in_thread(run)
        self.assertTrue(started, "no temporary file was written")
        self.assertTrue(cleaned, f"temporary files left behind: {os.listdir(tmp)}")
        self.assertEqual((yield inbox(self.store, self.alice)), [])


class PostgreSQLMXTests(MXTests):
    """The MX tests again with the metadata in PostgreSQL (skipped without a server)."""

    def configuration(self) -> dict:
        return {**self.overrides, "database": postgres_url(self)}


class SubmissionTests(_SMTPTestCase):
    overrides = {
        "auth": {
            "throttle": {"delay": 0.01, "max_delay": 0.05, "lockout_after": 4, "lockout_time": 60}
        }
    }

    def _submit(
        self,
        port,
        sender,
        recipients,
        *,
        user="alice@example.test",
        password=PASSWORD,
        implicit=False,
        message=MESSAGE,
    ):
        def send():
            if implicit:
                client = smtplib.SMTP_SSL("127.0.0.1", port, timeout=20, context=insecure_tls())
            else:
                client = smtplib.SMTP("127.0.0.1", port, timeout=20)
            with client:
                if not implicit:
                    client.starttls(context=insecure_tls())
                client.login(user, password)
                return client.sendmail(sender, recipients, message)

        return self.in_thread(send)

    @inlineCallbacks
    def test_auth_is_offered_only_after_starttls_and_required_before_mail(self):
        def run():
            client = self.raw(self.submission)
            client.reply()
            code, lines = (client.send(b"EHLO c.test\r\n"), client.reply())[1]
            before = [line for line in lines if line.startswith("AUTH")]
            no_tls_auth = client.command("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB4")
            no_auth_mail = client.command("MAIL FROM:<alice@example.test>")
            client.command("STARTTLS")
            client.starttls(insecure_tls())
            client.send(b"EHLO c.test\r\n")
            after = [line for line in client.reply()[1] if line.startswith("AUTH")]
            mail = client.command("MAIL FROM:<alice@example.test>")
            return before, no_tls_auth, no_auth_mail, after, mail

        before, no_tls_auth, no_auth_mail, after, mail = yield self.in_thread(run)
        self.assertEqual(before, [])
        self.assertTrue(no_tls_auth.startswith("530 5.7.0"), no_tls_auth)
        self.assertTrue(no_auth_mail.startswith("530 5.7.0"), no_auth_mail)
        self.assertEqual(after, ["AUTH PLAIN LOGIN"])
        self.assertTrue(mail.startswith("530 5.7.0"), mail)

    @inlineCallbacks
    def test_submission_with_starttls_and_auth_delivers_and_queues_remote_recipients(self):
        refused = yield self._submit(
            self.submission, "alice@example.test", ["bob@example.test", "friend@remote.test"]
        )
        self.assertEqual(refused, {})
        (message,) = yield inbox(self.store, self.bob)
        self.assertIn(b"with ESMTPSA id", message)
        self.assertIn(b"(authenticated as alice@example.test)", message)
        self.assertIn(b"(using TLSv1.", message)
        (queued,) = yield self.store.list_queue()
        self.assertEqual(
            (queued["sender"], queued["recipient"]), ("alice@example.test", "friend@remote.test")
        )
        # The copy that leaves does not carry our Return-Path line.
        self.assertEqual(
            queued["size"], len(message) - len(b"Return-Path: <alice@example.test>\r\n")
        )

    @inlineCallbacks
    def test_submissions_implicit_tls_with_auth_login(self):
        def send():
            with smtplib.SMTP_SSL(
                "127.0.0.1", self.submissions, timeout=20, context=insecure_tls()
            ) as client:
                client.ehlo()
                client.user, client.password = "bob@example.test", PASSWORD
                code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
                refused = client.sendmail("bob@example.test", ["alice@example.test"], MESSAGE)
                return code, refused

        code, refused = yield self.in_thread(send)
        self.assertEqual((code, refused), (235, {}))
        self.assertEqual(len((yield inbox(self.store, self.alice))), 1)

    @inlineCallbacks
    def test_sender_must_be_the_account_or_one_of_its_aliases(self):
        yield self.store.add_alias("sales@example.test", ["alice@example.test"])
        yield self._submit(self.submission, "sales@example.test", ["bob@example.test"])
        error = yield self.assertFailure(
            self._submit(self.submission, "bob@example.test", ["bob@example.test"]),
            smtplib.SMTPSenderRefused,
        )
        self.assertEqual(error.smtp_code, 553)
        self.assertIn(b"5.7.1", error.smtp_error)

    @inlineCallbacks
    def test_wrong_password_is_535_after_a_delay_and_repeated_failures_lock_out(self):
        for _ in range(2):  # smtplib tries PLAIN, then LOGIN: two failures each time
            error = yield self.assertFailure(
                self._submit(
                    self.submissions,
                    "alice@example.test",
                    ["bob@example.test"],
                    password="wrong",
                    implicit=True,
                ),
                smtplib.SMTPAuthenticationError,
            )
            self.assertEqual(error.smtp_code, 535)
        # Locked now: even the right password gets a temporary refusal.
        error = yield self.assertFailure(
            self._submit(
                self.submissions, "alice@example.test", ["bob@example.test"], implicit=True
            ),
            smtplib.SMTPAuthenticationError,
        )
        self.assertEqual(error.smtp_code, 454)


class LimitTests(_SMTPTestCase):
    overrides = {
        "smtp": {"max_connections_per_ip": 2, "max_message_size": 2000, "max_recipients": 2}
    }

    @inlineCallbacks
    def test_connections_past_the_per_ip_limit_get_421(self):
        def run():
            first, second, third = self.raw(), self.raw(), self.raw()
            return first.reply()[0], second.reply()[0], third.replies(1)[0]

        first, second, third = yield self.in_thread(run)
        self.assertEqual((first, second), (220, 220))
        self.assertTrue(third.startswith("421 4.7.0"), third)

    @inlineCallbacks
    def test_content_over_the_size_limit_is_552_and_nothing_is_stored(self):
        def run():
            client = self.raw()
            client.reply()
            client.command("EHLO big.test")
            client.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
            client.replies(3)
            client.send(b"Subject: big\r\n\r\n" + b"y" * 5000 + b"\r\n.\r\nNOOP\r\n")
            return client.replies(2)

        answers = yield self.in_thread(run)
        self.assertTrue(answers[0].startswith("552 5.3.4"), answers)
        self.assertTrue(answers[1].startswith("250"), answers)
        self.assertEqual((yield inbox(self.store, self.alice)), [])

    @inlineCallbacks
    def test_bdat_chunk_past_the_size_limit_is_552_and_ends_the_transaction(self):
        def run():
            client = self.raw()
            client.reply()
            client.command("EHLO big.test")
            client.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
            client.replies(2)
            chunk = b"x" * 1500
            client.send(b"BDAT 1500\r\n" + chunk + b"BDAT 1500 LAST\r\n" + chunk)
            return client.replies(2)

        answers = yield self.in_thread(run)
        self.assertEqual([a[:9] for a in answers], ["250 2.0.0", "552 5.3.4"])
        self.assertEqual((yield inbox(self.store, self.alice)), [])

    @inlineCallbacks
    def test_recipients_past_the_limit_get_452(self):
        answers = yield self.in_thread(
            self.session,
            "MAIL FROM:<s@remote.test>",
            "RCPT TO:<alice@example.test>",
            "RCPT TO:<bob@example.test>",
            "RCPT TO:<alice@example.test>",
        )
        self.assertEqual(
            [a[:9] for a in answers], ["250 2.1.0", "250 2.1.5", "250 2.1.5", "452 4.5.3"]
        )


class QuotaTests(_SMTPTestCase):
    overrides = {"quota": {"default": 4096, "grow_by": 0}}

    @inlineCallbacks
    def test_full_mailbox_is_452_at_rcpt_with_size_and_552_after_data_without(self):
        answers = yield self.in_thread(
            self.session,
            "MAIL FROM:<s@remote.test> SIZE=10000",
            "RCPT TO:<alice@example.test>",
            "RSET",
            "MAIL FROM:<s@remote.test>",
            "RCPT TO:<alice@example.test>",
            "DATA",
            b"Subject: big\r\n\r\n" + b"z" * 10000 + b"\r\n.",
        )
        self.assertEqual(
            [a[:9] for a in answers],
            [
                "250 2.1.0",
                "452 4.2.2",
                "250 2.0.0",
                "250 2.1.0",
                "250 2.1.5",
                "354 End d",
                "552 5.2.2",
            ],
        )
        self.assertEqual((yield inbox(self.store, self.alice)), [])

    @inlineCallbacks
    def test_quota_failure_of_one_recipient_bounces_it_and_delivers_to_the_others(self):
        yield self.store.set_quota("bob@example.test", 10**6)
        answers = yield self.in_thread(
            self.session,
            "MAIL FROM:<s@remote.test>",
            "RCPT TO:<alice@example.test>",
            "RCPT TO:<bob@example.test>",
            "DATA",
            b"Subject: big\r\n\r\n" + b"z" * 10000 + b"\r\n.",
        )
        self.assertTrue(answers[-1].startswith("250 2.0.0"), answers)
        self.assertEqual(len((yield inbox(self.store, self.bob))), 1)
        (bounce,) = yield self.store.list_queue()
        self.assertEqual(
            (bounce["kind"], bounce["sender"], bounce["recipient"]),
            ("bounce", "s@remote.test", "alice@example.test"),
        )

    @inlineCallbacks
    def test_alias_reaching_a_full_mailbox_delivers_to_the_others_and_bounces_for_it(self):
        yield self.store.set_quota("bob@example.test", 10**6)
        yield self.store.add_alias("team@example.test", ["alice@example.test", "bob@example.test"])
        answers = yield self.in_thread(
            self.session,
            "MAIL FROM:<s@remote.test> SIZE=10050",
            "RCPT TO:<team@example.test>",
            "DATA",
            b"Subject: big\r\n\r\n" + b"z" * 10000 + b"\r\n.",
        )
        self.assertEqual(
            [a[:9] for a in answers], ["250 2.1.0", "250 2.1.5", "354 End d", "250 2.0.0"]
        )
        self.assertEqual(len((yield inbox(self.store, self.bob))), 1)
        self.assertEqual((yield inbox(self.store, self.alice)), [])
        (bounce,) = yield self.store.list_queue()
        self.assertEqual(
            (bounce["kind"], bounce["recipient"], bounce["reason"]),
            ("bounce", "team@example.test", "552 5.2.2 Mailbox full"),
        )


class SwaksTests(_SMTPTestCase):
    """swaks, the SMTP test tool admins use, against each service (skipped without it)."""

    def swaks(self, port: int, *args: str):
        if shutil.which("swaks") is None:
            raise SkipTest("swaks is not installed (apt-get install swaks; .ci/run does)")
        command = ["swaks", "--server", f"127.0.0.1:{port}", "--timeout", "20", *args]
        return deferToThread(subprocess.run, command, capture_output=True, text=True, timeout=60)

    @inlineCallbacks
    def test_swaks_delivers_through_the_mx_with_pipelining(self):
        done = yield self.swaks(
            self.mx,
            "--from",
            "s@remote.test",
            "--to",
            "alice@example.test",
            "--pipeline",
            "--header",
            "Subject: from swaks",
            "--body",
            "hello from swaks",
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        (message,) = yield inbox(self.store, self.alice)
        self.assertIn(b"Subject: from swaks", message)
        self.assertIn(b"hello from swaks", message)

    @inlineCallbacks
    def test_swaks_submits_with_starttls_and_auth_login_and_with_implicit_tls(self):
        for port, tls in ((self.submission, "--tls"), (self.submissions, "--tls-on-connect")):
            done = yield self.swaks(
                port,
                tls,
                "--auth",
                "LOGIN",
                "--auth-user",
                "bob@example.test",
                "--auth-password",
                PASSWORD,
                "--from",
                "bob@example.test",
                "--to",
                "alice@example.test",
                "--body",
                f"via {tls}",
            )
            self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        messages = yield inbox(self.store, self.alice)
        self.assertEqual(len(messages), 2)

    @inlineCallbacks
    def test_swaks_is_refused_relaying_without_auth(self):
        done = yield self.swaks(self.mx, "--from", "s@remote.test", "--to", "victim@remote.test")
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("554 5.7.1", done.stdout)


class QuotaGrowthTests(_SMTPTestCase):
    overrides = {"quota": {"default": 10000, "grow_at": 0.5, "grow_by": 10000, "max": 30000}}

    @inlineCallbacks
    def test_quota_grows_as_mail_arrives_and_the_growth_is_logged(self):
        with capturedLogs() as events:
            answers = yield self.in_thread(
                self.session,
                "MAIL FROM:<s@remote.test>",
                "RCPT TO:<alice@example.test>",
                "DATA",
                b"Subject: growing\r\n\r\n" + b"g" * 8000 + b"\r\n.",
            )
        self.assertTrue(answers[-1].startswith("250 2.0.0"), answers)
        account = yield self.store.account("alice@example.test")
        self.assertEqual(account["quota_bytes"], 20000)
        logged = [formatEvent(event) for event in events]
        self.assertTrue(
            any(
                "quota of alice@example.test grew from 10000 to 20000 bytes" in line
                for line in logged
            ),
            logged,
        )


class ProxiedMXTests(TestCase):
    """The MX behind a ``haproxy:`` listener: the client is the one the PROXY header names."""

    @inlineCallbacks
    def setUp(self):
        listen = {"smtp": ["haproxy:tcp:0:interface=127.0.0.1"]}
        self.appliance = yield started_appliance(self, listen=listen)
        self.alice = yield add_account(self.appliance, "alice@example.test")

    @inlineCallbacks
    def test_received_names_the_proxied_client(self):
        port = port_of(self.appliance, "smtp")

        def send():
            client = RawSMTP(port)
            try:
                client.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n")
                client.reply()
                client.command("EHLO client.test")
                client.send(
                    b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                )
                client.replies(3)
                client.send(MESSAGE + b".\r\n")
                return client.replies(1)[0]
            finally:
                client.close()

        answer = yield deferToThread(send)
        self.assertTrue(answer.startswith("250"), answer)
        (message,) = yield inbox(self.appliance.store, self.alice)
        received = message.split(b"\r\n")[1]
        self.assertIn(b"192.0.2.7", received)
        self.assertNotIn(b"127.0.0.1", received)
