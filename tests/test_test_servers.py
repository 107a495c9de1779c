"""The loopback servers outbound-delivery tests talk to, checked against real clients.

The SMTP sink is driven by ``smtplib`` and a raw socket client (in threads: blocking calls
never run on the reactor thread); the DNS server by ``twisted.names.client`` over UDP and
``dns.DNSProtocol`` over TCP.
"""

from __future__ import annotations

import base64
import hashlib
import smtplib
import ssl
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.names import client, dns
from twisted.names import error as dns_error
from twisted.trial.unittest import TestCase

from tests.support.dns_server import LoopbackDNS
from tests.support.sink import Sink, SinkBehaviour, sink_tls, sink_tls_pem
from tests.support.smtp import RawSMTP

MiB = 1024**2


def unverified_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def plain(user: str, password: str) -> str:
    """An RFC 4616 PLAIN response, base64."""
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class SinkTests(TestCase):
    def sink(self, behaviour: SinkBehaviour | None = None) -> Sink:
        sink = Sink(behaviour)
        self.port = sink.start()
        self.addCleanup(sink.stop)
        return sink

    def smtp(self, *args, **kwargs) -> smtplib.SMTP:
        """An smtplib client for use inside a thread."""
        return smtplib.SMTP("127.0.0.1", self.port, *args, timeout=20, **kwargs)

    @defer.inlineCallbacks
    def test_smtplib_message_arrives_with_envelope_and_session_details(self):
        sink = self.sink()
        content = b"Subject: hello\r\n\r\nbody line\r\n"

        def send():
            with self.smtp(local_hostname="client.test") as s:
                return s.sendmail("from@a.test", ["to@b.test"], content)

        refused = yield deferToThread(send)
        self.assertEqual(refused, {})
        (message,) = yield sink.wait_for(1)
        self.assertEqual(message.sender, "from@a.test")
        self.assertEqual(message.recipients, ["to@b.test"])
        self.assertEqual(message.data, content)
        self.assertEqual(message.size, len(content))
        self.assertEqual(message.sha256, hashlib.sha256(content).hexdigest())
        self.assertEqual(message.helo, "client.test")
        self.assertFalse(message.tls)
        self.assertIsNone(message.auth_user)
        self.assertEqual(message.peer[0], "127.0.0.1")
        self.assertEqual(message.local, ("127.0.0.1", self.port))
        self.assertEqual(message.connection, 1)
        self.assertEqual(message.esmtp_params, {"SIZE": str(len(content))})
        self.assertEqual(sink.commands[0], "ehlo client.test")
        self.assertEqual(sink.commands[-1], "QUIT")
        self.assertEqual(sink.by_recipient("TO@b.test"), [message])
        self.assertEqual(sink.by_recipient("other@b.test"), [])

    @defer.inlineCallbacks
    def test_pipelined_recipients_get_replies_in_order_and_refused_one_is_left_out(self):
        sink = self.sink(SinkBehaviour(rcpt_replies={"no@b.test": (550, "5.1.1 No such user")}))

        def send():
            c = RawSMTP(self.port)
            try:
                c.reply()
                c.command("EHLO client.test")
                c.send(
                    b"MAIL FROM:<from@a.test> BODY=8BITMIME SMTPUTF8\r\n"
                    b"RCPT TO:<one@b.test>\r\nRCPT TO:<No@B.test>\r\nRCPT TO:<two@b.test>\r\n"
                    b"DATA\r\n"
                )
                envelope = c.replies(5)
                c.send(b"Subject: p\r\n\r\nhi\r\n.\r\nQUIT\r\n")
                return envelope + c.replies(2)
            finally:
                c.close()

        replies = yield deferToThread(send)
        self.assertEqual(
            [r[:9] for r in replies],
            ["250 2.1.0", "250 2.1.5", "550 5.1.1", "250 2.1.5", "354 End d", "250 2.0.0"]
            + ["221 2.0.0"],
        )
        (message,) = sink.messages
        self.assertEqual(message.recipients, ["one@b.test", "two@b.test"])
        self.assertEqual(message.esmtp_params, {"BODY": "8BITMIME", "SMTPUTF8": None})
        self.assertEqual(message.data, b"Subject: p\r\n\r\nhi\r\n")
        self.assertEqual(sink.commands[-1], "QUIT")

    @defer.inlineCallbacks
    def test_smtplib_reports_the_recipient_refused_by_rcpt_replies(self):
        sink = self.sink(SinkBehaviour(rcpt_replies={"no@b.test": (450, "4.2.1 Later")}))

        def send():
            with self.smtp() as s:
                return s.sendmail("f@a.test", ["yes@b.test", "NO@b.test"], b"x\r\n")

        refused = yield deferToThread(send)
        self.assertEqual(refused, {"NO@b.test": (450, b"4.2.1 Later")})
        self.assertEqual(sink.messages[0].recipients, ["yes@b.test"])

    @defer.inlineCallbacks
    def test_starttls_then_auth_plain_on_a_sink_that_requires_both(self):
        sink = self.sink(SinkBehaviour(tls=sink_tls(), require_tls=True, auth={"alice": "s3cret"}))

        def send():
            with self.smtp() as s:
                s.ehlo()
                offered_plain = s.has_extn("starttls")
                before_tls = s.mail("f@a.test")
                s.rset()
                s.starttls(context=unverified_tls())
                s.ehlo()
                offered_tls = s.has_extn("starttls")
                before_auth = s.mail("f@a.test")
                s.rset()
                s.login("alice", "s3cret")
                s.sendmail("f@a.test", ["to@b.test"], b"Subject: secure\r\n\r\nx\r\n")
                return offered_plain, before_tls, offered_tls, before_auth

        offered_plain, before_tls, offered_tls, before_auth = yield deferToThread(send)
        self.assertTrue(offered_plain)
        self.assertEqual(before_tls[0], 530)
        self.assertFalse(offered_tls)
        self.assertEqual(before_auth, (530, b"5.7.0 Authentication required"))
        (message,) = sink.messages
        self.assertTrue(message.tls)
        self.assertEqual(message.auth_user, "alice")
        self.assertIn(f"AUTH PLAIN {plain('alice', 's3cret')}", sink.commands)

    @defer.inlineCallbacks
    def test_the_certificate_pem_lets_a_client_verify_the_sink(self):
        self.sink(SinkBehaviour(tls=sink_tls("relay.test")))
        trusting = ssl.create_default_context(cadata=sink_tls_pem("relay.test").decode())

        def send():
            with self.smtp() as s:
                s.starttls(context=trusting)
                return s.sock.getpeercert()["subject"]

        subject = yield deferToThread(send)
        self.assertEqual(subject, ((("commonName", "relay.test"),),))

    @defer.inlineCallbacks
    def test_auth_plain_by_continuation_auth_login_and_wrong_credentials(self):
        self.sink(SinkBehaviour(auth={"bob": "pw"}))

        def talk():
            c = RawSMTP(self.port)
            try:
                c.reply()
                c.command("EHLO client.test")
                out = [c.command("AUTH PLAIN"), c.command(plain("bob", "wrong"))]
                out += [c.command("AUTH PLAIN"), c.command("*")]
                out += [c.command("AUTH LOGIN"), c.command(base64.b64encode(b"bob").decode())]
                out += [c.command(base64.b64encode(b"pw").decode())]
                out += [c.command("AUTH PLAIN " + plain("bob", "pw"))]
                return out
            finally:
                c.close()

        replies = yield deferToThread(talk)
        self.assertEqual(
            replies,
            [
                "334 ",
                "535 5.7.8 Authentication credentials invalid",
                "334 ",
                "501 5.7.0 Authentication cancelled",
                "334 VXNlcm5hbWU6",
                "334 UGFzc3dvcmQ6",
                "235 2.7.0 Authentication successful",
                "503 5.5.1 AUTH not allowed now",
            ],
        )

    @defer.inlineCallbacks
    def test_starttls_discards_plaintext_pipelined_behind_it(self):
        sink = self.sink(SinkBehaviour(tls=sink_tls()))

        def talk():
            c = RawSMTP(self.port)
            try:
                c.reply()
                c.command("EHLO client.test")
                c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
                ready = c.replies(1)
                c.starttls(unverified_tls())
                return ready, c.command("MAIL FROM:<after@a.test>")
            finally:
                c.close()

        ready, after = yield deferToThread(talk)
        self.assertEqual(ready, ["220 2.0.0 Ready to start TLS"])
        self.assertEqual(after, "503 5.5.1 EHLO first")  # the TLS session starts afresh
        self.assertNotIn("MAIL FROM:<injected@evil.test>", sink.commands)

    @defer.inlineCallbacks
    def test_dot_stuffed_lines_come_out_unstuffed_and_byte_exact(self):
        sink = self.sink()
        content = (
            b"Subject: dots\r\n\r\n.\r\n..\r\n.hidden\r\n...three\r\n \r\n.\r\n"
            b"a.b\r\n\xff\xfe 8-bit\r\n\r\n.\r\n"
        )

        def send():
            with self.smtp() as s:
                s.sendmail("f@a.test", ["t@b.test"], content)

        yield deferToThread(send)
        self.assertEqual(sink.messages[0].data, content)

    def session(self) -> tuple[Sink, Any, StringTransport]:
        """A sink session on a StringTransport, in DATA: for exact control of chunking."""
        sink = Sink(reactor=Clock())
        session = sink._factory.buildProtocol(None)
        transport = StringTransport()
        session.makeConnection(transport)
        session.dataReceived(b"HELO c\r\nMAIL FROM:<f@a>\r\nRCPT TO:<t@b>\r\nDATA\r\n")
        return sink, session, transport

    def test_content_split_at_every_byte_is_reassembled_exactly(self):
        """Chunk boundaries inside CR LF . CR LF, as TCP may cut them, change nothing."""
        wire = b"..a\r\n..\r\n\r\n...\r\nz.\r\n\r.\r\n.\r\nQUIT\r\n"
        for cut in range(1, len(wire) + 1):
            sink, session, transport = self.session()
            for i in range(0, len(wire), cut):
                session.dataReceived(wire[i : i + cut])
            self.assertEqual(sink.messages[0].data, b".a\r\n.\r\n\r\n..\r\nz.\r\n\r.\r\n", cut)
            self.assertTrue(transport.value().endswith(b"250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"))

    def test_a_lone_dot_is_an_empty_message(self):
        sink, session, _ = self.session()
        session.dataReceived(b".\r\n")
        self.assertEqual((sink.messages[0].data, sink.messages[0].size), (b"", 0))

    @defer.inlineCallbacks
    def test_drop_after_bytes_closes_mid_data_and_flipping_it_lets_mail_through(self):
        sink = self.sink(SinkBehaviour(drop_after_bytes=4096))
        content = b"x" * 76 + b"\r\n"
        content *= 4000

        def send():
            with self.smtp() as s:
                s.sendmail("f@a.test", ["t@b.test"], content)

        yield self.assertFailure(deferToThread(send), smtplib.SMTPServerDisconnected)
        self.assertEqual(sink.messages, [])
        sink.behaviour.drop_after_bytes = None
        yield deferToThread(send)
        self.assertEqual(sink.messages[0].sha256, hashlib.sha256(content).hexdigest())
        self.assertEqual((sink.connections, sink.messages[0].connection), (2, 2))

    @defer.inlineCallbacks
    def test_delay_slows_every_reply_and_keeps_pipelined_replies_in_order(self):
        delay = 0.05
        self.sink(SinkBehaviour(delay=delay, rcpt_replies={"no@b.test": (550, "5.1.1 No")}))

        def talk():
            started = time.monotonic()
            c = RawSMTP(self.port)
            try:
                greeting = c.replies(1)
                c.send(
                    b"EHLO c.test\r\nMAIL FROM:<f@a.test>\r\nRCPT TO:<no@b.test>\r\n"
                    b"RCPT TO:<t@b.test>\r\nDATA\r\n"
                )
                replies = greeting + c.replies(5)
                c.send(b"x\r\n.\r\nNOOP\r\nQUIT\r\n")
                replies += c.replies(3)
                return replies, time.monotonic() - started
            finally:
                c.close()

        replies, elapsed = yield deferToThread(talk)
        self.assertEqual(" ".join(r[:3] for r in replies), "220 250 250 550 250 354 250 250 221")
        self.assertGreaterEqual(elapsed, 9 * delay)  # serial, as from one slow server

    @defer.inlineCallbacks
    def test_20_mib_message_without_keeping_content_has_the_right_sha256(self):
        sink = self.sink(SinkBehaviour(keep_content=False))
        line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxy\r\n"
        content = b".leading dot\r\n" + line * (20 * MiB // len(line))

        def send():
            with self.smtp() as s:
                s.sendmail("f@a.test", ["t@b.test"], content)

        yield deferToThread(send)
        (message,) = yield sink.wait_for(1)
        self.assertIsNone(message.data)
        self.assertEqual(message.size, len(content))
        self.assertEqual(message.sha256, hashlib.sha256(content).hexdigest())

    @defer.inlineCallbacks
    def test_wait_for_fires_at_the_count_and_times_out_below_it(self):
        sink = self.sink()
        waiting = sink.wait_for(2)

        def send():
            with self.smtp() as s:
                s.sendmail("f@a.test", ["t@b.test"], b"one\r\n")
                s.sendmail("f@a.test", ["t@b.test"], b"two\r\n")

        yield deferToThread(send)
        messages = yield waiting
        self.assertEqual([m.data for m in messages], [b"one\r\n", b"two\r\n"])
        self.assertEqual({m.connection for m in messages}, {1})  # one session, reused
        self.assertEqual(len((yield sink.wait_for(1))), 2)
        failure = yield self.assertFailure(sink.wait_for(3, timeout=0.05), defer.TimeoutError)
        self.assertIn("2 of 3", str(failure))

    @defer.inlineCallbacks
    def test_refusals_configured_by_behaviour(self):
        sink = self.sink(SinkBehaviour(data_reply=(452, "4.3.1 Full")))

        def send(sender="f@a.test"):
            with self.smtp() as s:
                s.sendmail(sender, ["t@b.test"], b"x\r\n")

        yield self.assertFailure(deferToThread(send), smtplib.SMTPDataError)
        self.assertEqual((len(sink.messages), len(sink.refused)), (0, 1))
        sink.behaviour = SinkBehaviour(mail_reply=(553, "5.7.1 Go away"))
        yield self.assertFailure(deferToThread(send), smtplib.SMTPSenderRefused)
        for greeting in [(554, "5.3.2 No service"), (421, "4.3.2 Try later")]:
            sink.behaviour = SinkBehaviour(greeting=greeting)
            error = yield self.assertFailure(deferToThread(self.smtp), smtplib.SMTPConnectError)
            self.assertEqual(error.smtp_code, greeting[0])
        self.assertEqual(sink.messages, [])

    @defer.inlineCallbacks
    def test_protocol_errors_get_the_usual_codes(self):
        sink = self.sink(SinkBehaviour(greeting=(554, "5.3.2 No")))

        def talk(*lines):
            c = RawSMTP(self.port)
            try:
                c.reply()
                return [c.command(line) for line in lines]
            finally:
                c.close()

        refused = yield deferToThread(talk, "EHLO c.test", "QUIT")
        self.assertEqual([r[:3] for r in refused], ["503", "221"])
        sink.behaviour = SinkBehaviour()
        replies = yield deferToThread(
            talk,
            "MAIL FROM:<f@a.test>",
            "HELO c.test",
            "VRFY someone",
            "RCPT TO:<t@b.test>",
            "MAIL FROM:<f@a.test>",
            "MAIL FROM:<f@a.test>",
            "DATA",
            "RSET",
            "NOOP",
            "STARTTLS",
            "AUTH PLAIN",
        )
        self.assertEqual(
            [r[:9] for r in replies],
            ["503 5.5.1", "250 sink", "500 5.5.2", "503 5.5.1", "250 2.1.0", "503 5.5.1"]
            + ["554 5.5.1", "250 2.0.0", "250 2.0.0", "502 5.5.1", "502 5.5.1"],
        )

    @defer.inlineCallbacks
    def test_one_sink_on_several_loopback_addresses_tells_them_apart(self):
        sink = self.sink()
        sink.start("127.0.0.2", self.port)

        def send(host):
            with smtplib.SMTP(host, self.port, timeout=20) as s:
                s.sendmail("f@a.test", [f"t@{host}"], b"x\r\n")

        yield deferToThread(send, "127.0.0.2")
        yield deferToThread(send, "127.0.0.1")
        self.assertEqual(
            [m.local for m in sink.messages], [("127.0.0.2", self.port), ("127.0.0.1", self.port)]
        )
        self.assertEqual([m.connection for m in sink.messages], [1, 2])

    @defer.inlineCallbacks
    def test_stop_closes_open_sessions(self):
        sink = self.sink()
        c = yield deferToThread(RawSMTP, self.port)
        self.addCleanup(c.close)
        yield deferToThread(c.reply)
        yield sink.stop()
        self.assertTrue((yield deferToThread(c.closed_by_server)))


class LoopbackDNSTests(TestCase):
    records = {
        "example.net": {"MX": [(10, "mx1.example.net"), (20, "mx2.example.net")]},
        "mx1.example.net": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
        "nullmx.test": {"MX": [(0, ".")]},
        "broken.test": "SERVFAIL",
        "silent.test": "TIMEOUT",
        "alias.test": {"CNAME": ["mx1.example.net"]},
        "2.0.0.127.dnsbl.test": {"A": ["127.0.0.2"], "TXT": ["listed", "x" * 300]},
    }

    def setUp(self):
        self.dns = LoopbackDNS(self.records)
        self.port = self.dns.start()
        self.addCleanup(self.dns.stop)
        self.resolver = client.Resolver(servers=[("127.0.0.1", self.port)], reactor=reactor)

    def query(self, name: str, rtype: int) -> defer.Deferred[dns.Message]:
        """The whole response message over UDP, to see rcode and flags."""
        return self.resolver.queryUDP([dns.Query(name, rtype)], timeout=(5,))

    @defer.inlineCallbacks
    def test_mx_answers_carry_preferences_and_exchange_addresses(self):
        answers, authority, additional = yield self.resolver.lookupMailExchange("example.net")
        self.assertEqual(
            [(a.payload.preference, str(a.payload.name)) for a in answers],
            [(10, "mx1.example.net"), (20, "mx2.example.net")],
        )
        self.assertEqual(
            sorted(a.payload.dottedQuad() for a in additional if a.type == dns.A), ["127.0.0.2"]
        )
        self.assertEqual(self.dns.nameserver, f"127.0.0.1:{self.port}")
        self.assertEqual(self.dns.queries, [("example.net", "MX")])

    @defer.inlineCallbacks
    def test_a_and_aaaa_and_names_are_case_insensitive(self):
        (a,), _, _ = yield self.resolver.lookupAddress("MX1.Example.NET")
        (aaaa,), _, _ = yield self.resolver.lookupIPV6Address("mx1.example.net.")
        self.assertEqual(a.payload.dottedQuad(), "127.0.0.2")
        self.assertEqual(str(a.name), "MX1.Example.NET")
        self.assertEqual(aaaa.payload._address, "::1")
        self.assertEqual(self.dns.queries[0], ("MX1.Example.NET", "A"))

    @defer.inlineCallbacks
    def test_null_mx_is_the_root_name_on_the_wire(self):
        (mx,), _, _ = yield self.resolver.lookupMailExchange("nullmx.test")
        self.assertEqual((mx.payload.preference, mx.payload.name.name), (0, b""))

    @defer.inlineCallbacks
    def test_unknown_name_is_authoritative_nxdomain(self):
        yield self.assertFailure(self.resolver.lookupAddress("nope.test"), dns_error.DomainError)
        response = yield self.query("nope.test", dns.MX)
        self.assertEqual((response.rCode, response.auth), (dns.ENAME, True))

    @defer.inlineCallbacks
    def test_servfail_entry_is_rcode_2(self):
        yield self.assertFailure(
            self.resolver.lookupMailExchange("broken.test"), dns_error.DNSServerError
        )
        response = yield self.query("BROKEN.test", dns.A)
        self.assertEqual(response.rCode, dns.ESERVER)

    @defer.inlineCallbacks
    def test_name_without_the_type_is_nodata(self):
        result = yield self.resolver.lookupMailExchange("mx1.example.net")
        self.assertEqual(result, ([], [], []))
        response = yield self.query("mx1.example.net", dns.TXT)
        self.assertEqual((response.rCode, response.auth, response.answers), (dns.OK, True, []))

    @defer.inlineCallbacks
    def test_txt_records_and_long_strings_for_dnsbl_lookups(self):
        answers, _, _ = yield self.resolver.lookupText("2.0.0.127.dnsbl.test")
        self.assertEqual([a.payload.data for a in answers], [[b"listed"], [b"x" * 255, b"x" * 45]])

    @defer.inlineCallbacks
    def test_cname_is_followed_inside_the_table(self):
        answers, _, _ = yield self.resolver.lookupAddress("alias.test")
        self.assertEqual([a.type for a in answers], [dns.CNAME, dns.A])
        self.assertEqual(answers[1].payload.dottedQuad(), "127.0.0.2")

    @defer.inlineCallbacks
    def test_records_change_at_runtime(self):
        self.dns.set("new.test", "MX", (5, "mx1.example.net"))
        (mx,), _, _ = yield self.resolver.lookupMailExchange("New.Test")
        self.assertEqual(mx.payload.preference, 5)
        self.dns.remove("new.test", "MX")
        self.assertEqual((yield self.resolver.lookupMailExchange("new.test")), ([], [], []))
        self.dns.remove("new.test")
        yield self.assertFailure(self.resolver.lookupAddress("new.test"), dns_error.DomainError)
        self.dns.set("broken.test", "A", "127.0.0.9")
        (a,), _, _ = yield self.resolver.lookupAddress("broken.test")
        self.assertEqual(a.payload.dottedQuad(), "127.0.0.9")

    @defer.inlineCallbacks
    def test_fail_next_fails_then_the_table_answers(self):
        self.dns.fail_next("example.net", "SERVFAIL")
        yield self.assertFailure(
            self.resolver.lookupMailExchange("example.net"), dns_error.DNSServerError
        )
        answers, _, _ = yield self.resolver.lookupMailExchange("example.net")
        self.assertEqual(len(answers), 2)

    @defer.inlineCallbacks
    def test_timeout_entry_never_answers(self):
        yield self.assertFailure(
            self.resolver.lookupAddress("silent.test", timeout=(0.2,)),
            defer.TimeoutError,
        )

    @defer.inlineCallbacks
    def test_tcp_queries_on_the_same_port(self):
        controller = _TCPController()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        protocol = yield connectProtocol(endpoint, dns.DNSProtocol(controller, reactor))
        try:
            mx = yield protocol.query([dns.Query("Example.Net", dns.MX)])
            missing = yield protocol.query([dns.Query("nope.test", dns.A)])
            broken = yield protocol.query([dns.Query("broken.test", dns.A)])
        finally:
            protocol.transport.loseConnection()
            yield controller.lost
        self.assertEqual([a.payload.preference for a in mx.answers], [10, 20])
        self.assertEqual((missing.rCode, missing.auth), (dns.ENAME, True))
        self.assertEqual(broken.rCode, dns.ESERVER)

    @defer.inlineCallbacks
    def test_stop_closes_open_tcp_connections(self):
        controller = _TCPController()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        yield connectProtocol(endpoint, dns.DNSProtocol(controller, reactor))
        yield self.dns.stop()
        yield controller.lost


class _TCPController:
    """What a ``dns.DNSProtocol`` reports to: lets a test see its connection closed."""

    def __init__(self):
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self, protocol):
        pass

    def connectionLost(self, protocol):
        self.lost.callback(None)

    def messageReceived(self, message, protocol, address=None):
        pass
