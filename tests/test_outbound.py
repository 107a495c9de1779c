"""The outbound queue end to end: the real appliance on loopback submits mail that its queue
runner delivers to loopback SMTP sinks found through a loopback DNS server (MX, null MX,
SERVFAIL), with retries, failover, relays with TLS and AUTH, and DSNs back to the sender."""

from __future__ import annotations

import email
import email.policy
import smtplib
import time

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailbox_appliance.routing.scores import format_table
from mailbox_appliance.smtp import runner
from tests.support.appliance import PASSWORD, add_account, insecure_tls, port_of, started_appliance
from tests.support.databases import postgres_url
from tests.support.outbound import outbound_config, sink_and_dns
from tests.support.sink import Sink, SinkBehaviour, sink_tls
from tests.support.smtp import inbox


def message(subject: str = "hello", body: str = "Hi there.\r\n.leading dot\r\n") -> bytes:
    return (
        f"From: alice@example.test\r\nTo: someone@remote.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.test>\r\n\r\n{body}"
    ).encode()


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def report_fields(dsn) -> list[dict[str, str]]:
    """The message/delivery-status part's field blocks (RFC 3464 §2.1)."""
    (status,) = [p for p in dsn.walk() if p.get_content_type() == "message/delivery-status"]
    raw = status.as_bytes().split(b"\n\n", 1)[1].decode().replace("\r\n", "\n")
    blocks = []
    for block in raw.strip().split("\n\n"):
        fields = {}
        name = ""
        for line in block.splitlines():
            if line[:1] in (" ", "\t"):  # a folded line continues the field
                fields[name] += " " + line.strip()
                continue
            name, _, value = line.partition(":")
            name = name.strip().lower()
            fields[name] = value.strip()
        blocks.append(fields)
    return blocks


class _OutboundTestCase(TestCase):
    timeout = 60
    behaviour = SinkBehaviour
    delivery: dict = {}

    def routing_config(self, port: int) -> dict | None:
        """The test's ``routing`` section, given the sink's port; None = the default."""
        return None

    def database(self) -> str | None:
        return None

    @inlineCallbacks
    def setUp(self):
        self.sink, self.dns = sink_and_dns(self, self.behaviour())
        delivery = {"retry": {"first": 60, "max_interval": 600, "give_up_after": 3600}}
        overrides = outbound_config(self.sink, self.dns, **{**delivery, **self.delivery})
        routing = self.routing_config(self.sink.port)
        if routing is not None:
            overrides["routing"] = routing
        database = self.database()
        if database is not None:
            overrides["database"] = database
        self.appliance = yield started_appliance(self, ("smtp", "submission"), **overrides)
        self.store = self.appliance.store
        self.alice = yield add_account(self.appliance, "alice@example.test")
        self.submission = port_of(self.appliance, "submission")

    def submit(self, recipients, data: bytes | None = None, sender="alice@example.test"):
        def run():
            with smtplib.SMTP("127.0.0.1", self.submission, timeout=20) as client:
                client.starttls(context=insecure_tls())
                client.login("alice@example.test", PASSWORD)
                return client.sendmail(sender, recipients, data or message())

        return deferToThread(run)

    @inlineCallbacks
    def wait_until(self, condition, timeout: float = 20):
        """Poll ``condition`` (a function returning a Deferred or a value) until true."""
        deadline = time.monotonic() + timeout
        while True:
            value = yield condition()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {condition}")
            yield deferLater(reactor, 0.05, lambda: None)

    @inlineCallbacks
    def queue(self):
        rows = yield self.store.list_queue()
        return rows

    @inlineCallbacks
    def dsns(self, count: int = 1):
        """The DSNs that reached alice's INBOX, once there are ``count``."""

        @inlineCallbacks
        def arrived():
            messages = yield inbox(self.store, self.alice)
            return messages if len(messages) >= count else None

        messages = yield self.wait_until(arrived)
        return [parse(m) for m in messages]


