"""The outbound SMTP client: on a StringTransport with a Clock, byte-exact, and once over
loopback TCP against Twisted's own ESMTP server with a 3 MiB message."""

from __future__ import annotations

import base64
import random

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.mail.smtp import ESMTP, IMessageDelivery
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from mailbox_appliance.smtp.client import (
    CHUNK,
    MAX_LINE,
    ContentError,
    OutboundSMTP,
    Reply,
    SessionInfo,
    SessionLost,
    SMTPFailure,
    Timeouts,
    TLSUnavailable,
    Transaction,
)

#: What a modern MX offers.
MODERN = ("PIPELINING", "SIZE 10000000", "8BITMIME", "ENHANCEDSTATUSCODES")
MESSAGE = b"Subject: hello\r\n\r\nHi there.\r\n"


def ehlo(*keywords: str) -> str:
    lines = ["mx.example.test greets out.example.test", *keywords]
    return "".join(f"250-{line}\r\n" for line in lines[:-1]) + f"250 {lines[-1]}"


class Content:
    """The message behind ``Transaction.read``; records every read."""

    def __init__(self, data: bytes = MESSAGE):
        self.data = data
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, length: int) -> Deferred[bytes]:
        self.reads.append((offset, length))
        return succeed(self.data[offset : offset + length])

    def transaction(self, sender: str = "alice@example.org", *recipients: str) -> Transaction:
        return Transaction(sender, recipients or ("bob@example.test",), len(self.data), self.read)


class Transport(StringTransport):
    """Records each write; ``fills`` makes every content-sized write fill the send buffer
    (the producer is paused, as a TCP transport does past its buffer size)."""

    def __init__(self, fills: bool = False):
        super().__init__()
        self.writes: list[bytes] = []
        self.fills = fills

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(data)
        if self.fills and len(data) > 1000:
            self.producer.pauseProducing()


class TLSTransport(Transport):
    """Has startTLS (recording what had been written by then) and an OpenSSL-like handle."""

    def __init__(self):
        super().__init__()
        self.started_tls: list[tuple[object, bytes]] = []

    def startTLS(self, options: object) -> None:
        self.started_tls.append((options, self.value()))

    def getHandle(self):
        return _Handle()


class _Handle:
    def get_protocol_version_name(self) -> str:
        return "TLSv1.3"

    def get_cipher_name(self) -> str:
        return "TLS_AES_256_GCM_SHA384"


