"""The POP3 protocol alone: the content filters (stuffing.py) and the session (server.py).

The filters are pure and are tested byte by byte: whatever the chunks a message is read in,
the bytes on the wire must be the same.  The session runs on a StringTransport with a Clock
for its timers (idle timeout, failed-login delays), against a real store on a SQLite file and
the real portal (argon2 on its thread), so the bytes asserted are exactly what a client reads.
"""

from __future__ import annotations

import base64
import random
import re
import sys

from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailbox_appliance.config import POP3Config
from mailbox_appliance.monitor.limits import ConnectionLimiter
from mailbox_appliance.output import STREAM_CHUNK
from mailbox_appliance.pop3.factory import POP3Factory
from mailbox_appliance.pop3.server import MAX_LINE, SMALL
from mailbox_appliance.pop3.stuffing import TopFilter
from mailbox_appliance.stuffing import DotStuffer
from mailbox_appliance.throttle import LoginThrottle, ThrottleSettings
from tests.support.imap_session import (
    ALICE,
    LOOPBACK,
    PASSWORD,
    REMOTE,
    TLS_CONTEXT,
    Session,
    spin_until,
    started_world,
)

# -- stuffing.py --------------------------------------------------------------------------


def _stuffed(chunks) -> bytes:
    stuffer = DotStuffer()
    return b"".join(stuffer.feed(chunk) for chunk in chunks) + stuffer.close()


def _top(lines: int, chunks) -> bytes:
    top = TopFilter(lines)
    return b"".join(top.feed(chunk) for chunk in chunks)