class DirectDeliveryTests(_OutboundTestCase):
    @inlineCallbacks
    def test_submitted_mail_reaches_the_mx_byte_exact_and_leaves_the_queue(self):
        data = message("exact", "line one\r\n.starts with a dot\r\n..two dots\r\nend")
        yield self.submit(["friend@remote.test"], data)
        (received,) = yield self.sink.wait_for(1)
        self.assertEqual(received.sender, "alice@example.test")
        self.assertEqual(received.recipients, ["friend@remote.test"])
        self.assertEqual(received.local[0], "127.0.0.2")
        # Our Received line, then the message as submitted; no Return-Path (only final
        # delivery adds one), and a final line end where the message lacked one.
        self.assertTrue(received.data.startswith(b"Received: from "), received.data[:80])
        self.assertNotIn(b"Return-Path", received.data)
        self.assertTrue(received.data.endswith(data + b"\r\n"), received.data[-120:])
        self.assertEqual(received.helo, "mail.example.test")
        self.assertFalse(received.tls)  # opportunistic: this sink offers no STARTTLS
        yield self.wait_until(lambda: self.queue().addCallback(lambda rows: rows == []))

    @inlineCallbacks
    def test_recipients_at_one_domain_share_one_transaction(self):
        recipients = ["a@remote.test", "b@remote.test", "c@remote.test"]
        yield self.submit(recipients)
        (received,) = yield self.sink.wait_for(1)
        self.assertEqual(sorted(received.recipients), recipients)
        self.assertEqual(self.sink.connections, 1)

    @inlineCallbacks
    def test_a_connection_is_reused_for_the_next_messages_to_the_domain(self):
        for i in range(4):
            yield self.submit(["friend@remote.test"], message(f"reuse {i}"))
        received = yield self.sink.wait_for(4)
        self.assertEqual(len({m.connection for m in received}), 1, self.sink.commands)

    @inlineCallbacks
    def test_no_mx_record_means_the_domain_itself(self):
        yield self.submit(["x@implicit.test"])
        (received,) = yield self.sink.wait_for(1)
        self.assertEqual(received.recipients, ["x@implicit.test"])

    @inlineCallbacks
    def test_a_dead_preferred_mx_fails_over_to_the_next_within_one_attempt(self):
        yield self.submit(["x@twomx.test"])
        (received,) = yield self.sink.wait_for(1)
        self.assertEqual(received.recipients, ["x@twomx.test"])
        yield self.wait_until(lambda: self.queue().addCallback(lambda rows: rows == []))

    @inlineCallbacks
    def test_aliases_pointing_outside_are_relayed_with_an_srs_sender(self):
        yield self.store.add_alias("fwd@example.test", ["far@other.test"])

        def run():
            with smtplib.SMTP("127.0.0.1", port_of(self.appliance, "smtp"), timeout=20) as c:
                return c.sendmail("someone@world.test", ["fwd@example.test"], message("fwd"))

        yield deferToThread(run)
        (received,) = yield self.sink.wait_for(1)
        self.assertEqual(received.recipients, ["far@other.test"])
        srs, _, domain = received.sender.rpartition("@")
        self.assertEqual(domain, "example.test")  # the alias's domain: SPF passes for us
        self.assertTrue(srs.startswith("SRS0="), srs)
        self.assertTrue(srs.endswith("=world.test=someone"), srs)
        # A bounce to that address comes back through the MX and goes to the real sender.
        self.sink.behaviour.rcpt_replies.clear()

        def bounce():
            with smtplib.SMTP("127.0.0.1", port_of(self.appliance, "smtp"), timeout=20) as c:
                c.sendmail("", [received.sender], message("bounce back"))

        yield deferToThread(bounce)
        returned = yield self.sink.wait_for(2)
        self.assertEqual((returned[1].sender, returned[1].recipients), ("", ["someone@world.test"]))

    @inlineCallbacks
    def test_a_forged_or_unknown_srs_address_is_refused(self):
        def run():
            with smtplib.SMTP("127.0.0.1", port_of(self.appliance, "smtp"), timeout=20) as c:
                c.ehlo()
                c.mail("")
                return c.rcpt("SRS0=AAAA=AA=world.test=forged@example.test")

        code, _ = yield deferToThread(run)
        self.assertEqual(code, 550)