class ClientTestCase(SynchronousTestCase):
    def connect(self, transport: Transport | None = None, **options) -> OutboundSMTP:
        options.setdefault("tls", "none")
        self.clock = Clock()
        self.transport = transport if transport is not None else Transport()
        self.client = OutboundSMTP(reactor=self.clock, helo="out.example.test", **options)
        self.client.makeConnection(self.transport)
        return self.client

    def receive(self, *lines: str) -> None:
        self.client.dataReceived("".join(line + "\r\n" for line in lines).encode("utf-8"))

    def sent(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        self.transport.writes.clear()
        return value

    def session(self, *keywords: str, **options) -> SessionInfo:
        """A client past greeting and EHLO, with nothing written yet."""
        self.connect(**options)
        self.receive("220 mx.example.test ESMTP", ehlo(*(keywords or MODERN)))
        info = self.successResultOf(self.client.ready)
        self.sent()
        return info

    def lose(self, why: Exception | None = None) -> None:
        self.client.connectionLost(Failure(why or ConnectionLost("gone")))

    def assertNoTimers(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SessionSetupTests(ClientTestCase):
    def test_ready_fires_after_greeting_and_ehlo_with_the_extensions(self):
        client = self.connect()
        self.assertEqual(self.sent(), b"")  # nothing before the greeting (no early talking)
        self.receive("220 mx.example.test ESMTP")
        self.assertEqual(self.sent(), b"EHLO out.example.test\r\n")
        self.assertNoResult(client.ready)
        self.clock.advance(2)
        self.receive(ehlo("PIPELINING", "SIZE 1000", "8bitmime", "AUTH PLAIN LOGIN"))
        info = self.successResultOf(client.ready)
        self.assertEqual(info.greeting, Reply(220, "mx.example.test ESMTP"))
        self.assertEqual(
            info.extensions,
            {"PIPELINING": "", "SIZE": "1000", "8BITMIME": "", "AUTH": "PLAIN LOGIN"},
        )
        self.assertEqual((info.tls, info.tls_version, info.cipher), (False, None, None))
        self.assertIsNone(info.authenticated)
        self.assertEqual(info.seconds, 2)
        self.assertTrue(client.reusable)
        self.assertIs(self.transport.producer, client)
        self.assertNoTimers()

    def test_ehlo_refused_permanently_falls_back_to_helo(self):
        client = self.connect()
        self.receive("220 old.example.test", "502 5.5.1 what?")
        self.assertEqual(self.sent(), b"EHLO out.example.test\r\nHELO out.example.test\r\n")
        self.receive("250 old.example.test")
        self.assertEqual(self.successResultOf(client.ready).extensions, {})

    def test_ehlo_refused_temporarily_fails_ready_at_stage_ehlo(self):
        client = self.connect()
        self.receive("220 mx.example.test", "451 4.3.0 later")
        failure = self.failureResultOf(client.ready, SMTPFailure)
        self.assertEqual((failure.value.stage, failure.value.reply.code), ("ehlo", 451))

    def test_554_greeting_fails_ready_at_stage_greeting_and_quit_still_says_goodbye(self):
        client = self.connect()
        self.receive("554 5.7.1 go away")
        failure = self.failureResultOf(client.ready, SMTPFailure)
        self.assertEqual(failure.value.stage, "greeting")
        self.assertEqual(failure.value.reply, Reply(554, "go away", "5.7.1"))
        self.assertFalse(client.reusable)
        done = client.quit()
        self.assertEqual(self.sent(), b"QUIT\r\n")
        self.receive("221 bye")
        self.assertTrue(self.transport.disconnecting)
        self.lose(ConnectionDone())
        self.successResultOf(done)
        self.assertNoTimers()

    def test_multi_line_reply_split_across_reads_is_one_reply(self):
        client = self.connect()
        for byte in b"220-mx.example.test\r\n220-no spam\r\n220 ESMTP\r\n":
            client.dataReceived(bytes([byte]))
        self.receive(ehlo())
        greeting = self.successResultOf(client.ready).greeting
        self.assertEqual(greeting.text, "mx.example.test\nno spam\nESMTP")
        self.assertEqual(str(greeting), "220 mx.example.test no spam ESMTP")

    def test_send_before_ready_is_a_programming_error(self):
        client = self.connect()
        self.assertRaises(RuntimeError, client.send, Content().transaction())


class ReplyParsingTests(ClientTestCase):
    def test_enhanced_codes_come_off_every_line(self):
        self.session("ENHANCEDSTATUSCODES")
        d = self.client.send(Content().transaction())
        self.receive("550-5.7.1 first line", "550-5.7.1 second line", "550 5.7.1 third line")
        mail = self.successResultOf(d).mail
        self.assertEqual(mail, Reply(550, "first line\nsecond line\nthird line", "5.7.1"))
        self.assertEqual(str(mail), "550 5.7.1 first line second line third line")
        self.assertTrue(mail.permanent)
        self.assertFalse(mail.positive or mail.temporary)

    def test_enhanced_codes_are_parsed_even_when_not_advertised(self):
        self.session("PIPELINING")
        d = self.client.send(Content().transaction())
        self.receive("451 4.7.1 greylisted", "503 5.5.1 need MAIL", "503 bad sequence")
        result = self.successResultOf(d)
        self.assertEqual(result.mail, Reply(451, "greylisted", "4.7.1"))
        self.assertTrue(result.mail.temporary)

    def test_an_enhanced_code_of_another_class_is_just_text(self):
        self.session()
        d = self.client.send(Content().transaction())
        self.receive("550 2.0.0 odd", "503 x", "503 y")
        self.assertEqual(self.successResultOf(d).mail, Reply(550, "2.0.0 odd"))

    def _protocol_error(self, *lines: str) -> SessionLost:
        self.session()
        d = self.client.send(Content().transaction())
        self.receive(*lines)
        failure = self.failureResultOf(d, SessionLost)
        self.assertTrue(self.transport.disconnected)  # aborted
        self.assertFalse(self.client.reusable)
        self.assertNoTimers()
        return failure.value

    def test_malformed_reply_is_session_lost_and_aborts(self):
        error = self._protocol_error("hello there")
        self.assertEqual(error.stage, "mail")
        self.assertIn("protocol error", error.reason)

    def test_reply_without_separator_after_the_code_is_malformed(self):
        self.assertIn("protocol error", self._protocol_error("250Ok").reason)

    def test_multi_line_reply_that_changes_code_is_malformed(self):
        self.assertIn("protocol error", self._protocol_error("250-Ok", "550 no").reason)

    def test_over_long_reply_line_is_a_protocol_error(self):
        self.session()
        d = self.client.send(Content().transaction())
        self.client.dataReceived(b"250 " + b"x" * MAX_LINE)
        self.assertIn("too long", self.failureResultOf(d, SessionLost).value.reason)
        self.assertTrue(self.transport.disconnected)

    def test_reply_line_of_64_kib_is_fine(self):
        self.session()
        d = self.client.send(Content().transaction())
        self.receive("250 " + "x" * (MAX_LINE - 4), "250 ok", "354 go")
        self.assertNoResult(d)

    def test_reply_nobody_asked_for_is_a_protocol_error(self):
        self.session()
        self.receive("250 surprise")
        self.assertTrue(self.transport.disconnected)
        self.assertFalse(self.client.reusable)


class TransactionTests(ClientTestCase):
    def test_pipelined_transaction_is_one_write_with_per_recipient_outcomes(self):
        self.session()
        content = Content()
        tx = content.transaction("alice@example.org", "bob@example.test", "carol@example.test")
        d = self.client.send(tx)
        self.assertEqual(
            self.transport.writes,
            [
                b"MAIL FROM:<alice@example.org> SIZE=29 BODY=8BITMIME\r\n"
                b"RCPT TO:<bob@example.test>\r\n"
                b"RCPT TO:<carol@example.test>\r\n"
                b"DATA\r\n"
            ],
        )
        self.sent()
        self.receive("250 2.1.0 Ok", "250 2.1.5 Ok", "550 5.1.1 <carol@example.test>: unknown")
        self.assertEqual(self.sent(), b"")
        self.receive("354 End data with <CR><LF>.<CR><LF>")
        self.assertEqual(self.sent(), MESSAGE + b".\r\n")
        self.clock.advance(3)
        self.receive("250 2.0.0 Ok: queued as 4711")
        result = self.successResultOf(d)
        self.assertEqual(
            result.outcome("bob@example.test"), Reply(250, "Ok: queued as 4711", "2.0.0")
        )
        self.assertEqual(
            result.outcome("carol@example.test"),
            Reply(550, "<carol@example.test>: unknown", "5.1.1"),
        )
        self.assertEqual(result.mail, Reply(250, "Ok", "2.1.0"))
        self.assertEqual(result.bytes_sent, len(MESSAGE) + 3)
        self.assertEqual(result.data_seconds, 3)
        self.assertTrue(self.client.reusable)
        self.assertNoTimers()

    def test_without_pipelining_each_command_waits_for_its_reply(self):
        self.session("SIZE", "ENHANCEDSTATUSCODES")
        tx = Content().transaction("", "bob@example.test", "carol@example.test")
        d = self.client.send(tx)
        self.assertEqual(self.sent(), b"MAIL FROM:<> SIZE=29\r\n")  # a bounce: null path
        self.receive("250 2.1.0 Ok")
        self.assertEqual(self.sent(), b"RCPT TO:<bob@example.test>\r\n")
        self.receive("250 2.1.5 Ok")
        self.assertEqual(self.sent(), b"RCPT TO:<carol@example.test>\r\n")
        self.receive("250 2.1.5 Ok")
        self.assertEqual(self.sent(), b"DATA\r\n")
        self.receive("354 go ahead")
        self.assertEqual(self.sent(), MESSAGE + b".\r\n")
        self.receive("250 2.0.0 Ok")
        result = self.successResultOf(d)
        self.assertEqual(result.outcome("carol@example.test").code, 250)

    def test_second_transaction_reuses_the_connection_without_rset(self):
        self.session()
        d = self.client.send(Content().transaction())
        self.receive("250 Ok", "250 Ok", "354 go", "250 Ok")
        self.successResultOf(d)
        self.sent()
        d = self.client.send(Content().transaction("dave@example.org"))
        self.assertTrue(self.sent().startswith(b"MAIL FROM:<dave@example.org>"))
        self.receive("250 Ok", "250 Ok", "354 go", "250 2.0.0 queued")
        self.assertEqual(self.successResultOf(d).data.code, 250)

    def test_a_refused_transaction_is_followed_by_rset_before_the_next(self):
        self.session()
        d = self.client.send(Content().transaction())
        self.receive("250 Ok", "550 5.1.1 unknown", "554 5.5.1 no valid recipients")
        self.successResultOf(d)
        self.sent()
        d = self.client.send(Content().transaction())
        self.assertEqual(self.sent(), b"RSET\r\n")  # alone: its refusal must not start DATA
        self.receive("250 2.0.0 Ok")
        self.assertTrue(self.sent().startswith(b"MAIL FROM:"))
        self.receive("250 Ok", "250 Ok", "354 go", "250 Ok")
        self.assertEqual(self.successResultOf(d).data.code, 250)

    def test_refused_rset_fails_the_transaction_and_ends_reuse(self):
        self.session()
        self.client.send(Content().transaction())
        self.receive("250 Ok", "550 5.1.1 unknown", "554 5.5.1 no valid recipients")
        d = self.client.send(Content().transaction())
        self.receive("500 what?")
        self.assertEqual(self.failureResultOf(d, SMTPFailure).value.stage, "rset")
        self.assertFalse(self.client.reusable)

    def test_mail_refused_sends_no_content_and_consumes_the_pipelined_replies(self):
        self.session()
        content = Content()
        d = self.client.send(content.transaction("alice@example.org", "b@x.test", "c@x.test"))
        self.sent()
        self.receive("451 4.3.0 try later", "503 5.5.1 need MAIL", "503 5.5.1 need MAIL")
        self.assertNoResult(d)  # DATA's reply is still to come
        self.receive("503 5.5.1 need MAIL")
        result = self.successResultOf(d)
        self.assertEqual(self.sent(), b"")
        self.assertEqual(content.reads, [])
        self.assertIsNone(result.data)
        self.assertEqual(result.outcome("b@x.test"), Reply(451, "try later", "4.3.0"))
        self.assertTrue(self.client.reusable)

    def test_mail_refused_without_pipelining_sends_nothing_more(self):
        self.session("SIZE")
        d = self.client.send(Content().transaction())
        self.sent()
        self.receive("550 5.7.1 not you")
        result = self.successResultOf(d)
        self.assertEqual(self.sent(), b"")
        self.assertEqual(result.rcpt, {})
        self.assertEqual(result.outcome("bob@example.test").code, 550)

    def test_no_recipient_accepted_sends_no_content(self):
        self.session("SIZE")
        content = Content()
        d = self.client.send(content.transaction())
        self.receive("250 Ok")
        self.sent()
        self.receive("550 5.1.1 unknown user")
        result = self.successResultOf(d)
        self.assertEqual(self.sent(), b"")  # no DATA at all
        self.assertEqual(content.reads, [])
        self.assertEqual(result.outcome("bob@example.test"), Reply(550, "unknown user", "5.1.1"))
        self.assertIsNone(result.data)

    def test_pipelined_data_accepted_without_recipients_gets_just_the_dot(self):
        self.session()
        content = Content()
        d = self.client.send(content.transaction())
        self.sent()
        self.receive("250 Ok", "550 5.1.1 unknown user", "354 go ahead anyway")
        self.assertEqual(self.sent(), b".\r\n")
        self.assertNoResult(d)
        self.receive("554 5.5.1 no valid recipients")
        result = self.successResultOf(d)
        self.assertEqual(content.reads, [])
        self.assertEqual((result.data, result.bytes_sent), (None, 0))
        self.client.send(content.transaction())
        self.assertEqual(self.sent(), b"RSET\r\n")

    def test_data_refused_after_accepted_recipients_is_their_outcome(self):
        self.session()
        d = self.client.send(Content().transaction())
        self.receive("250 Ok", "250 Ok", "451 4.3.0 no space left")
        result = self.successResultOf(d)
        self.assertEqual(result.outcome("bob@example.test"), Reply(451, "no space left", "4.3.0"))

    def test_size_over_the_advertised_limit_is_refused_without_sending(self):
        self.session("PIPELINING", "SIZE 1000")
        content = Content(b"x" * 1001)
        result = self.successResultOf(self.client.send(content.transaction()))
        self.assertEqual(self.sent(), b"")
        self.assertEqual(content.reads, [])
        self.assertEqual((result.mail.code, result.mail.enhanced), (552, "5.3.4"))
        self.assertIn("message size exceeds fixed maximum", result.mail.text)
        self.assertTrue(result.mail.local)
        self.assertEqual(result.outcome("bob@example.test"), result.mail)
        self.assertTrue(self.client.reusable)

    def test_size_without_a_limit_only_declares_the_size(self):
        self.session("PIPELINING", "SIZE")
        self.client.send(Content(b"x" * 5000).transaction())
        self.assertEqual(self.sent().split(b"\r\n")[0], b"MAIL FROM:<alice@example.org> SIZE=5000")

    def test_content_comes_out_dot_stuffed_with_crlf_line_ends(self):
        self.session()
        content = Content(b"Subject: x\n\n.hidden\nline\r\n..two\n.\nlast")
        d = self.client.send(content.transaction())
        self.receive("250 Ok", "250 Ok", "354 go")
        wire = b"Subject: x\r\n\r\n..hidden\r\nline\r\n...two\r\n..\r\nlast\r\n.\r\n"
        self.assertEqual(self.sent().split(b"DATA\r\n", 1)[1], wire)
        self.receive("250 Ok")
        self.assertEqual(self.successResultOf(d).bytes_sent, len(wire))

    def test_empty_content_is_just_the_final_dot(self):
        self.session()
        content = Content(b"")
        d = self.client.send(content.transaction())
        self.receive("250 Ok", "250 Ok", "354 go")
        self.assertEqual(self.sent().split(b"DATA\r\n", 1)[1], b".\r\n")
        self.assertEqual(content.reads, [])
        self.receive("250 Ok")
        self.successResultOf(d)

    def test_content_is_read_in_chunks(self):
        self.session()
        data = b"".join(b"line %06d\r\n" % i for i in range(60_000))  # 780,000 bytes
        content = Content(data)
        d = self.client.send(content.transaction())
        self.receive("250 Ok", "250 Ok", "354 go")
        self.assertEqual(
            content.reads,
            [(0, CHUNK), (CHUNK, CHUNK), (2 * CHUNK, 780_000 - 2 * CHUNK)],
        )
        self.assertEqual(self.sent().split(b"DATA\r\n", 1)[1], data + b".\r\n")
        self.receive("250 Ok")
        self.assertEqual(self.successResultOf(d).bytes_sent, len(data) + 3)

    def test_back_pressure_stops_reading_and_writing_until_the_transport_resumes(self):
        self.session(transport=Transport(fills=True))
        data = b"a" * (3 * CHUNK + 10)
        content = Content(data)
        d = self.client.send(content.transaction())
        self.receive("250 Ok", "250 Ok")
        self.sent()
        self.receive("354 go")
        # One chunk went out and filled the buffer; the next was read, and waits.
        self.assertEqual(self.transport.writes, [data[:CHUNK]])
        self.assertEqual(content.reads, [(0, CHUNK), (CHUNK, CHUNK)])
        for n in (2, 3):
            self.clock.advance(100)  # within the data block timeout
            self.assertEqual(len(self.transport.writes), n - 1)
            self.client.resumeProducing()
            self.assertEqual(len(self.transport.writes), n)
            self.assertEqual(len(content.reads), n + 1)
        self.client.resumeProducing()  # the last, small chunk does not fill the buffer
        self.assertEqual(len(content.reads), 4)
        self.assertEqual(self.sent(), data + b"\r\n.\r\n")
        self.receive("250 Ok")
        self.successResultOf(d)
        self.assertNoTimers()

    def test_unreadable_content_drops_the_connection_with_content_error(self):
        self.session()
        tx = Transaction(
            "a@example.org", ("b@example.test",), 10, lambda o, n: fail(OSError("disk"))
        )
        d = self.client.send(tx)
        self.receive("250 Ok", "250 Ok", "354 go")
        self.assertIn("disk", str(self.failureResultOf(d, ContentError).value))
        self.assertTrue(self.transport.disconnected)
        self.assertFalse(self.client.reusable)

    def test_content_that_ends_early_drops_the_connection(self):
        self.session()
        tx = Transaction("a@example.org", ("b@example.test",), 10, lambda o, n: succeed(b""))
        d = self.client.send(tx)
        self.receive("250 Ok", "250 Ok", "354 go")
        self.failureResultOf(d, ContentError)
        self.assertTrue(self.transport.disconnected)

    def test_address_with_a_line_break_is_refused_locally(self):
        self.session()
        tx = Content().transaction("a@example.org", "b@x.test\r\nRCPT TO:<evil@x.test>", "c@x.test")
        d = self.client.send(tx)
        self.assertNotIn(b"evil", self.sent())
        self.receive("250 Ok", "250 Ok", "354 go", "250 Ok")
        result = self.successResultOf(d)
        self.assertEqual(result.outcome("b@x.test\r\nRCPT TO:<evil@x.test>").code, 501)
        self.assertEqual(result.outcome("c@x.test").code, 250)


class SMTPUTF8Tests(ClientTestCase):
    def test_non_ascii_address_asks_for_smtputf8_when_offered(self):
        self.session(*MODERN, "SMTPUTF8")
        d = self.client.send(Content().transaction("alice@example.org", "jürgen@example.de"))
        self.assertEqual(
            self.sent(),
            "MAIL FROM:<alice@example.org> SIZE=29 BODY=8BITMIME SMTPUTF8\r\n"
            "RCPT TO:<jürgen@example.de>\r\nDATA\r\n".encode(),
        )
        self.receive("250 Ok", "250 Ok", "354 go", "250 Ok")
        self.assertEqual(self.successResultOf(d).outcome("jürgen@example.de").code, 250)

    def test_ascii_addresses_do_not_ask_for_smtputf8(self):
        self.session(*MODERN, "SMTPUTF8")
        self.client.send(Content().transaction())
        self.assertNotIn(b"SMTPUTF8", self.sent())

    def test_non_ascii_recipient_without_smtputf8_is_refused_locally_with_5_6_7(self):
        self.session()
        d = self.client.send(Content().transaction("alice@example.org", "jürgen@x.de", "bob@x.de"))
        wire = self.sent()
        self.assertNotIn("jürgen".encode(), wire)
        self.assertIn(b"RCPT TO:<bob@x.de>", wire)
        self.receive("250 Ok", "250 Ok", "354 go", "250 Ok")
        result = self.successResultOf(d)
        refused = result.outcome("jürgen@x.de")
        self.assertEqual((refused.code, refused.enhanced, refused.local), (553, "5.6.7", True))
        self.assertEqual(result.outcome("bob@x.de").code, 250)

    def test_non_ascii_sender_without_smtputf8_refuses_the_whole_transaction(self):
        self.session()
        result = self.successResultOf(self.client.send(Content().transaction("jürgen@x.de")))
        self.assertEqual(self.sent(), b"")
        self.assertEqual((result.mail.code, result.mail.enhanced), (553, "5.6.7"))
        self.assertEqual(result.outcome("bob@example.test"), result.mail)

    def test_only_non_ascii_recipients_without_smtputf8_sends_nothing(self):
        self.session()
        result = self.successResultOf(self.client.send(Content().transaction("a@x.de", "ü@x.de")))
        self.assertEqual(self.sent(), b"")
        self.assertEqual(result.outcome("ü@x.de").enhanced, "5.6.7")


class FailureTests(ClientTestCase):
    def test_421_mid_transaction_fails_it_and_ends_reuse(self):
        self.session()
        d = self.client.send(Content().transaction())
        self.receive("250 Ok", "421 4.3.2 Shutting down")
        failure = self.failureResultOf(d, SMTPFailure)
        self.assertEqual(failure.value.stage, "rcpt")
        self.assertEqual(failure.value.reply, Reply(421, "Shutting down", "4.3.2"))
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.client.reusable)
        self.assertNoTimers()
        self.failureResultOf(self.client.send(Content().transaction()), SessionLost)

    def test_421_greeting_fails_ready_at_greeting(self):
        client = self.connect()
        self.receive("421 4.7.0 Too many connections")
        failure = self.failureResultOf(client.ready, SMTPFailure)
        self.assertEqual((failure.value.stage, failure.value.reply.code), ("greeting", 421))
        self.assertTrue(self.transport.disconnecting)
        self.assertNoTimers()

    def test_421_between_transactions_ends_reuse(self):
        self.session()
        self.receive("421 4.4.2 Timeout exceeded")
        self.assertFalse(self.client.reusable)
        self.assertTrue(self.transport.disconnecting)

    def test_connection_lost_mid_content_is_session_lost_at_content(self):
        self.session(transport=Transport(fills=True))
        d = self.client.send(Content(b"x" * (2 * CHUNK)).transaction())
        self.receive("250 Ok", "250 Ok", "354 go")
        self.assertNoResult(d)
        self.lose()
        failure = self.failureResultOf(d, SessionLost)
        self.assertEqual(failure.value.stage, "content")
        self.assertIn("connection lost", failure.value.reason)
        self.assertFalse(self.client.reusable)
        self.assertNoTimers()

    def test_connection_lost_waiting_for_the_final_reply_is_at_data_end(self):
        self.session()
        d = self.client.send(Content().transaction())
        self.receive("250 Ok", "250 Ok", "354 go")
        self.lose()
        self.assertEqual(self.failureResultOf(d, SessionLost).value.stage, "data-end")

    def test_connection_lost_before_the_greeting_fails_ready(self):
        client = self.connect()
        self.lose(ConnectionDone())
        self.assertEqual(self.failureResultOf(client.ready, SessionLost).value.stage, "greeting")

    def test_abort_fails_what_is_pending(self):
        self.session()
        d = self.client.send(Content().transaction())
        self.client.abort()
        self.assertEqual(self.failureResultOf(d, SessionLost).value.reason, "aborted")
        self.assertTrue(self.transport.disconnected)
        self.assertNoTimers()


class TimeoutTests(ClientTestCase):
    def assertTimedOut(self, d: Deferred, stage: str) -> None:
        failure = self.failureResultOf(d, SessionLost)
        self.assertEqual(failure.value.stage, stage)
        self.assertIn("timeout", failure.value.reason)
        self.assertTrue(self.transport.disconnected)
        self.assertNoTimers()

    def test_greeting_timeout(self):
        client = self.connect(timeouts=Timeouts(greeting=30))
        self.clock.advance(29.9)
        self.assertNoResult(client.ready)
        self.clock.advance(0.1)
        self.assertTimedOut(client.ready, "greeting")

    def test_rcpt_timeout_starts_when_mail_is_answered(self):
        self.session("SIZE")
        d = self.client.send(Content().transaction())
        self.clock.advance(299)
        self.receive("250 Ok")
        self.clock.advance(299)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertTimedOut(d, "rcpt")

    def test_pipelined_rcpt_timeout(self):
        self.session()
        d = self.client.send(Content().transaction())
        self.receive("250 Ok")
        self.clock.advance(300)
        self.assertTimedOut(d, "rcpt")

    def test_data_start_timeout(self):
        self.session()
        d = self.client.send(Content().transaction())
        self.receive("250 Ok", "250 Ok")
        self.clock.advance(120)
        self.assertTimedOut(d, "data")

    def test_data_block_timeout_while_the_transport_is_full(self):
        self.session(transport=Transport(fills=True))
        d = self.client.send(Content(b"x" * (2 * CHUNK)).transaction())
        self.receive("250 Ok", "250 Ok", "354 go")
        self.clock.advance(180)
        self.assertTimedOut(d, "content")

    def test_data_end_timeout(self):
        self.session()
        d = self.client.send(Content().transaction())
        self.receive("250 Ok", "250 Ok", "354 go")
        self.clock.advance(599)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertTimedOut(d, "data-end")


class QuitTests(ClientTestCase):
    def test_quit_says_goodbye_and_fires_once_the_connection_is_closed(self):
        self.session()
        done = self.client.quit()
        self.assertEqual(self.sent(), b"QUIT\r\n")
        self.assertFalse(self.client.reusable)
        self.receive("221 2.0.0 Bye")
        self.assertTrue(self.transport.disconnecting)
        self.assertNoResult(done)
        self.lose(ConnectionDone())
        self.assertIsNone(self.successResultOf(done))
        self.assertNoTimers()

    def test_quit_without_an_answer_aborts_after_its_short_timeout(self):
        self.session()
        done = self.client.quit()
        self.clock.advance(10)
        self.successResultOf(done)
        self.assertTrue(self.transport.disconnected)
        self.assertNoTimers()

    def test_quit_when_the_close_hangs_aborts(self):
        self.session()
        done = self.client.quit()
        self.receive("221 Bye")
        self.clock.advance(10)
        self.successResultOf(done)
        self.assertTrue(self.transport.disconnected)
        self.assertNoTimers()

    def test_quit_in_mid_transaction_drops_the_connection(self):
        self.session()
        d = self.client.send(Content().transaction())
        self.receive("250 Ok", "250 Ok", "354 go")
        self.sent()
        self.successResultOf(self.client.quit())
        self.assertEqual(self.sent(), b"")  # no QUIT inside the message
        self.assertTrue(self.transport.disconnected)
        self.failureResultOf(d, SessionLost)

    def test_quit_during_setup_drops_the_connection(self):
        client = self.connect()
        self.receive("220 mx.example.test")
        self.successResultOf(client.quit())
        self.assertEqual(self.failureResultOf(client.ready, SessionLost).value.stage, "ehlo")
        self.assertTrue(self.transport.disconnected)
        self.assertNoTimers()

    def test_quit_after_the_connection_is_gone_succeeds(self):
        self.session()
        self.lose()
        self.successResultOf(self.client.quit())


class TLSTests(ClientTestCase):
    def test_starttls_required_but_not_offered_is_tls_unavailable(self):
        client = self.connect(tls="required", tls_options=object)
        self.receive("220 mx.example.test", ehlo(*MODERN))
        failure = self.failureResultOf(client.ready, TLSUnavailable)
        self.assertEqual(failure.value.stage, "starttls")
        self.assertFalse(self.transport.disconnected)  # the runner may still QUIT
        self.assertFalse(client.reusable)

    def test_starttls_refused_when_required_is_tls_unavailable_with_the_reply(self):
        client = self.connect(TLSTransport(), tls="required", tls_options=object)
        self.receive("220 mx.example.test", ehlo("STARTTLS"), "454 4.7.0 TLS not available")
        failure = self.failureResultOf(client.ready, TLSUnavailable)
        self.assertEqual(failure.value.reply.code, 454)

    def test_starttls_refused_in_opportunistic_mode_carries_on_in_plaintext(self):
        client = self.connect(TLSTransport(), tls="opportunistic", tls_options=object)
        self.receive("220 mx.example.test", ehlo("STARTTLS"), "454 4.7.0 TLS not available")
        self.assertFalse(self.successResultOf(client.ready).tls)

    def test_opportunistic_starttls_when_offered_then_ehlo_again(self):
        options = object()
        client = self.connect(TLSTransport(), tls="opportunistic", tls_options=lambda: options)
        self.receive("220 mx.example.test", ehlo("PIPELINING", "STARTTLS", "SIZE 100"))
        self.assertEqual(self.sent(), b"EHLO out.example.test\r\nSTARTTLS\r\n")
        self.receive("220 2.0.0 Ready to start TLS")
        self.assertEqual(self.transport.started_tls, [(options, b"")])
        self.assertEqual(self.sent(), b"EHLO out.example.test\r\n")
        self.receive(ehlo("PIPELINING", "AUTH PLAIN"))
        info = self.successResultOf(client.ready)
        self.assertEqual(info.extensions, {"PIPELINING": "", "AUTH": "PLAIN"})  # SIZE forgotten
        self.assertEqual(
            (info.tls, info.tls_version, info.cipher), (True, "TLSv1.3", "TLS_AES_256_GCM_SHA384")
        )

    def test_bytes_behind_the_220_to_starttls_are_a_protocol_error(self):
        client = self.connect(TLSTransport(), tls="opportunistic", tls_options=object)
        self.receive("220 mx.example.test", ehlo("STARTTLS"))
        self.receive("220 go ahead", "250-injected")
        failure = self.failureResultOf(client.ready, SessionLost)
        self.assertEqual(failure.value.stage, "starttls")
        self.assertIn("protocol error", failure.value.reason)
        self.assertEqual(self.transport.started_tls, [])
        self.assertTrue(self.transport.disconnected)

    def test_failed_handshake_is_tls_unavailable(self):
        client = self.connect(TLSTransport(), tls="opportunistic", tls_options=object)
        self.receive("220 mx.example.test", ehlo("STARTTLS"), "220 go ahead")
        self.lose(ConnectionLost("certificate verify failed"))
        failure = self.failureResultOf(client.ready, TLSUnavailable)
        self.assertIn("handshake", failure.value.reason)

    def test_handshake_that_never_finishes_is_tls_unavailable(self):
        client = self.connect(TLSTransport(), tls="opportunistic", tls_options=object)
        self.receive("220 mx.example.test", ehlo("STARTTLS"))
        self.receive("220 go ahead")
        self.clock.advance(300)
        self.failureResultOf(client.ready, TLSUnavailable)
        self.assertTrue(self.transport.disconnected)
        self.assertNoTimers()

    def test_tls_none_never_starts_tls(self):
        client = self.connect(TLSTransport(), tls="none")
        self.receive("220 mx.example.test", ehlo("STARTTLS"))
        self.assertFalse(self.successResultOf(client.ready).tls)
        self.assertEqual(self.sent(), b"EHLO out.example.test\r\n")

    def test_tls_options_are_needed_unless_tls_is_none(self):
        self.assertRaises(ValueError, OutboundSMTP, reactor=Clock(), helo="x", tls="required")


class AuthTests(ClientTestCase):
    def tls_session(self, *after_tls: str, **options) -> OutboundSMTP:
        client = self.connect(TLSTransport(), tls="required", tls_options=object, **options)
        self.receive("220 mx.example.test", ehlo("STARTTLS"))
        self.receive("220 go ahead")  # alone: bytes behind it would be an attack
        self.sent()
        self.receive(ehlo(*after_tls))
        return client

    def test_auth_plain_after_tls(self):
        client = self.tls_session("AUTH LOGIN PLAIN", auth=("alice@example.org", "s3crét"))
        token = base64.b64encode("\0alice@example.org\0s3crét".encode()).decode()
        self.assertEqual(self.sent(), f"AUTH PLAIN {token}\r\n".encode())
        self.receive("235 2.7.0 Authentication successful")
        info = self.successResultOf(client.ready)
        self.assertEqual(info.authenticated, "alice@example.org")
        self.assertTrue(info.tls)

    def test_auth_login_when_only_login_is_offered(self):
        client = self.tls_session("AUTH LOGIN", auth=("alice", "pw"))
        self.assertEqual(self.sent(), b"AUTH LOGIN\r\n")
        self.receive("334 VXNlcm5hbWU6")
        self.assertEqual(self.sent(), b"YWxpY2U=\r\n")
        self.receive("334 UGFzc3dvcmQ6")
        self.assertEqual(self.sent(), b"cHc=\r\n")
        self.receive("235 2.7.0 ok")
        self.assertEqual(self.successResultOf(client.ready).authenticated, "alice")

    def test_auth_refused_is_smtp_failure_at_auth(self):
        client = self.tls_session("AUTH PLAIN", auth=("alice", "wrong"))
        self.receive("535 5.7.8 Authentication credentials invalid")
        failure = self.failureResultOf(client.ready, SMTPFailure)
        self.assertEqual(failure.value.stage, "auth")
        self.assertEqual((failure.value.reply.code, failure.value.reply.enhanced), (535, "5.7.8"))

    def test_unexpected_challenge_is_cancelled(self):
        client = self.tls_session("AUTH PLAIN", auth=("alice", "pw"))
        self.sent()
        self.receive("334 more?")
        self.assertEqual(self.sent(), b"*\r\n")
        self.receive("501 5.0.0 cancelled")
        self.assertEqual(self.failureResultOf(client.ready, SMTPFailure).value.reply.code, 501)

    def test_no_common_mechanism_is_smtp_failure_at_auth(self):
        client = self.tls_session("AUTH CRAM-MD5", auth=("alice", "pw"))
        failure = self.failureResultOf(client.ready, SMTPFailure)
        self.assertEqual((failure.value.stage, failure.value.reply.local), ("auth", True))
        self.assertEqual(self.sent(), b"")

    def test_credentials_are_never_sent_without_tls(self):
        client = self.connect(auth=("alice", "pw"))
        self.receive("220 mx.example.test", ehlo("AUTH PLAIN LOGIN"))
        failure = self.failureResultOf(client.ready, SMTPFailure)
        self.assertEqual(failure.value.stage, "auth")
        self.assertTrue(failure.value.reply.local)
        self.assertEqual(self.sent(), b"EHLO out.example.test\r\n")


# -- loopback: Twisted's own ESMTP server over real TCP ----------------------------------


class _Message:
    def __init__(self, inbox: list[bytes]):
        self.inbox = inbox
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> Deferred[None]:
        self.inbox.append(b"".join(line + b"\r\n" for line in self.lines))
        return succeed(None)

    def connectionLost(self) -> None:
        pass


@implementer(IMessageDelivery)
class _Delivery:
    def __init__(self):
        self.inbox: list[bytes] = []

    def receivedHeader(self, helo, origin, recipients):
        return None  # keep the message byte-exact

    def validateFrom(self, helo, origin):
        return origin

    def validateTo(self, user):
        return lambda: _Message(self.inbox)


class _Server(ESMTP):
    def extensions(self):
        offered = super().extensions()
        offered.update({b"PIPELINING": None, b"8BITMIME": None, b"SIZE": [b"10485760"]})
        return offered

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.factory.closed.callback(None)


class _ServerFactory(ServerFactory):
    def __init__(self):
        self.delivery = _Delivery()
        self.closed: Deferred[None] = Deferred()

    def buildProtocol(self, addr):
        server = _Server()
        server.factory = self
        server.delivery = self.delivery
        server.host = b"loopback.example.test"
        return server


class _CountingClient(OutboundSMTP):
    pauses = 0

    def pauseProducing(self) -> None:
        self.pauses += 1
        super().pauseProducing()


class LoopbackTests(TestCase):
    def test_three_mib_message_arrives_byte_exact_over_tcp(self):
        return Deferred.fromCoroutine(self._three_mib())

    async def _three_mib(self) -> None:
        from twisted.internet import reactor

        factory = _ServerFactory()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        rng = random.Random(5321)
        lines, size = [b"Subject: loopback\r\n", b"\r\n"], 0
        while size < 3 * 1024 * 1024:
            line = bytes(rng.choice(b"abc .\t") for _ in range(rng.randrange(0, 200))) + b"\r\n"
            lines.append(line)
            size += len(line)
        content = Content(b"".join(lines))
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        client = _CountingClient(reactor=reactor, helo="client.example.test", tls="none")
        await connectProtocol(endpoint, client)
        info = await client.ready
        self.assertIn("PIPELINING", info.extensions)
        tx = content.transaction("sender@example.org", "rcpt@loopback.example.test")
        result = await client.send(tx)
        self.assertEqual(result.outcome("rcpt@loopback.example.test").code, 250)
        self.assertGreater(result.bytes_sent, len(content.data))  # lines with dots stuffed
        self.assertGreater(client.pauses, 0)  # the transport pushed back
        self.assertTrue(client.reusable)
        await client.quit()
        await factory.closed
        self.assertEqual(factory.delivery.inbox, [content.data])