def _cuts(data: bytes):
    """``data`` whole, cut in two at every byte boundary (empty halves included), byte by
    byte, and in random chunk sizes (some empty): every way a blob read can deliver it."""
    yield [data]
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    yield [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(1939)
    for _ in range(50):
        chunks, i = [], 0
        while i < len(data):
            n = rng.randint(0, 9)
            chunks.append(data[i : i + n])
            i += n
        yield chunks


class DotStufferTests(SynchronousTestCase):
    """RFC 1939 §3: CRLF lines, a "." starting a line doubled, ".\\r\\n" at the end."""

    def assertStuffed(self, message: bytes, expected: bytes) -> None:
        for chunks in _cuts(message):
            self.assertEqual(_stuffed(chunks), expected, chunks)

    def test_crlf_lines_are_kept(self):
        self.assertStuffed(b"Subject: a\r\n\r\nbody\r\n", b"Subject: a\r\n\r\nbody\r\n.\r\n")

    def test_bare_lf_becomes_crlf(self):
        self.assertStuffed(
            b"Subject: a\n\nbody\nmore\n", b"Subject: a\r\n\r\nbody\r\nmore\r\n.\r\n"
        )

    def test_a_mix_of_crlf_and_lf(self):
        self.assertStuffed(b"a\r\nb\nc\r\n\n", b"a\r\nb\r\nc\r\n\r\n.\r\n")

    def test_a_cr_split_from_its_lf_stays_one_line_end(self):
        stuffer = DotStuffer()
        out = stuffer.feed(b"line one\r") + stuffer.feed(b"\nline two\r")
        out += stuffer.feed(b"\n") + stuffer.close()
        self.assertEqual(out, b"line one\r\nline two\r\n.\r\n")

    def test_every_line_starting_with_a_dot_is_stuffed(self):
        self.assertStuffed(
            b".first\r\nmid.dle\r\n.\r\n..two\r\n.\n. space\r\nend.\r\n",
            b"..first\r\nmid.dle\r\n..\r\n...two\r\n..\r\n.. space\r\nend.\r\n.\r\n",
        )

    def test_a_dot_at_the_start_of_a_chunk_is_stuffed_when_it_starts_a_line(self):
        stuffer = DotStuffer()
        self.assertEqual(stuffer.feed(b"a\r\n"), b"a\r\n")
        self.assertEqual(stuffer.feed(b".b\r\n"), b"..b\r\n")
        self.assertEqual(stuffer.feed(b"c"), b"c")
        self.assertEqual(stuffer.feed(b".d\r\n"), b".d\r\n")  # not at a line start
        self.assertEqual(stuffer.feed(b"e\r"), b"e")
        self.assertEqual(stuffer.feed(b"\n.f"), b"\r\n..f")
        self.assertEqual(stuffer.close(), b"\r\n.\r\n")

    def test_a_lone_cr_is_kept_and_is_no_line_end(self):
        """Only LF (with or without CR) ends a line; a dot after a lone CR is not stuffed."""
        self.assertStuffed(b"a\rb\r\n\r.c\r\nd\r\r\n", b"a\rb\r\n\r.c\r\nd\r\r\n.\r\n")

    def test_a_final_lone_cr_is_kept_and_a_line_end_added(self):
        self.assertStuffed(b"a\r\nb\r", b"a\r\nb\r\r\n.\r\n")

    def test_a_message_without_a_final_line_end_gets_one(self):
        self.assertStuffed(b"Subject: a\r\n\r\nno end", b"Subject: a\r\n\r\nno end\r\n.\r\n")
        self.assertStuffed(b".", b"..\r\n.\r\n")

    def test_an_empty_message_is_just_the_terminator(self):
        self.assertStuffed(b"", b".\r\n")

    def test_random_messages_split_anywhere_match_the_message_fed_whole(self):
        """And match the rule itself: split into lines at LF (CRLF or LF), stuff each line,
        end each with CRLF."""
        rng = random.Random(2449)
        for _ in range(2000):
            message = bytes(rng.choice(b".\r\nab") for _ in range(rng.randint(0, 16)))
            lines = re.split(rb"\r?\n", message)
            if not lines[-1]:
                lines.pop()
            expected = b"".join(
                (b"." if line[:1] == b"." else b"") + line + b"\r\n" for line in lines
            )
            expected += b".\r\n"
            whole = _stuffed([message])
            self.assertEqual(whole, expected, message)
            for _ in range(3):
                cuts = sorted(rng.sample(range(len(message) + 1), min(len(message) + 1, 3)))
                chunks = [
                    message[i:j] for i, j in zip([0, *cuts], [*cuts, len(message)], strict=True)
                ]
                self.assertEqual(_stuffed(chunks), whole, chunks)


CRLF_MESSAGE = b"From: a\r\nSubject: b\r\n\r\nline 1\r\nline 2\r\n.line 3\r\n"
LF_MESSAGE = CRLF_MESSAGE.replace(b"\r\n", b"\n")


class TopFilterTests(SynchronousTestCase):
    """RFC 1939 §7: TOP msg n is the header, the blank line, and n lines of the body."""

    def assertTop(self, message: bytes, lines: int, expected: bytes) -> None:
        for chunks in _cuts(message):
            self.assertEqual(_top(lines, chunks), expected, (lines, chunks))

    def test_zero_lines_is_the_header_and_the_blank_line(self):
        self.assertTop(CRLF_MESSAGE, 0, b"From: a\r\nSubject: b\r\n\r\n")

    def test_one_line(self):
        self.assertTop(CRLF_MESSAGE, 1, b"From: a\r\nSubject: b\r\n\r\nline 1\r\n")

    def test_many_lines(self):
        self.assertTop(CRLF_MESSAGE, 3, CRLF_MESSAGE)

    def test_more_lines_than_the_body_has_is_the_whole_message(self):
        self.assertTop(CRLF_MESSAGE, 100, CRLF_MESSAGE)
        self.assertTop(b"A: 1\r\n\r\nno final line end", 5, b"A: 1\r\n\r\nno final line end")

    def test_lf_messages(self):
        self.assertTop(LF_MESSAGE, 0, b"From: a\nSubject: b\n\n")
        self.assertTop(LF_MESSAGE, 2, b"From: a\nSubject: b\n\nline 1\nline 2\n")
        self.assertTop(LF_MESSAGE, 9, LF_MESSAGE)

    def test_a_message_without_a_blank_line_is_all_header(self):
        for lines in (0, 1, 5):
            self.assertTop(b"From: a\r\nSubject: b\r\n", lines, b"From: a\r\nSubject: b\r\n")
            self.assertTop(b"From: a\nSubject: b", lines, b"From: a\nSubject: b")

    def test_a_message_starting_with_a_blank_line_has_an_empty_header(self):
        self.assertTop(b"\r\nbody 1\r\nbody 2\r\n", 0, b"\r\n")
        self.assertTop(b"\r\nbody 1\r\nbody 2\r\n", 1, b"\r\nbody 1\r\n")
        self.assertTop(b"\nbody 1\nbody 2\n", 1, b"\nbody 1\n")

    def test_a_header_line_with_a_lone_cr_is_not_a_blank_line(self):
        self.assertTop(b"A: 1\r\n\r\r\nB: 2\r\n\r\nbody\r\n", 0, b"A: 1\r\n\r\r\nB: 2\r\n\r\n")

    def test_it_says_when_it_has_everything(self):
        top = TopFilter(1)
        self.assertEqual(top.feed(b"A: 1\r\n\r\nl1\r"), b"A: 1\r\n\r\nl1\r")
        self.assertFalse(top.done)
        self.assertEqual(top.feed(b"\nl2\r\n"), b"\n")
        self.assertTrue(top.done)
        self.assertEqual(top.feed(b"l3\r\n"), b"")

    def test_top_then_stuffing_split_anywhere(self):
        """The server runs TOP's output through the dot-stuffer."""
        message = b"A: 1\n\n.one\r\n.two\n.three\n"
        for chunks in _cuts(message):
            top, stuffer = TopFilter(2), DotStuffer()
            out = b"".join(stuffer.feed(top.feed(chunk)) for chunk in chunks) + stuffer.close()
            self.assertEqual(out, b"A: 1\r\n\r\n..one\r\n..two\r\n.\r\n", chunks)


# -- server.py ----------------------------------------------------------------------------

HOST = b"mail.example.test"
CAPS_END = [b"EXPIRE NEVER", b"LOGIN-DELAY 0", b"IMPLEMENTATION mailbox-appliance", b"."]
CAPS_START = [b"+OK Capability list follows", b"TOP", b"UIDL", b"RESP-CODES"]
CAPS_START += [b"AUTH-RESP-CODE", b"PIPELINING"]
LOGIN_CAPS = [b"USER", b"SASL PLAIN"]
PLAIN = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
WRONG_PLAIN = base64.b64encode(f"\0{ALICE}\0wrong-password".encode())
USER_PASS = f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode()
WRONG_PASS = f"USER {ALICE}\r\nPASS wrong-password\r\n".encode()
FAILED = b"-ERR [AUTH] Authentication failed"
LOCKED = b"-ERR [SYS/TEMP] Too many failed logins, try again later"
IN_USE = b"-ERR [IN-USE] The maildrop is in use by another POP3 session"

FIRST = b"From: a@example.test\r\nSubject: first\r\n\r\nHello\r\n.dot line\r\n"
SECOND = b"From: b@example.test\nSubject: second\n\nbare LF body\n.\nlast"


def _caps(*middle: bytes) -> list[bytes]:
    return CAPS_START + list(middle) + CAPS_END


class _ServerTestCase(TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.world = yield started_world(self)
        self.clock = Clock()
        self.maildrops: set[int] = set()

    def factory(
        self,
        service: str = "pop3",
        throttle: ThrottleSettings = ThrottleSettings(delay=0.0),  # noqa: B008 (frozen)
        limiter: ConnectionLimiter | None = None,
        **settings,
    ) -> POP3Factory:
        """A factory sharing this test's maildrop locks (as the appliance's two services do)."""
        return POP3Factory(
            service,
            maildrops=self.maildrops,
            reactor=self.clock,
            hostname=HOST.decode(),
            store=self.world.store,
            portal=self.world.portal,
            throttle=LoginThrottle(self.clock, throttle),
            limiter=limiter or ConnectionLimiter(100, 100),
            settings=POP3Config(**settings),
            tls_context=TLS_CONTEXT,
        )

    def connect(self, service: str = "pop3", peer=LOOPBACK, factory=None, **kw) -> Session:
        session = Session(factory or self.factory(service, **kw), peer)
        self.addCleanup(session.protocol.connectionLost, None)
        return session

    @inlineCallbacks
    def deliver(self, *messages: bytes):
        for message in messages:
            ref = yield self.world.store.blobs.put(message)
            yield self.world.store.deliver(ref, [(self.world.account_id, "INBOX")])

    @inlineCallbacks
    def until(self, session: Session, suffix: bytes):
        """Spin until what the server wrote ends with ``suffix``; take it all, as bytes."""
        yield spin_until(lambda: session.value().endswith(suffix), what=repr(suffix))
        data = session.value()
        session.transport.clear()
        return data

    @inlineCallbacks
    def login(self, session: Session, data: bytes = USER_PASS):
        """Send ``data`` and wait for the answer to the login; its last line."""
        session.protocol.dataReceived(data)
        lines = yield session.until_line(b"+OK Logged in")
        return lines[-1]

    @inlineCallbacks
    def logged_in(self, **kw):
        session = self.connect(**kw)
        session.take()
        yield self.login(session)
        return session


class GreetingTests(_ServerTestCase):
    def test_the_greeting_is_ok_with_the_hostname(self):
        session = self.connect()
        self.assertEqual(session.take(), [b"+OK " + HOST + b" POP3 ready"])

    def test_the_session_registers_a_streaming_producer(self):
        session = self.connect()
        self.assertIs(session.transport.producer, session.protocol.out)
        self.assertTrue(session.transport.streaming)

    def test_a_refused_connection_gets_sys_temp_and_is_closed(self):
        factory = self.factory(limiter=ConnectionLimiter(1, 1))
        first = self.connect(factory=factory)
        second = Session(factory, LOOPBACK)
        self.assertEqual(second.take(), [b"-ERR [SYS/TEMP] Too many connections, try later"])
        self.assertTrue(second.transport.disconnecting)
        self.assertEqual(second.send(b"CAPA\r\n"), [])
        second.protocol.connectionLost(None)  # does not free the first one's slot
        self.assertTrue(Session(factory, LOOPBACK).transport.disconnecting)
        first.protocol.connectionLost(None)
        self.assertFalse(self.connect(factory=factory).transport.disconnecting)


class CapaTests(_ServerTestCase):
    """RFC 2449 §5; USER and SASL only where a password may be sent (RFC 2595 §2)."""

    def capa(self, service: str, peer) -> list[bytes]:
        session = self.connect(service, peer)
        session.take()
        return session.send(b"CAPA\r\n")

    def test_loopback_on_pop3_offers_login_and_stls(self):
        self.assertEqual(self.capa("pop3", LOOPBACK), _caps(*LOGIN_CAPS, b"STLS"))

    def test_a_remote_peer_on_pop3_is_offered_stls_and_no_login(self):
        self.assertEqual(self.capa("pop3", REMOTE), _caps(b"STLS"))

    def test_implicit_tls_offers_login_and_no_stls(self):
        self.assertEqual(self.capa("pop3s", REMOTE), _caps(*LOGIN_CAPS))
        self.assertEqual(self.capa("pop3s", LOOPBACK), _caps(*LOGIN_CAPS))

    def test_after_stls_login_is_offered_and_stls_no_more(self):
        session = self.connect(peer=REMOTE)
        session.send(b"STLS\r\n")
        self.assertEqual(session.send(b"CAPA\r\n"), _caps(*LOGIN_CAPS))

    @inlineCallbacks
    def test_after_login_there_is_no_stls(self):
        session = yield self.logged_in()
        self.assertEqual(session.send(b"CAPA\r\n"), _caps(*LOGIN_CAPS))

    def test_auth_without_a_mechanism_lists_plain(self):
        session = self.connect()
        session.take()
        self.assertEqual(session.send(b"AUTH\r\n"), [b"+OK", b"PLAIN", b"."])


class PlaintextLoginTests(_ServerTestCase):
    def test_user_from_a_remote_peer_without_tls_is_refused(self):
        """RFC 2595 §2, RFC 8314 §4: no passwords in the clear from the network."""
        session = self.connect(peer=REMOTE)
        session.take()
        self.assertEqual(
            session.send(USER_PASS),
            [b"-ERR [AUTH] Log in after STLS", b"-ERR Send USER first"],
        )
        self.assertEqual(
            session.send(b"AUTH PLAIN " + PLAIN + b"\r\n"),
            [b"-ERR [AUTH] Authenticate after STLS"],
        )
        self.assertEqual(self.world.portal.attempts, 0)

    @inlineCallbacks
    def test_user_and_pass_on_loopback_log_in(self):
        yield self.deliver(FIRST, SECOND)
        session = self.connect()
        session.take()
        self.assertEqual(session.send(f"USER {ALICE}\r\n".encode()), [b"+OK Send PASS"])
        line = yield self.login(session, f"PASS {PASSWORD}\r\n".encode())
        total = len(FIRST) + len(SECOND)
        self.assertEqual(line, b"+OK Logged in, 2 messages (%d octets)" % total)

    @inlineCallbacks
    def test_login_over_implicit_tls_from_a_remote_peer_works(self):
        session = self.connect("pop3s", peer=REMOTE)
        session.take()
        line = yield self.login(session)
        self.assertEqual(line, b"+OK Logged in, 0 messages (0 octets)")

    def test_pass_without_user_is_refused(self):
        session = self.connect()
        session.take()
        self.assertEqual(session.send(b"PASS secret\r\n"), [b"-ERR Send USER first"])
        self.assertEqual(session.send(b"USER\r\n"), [b"-ERR Syntax: USER name"])

    @inlineCallbacks
    def test_a_wrong_password_fails_with_auth(self):
        session = self.connect()
        session.take()
        session.protocol.dataReceived(WRONG_PASS)
        lines = yield session.until_line(b"-ERR")
        self.assertEqual(lines, [b"+OK Send PASS", FAILED])
        # USER has to be sent again
        self.assertEqual(session.send(b"PASS again\r\n"), [b"-ERR Send USER first"])


class STLSTests(_ServerTestCase):
    def test_stls_starts_tls_and_drops_pipelined_plaintext(self):
        """RFC 2595 §4: what follows STLS in the same packet is an injection attempt."""
        session = self.connect(peer=REMOTE)
        session.take()
        lines = session.send(b"STLS\r\n" + USER_PASS + b"CAPA\r\nAUTH PLAIN " + PLAIN)
        self.assertEqual(lines, [b"+OK Begin TLS negotiation"])
        self.assertEqual(session.transport.tls_contexts, [TLS_CONTEXT])
        self.assertEqual(self.world.portal.attempts, 0)
        # The next command (in TLS now) is read from a clean start.
        self.assertEqual(session.send(b"\r\nNOOP\r\n"), [b"-ERR Unknown command", b"+OK"])

    @inlineCallbacks
    def test_login_works_after_stls(self):
        session = self.connect(peer=REMOTE)
        session.take()
        session.send(b"STLS\r\n")
        line = yield self.login(session)
        self.assertEqual(line, b"+OK Logged in, 0 messages (0 octets)")

    def test_stls_twice_is_refused(self):
        session = self.connect(peer=REMOTE)
        session.send(b"STLS\r\n")
        self.assertEqual(session.send(b"STLS\r\n"), [b"-ERR TLS is already active"])
        self.assertEqual(len(session.transport.tls_contexts), 1)

    def test_stls_on_implicit_tls_is_refused(self):
        session = self.connect("pop3s", peer=REMOTE)
        session.take()
        self.assertEqual(session.send(b"STLS\r\n"), [b"-ERR TLS is already active"])
        self.assertEqual(session.transport.tls_contexts, [])


class LoginThrottleTests(_ServerTestCase):
    @inlineCallbacks
    def until_held(self):
        """Wait for the password check to end and the failure's delay to start on the Clock
        (the session's idle timeout is the other delayed call)."""
        yield spin_until(lambda: len(self.clock.getDelayedCalls()) == 2, what="the delay")

    @inlineCallbacks
    def test_a_failed_login_is_answered_after_the_throttle_delay(self):
        session = self.connect(throttle=ThrottleSettings(delay=1.0, max_delay=30.0))
        session.take()
        self.assertEqual(session.send(WRONG_PASS), [b"+OK Send PASS"])
        yield self.until_held()
        self.assertEqual(session.take(), [])
        self.clock.advance(0.999)
        self.assertEqual(session.take(), [])
        self.clock.advance(0.001)
        self.assertEqual(session.take(), [FAILED])
        # The second failure waits twice as long; commands sent meanwhile wait their turn.
        session.send(b"AUTH PLAIN " + WRONG_PLAIN + b"\r\nNOOP\r\n")
        yield self.until_held()
        self.clock.advance(1.999)
        self.assertEqual(session.take(), [])
        self.clock.advance(0.001)
        self.assertEqual(session.take(), [FAILED, b"+OK"])
        self.assertEqual(self.world.portal.attempts, 2)

    @inlineCallbacks
    def test_a_locked_out_client_gets_sys_temp_without_a_password_check(self):
        session = self.connect(throttle=ThrottleSettings(delay=0.0, lockout_after=2))
        session.take()
        for _ in range(2):
            session.protocol.dataReceived(WRONG_PASS)
            lines = yield session.until_line(b"-ERR")
            self.assertEqual(lines, [b"+OK Send PASS", FAILED])
        # Locked now: even the right password is refused, and never checked.
        self.assertEqual(session.send(USER_PASS), [b"+OK Send PASS", LOCKED])
        self.assertEqual(session.send(b"AUTH PLAIN " + PLAIN + b"\r\n"), [LOCKED])
        self.assertEqual(self.world.portal.attempts, 2)
        # The lock ends after lockout_time (900 s); NOOPs keep the session from timing out.
        for _ in range(3):
            self.clock.advance(300)
            self.assertEqual(session.send(b"NOOP\r\n"), [b"+OK"])
        line = yield self.login(session)
        self.assertEqual(line, b"+OK Logged in, 0 messages (0 octets)")

    @inlineCallbacks
    def test_a_lockout_applies_to_other_connections_from_the_same_ip(self):
        factory = self.factory(throttle=ThrottleSettings(delay=0.0, lockout_after=1))
        first = self.connect(factory=factory)
        first.protocol.dataReceived(WRONG_PASS)
        yield first.until_line(b"-ERR")
        second = self.connect(factory=factory)
        second.take()
        self.assertEqual(second.send(USER_PASS), [b"+OK Send PASS", LOCKED])

    @inlineCallbacks
    def test_refusals_pipelined_after_a_lockout_do_not_nest(self):
        """A locked-out login is refused at once, without a trip to a thread.  Each answer
        must still come from the same stack depth: if every such command ran the next one
        from inside its own Deferred, about 150 of them pipelined would exceed Python's
        recursion limit, and the rest would go unanswered."""
        session = self.connect(throttle=ThrottleSettings(delay=0.0, lockout_after=1))
        session.take()
        session.protocol.dataReceived(WRONG_PASS)
        yield session.until_line(b"-ERR")
        depths: list[int] = []
        write = session.transport.write

        def recording_write(data: bytes) -> None:
            depths.append(_stack_depth())
            write(data)

        session.transport.write = recording_write
        count = 100
        lines = session.send((b"AUTH PLAIN " + PLAIN + b"\r\n") * count + b"NOOP\r\n")
        self.assertEqual(lines, [LOCKED] * count + [b"+OK"])
        self.assertLess(max(depths) - min(depths), 10, depths[:5] + depths[-5:])


def _stack_depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


class AuthTests(_ServerTestCase):
    """SASL PLAIN, RFC 5034 (and RFC 4616)."""

    @inlineCallbacks
    def test_auth_plain_with_an_initial_response(self):
        session = self.connect()
        session.take()
        line = yield self.login(session, b"AUTH PLAIN " + PLAIN + b"\r\n")
        self.assertEqual(line, b"+OK Logged in, 0 messages (0 octets)")

    @inlineCallbacks
    def test_auth_plain_with_a_continuation(self):
        """RFC 5034 §4: an empty challenge "+ ", then the client's base64 response."""
        session = self.connect()
        session.take()
        self.assertEqual(session.send(b"AUTH PLAIN\r\n"), [b"+ "])
        line = yield self.login(session, PLAIN + b"\r\n")
        self.assertEqual(line, b"+OK Logged in, 0 messages (0 octets)")

    @inlineCallbacks
    def test_auth_with_the_response_pipelined(self):
        session = self.connect()
        session.take()
        session.protocol.dataReceived(b"auth plain\r\n" + PLAIN + b"\r\nSTAT\r\n")
        lines = yield session.until_line(b"+OK 0 0")
        self.assertEqual(lines, [b"+ ", b"+OK Logged in, 0 messages (0 octets)", b"+OK 0 0"])

    def test_a_star_aborts_auth(self):
        session = self.connect()
        session.take()
        session.send(b"AUTH PLAIN\r\n")
        self.assertEqual(session.send(b"*\r\n"), [b"-ERR Authentication aborted"])
        self.assertEqual(session.send(b"NOOP\r\n"), [b"+OK"])
        self.assertEqual(self.world.portal.attempts, 0)

    def test_a_response_that_is_not_base64_fails(self):
        session = self.connect()
        session.take()
        session.send(b"AUTH PLAIN\r\n")
        self.assertEqual(session.send(b"not base64!\r\n"), [FAILED])
        self.assertEqual(session.send(b"AUTH PLAIN =\r\n"), [FAILED])  # empty: no user
        self.assertEqual(self.world.portal.attempts, 0)

    def test_an_unknown_mechanism_is_refused(self):
        session = self.connect()
        session.take()
        self.assertEqual(
            session.send(b"AUTH CRAM-MD5\r\n"), [b"-ERR Unsupported authentication mechanism"]
        )

    @inlineCallbacks
    def test_a_wrong_password_fails(self):
        session = self.connect()
        session.take()
        session.protocol.dataReceived(b"AUTH PLAIN " + WRONG_PLAIN + b"\r\n")
        lines = yield session.until_line(b"-ERR")
        self.assertEqual(lines, [FAILED])


class MaildropLockTests(_ServerTestCase):
    """RFC 1939 §8: one POP3 session per maildrop; a second one gets [IN-USE] (RFC 2449)."""

    @inlineCallbacks
    def answer_to_login(self, session: Session) -> bytes:
        session.take()
        session.protocol.dataReceived(USER_PASS)
        yield spin_until(lambda: session.value().count(b"\r\n") >= 2, what="the login")
        return session.take()[-1]

    @inlineCallbacks
    def test_a_second_session_gets_in_use(self):
        factory = self.factory()
        yield self.logged_in(factory=factory)
        second = self.connect(factory=factory)
        self.assertEqual((yield self.answer_to_login(second)), IN_USE)
        # ... over the other service too: the lock is the appliance's, not the listener's
        third = self.connect(factory=self.factory("pop3s"))
        self.assertEqual((yield self.answer_to_login(third)), IN_USE)
        # and it stays in AUTHORIZATION
        self.assertEqual(second.send(b"STAT\r\n"), [b"-ERR Log in first"])

    @inlineCallbacks
    def test_quit_releases_the_lock(self):
        first = yield self.logged_in()
        self.assertEqual(
            first.send(b"QUIT\r\n"), [b"+OK " + HOST + b" closing (0 messages removed)"]
        )
        second = self.connect()
        self.assertEqual(
            (yield self.answer_to_login(second)), b"+OK Logged in, 0 messages (0 octets)"
        )

    @inlineCallbacks
    def test_a_lost_connection_releases_the_lock(self):
        first = yield self.logged_in()
        first.protocol.connectionLost(None)
        second = self.connect()
        self.assertEqual(
            (yield self.answer_to_login(second)), b"+OK Logged in, 0 messages (0 octets)"
        )

    @inlineCallbacks
    def test_a_connection_lost_during_the_login_leaves_no_lock(self):
        first = self.connect()
        first.take()
        first.send(USER_PASS)  # the password is being checked on its thread ...
        first.protocol.connectionLost(None)  # ... when the client goes away
        yield spin_until(lambda: not first.protocol._busy, what="the login to end")
        self.assertEqual(self.maildrops, set())
        second = self.connect()
        self.assertEqual(
            (yield self.answer_to_login(second)), b"+OK Logged in, 0 messages (0 octets)"
        )


class StateTests(_ServerTestCase):
    def test_transaction_commands_before_login_are_refused(self):
        session = self.connect()
        session.take()
        for command in (b"STAT", b"LIST", b"LIST 1", b"UIDL", b"RETR 1", b"TOP 1 0"):
            self.assertEqual(session.send(command + b"\r\n"), [b"-ERR Log in first"], command)
        for command in (b"DELE 1", b"RSET"):
            self.assertEqual(session.send(command + b"\r\n"), [b"-ERR Log in first"], command)

    @inlineCallbacks
    def test_authorization_commands_after_login_are_refused(self):
        session = yield self.logged_in()
        for command in (f"USER {ALICE}".encode(), b"PASS x", b"AUTH PLAIN " + PLAIN, b"STLS"):
            self.assertEqual(session.send(command + b"\r\n"), [b"-ERR Not allowed now"], command)
        self.assertEqual(session.transport.tls_contexts, [])

    @inlineCallbacks
    def test_an_unknown_command_is_refused_in_either_state(self):
        session = self.connect()
        session.take()
        unknown = [b"-ERR Unknown command"]
        for command in (b"FROBNICATE", b"", b"42", b"APOP alice 0123"):
            self.assertEqual(session.send(command + b"\r\n"), unknown, command)
        yield self.login(session)
        self.assertEqual(session.send(b"XTND XLST\r\n"), unknown)

    def test_commands_are_case_insensitive_and_lf_ends_a_line(self):
        session = self.connect()
        session.take()
        self.assertEqual(session.send(b"noop\nNoOp\r\n"), [b"+OK", b"+OK"])

    def test_quit_before_login_closes(self):
        session = self.connect()
        session.take()
        self.assertEqual(session.send(b"QUIT\r\nNOOP\r\n"), [b"+OK " + HOST + b" closing"])
        self.assertTrue(session.transport.disconnecting)
        self.assertIsNone(session.transport.producer)  # unregistered, so the close happens
        self.assertEqual(session.send(b"NOOP\r\n"), [])


class LongLineTests(_ServerTestCase):
    """A command line is at most MAX_LINE (8192) octets; a longer one is refused alone."""

    def test_a_long_line_gets_err_and_the_session_goes_on(self):
        session = self.connect()
        session.take()
        self.assertEqual(
            session.send(b"NOOP " + b"x" * MAX_LINE + b"\r\nNOOP\r\n"),
            [b"-ERR Line too long", b"+OK"],
        )

    def test_a_long_line_in_many_chunks_gets_one_err(self):
        data = b"USER " + b"x" * (3 * MAX_LINE) + b"\r\nNOOP\r\n"
        for chunk in (1000, MAX_LINE - 1, MAX_LINE + 1):
            session = self.connect()
            session.take()
            lines = []
            for i in range(0, len(data), chunk):
                lines += session.send(data[i : i + chunk])
            self.assertEqual(lines, [b"-ERR Line too long", b"+OK"], chunk)

    @inlineCallbacks
    def test_a_long_line_when_logged_in(self):
        session = yield self.logged_in()
        self.assertEqual(
            session.send(b"LIST " + b"1" * (MAX_LINE + 10) + b"\r\nSTAT\r\n"),
            [b"-ERR Line too long", b"+OK 0 0"],
        )

    def test_a_line_of_exactly_max_line_is_taken(self):
        line = b"NOOP " + b"x" * (MAX_LINE - 5)
        self.assertEqual(len(line), MAX_LINE)
        session = self.connect()
        session.take()
        self.assertEqual(session.send(line + b"\r\n"), [b"+OK"])
        self.assertEqual(session.send(line), [])
        self.assertEqual(session.send(b"\r\n"), [b"+OK"])

    def test_a_line_of_exactly_max_line_is_taken_when_its_crlf_is_split(self):
        line = b"NOOP " + b"x" * (MAX_LINE - 5)
        session = self.connect()
        session.take()
        self.assertEqual(session.send(line + b"\r"), [])
        self.assertEqual(session.send(b"\n"), [b"+OK"])


class TimeoutTests(_ServerTestCase):
    def test_an_idle_client_is_dropped_after_600_seconds(self):
        """RFC 1939 §3: the autologout timer is at least 10 minutes."""
        session = self.connect()
        session.take()
        self.clock.advance(599.9)
        self.assertFalse(session.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertEqual(session.take(), [b"-ERR Autologout; idle for too long"])
        self.assertTrue(session.transport.disconnecting)
        self.assertIsNone(session.transport.producer)

    def test_a_command_restarts_the_timer(self):
        session = self.connect()
        session.take()
        self.clock.advance(500)
        session.send(b"NOOP\r\n")
        self.clock.advance(599)
        self.assertFalse(session.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(session.transport.disconnecting)

    @inlineCallbacks
    def test_the_autologout_deletes_nothing(self):
        """RFC 1939 §3: a session that ends without QUIT does not enter the UPDATE state."""
        yield self.deliver(FIRST, SECOND)
        session = yield self.logged_in()
        self.assertEqual(session.send(b"DELE 1\r\n"), [b"+OK Message 1 deleted"])
        self.clock.advance(600)
        self.assertEqual(session.take(), [b"-ERR Autologout; idle for too long"])
        self.assertTrue(session.transport.disconnecting)
        session.protocol.connectionLost(None)
        status = yield self.world.store.mailbox_status(self.world.account_id, "INBOX")
        self.assertEqual((status["messages"], status["deleted"]), (2, 0))
        self.assertEqual(self.maildrops, set())
        again = yield self.logged_in()
        self.assertEqual(again.send(b"STAT\r\n"), [b"+OK 2 %d" % (len(FIRST) + len(SECOND))])


class TransactionTests(_ServerTestCase):
    """RFC 1939 §5, §7."""

    @inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver(FIRST, SECOND)
        status = yield self.world.store.mailbox_status(self.world.account_id, "INBOX")
        self.uidvalidity = status["uidvalidity"]

    @inlineCallbacks
    def test_stat_list_and_uidl(self):
        session = yield self.logged_in()
        one, two = len(FIRST), len(SECOND)
        self.assertEqual(session.send(b"STAT\r\n"), [b"+OK 2 %d" % (one + two)])
        self.assertEqual(session.send(b"LIST\r\n"), [b"+OK", b"1 %d" % one, b"2 %d" % two, b"."])
        self.assertEqual(session.send(b"LIST 2\r\n"), [b"+OK 2 %d" % two])
        uidl = [b"1 %d.1" % self.uidvalidity, b"2 %d.2" % self.uidvalidity]
        self.assertEqual(session.send(b"UIDL\r\n"), [b"+OK", *uidl, b"."])
        self.assertEqual(session.send(b"UIDL 1\r\n"), [b"+OK " + uidl[0]])

    @inlineCallbacks
    def test_a_bad_message_number_is_refused(self):
        session = yield self.logged_in()
        for command in (b"LIST 3", b"RETR 0", b"UIDL 99", b"DELE 3", b"TOP 3 1"):
            self.assertEqual(
                session.send(command + b"\r\n"), [b"-ERR No such message (there are 2)"], command
            )
        for command in (b"RETR", b"RETR x", b"LIST -1", b"DELE"):
            self.assertEqual(
                session.send(command + b"\r\n"),
                [b"-ERR Syntax: a message number is needed"],
                command,
            )
        for command in (b"TOP 1", b"TOP 1 x", b"TOP 1 -1", b"TOP 1 2 3"):
            self.assertEqual(
                session.send(command + b"\r\n"), [b"-ERR Syntax: TOP message lines"], command
            )

    @inlineCallbacks
    def test_retr_sends_the_message_dot_stuffed_with_crlf(self):
        session = yield self.logged_in()
        session.protocol.dataReceived(b"RETR 1\r\n")
        data = yield self.until(session, b"\r\n.\r\n")
        self.assertEqual(data, b"+OK message follows\r\n" + _stuffed([FIRST]))
        session.protocol.dataReceived(b"RETR 2\r\n")
        data = yield self.until(session, b"\r\n.\r\n")
        self.assertEqual(
            data,
            b"+OK message follows\r\nFrom: b@example.test\r\nSubject: second\r\n\r\n"
            b"bare LF body\r\n..\r\nlast\r\n.\r\n",
        )

    @inlineCallbacks
    def test_top(self):
        session = yield self.logged_in()
        session.protocol.dataReceived(b"TOP 1 0\r\n")
        data = yield self.until(session, b"\r\n.\r\n")
        self.assertEqual(
            data,
            b"+OK message follows\r\nFrom: a@example.test\r\nSubject: first\r\n\r\n.\r\n",
        )
        session.protocol.dataReceived(b"TOP 2 2\r\n")
        data = yield self.until(session, b"\r\n.\r\n")
        self.assertEqual(
            data,
            b"+OK message follows\r\nFrom: b@example.test\r\nSubject: second\r\n\r\n"
            b"bare LF body\r\n..\r\n.\r\n",
        )

    @inlineCallbacks
    def test_a_large_message_is_streamed_with_stuffing_across_chunks(self):
        """Past SMALL, content is read STREAM_CHUNK bytes at a time: a line starting with
        "." at a chunk start and a CRLF split between two chunks come out right."""
        self.assertLessEqual(STREAM_CHUNK, SMALL)
        head = b"Subject: big\r\n\r\n"
        body = bytearray(b"x" * (3 * STREAM_CHUNK + 1000))
        body[STREAM_CHUNK - len(head) - 2 : STREAM_CHUNK - len(head) + 2] = b"\r\n.."
        body[2 * STREAM_CHUNK - len(head) - 1 : 2 * STREAM_CHUNK - len(head) + 2] = b"\r\n."
        for i in range(1000, len(body) - 2, 997):  # more short lines, some dotted
            body[i : i + 2] = b"\r\n" if i % 3 else b"\n."
        message = head + bytes(body)
        self.assertGreater(len(message), SMALL)
        yield self.deliver(message)
        session = yield self.logged_in()
        session.protocol.dataReceived(b"RETR 3\r\n")
        data = yield self.until(session, b"\r\n.\r\n")
        self.assertEqual(data, b"+OK message follows\r\n" + _stuffed([message]))
        session.protocol.dataReceived(b"TOP 3 1\r\n")
        data = yield self.until(session, b"\r\n.\r\n")
        first_line = bytes(body[: body.index(b"\n") + 1])
        self.assertTrue(first_line.endswith(b"x\r\n"))
        self.assertEqual(data, b"+OK message follows\r\n" + head + first_line + b".\r\n")

    @inlineCallbacks
    def test_dele_marks_and_rset_unmarks(self):
        session = yield self.logged_in()
        self.assertEqual(session.send(b"DELE 1\r\n"), [b"+OK Message 1 deleted"])
        self.assertEqual(session.send(b"DELE 1\r\n"), [b"-ERR Message 1 is deleted"])
        self.assertEqual(session.send(b"RETR 1\r\n"), [b"-ERR Message 1 is deleted"])
        self.assertEqual(session.send(b"STAT\r\n"), [b"+OK 1 %d" % len(SECOND)])
        self.assertEqual(session.send(b"LIST\r\n"), [b"+OK", b"2 %d" % len(SECOND), b"."])
        self.assertEqual(session.send(b"RSET\r\n"), [b"+OK 2 messages"])
        self.assertEqual(session.send(b"STAT\r\n"), [b"+OK 2 %d" % (len(FIRST) + len(SECOND))])

    @inlineCallbacks
    def test_quit_removes_the_marked_messages_and_uidls_stay(self):
        """RFC 1939 §6: the UPDATE state; the UIDL of what is left does not change."""
        session = yield self.logged_in()
        session.send(b"DELE 1\r\n")
        session.protocol.dataReceived(b"QUIT\r\n")
        lines = yield session.until_line(b"+OK")
        self.assertEqual(lines, [b"+OK " + HOST + b" closing (1 messages removed)"])
        self.assertTrue(session.transport.disconnecting)
        status = yield self.world.store.mailbox_status(self.world.account_id, "INBOX")
        self.assertEqual(status["messages"], 1)
        session.protocol.connectionLost(None)
        again = yield self.logged_in()
        self.assertEqual(again.send(b"UIDL\r\n"), [b"+OK", b"1 %d.2" % self.uidvalidity, b"."])

    @inlineCallbacks
    def test_the_maildrop_is_a_snapshot_taken_at_login(self):
        session = yield self.logged_in()
        yield self.deliver(b"Subject: later\r\n\r\nlater\r\n")
        self.assertEqual(session.send(b"STAT\r\n"), [b"+OK 2 %d" % (len(FIRST) + len(SECOND))])
        self.assertEqual(session.send(b"RETR 3\r\n"), [b"-ERR No such message (there are 2)"])


class PipeliningTests(_ServerTestCase):
    """RFC 2449 §6.6: commands sent together are answered in order, each whole."""

    @inlineCallbacks
    def test_pipelined_commands_are_answered_in_order(self):
        yield self.deliver(FIRST, SECOND)
        status = yield self.world.store.mailbox_status(self.world.account_id, "INBOX")
        session = self.connect()
        session.take()
        commands = [
            f"USER {ALICE}",
            f"PASS {PASSWORD}",
            "STAT",
            "RETR 1",
            "LIST",
            "TOP 2 0",
            "UIDL 2",
            "RETR 2",
            "DELE 1",
            "LIST 1",
            "NOOP",
            "QUIT",
            "NOOP",
        ]
        session.protocol.dataReceived("".join(c + "\r\n" for c in commands).encode())
        yield spin_until(lambda: session.transport.disconnecting, what="the QUIT")
        one, two = len(FIRST), len(SECOND)
        self.assertEqual(
            session.value(),
            b"+OK Send PASS\r\n"
            b"+OK Logged in, 2 messages (%d octets)\r\n"
            % (one + two)
            + b"+OK 2 %d\r\n" % (one + two)
            + b"+OK message follows\r\n"
            + _stuffed([FIRST])
            + b"+OK\r\n1 %d\r\n2 %d\r\n.\r\n" % (one, two)
            + b"+OK message follows\r\nFrom: b@example.test\r\nSubject: second\r\n\r\n.\r\n"
            + b"+OK 2 %d.2\r\n" % status["uidvalidity"]
            + b"+OK message follows\r\n"
            + _stuffed([SECOND])
            + b"+OK Message 1 deleted\r\n"
            b"-ERR Message 1 is deleted\r\n"
            b"+OK\r\n"
            b"+OK " + HOST + b" closing (1 messages removed)\r\n",
        )

    @inlineCallbacks
    def test_commands_arriving_during_a_retr_wait_for_it(self):
        yield self.deliver(FIRST)
        session = yield self.logged_in()
        session.protocol.dataReceived(b"RETR 1\r\nNO")
        self.assertEqual(session.value(), b"")  # the store is being read
        session.protocol.dataReceived(b"OP\r\nSTAT\r\n")
        data = yield self.until(session, b"+OK 1 %d\r\n" % len(FIRST))
        self.assertEqual(
            data,
            b"+OK message follows\r\n" + _stuffed([FIRST]) + b"+OK\r\n+OK 1 %d\r\n" % len(FIRST),
        )


class BackPressureTests(_ServerTestCase):
    """A client that pipelines without reading the answers must not make the server buffer
    without bound, in either direction (the IMAP server pauses its transport the same way)."""

    @inlineCallbacks
    def test_no_command_is_answered_while_the_transport_is_paused(self):
        yield self.deliver(FIRST, SECOND)
        status = yield self.world.store.mailbox_status(self.world.account_id, "INBOX")
        session = yield self.logged_in()
        session.protocol.out.pauseProducing()  # the socket's send buffer is full
        self.assertEqual(session.send(b"LIST\r\nUIDL\r\nNOOP\r\n"), [])
        session.protocol.out.resumeProducing()
        yield spin_until(lambda: session.value().count(b"\r\n") >= 9, what="the answers")
        uidl = [b"1 %d.1" % status["uidvalidity"], b"2 %d.2" % status["uidvalidity"]]
        self.assertEqual(
            session.take(),
            [
                b"+OK",
                b"1 %d" % len(FIRST),
                b"2 %d" % len(SECOND),
                b".",
                b"+OK",
                *uidl,
                b".",
                b"+OK",
            ],
        )

    @inlineCallbacks
    def test_reading_stops_while_a_large_backlog_waits(self):
        yield self.deliver(FIRST)
        session = yield self.logged_in()
        count = 350_000  # 2.1 MB of NOOPs behind a RETR that waits for the store
        session.protocol.dataReceived(b"RETR 1\r\n" + b"NOOP\r\n" * count)
        while_waiting = session.transport.producerState
        yield spin_until(lambda: session.value().endswith(b"+OK\r\n" * 3), what="the NOOPs")
        self.assertEqual(while_waiting, "paused")
        self.assertEqual(session.value().count(b"+OK\r\n"), count)
        self.assertEqual(session.transport.producerState, "producing")


class ReadFailureTests(_ServerTestCase):
    """A message that cannot be read: never a -ERR inside a multi-line answer."""

    @inlineCallbacks
    def test_a_small_message_that_cannot_be_read_gets_sys_temp(self):
        yield self.deliver(FIRST)
        self.addCleanup(self.flushLoggedErrors, OSError)  # also where the test fails
        session = yield self.logged_in()
        self.patch(self.world.store.blobs, "read_ranges", lambda ranges: fail(OSError("disk gone")))
        session.protocol.dataReceived(b"RETR 1\r\n")
        lines = yield session.until_line(b"-ERR")
        self.assertEqual(lines, [b"-ERR [SYS/TEMP] Internal error, try again later"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(session.send(b"NOOP\r\n"), [b"+OK"])

    @inlineCallbacks
    def test_a_large_message_that_fails_midway_ends_the_session(self):
        """Once "+OK" and part of the message are out, the answer cannot be taken back."""
        yield self.deliver(b"Subject: big\r\n\r\n" + b"line\r\n" * (SMALL // 5))
        self.addCleanup(self.flushLoggedErrors, OSError)  # also where the test fails
        session = yield self.logged_in()
        self.patch(self.world.store.blobs, "read_file_chunk", lambda *a: fail(OSError("disk gone")))
        session.protocol.dataReceived(b"RETR 1\r\n")
        yield spin_until(lambda: session.transport.disconnecting, timeout=3, what="the close")
        self.assertEqual(session.take(), [b"+OK message follows"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class ClientGoneTests(_ServerTestCase):
    """A client that hangs up is normal: nothing to log as a failure, nothing left held."""

    @inlineCallbacks
    def test_a_client_gone_during_a_large_retr_is_not_an_error(self):
        yield self.deliver(b"Subject: big\r\n\r\n" + b"line\r\n" * (SMALL // 5))
        session = yield self.logged_in()
        reads: list[tuple[Deferred, int]] = []

        def read_file_chunk(sha256: str, offset: int, length: int) -> Deferred:
            reads.append((Deferred(), length))
            return reads[-1][0]

        self.patch(self.world.store.blobs, "read_file_chunk", read_file_chunk)
        session.protocol.dataReceived(b"RETR 1\r\n")
        yield spin_until(lambda: reads, what="the first read")
        first, length = reads.pop(0)
        first.callback(b"x" * length)  # sent; the next chunk is being read ...
        self.assertEqual(session.take(), [b"+OK message follows"])
        # ... when the client goes away: its transport stops the producer, then says so.
        session.protocol.out.stopProducing()
        session.protocol.connectionLost(None)
        second, length = reads.pop(0)
        second.callback(b"x" * length)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.maildrops, set())
        self.assertFalse(session.protocol._busy)