class ConcurrencyTests(_OutboundTestCase):
    delivery = {"max_connections_per_domain": 3, "max_connections": 4, "reuse_time": 0.1}

    def behaviour(self):
        return SinkBehaviour(delay=0.05)  # slow enough for transactions to overlap

    def submit_each(self, recipients):
        """One message per recipient, over one session: separate transactions outbound."""

        def run():
            with smtplib.SMTP("127.0.0.1", self.submission, timeout=20) as client:
                client.starttls(context=insecure_tls())
                client.login("alice@example.test", PASSWORD)
                for i, recipient in enumerate(recipients):
                    client.sendmail("alice@example.test", [recipient], message(f"c {i}"))

        return deferToThread(run)

    @inlineCallbacks
    def test_one_domain_gets_at_most_its_share_of_connections(self):
        yield self.submit_each([f"r{i}@remote.test" for i in range(10)])
        yield self.sink.wait_for(10)
        self.assertEqual(self.sink.most_open, 3)

    @inlineCallbacks
    def test_all_domains_together_stay_within_the_total(self):
        recipients = [f"r{i}@{d}" for i in range(6) for d in ("remote.test", "other.test")]
        yield self.submit_each(recipients)
        yield self.sink.wait_for(12)
        self.assertEqual(self.sink.most_open, 4)


class SlowDomainTests(_OutboundTestCase):
    """A slow domain's backlog must not hold up mail for the others ("not delayed")."""

    delivery = {"max_connections_per_domain": 1}

    @inlineCallbacks
    def test_mail_for_other_domains_overtakes_a_slow_domains_backlog(self):
        self.patch(runner, "MAX_IN_HAND", 3)
        self.patch(runner, "MAX_IN_HAND_PER_DOMAIN", 2)
        self.sink.behaviour.delay = 0.2  # every reply: the sink is the slow domain's MX...
        self.fast = Sink()
        self.fast.start("127.0.0.5", self.sink.port)  # ...and 127.0.0.5 answers at once
        self.addCleanup(self.fast.stop)
        self.dns.set("quick.test", "MX", [(10, "mx.quick.test")])
        self.dns.set("mx.quick.test", "A", ["127.0.0.5"])
        for i in range(8):
            yield self.submit([f"r{i}@remote.test"], message(f"slow {i}"))
        yield self.submit(["x@quick.test"], message("quick"))
        yield self.fast.wait_for(1, timeout=20)
        # The quick domain was served while the slow one was still being worked through.
        self.assertLessEqual(len(self.sink.messages), 4)
        yield self.sink.wait_for(8)


class BounceTests(_OutboundTestCase):
    def behaviour(self):
        return SinkBehaviour(rcpt_replies={"gone@remote.test": (550, "5.1.1 no such user")})

    @inlineCallbacks
    def test_a_refused_recipient_is_bounced_with_a_dsn_and_the_others_delivered(self):
        yield self.submit(["gone@remote.test", "here@remote.test"], message("partly"))
        (received,) = yield self.sink.wait_for(1)
        self.assertEqual(received.recipients, ["here@remote.test"])
        (dsn,) = yield self.dsns()
        self.assertEqual(dsn.get_content_type(), "multipart/report")
        self.assertEqual(dsn.get_param("report-type"), "delivery-status")
        self.assertIn("MAILER-DAEMON@mail.example.test", dsn["From"])
        per_message, per_recipient = report_fields(dsn)
        self.assertEqual(per_message["reporting-mta"], "dns; mail.example.test")
        self.assertEqual(per_recipient["final-recipient"], "rfc822; gone@remote.test")
        self.assertEqual(per_recipient["action"], "failed")
        self.assertEqual(per_recipient["status"], "5.1.1")
        self.assertIn("550 5.1.1 no such user", per_recipient["diagnostic-code"])
        self.assertEqual(per_recipient["remote-mta"], "dns; mx.remote.test")
        headers = [p for p in dsn.walk() if p.get_content_type() == "text/rfc822-headers"]
        self.assertIn(b"Subject: partly", headers[0].get_payload(decode=True))
        yield self.wait_until(lambda: self.queue().addCallback(lambda rows: rows == []))

    @inlineCallbacks
    def test_a_null_mx_domain_bounces_at_once(self):
        yield self.submit(["x@nullmx.test"])
        (dsn,) = yield self.dsns()
        (_, fields) = report_fields(dsn)
        self.assertEqual(fields["status"], "5.1.10")
        self.assertEqual(self.sink.connections, 0)

    @inlineCallbacks
    def test_a_domain_that_does_not_exist_bounces(self):
        yield self.submit(["x@nowhere.test"])
        (dsn,) = yield self.dsns()
        (_, fields) = report_fields(dsn)
        self.assertEqual(fields["status"], "5.1.2")

    @inlineCallbacks
    def test_a_bounce_that_cannot_be_delivered_is_dropped_not_bounced(self):
        """A DSN from the null sender that fails is never bounced (no loops)."""
        yield self.store.add_alias("fwd@example.test", ["gone@remote.test"])
        self.sink.behaviour.rcpt_replies["stranger@remote.test"] = (550, "5.1.1 unknown")

        def run():
            with smtplib.SMTP("127.0.0.1", port_of(self.appliance, "smtp"), timeout=20) as c:
                c.sendmail("stranger@remote.test", ["fwd@example.test"], message("loop"))

        yield deferToThread(run)
        yield self.wait_until(lambda: any(c.startswith("MAIL FROM:<>") for c in self.sink.commands))
        yield self.wait_until(lambda: self.queue().addCallback(lambda rows: rows == []))
        self.assertEqual(self.sink.messages, [])


class PostgreSQLBounceTests(BounceTests):
    """Bounces again with the queue in PostgreSQL (skipped without a server)."""

    def database(self) -> str | None:
        return postgres_url(self)


class RetryTests(_OutboundTestCase):
    def behaviour(self):
        return SinkBehaviour(rcpt_replies={"later@remote.test": (451, "4.3.2 try again later")})

    @inlineCallbacks
    def test_a_temporary_failure_is_retried_after_backoff_and_then_delivered(self):
        yield self.submit(["later@remote.test"])
        (row,) = yield self.wait_until(
            lambda: self.queue().addCallback(lambda rows: [r for r in rows if r["attempts"]])
        )
        self.assertEqual(row["kind"], "relay")
        self.assertRegex(row["queue_id"], "^[0-9A-F]{12}$")  # the ID SMTP accepted it under
        self.assertIn("451 4.3.2 try again later", row["reason"])
        waited = (row["next_attempt"] - row["created"]).total_seconds()
        self.assertGreaterEqual(waited, 59)  # retry.first
        self.assertEqual(self.sink.messages, [])
        # The server recovers; an admin asks for a retry now.
        self.sink.behaviour.rcpt_replies.clear()
        yield self.store.retry_queued(row["id"])
        (received,) = yield self.sink.wait_for(1)
        self.assertEqual(received.recipients, ["later@remote.test"])
        yield self.wait_until(lambda: self.queue().addCallback(lambda rows: rows == []))

    @inlineCallbacks
    def test_dns_trouble_is_temporary(self):
        yield self.submit(["x@broken.test"])
        (row,) = yield self.wait_until(
            lambda: self.queue().addCallback(lambda rows: [r for r in rows if r["attempts"]])
        )
        self.assertEqual(row["kind"], "relay")
        self.assertIn("4.4.3", row["status"] or "")

    @inlineCallbacks
    def test_a_connection_dropped_mid_data_is_retried_and_nothing_is_lost(self):
        self.sink.behaviour.drop_after_bytes = 100
        yield self.submit(["x@remote.test"], message("dropped", "x" * 5000 + "\r\n"))
        (row,) = yield self.wait_until(
            lambda: self.queue().addCallback(lambda rows: [r for r in rows if r["attempts"]])
        )
        self.assertIn("lost connection", row["reason"])
        self.sink.behaviour.drop_after_bytes = None
        yield self.store.retry_queued(None)
        (received,) = yield self.sink.wait_for(1)
        self.assertIn(b"x" * 5000, received.data)


class PostgreSQLRetryTests(RetryTests):
    def database(self) -> str | None:
        return postgres_url(self)


class GiveUpTests(_OutboundTestCase):
    delivery = {"retry": {"first": 1, "max_interval": 1, "give_up_after": 2}, "delay_notice": 1}

    def behaviour(self):
        return SinkBehaviour(rcpt_replies={"later@remote.test": (451, "4.3.2 try again later")})

    @inlineCallbacks
    def test_the_sender_hears_of_the_delay_then_of_the_failure(self):
        yield self.submit(["later@remote.test"])
        delayed, failed = yield self.dsns(2)
        self.assertIn("Delayed", delayed["Subject"])
        (_, fields) = report_fields(delayed)
        self.assertEqual(fields["action"], "delayed")
        self.assertIn("will-retry-until", fields)
        (_, fields) = report_fields(failed)
        self.assertEqual(fields["action"], "failed")
        self.assertEqual(fields["status"], "4.4.7")
        self.assertIn("451 4.3.2", fields["diagnostic-code"])
        yield self.wait_until(lambda: self.queue().addCallback(lambda rows: rows == []))


class RelayTests(_OutboundTestCase):
    """The smarthost policy: a relay that requires STARTTLS and AUTH, behind a dead one."""

    def behaviour(self):
        return SinkBehaviour(tls=sink_tls(), require_tls=True, auth={"box": "relay-secret"})

    def routing_config(self, port: int) -> dict:
        password_file = self.mktemp()
        with open(password_file, "w") as f:
            f.write("relay-secret\n")
        relay = {"tls": "required", "verify": False}
        return {
            "policy": "smarthost",
            "routes": [
                {"name": "down", "relay": "127.0.0.3:1", **relay},
                {
                    "name": "relay",
                    "relay": f"127.0.0.2:{port}",
                    "username": "box",
                    "password_file": password_file,
                    **relay,
                },
            ],
            "smarthost": [{"match": "*", "routes": ["down", "relay"]}],
        }

    @inlineCallbacks
    def test_mail_goes_through_the_fallback_relay_with_tls_and_auth(self):
        yield self.submit(["x@anywhere.test"])
        (received,) = yield self.sink.wait_for(1)
        self.assertTrue(received.tls)
        self.assertEqual(received.auth_user, "box")
        self.assertEqual(received.recipients, ["x@anywhere.test"])
        yield self.wait_until(lambda: self.queue().addCallback(lambda rows: rows == []))
        scores = {(s.route, s.domain): s for s in self.appliance.queue_runner.scoreboard.scores()}
        self.assertEqual(scores[("down", "anywhere.test")].failure, 1.0)
        self.assertEqual(scores[("relay", "anywhere.test")].failure, 0.0)


class DomainTLSPolicyTests(_OutboundTestCase):
    delivery = {"tls_required_domains": ["*.test"]}

    @inlineCallbacks
    def test_a_domain_that_requires_tls_gets_no_mail_from_a_server_without_it(self):
        yield self.submit(["x@remote.test"])
        (row,) = yield self.wait_until(
            lambda: self.queue().addCallback(lambda rows: [r for r in rows if r["attempts"]])
        )
        self.assertEqual(row["status"], "4.7.5")
        self.assertEqual(self.sink.messages, [])


class RequiredTLSTests(_OutboundTestCase):
    def routing_config(self, port: int) -> dict:
        route = {"name": "relay", "relay": f"127.0.0.2:{port}", "tls": "required"}
        return {
            "policy": "smarthost",
            "routes": [{**route, "verify": False}],
            "smarthost": [{"match": "*", "routes": ["relay"]}],
        }

    @inlineCallbacks
    def test_no_starttls_on_a_tls_required_route_means_no_mail(self):
        yield self.submit(["x@anywhere.test"])
        (row,) = yield self.wait_until(
            lambda: self.queue().addCallback(lambda rows: [r for r in rows if r["attempts"]])
        )
        self.assertEqual(row["status"], "4.7.5")
        self.assertEqual(self.sink.messages, [])


class PostgreSQLGiveUpTests(GiveUpTests):
    def database(self) -> str | None:
        return postgres_url(self)


class AdaptiveTests(_OutboundTestCase):
    """The adaptive policy between two relays: it learns which is faster, and sets a route
    whose egress address is on a DNSBL aside until it is delisted."""

    @inlineCallbacks
    def setUp(self):
        # The second relay: fast. The first (the class's sink, on 127.0.0.2) answers slowly.
        self.fast = Sink()
        self.fast_port = self.fast.start("127.0.0.4")
        self.addCleanup(self.fast.stop)
        yield super().setUp()
        self.sink.behaviour.delay = 0.05

    def routing_config(self, port: int) -> dict:
        return {
            "policy": "adaptive",
            "routes": [
                {"name": "slow", "relay": f"127.0.0.2:{port}", "tls": "none"},
                {
                    "name": "fast",
                    "relay": f"127.0.0.4:{self.fast_port}",
                    "tls": "none",
                    "public_address": "192.0.2.1",
                },
            ],
            "adaptive": {
                "routes": ["slow", "fast"],
                "explore": 0,
                "dnsbl": {"zones": ["dnsbl.test"], "interval": 1},
            },
        }

    @inlineCallbacks
    def send_one(self, i: int):
        yield self.submit(["x@anywhere.test"], message(f"adaptive {i}"))
        yield self.wait_until(lambda: len(self.sink.messages) + len(self.fast.messages) > i)

    @inlineCallbacks
    def test_it_converges_on_the_faster_route(self):
        for i in range(8):
            yield self.send_one(i)
        # Both were tried while unknown; from then on the faster one gets everything.
        self.assertEqual(len(self.sink.messages), 1)
        self.assertEqual(len(self.fast.messages), 7)
        board = self.appliance.queue_runner.scoreboard
        slow, fast = board.score("slow", "anywhere.test"), board.score("fast", "anywhere.test")
        self.assertLess(fast.cost(10000), slow.cost(10000))

    @inlineCallbacks
    def test_a_route_listed_on_a_dnsbl_is_set_aside_until_delisted(self):
        self.dns.set("1.2.0.192.dnsbl.test", "A", ["127.0.0.2"])
        board = self.appliance.queue_runner.scoreboard
        yield self.wait_until(lambda: board.listed.get("fast") == "dnsbl.test")
        for i in range(3):
            yield self.send_one(i)
        self.assertEqual((len(self.sink.messages), len(self.fast.messages)), (3, 0))
        # `mailbox-appliance routes` reads what the runner saves.
        yield self.appliance.queue_runner._save_scores()
        rows = yield self.store.routing_state()
        self.assertIn("listed on dnsbl.test", format_table(rows, now=time.time()))
        self.dns.remove("1.2.0.192.dnsbl.test")
        yield self.wait_until(lambda: "fast" not in board.listed)
        yield self.send_one(3)
        self.assertEqual(len(self.fast.messages), 1)
