"""The IMAP protocol alone: command framing (framing.py) and the session (server.py).

Framing is tested on its own, byte by byte.  The session runs on a StringTransport with a
Clock for its timers, against a real store on a SQLite file and the real portal (argon2 on
its thread), so the bytes asserted are exactly what a client would read.
"""

from __future__ import annotations

import base64

from twisted.internet.address import IPv6Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailbox_appliance.imap.framing import MAX_ARGUMENT_LITERAL, CommandReader, TooBig
from mailbox_appliance.imap.wire import Literal
from mailbox_appliance.monitor.limits import ConnectionLimiter
from mailbox_appliance.throttle import ThrottleSettings
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

# -- framing.py ---------------------------------------------------------------------------


class _Sink:
    """Where a message literal goes (the blob writer, in the server)."""

    def __init__(self, size: int, pieces: list):
        self.size = size
        self.pieces = list(pieces)
        self.data = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.data += data

    def abort(self) -> None:
        self.aborted = True


class _Reading:
    """A CommandReader and, in order, everything it called back."""

    def __init__(self, max_line: int = 1000, append_limit: int = 1000):
        self.append_limit = append_limit
        self.events: list[tuple] = []
        self.sinks: list[_Sink] = []
        self.reader = CommandReader(
            max_line=max_line,
            on_command=lambda pieces: self.events.append(("command", _shown(pieces))),
            on_error=lambda tag, message, code: self.events.append(("error", tag, message, code)),
            on_continue=lambda: self.events.append(("continue",)),
            message_sink=self._message_sink,
        )

    def _message_sink(self, size: int, pieces: list) -> _Sink:
        if size > self.append_limit:
            raise TooBig("Message too big", "TOOBIG")
        self.sinks.append(_Sink(size, pieces))
        return self.sinks[-1]

    def feed(self, data: bytes, chunk: int | None = None) -> list[tuple]:
        """Hand ``data`` over ``chunk`` bytes at a time (all at once by default), stepping
        the reader as the server does; the events this caused."""
        before = len(self.events)
        chunk = chunk or max(1, len(data))
        for i in range(0, len(data), chunk):
            self.reader.buffer += data[i : i + chunk]
            while self.reader.step():
                pass
        return self.events[before:]


def _shown(pieces: list) -> list:
    """Pieces as comparable values: lines as bytes, literals as ("literal", data), message
    literals as ("message", size, what the sink received)."""
    out = []
    for piece in pieces:
        if isinstance(piece, bytes):
            out.append(piece)
        elif piece.ref is not None:
            out.append(("message", piece.size, piece.ref.data))
        else:
            out.append(("literal", piece.data))
    return out


def _splits(data: bytes):
    """``data`` cut in two at every byte boundary."""
    for i in range(1, len(data)):
        yield data[:i], data[i:]


class CommandReaderTests(SynchronousTestCase):
    def test_commands_split_at_every_byte_boundary_give_the_same_commands(self):
        data = b'a1 LOGIN {5}\r\nalice "pw"\r\na2 NOOP\r\na3 LOGIN {3+}\r\nbob {2}\r\npw\r\n'
        expected = [
            ("continue",),
            ("command", [b"a1 LOGIN {5}", ("literal", b"alice"), b' "pw"']),
            ("command", [b"a2 NOOP"]),
            ("continue",),
            ("command", [b"a3 LOGIN {3+}", ("literal", b"bob"), b" {2}", ("literal", b"pw"), b""]),
        ]
        self.assertEqual(_Reading().feed(data), expected)
        self.assertEqual(_Reading().feed(data, chunk=1), expected)
        for first, rest in _splits(data):
            reading = _Reading()
            reading.feed(first)
            reading.feed(rest)
            self.assertEqual(reading.events, expected, (first, rest))

    def test_a_synchronising_literal_is_asked_for_exactly_once(self):
        """RFC 3501 §4.3: one "+" per {N}, however the literal's bytes arrive."""
        reading = _Reading()
        self.assertEqual(reading.feed(b"a1 LOGIN {10}\r\n"), [("continue",)])
        self.assertEqual(reading.feed(b"alice@exam", chunk=1), [])
        self.assertEqual(
            reading.feed(b" pw\r\n"),
            [("command", [b"a1 LOGIN {10}", ("literal", b"alice@exam"), b" pw"])],
        )

    def test_a_non_synchronising_literal_is_not_asked_for(self):
        """RFC 7888 (LITERAL+): no continuation for {N+}."""
        self.assertEqual(
            _Reading().feed(b"a1 LOGIN {5+}\r\nalice pw\r\n"),
            [("command", [b"a1 LOGIN {5+}", ("literal", b"alice"), b" pw"])],
        )

    def test_an_empty_literal_is_complete_at_once(self):
        self.assertEqual(
            _Reading().feed(b"a1 LOGIN {0}\r\n pw\r\n"),
            [("continue",), ("command", [b"a1 LOGIN {0}", ("literal", b""), b" pw"])],
        )

    def test_an_argument_literal_of_64_kib_is_taken(self):
        data = b"x" * MAX_ARGUMENT_LITERAL
        reading = _Reading()
        events = reading.feed(b"a1 LOGIN {%d}\r\n" % len(data) + data + b" pw\r\n")
        self.assertEqual(
            events,
            [("continue",), ("command", [b"a1 LOGIN {65536}", ("literal", data), b" pw"])],
        )

    def test_a_synchronising_argument_literal_over_64_kib_is_bad_without_continuation(self):
        reading = _Reading()
        self.assertEqual(
            reading.feed(b"a1 LOGIN {65537}\r\n"), [("error", "a1", "Literal too big", None)]
        )
        # The client got BAD instead of "+": it sends no literal; the next command is read.
        self.assertEqual(reading.feed(b"a2 NOOP\r\n"), [("command", [b"a2 NOOP"])])

    def test_a_non_synchronising_literal_over_64_kib_is_skipped_then_bad(self):
        """RFC 7888 §4: the literal comes anyway; its bytes are read and dropped, never run
        as commands."""
        junk = (b"a9 LOGOUT\r\n" * 6000)[: MAX_ARGUMENT_LITERAL + 1]
        data = b"a1 LOGIN {65537+}\r\n" + junk + b" pw\r\na2 NOOP\r\n"
        expected = [("error", "a1", "Literal too big", None), ("command", [b"a2 NOOP"])]
        self.assertEqual(_Reading().feed(data), expected)
        self.assertEqual(_Reading().feed(data, chunk=1000), expected)
        self.assertEqual(_Reading().feed(data, chunk=7), expected)

    def test_the_literals_of_one_command_are_limited_together(self):
        part = b"x" * MAX_ARGUMENT_LITERAL
        data = b"a1 X {65536+}\r\n" + (part + b" {65536+}\r\n") * 16 + part + b"\r\na2 NOOP\r\n"
        self.assertEqual(
            _Reading().feed(data),
            [("error", "a1", "Literal too big", None), ("command", [b"a2 NOOP"])],
        )

    def test_a_literal_size_past_2_63_is_bad(self):
        """RFC 7888 / RFC 9051 number64: sizes past 2**63-1 are a syntax error."""
        reading = _Reading()
        self.assertEqual(
            reading.feed(b"a1 LOGIN {9223372036854775808}\r\na2 NOOP\r\n"),
            [("error", "a1", "literal too large", None), ("command", [b"a2 NOOP"])],
        )
        # in a continuation line, after a first literal, too
        self.assertEqual(
            reading.feed(b"a3 LOGIN {1+}\r\nx {99999999999999999999}\r\na4 NOOP\r\n"),
            [("error", "a3", "literal too large", None), ("command", [b"a4 NOOP"])],
        )

    def test_a_line_longer_than_max_line_is_bad_once_and_the_next_command_works(self):
        data = b"a1 NOOP " + b"x" * 200 + b"\r\na2 NOOP\r\n"
        expected = [("error", "a1", "Command line too long", None), ("command", [b"a2 NOOP"])]
        self.assertEqual(_Reading(max_line=100).feed(data), expected)  # CRLF in the chunk

    def test_a_long_line_in_many_chunks_is_bad_once(self):
        data = b"a1 NOOP " + b"x" * 1000 + b"\r\na2 NOOP\r\n"
        expected = [("error", "a1", "Command line too long", None), ("command", [b"a2 NOOP"])]
        for chunk in (1, 7, 64, 101, 250):
            self.assertEqual(_Reading(max_line=100).feed(data, chunk=chunk), expected, chunk)

    def test_a_long_line_whose_crlf_is_split_is_bad_once(self):
        reading = _Reading(max_line=100)
        self.assertEqual(reading.feed(b"a1 NOOP " + b"x" * 200 + b"\r"), [])
        self.assertEqual(
            reading.feed(b"\na2 NOOP\r\n"),
            [("error", "a1", "Command line too long", None), ("command", [b"a2 NOOP"])],
        )

    def test_a_line_of_exactly_max_line_is_taken_however_it_is_split(self):
        line = b"a1 X " + b"y" * 95
        self.assertEqual(len(line), 100)
        self.assertEqual(_Reading(max_line=100).feed(line + b"\r\n"), [("command", [line])])
        reading = _Reading(max_line=100)
        reading.feed(line + b"\r")  # the segment ends between CR and LF
        self.assertEqual(reading.feed(b"\n"), [("command", [line])])

    def test_a_long_line_after_a_literal_is_bad_with_the_commands_tag(self):
        reading = _Reading(max_line=100)
        events = reading.feed(b"a1 LOGIN {5+}\r\nalice " + b"x" * 300 + b"\r\na2 NOOP\r\n", 10)
        self.assertEqual(
            events, [("error", "a1", "Command line too long", None), ("command", [b"a2 NOOP"])]
        )

    def test_a_long_line_ending_in_a_non_synchronising_literal_skips_the_literal(self):
        """The literal of a refused command still comes (RFC 7888 §4); its bytes are data."""
        data = b"a1 LOGIN " + b"x" * 300 + b" {11+}\r\na9 LOGOUT\r\n\r\na2 NOOP\r\n"
        expected = [("error", "a1", "Command line too long", None), ("command", [b"a2 NOOP"])]
        self.assertEqual(_Reading(max_line=100).feed(data), expected)

    def test_a_long_line_in_chunks_ending_in_a_non_synchronising_literal_skips_it(self):
        data = b"a1 LOGIN " + b"x" * 300 + b" {11+}\r\na9 LOGOUT\r\n\r\na2 NOOP\r\n"
        expected = [("error", "a1", "Command line too long", None), ("command", [b"a2 NOOP"])]
        self.assertEqual(_Reading(max_line=100).feed(data, chunk=50), expected)

    def test_bare_lf_line_ends_are_accepted(self):
        self.assertEqual(
            _Reading().feed(b"a1 NOOP\na2 LOGIN {5}\nalice pw\n"),
            [
                ("command", [b"a1 NOOP"]),
                ("continue",),
                ("command", [b"a2 LOGIN {5}", ("literal", b"alice"), b" pw"]),
            ],
        )

    def test_append_with_an_atom_mailbox_streams_the_message_to_the_sink(self):
        reading = _Reading()
        events = reading.feed(b"a1 APPEND INBOX (\\Seen) {11}\r\nHello world\r\n", chunk=3)
        self.assertEqual(
            events,
            [
                ("continue",),
                (
                    "command",
                    [b"a1 APPEND INBOX (\\Seen) {11}", ("message", 11, b"Hello world"), b""],
                ),
            ],
        )
        (sink,) = reading.sinks
        self.assertEqual((sink.size, sink.pieces), (11, [b"a1 APPEND INBOX (\\Seen) {11}"]))

    def test_append_with_a_quoted_mailbox_streams_the_message_to_the_sink(self):
        reading = _Reading()
        events = reading.feed(b'a1 APPEND "My {Box}" {5+}\r\nHello\r\n')
        self.assertEqual(
            events, [("command", [b'a1 APPEND "My {Box}" {5+}', ("message", 5, b"Hello"), b""])]
        )

    def test_append_with_a_literal_mailbox_streams_only_the_message(self):
        reading = _Reading()
        events = reading.feed(b"a1 APPEND {5}\r\nINBOX {5}\r\nHello\r\n")
        self.assertEqual(
            events,
            [
                ("continue",),
                ("continue",),
                (
                    "command",
                    [
                        b"a1 APPEND {5}",
                        ("literal", b"INBOX"),
                        b" {5}",
                        ("message", 5, b"Hello"),
                        b"",
                    ],
                ),
            ],
        )
        (sink,) = reading.sinks
        self.assertEqual(sink.pieces, [b"a1 APPEND {5}", Literal(b"INBOX"), b" {5}"])

    def test_append_over_the_limit_is_no_toobig_without_continuation(self):
        """RFC 7889 (APPENDLIMIT) / RFC 4469 §5: refuse before the client sends the message."""
        reading = _Reading(append_limit=10)
        self.assertEqual(
            reading.feed(b"a1 APPEND INBOX {11}\r\n"),
            [("error", "a1", "Message too big", "TOOBIG")],
        )
        self.assertEqual(reading.feed(b"a2 NOOP\r\n"), [("command", [b"a2 NOOP"])])
        self.assertEqual(reading.sinks, [])

    def test_append_over_the_limit_with_literal_plus_skips_the_message(self):
        reading = _Reading(append_limit=10)
        events = reading.feed(b"a1 APPEND INBOX {22+}\r\na9 LOGOUT\r\na8 LOGOUT\r\n\r\na2 NOOP\r\n")
        self.assertEqual(
            events, [("error", "a1", "Message too big", "TOOBIG"), ("command", [b"a2 NOOP"])]
        )

    def test_reset_forgets_what_is_buffered_and_aborts_a_message(self):
        """For STARTTLS (RFC 3501 §6.2.1): nothing received before it may count after it."""
        reading = _Reading()
        reading.feed(b"a1 APPEND INBOX {11+}\r\nHello")
        (sink,) = reading.sinks
        reading.reader.buffer += b"a2 NOOP"
        reading.reader.reset()
        self.assertTrue(sink.aborted)
        self.assertEqual(reading.feed(b"a3 NOOP\r\n"), [("command", [b"a3 NOOP"])])


# -- server.py ----------------------------------------------------------------------------

PRE_LOGIN_CAPS = b"IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE"
POST_LOGIN_CAPS = (
    PRE_LOGIN_CAPS + b" NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN SPECIAL-USE CONDSTORE QUOTA"
    b" QUOTA=RES-STORAGE APPENDLIMIT=2147483648"
)
LOGGED_IN = b"OK [CAPABILITY " + POST_LOGIN_CAPS + b"] Logged in"
PLAIN = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
WRONG_LOGIN = f"LOGIN {ALICE} wrong-password\r\n".encode()


class _ServerTestCase(TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.world = yield started_world(self)
        self.clock = Clock()

    def connect(self, service: str = "imap", peer=LOOPBACK, factory=None, **settings) -> Session:
        factory = factory or self.world.factory(service, clock=self.clock, **settings)
        session = Session(factory, peer)
        self.addCleanup(session.protocol.connectionLost, None)
        return session

    @inlineCallbacks
    def logged_in(self, **settings):
        session = self.connect(**settings)
        session.take()
        yield session.login()
        return session


class GreetingTests(_ServerTestCase):
    def test_the_greeting_offers_starttls_and_plain_on_loopback(self):
        session = self.connect(peer=LOOPBACK)
        self.assertEqual(
            session.take(),
            [
                b"* OK [CAPABILITY " + PRE_LOGIN_CAPS + b" STARTTLS AUTH=PLAIN]"
                b" mail.example.test IMAP4rev1 ready"
            ],
        )

    def test_the_greeting_says_logindisabled_to_a_remote_peer_without_tls(self):
        """RFC 3501 §6.2.3, RFC 8314 §4: no passwords in the clear from the network."""
        session = self.connect(peer=REMOTE)
        self.assertEqual(
            session.take(),
            [
                b"* OK [CAPABILITY " + PRE_LOGIN_CAPS + b" STARTTLS LOGINDISABLED]"
                b" mail.example.test IMAP4rev1 ready"
            ],
        )

    def test_implicit_tls_offers_plain_to_a_remote_peer_and_no_starttls(self):
        session = self.connect("imaps", peer=REMOTE)
        self.assertEqual(
            session.take(),
            [
                b"* OK [CAPABILITY "
                + PRE_LOGIN_CAPS
                + b" AUTH=PLAIN] mail.example.test IMAP4rev1 ready"
            ],
        )

    def test_ipv6_loopback_is_loopback(self):
        session = self.connect(peer=IPv6Address("TCP", "::1", 40000))
        self.assertIn(b" AUTH=PLAIN] ", session.take()[0])

    def test_an_ipv4_loopback_client_of_a_dual_stack_listener_is_loopback(self):
        """A ``tcp6:`` listener reports IPv4 clients as ``::ffff:a.b.c.d`` (as throttle.py
        knows); 127.0.0.1 seen that way is still this box."""
        session = self.connect(peer=IPv6Address("TCP", "::ffff:127.0.0.1", 40000))
        self.assertIn(b" AUTH=PLAIN] ", session.take()[0])

    def test_the_session_registers_a_streaming_producer(self):
        session = self.connect()
        self.assertIs(session.transport.producer, session.protocol.out)
        self.assertTrue(session.transport.streaming)

    @inlineCallbacks
    def test_capability_after_login_lists_the_extensions(self):
        session = yield self.logged_in()
        self.assertEqual(
            session.send(b"a1 CAPABILITY\r\n"),
            [b"* CAPABILITY " + POST_LOGIN_CAPS, b"a1 OK CAPABILITY completed"],
        )


class PlaintextLoginTests(_ServerTestCase):
    def test_login_from_a_remote_peer_without_tls_is_privacyrequired(self):
        session = self.connect(peer=REMOTE)
        session.take()
        self.assertEqual(
            session.send(f'a1 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode()),
            [b"a1 NO [PRIVACYREQUIRED] Log in after STARTTLS"],
        )
        self.assertEqual(self.world.portal.attempts, 0)

    def test_authenticate_from_a_remote_peer_without_tls_is_privacyrequired(self):
        session = self.connect(peer=REMOTE)
        session.take()
        self.assertEqual(
            session.send(b"a1 AUTHENTICATE PLAIN " + PLAIN + b"\r\n"),
            [b"a1 NO [PRIVACYREQUIRED] Authenticate after STARTTLS"],
        )
        self.assertEqual(self.world.portal.attempts, 0)

    @inlineCallbacks
    def test_login_over_implicit_tls_from_a_remote_peer_works(self):
        session = self.connect("imaps", peer=REMOTE)
        session.take()
        lines = yield session.command(f'a1 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode())
        self.assertEqual(lines, [b"a1 " + LOGGED_IN])


class StartTLSTests(_ServerTestCase):
    def test_starttls_starts_tls_and_drops_pipelined_plaintext(self):
        """RFC 3501 §6.2.1, RFC 2595 §3.1: what follows STARTTLS in the same packet is an
        injection attempt; it must not be executed after the handshake."""
        session = self.connect(peer=REMOTE)
        session.take()
        lines = session.send(
            b"a1 STARTTLS\r\n"
            + f'a2 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode()
            + b"a3 CAPABILITY\r\na4 APPEND INBOX {5+}\r\nHel"
        )
        self.assertEqual(lines, [b"a1 OK Begin TLS negotiation now"])
        self.assertEqual(session.transport.tls_contexts, [TLS_CONTEXT])
        self.assertEqual(self.world.portal.attempts, 0)
        # The next command (in TLS now) is read from a clean start.
        self.assertEqual(
            session.send(b"b1 CAPABILITY\r\n"),
            [b"* CAPABILITY " + PRE_LOGIN_CAPS + b" AUTH=PLAIN", b"b1 OK CAPABILITY completed"],
        )

    @inlineCallbacks
    def test_login_works_after_starttls(self):
        session = self.connect(peer=REMOTE)
        session.send(b"a1 STARTTLS\r\n")
        lines = yield session.command(f'a2 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode())
        self.assertEqual(lines, [b"a2 " + LOGGED_IN])

    def test_starttls_twice_is_bad(self):
        session = self.connect(peer=REMOTE)
        session.send(b"a1 STARTTLS\r\n")
        self.assertEqual(session.send(b"a2 STARTTLS\r\n"), [b"a2 BAD TLS is already active"])
        self.assertEqual(len(session.transport.tls_contexts), 1)

    def test_starttls_on_implicit_tls_is_bad(self):
        session = self.connect("imaps", peer=REMOTE)
        session.take()
        self.assertEqual(session.send(b"a1 STARTTLS\r\n"), [b"a1 BAD TLS is already active"])
        self.assertEqual(session.transport.tls_contexts, [])


class LoginThrottleTests(_ServerTestCase):
    def throttled(self, **throttle):
        # a login timeout longer than the lockout, so the session outlives the lock
        return self.connect(throttle=ThrottleSettings(**throttle), login_timeout=3600)

    @inlineCallbacks
    def until_throttled(self, session, calls: int):
        """Wait for the password check to end and the failure's delay to start on the Clock
        (the session's timeout is the other delayed call)."""
        yield spin_until(
            lambda: len(self.clock.getDelayedCalls()) == calls, what="the failure delay"
        )

    @inlineCallbacks
    def test_a_failed_login_is_answered_after_the_throttle_delay(self):
        session = self.throttled(delay=1.0, max_delay=30.0)
        session.take()
        session.send(b"a1 " + WRONG_LOGIN)
        yield self.until_throttled(session, 2)
        self.assertEqual(session.take(), [])
        self.clock.advance(0.999)
        self.assertEqual(session.take(), [])
        self.clock.advance(0.001)
        self.assertEqual(session.take(), [b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"])
        # The second failure waits twice as long.
        session.send(b"a2 " + WRONG_LOGIN)
        yield self.until_throttled(session, 2)
        self.clock.advance(1.999)
        self.assertEqual(session.take(), [])
        self.clock.advance(0.001)
        self.assertEqual(session.take(), [b"a2 NO [AUTHENTICATIONFAILED] Authentication failed"])
        self.assertEqual(self.world.portal.attempts, 2)

    @inlineCallbacks
    def test_a_locked_out_client_gets_unavailable_without_a_password_check(self):
        session = self.throttled(delay=0.0, lockout_after=2, lockout_time=900.0)
        session.take()
        for tag in (b"a1", b"a2"):
            lines = yield session.command(tag + b" " + WRONG_LOGIN)
            self.assertEqual(lines, [tag + b" NO [AUTHENTICATIONFAILED] Authentication failed"])
        # Locked now: even the right password is refused, and never checked.
        self.assertEqual(
            session.send(f'a3 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode()),
            [b"a3 NO [UNAVAILABLE] Too many failed logins, try again later"],
        )
        self.assertEqual(
            session.send(b"a4 AUTHENTICATE PLAIN " + PLAIN + b"\r\n"),
            [b"a4 NO [UNAVAILABLE] Too many failed logins, try again later"],
        )
        self.assertEqual(self.world.portal.attempts, 2)
        # The lock ends after lockout_time.
        self.clock.advance(900)
        lines = yield session.command(f'a5 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode())
        self.assertEqual(lines, [b"a5 " + LOGGED_IN])

    @inlineCallbacks
    def test_a_lockout_applies_to_other_connections_from_the_same_ip(self):
        factory = self.world.factory(
            clock=self.clock, throttle=ThrottleSettings(delay=0.0, lockout_after=1)
        )
        first = self.connect(factory=factory, peer=REMOTE)
        first.send(b"a1 STARTTLS\r\n")
        yield first.command(b"a2 " + WRONG_LOGIN)
        second = self.connect(factory=factory, peer=REMOTE)
        second.send(b"b1 STARTTLS\r\n")
        self.assertEqual(
            second.send(f'b2 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode()),
            [b"b2 NO [UNAVAILABLE] Too many failed logins, try again later"],
        )


class AuthenticateTests(_ServerTestCase):
    @inlineCallbacks
    def test_authenticate_plain_with_a_continuation(self):
        """RFC 3501 §6.2.2: an empty challenge "+ ", then the client's base64 response."""
        session = self.connect()
        session.take()
        self.assertEqual(session.send(b"a1 AUTHENTICATE PLAIN\r\n"), [b"+ "])
        lines = yield session.command(PLAIN + b"\r\n", tag=b"a1")
        self.assertEqual(lines, [b"a1 " + LOGGED_IN])

    @inlineCallbacks
    def test_authenticate_plain_with_an_initial_response(self):
        """RFC 4959 (SASL-IR): no continuation at all."""
        session = self.connect()
        session.take()
        lines = yield session.command(b"a1 AUTHENTICATE PLAIN " + PLAIN + b"\r\n")
        self.assertEqual(lines, [b"a1 " + LOGGED_IN])

    @inlineCallbacks
    def test_authenticate_with_the_response_pipelined(self):
        session = self.connect()
        session.take()
        lines = yield session.command(b"a1 AUTHENTICATE PLAIN\r\n" + PLAIN + b"\r\n")
        self.assertEqual(lines, [b"+ ", b"a1 " + LOGGED_IN])

    def test_a_star_aborts_authenticate_with_bad(self):
        session = self.connect()
        session.take()
        session.send(b"a1 AUTHENTICATE PLAIN\r\n")
        self.assertEqual(session.send(b"*\r\n"), [b"a1 BAD Authentication aborted"])
        self.assertEqual(session.send(b"a2 NOOP\r\n"), [b"a2 OK NOOP completed"])
        self.assertEqual(self.world.portal.attempts, 0)

    def test_a_response_that_is_not_base64_is_bad(self):
        session = self.connect()
        session.take()
        session.send(b"a1 AUTHENTICATE PLAIN\r\n")
        self.assertEqual(session.send(b"not base64!\r\n"), [b"a1 BAD Cannot decode the response"])

    def test_a_malformed_plain_message_fails(self):
        session = self.connect()
        session.take()
        no_password = base64.b64encode(f"\0{ALICE}".encode())
        self.assertEqual(
            session.send(b"a1 AUTHENTICATE PLAIN " + no_password + b"\r\n"),
            [b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"],
        )

    def test_an_unknown_mechanism_is_refused(self):
        session = self.connect()
        session.take()
        self.assertEqual(
            session.send(b"a1 AUTHENTICATE CRAM-MD5\r\n"),
            [b"a1 NO [CANNOT] Unsupported authentication mechanism"],
        )

    @inlineCallbacks
    def test_a_wrong_password_fails(self):
        session = self.connect(throttle=ThrottleSettings(delay=0.0))
        session.take()
        wrong = base64.b64encode(f"\0{ALICE}\0nope".encode())
        lines = yield session.command(b"a1 AUTHENTICATE PLAIN " + wrong + b"\r\n")
        self.assertEqual(lines, [b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"])


class IdleTests(_ServerTestCase):
    @inlineCallbacks
    def test_done_ends_idle_with_ok(self):
        """RFC 2177."""
        session = yield self.logged_in()
        self.assertEqual(session.send(b"a1 IDLE\r\n"), [b"+ idling"])
        self.assertEqual(session.send(b"DONE\r\n"), [b"a1 OK IDLE terminated"])
        self.assertEqual(session.send(b"a2 NOOP\r\n"), [b"a2 OK NOOP completed"])

    @inlineCallbacks
    def test_done_is_case_insensitive_and_may_come_in_pieces(self):
        session = yield self.logged_in()
        session.send(b"a1 IDLE\r\n")
        self.assertEqual(session.send(b"do"), [])
        self.assertEqual(session.send(b"ne\r\n"), [b"a1 OK IDLE terminated"])

    @inlineCallbacks
    def test_any_other_line_ends_idle_with_bad(self):
        session = yield self.logged_in()
        session.send(b"a1 IDLE\r\n")
        self.assertEqual(session.send(b"a2 NOOP\r\n"), [b"a1 BAD Expected DONE"])
        self.assertEqual(session.send(b"a3 NOOP\r\n"), [b"a3 OK NOOP completed"])

    @inlineCallbacks
    def test_idle_and_done_in_one_packet(self):
        session = yield self.logged_in()
        self.assertEqual(
            session.send(b"a1 IDLE\r\nDONE\r\na2 NOOP\r\n"),
            [b"+ idling", b"a1 OK IDLE terminated", b"a2 OK NOOP completed"],
        )

    @inlineCallbacks
    def test_a_delivery_during_idle_is_reported(self):
        session = yield self.logged_in()
        lines = yield session.command(b"s1 SELECT INBOX\r\n")
        self.assertIn(b"* 0 EXISTS", lines)
        yield session.command(b"a1 IDLE\r\n", tag=b"+")
        ref = yield self.world.store.blobs.put(b"Subject: hi\r\n\r\nhello\r\n")
        yield self.world.store.deliver(ref, [(self.world.account_id, "INBOX")])
        lines = yield session.until_line(b"* 1 RECENT")
        self.assertEqual(lines, [b"* 1 EXISTS", b"* 1 RECENT"])
        self.assertEqual(session.send(b"DONE\r\n"), [b"a1 OK IDLE terminated"])

    @inlineCallbacks
    def test_an_expunge_seen_during_idle_is_not_sent_during_the_next_fetch(self):
        """RFC 3501 §7.4.1: no EXPUNGE while a FETCH is answered, nor with no command in
        progress.  An update that began during IDLE must be finished inside it, or wait."""
        session = yield self.logged_in()
        store, account_id = self.world.store, self.world.account_id
        for n in (1, 2):
            ref = yield store.blobs.put(b"Subject: %d\r\n\r\nbody\r\n" % n)
            yield store.deliver(ref, [(account_id, "INBOX")])
        protocol = session.protocol
        notified = protocol._changed
        after_expunge: list[bool] = []

        def changed(*args):
            """The store says the mailbox changed: the session starts its update (a store
            read on a thread) and, before that read is back, the client ends IDLE and
            sends a FETCH."""
            notified(*args)
            if protocol._idle is not None and after_expunge:
                after_expunge.clear()
                protocol.dataReceived(b"DONE\r\na2 FETCH 1:* (FLAGS)\r\n")

        protocol._changed = changed  # before SELECT, which registers it with the store
        yield session.command(b"s1 SELECT INBOX\r\n")
        mailbox_id = protocol.selected.id
        yield store.store_flags(mailbox_id, [1], "+", ["\\Deleted"])
        lines = yield session.command(b"n1 NOOP\r\n")
        self.assertEqual(
            lines, [b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))", b"n1 OK NOOP completed"]
        )
        self.assertEqual(session.send(b"a1 IDLE\r\n"), [b"+ idling"])
        after_expunge.append(True)
        yield store.expunge(mailbox_id)
        lines = yield session.until_line(b"a2 ")
        yield spin_until(lambda: not protocol._refreshing, what="the update to end")
        lines += session.take()
        before_a3 = len(lines)
        lines += yield session.command(b"a3 NOOP\r\n")  # EXPUNGE may be sent here
        self.assertEqual(lines.count(b"* 1 EXPUNGE"), 1, lines)
        during = lines[lines.index(b"a1 OK IDLE terminated") : before_a3]
        self.assertNotIn(b"* 1 EXPUNGE", during, lines)


class TimeoutTests(_ServerTestCase):
    def test_a_client_that_does_not_log_in_is_dropped_after_the_login_timeout(self):
        session = self.connect(login_timeout=60)
        session.take()
        self.clock.advance(59.9)
        self.assertFalse(session.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertEqual(session.take(), [b"* BYE Autologout; idle for too long"])
        self.assertTrue(session.transport.disconnecting)
        self.assertIsNone(session.transport.producer)  # unregistered, so the close happens

    def test_the_login_timeout_counts_from_the_connection(self):
        """config.IMAPConfig.login_timeout: "Seconds a client has to log in after connecting";
        NOOPs do not buy an unauthenticated client more time."""
        session = self.connect(login_timeout=60)
        session.take()
        self.clock.advance(50)
        session.send(b"a1 NOOP\r\n")
        self.clock.advance(50)
        self.assertEqual(session.take(), [b"* BYE Autologout; idle for too long"])
        self.assertTrue(session.transport.disconnecting)

    @inlineCallbacks
    def test_a_logged_in_client_is_dropped_after_30_idle_minutes(self):
        """RFC 3501 §5.4: the autologout timer is at least 30 minutes."""
        session = yield self.logged_in(login_timeout=60)
        self.clock.advance(60)
        self.assertEqual(session.take(), [])
        session.send(b"a1 NOOP\r\n")
        self.clock.advance(1799)
        self.assertEqual(session.take(), [])
        self.assertFalse(session.transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(session.take(), [b"* BYE Autologout; idle for too long"])
        self.assertTrue(session.transport.disconnecting)

    @inlineCallbacks
    def test_idle_is_ended_by_the_autologout_timer(self):
        session = yield self.logged_in()
        session.send(b"a1 IDLE\r\n")
        self.clock.advance(1800)
        self.assertEqual(session.take(), [b"* BYE Autologout; idle for too long"])
        self.assertTrue(session.transport.disconnecting)


class StateTests(_ServerTestCase):
    def test_select_before_login_is_bad(self):
        session = self.connect()
        session.take()
        self.assertEqual(session.send(b"a1 SELECT INBOX\r\n"), [b"a1 BAD Log in first"])
        self.assertEqual(session.send(b"a2 FETCH 1 FLAGS\r\n"), [b"a2 BAD Log in first"])
        self.assertEqual(session.send(b"a3 IDLE\r\n"), [b"a3 BAD Log in first"])

    @inlineCallbacks
    def test_fetch_without_a_selected_mailbox_is_bad(self):
        session = yield self.logged_in()
        self.assertEqual(session.send(b"a1 FETCH 1 FLAGS\r\n"), [b"a1 BAD No mailbox selected"])
        self.assertEqual(session.send(b"a2 EXPUNGE\r\n"), [b"a2 BAD No mailbox selected"])

    @inlineCallbacks
    def test_login_after_login_is_bad(self):
        session = yield self.logged_in()
        self.assertEqual(
            session.send(f'a1 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode()),
            [b"a1 BAD Not allowed now"],
        )
        self.assertEqual(session.send(b"a2 STARTTLS\r\n"), [b"a2 BAD Not allowed now"])

    def test_an_unknown_command_is_bad(self):
        session = self.connect()
        session.take()
        self.assertEqual(session.send(b"a1 FROBNICATE\r\n"), [b"a1 BAD unknown command"])

    def test_a_too_long_line_is_bad_and_the_session_goes_on(self):
        session = self.connect(max_line=100)
        session.take()
        self.assertEqual(
            session.send(b"a1 NOOP " + b"x" * 300 + b"\r\na2 NOOP\r\n"),
            [b"a1 BAD Command line too long", b"a2 OK NOOP completed"],
        )

    def test_a_synchronising_literal_gets_a_continuation(self):
        session = self.connect()
        session.take()
        self.assertEqual(session.send(b"a1 ID {4}\r\n"), [b"+ Ready for literal data"])

    def test_append_before_login_is_refused_without_continuation(self):
        session = self.connect()
        session.take()
        self.assertEqual(
            session.send(b"a1 APPEND INBOX {5}\r\na2 NOOP\r\n"),
            [b"a1 BAD Log in first", b"a2 OK NOOP completed"],
        )

    @inlineCallbacks
    def test_append_over_the_limit_is_toobig_without_continuation(self):
        session = yield self.logged_in(append_limit=1000)
        self.assertEqual(
            session.send(b"a1 APPEND INBOX {1001}\r\na2 NOOP\r\n"),
            [b"a1 NO [TOOBIG] Message too big (limit 1000 bytes)", b"a2 OK NOOP completed"],
        )

    @inlineCallbacks
    def test_append_streams_the_message_into_the_mailbox(self):
        session = yield self.logged_in()
        message = b"Subject: appended\r\n\r\nbody\r\n"
        self.assertEqual(
            session.send(b"a1 APPEND INBOX (\\Seen) {%d}\r\n" % len(message)),
            [b"+ Ready for literal data"],
        )
        lines = yield session.command(message + b"\r\n", tag=b"a1")
        status = yield self.world.store.mailbox_status(self.world.account_id, "INBOX")
        self.assertEqual(
            lines, [b"a1 OK [APPENDUID %d 1] APPEND completed" % status["uidvalidity"]]
        )
        self.assertEqual((status["messages"], status["unseen"]), (1, 0))


class ConnectionLimitTests(_ServerTestCase):
    def test_a_refused_connection_gets_bye_unavailable_and_is_closed(self):
        factory = self.world.factory(clock=self.clock, limiter=ConnectionLimiter(1, 1))
        first = self.connect(factory=factory)
        self.assertEqual(len(first.take()), 1)
        second = Session(factory, LOOPBACK)
        self.assertEqual(second.take(), [b"* BYE [UNAVAILABLE] Too many connections, try later"])
        self.assertTrue(second.transport.disconnecting)
        self.assertIsNone(second.transport.producer)
        self.assertEqual(second.send(b"a1 CAPABILITY\r\n"), [])  # nothing more is read
        # The refused connection's end does not free the first one's slot ...
        second.protocol.connectionLost(None)
        third = Session(factory, LOOPBACK)
        self.assertTrue(third.transport.disconnecting)
        third.protocol.connectionLost(None)
        # ... the first one's end does.
        first.protocol.connectionLost(None)
        fourth = self.connect(factory=factory)
        self.assertFalse(fourth.transport.disconnecting)
        self.assertTrue(fourth.take()[0].startswith(b"* OK [CAPABILITY "))


class LogoutTests(_ServerTestCase):
    def test_logout_says_bye_then_ok_and_closes(self):
        session = self.connect()
        session.take()
        self.assertEqual(
            session.send(b"a1 LOGOUT\r\na2 NOOP\r\n"),
            [b"* BYE Logging out", b"a1 OK LOGOUT completed"],
        )
        self.assertTrue(session.transport.disconnecting)
        self.assertIsNone(session.transport.producer)
        self.assertEqual(session.send(b"a3 NOOP\r\n"), [])

    @inlineCallbacks
    def test_logout_when_logged_in(self):
        session = yield self.logged_in()
        self.assertEqual(
            session.send(b"a1 LOGOUT\r\n"), [b"* BYE Logging out", b"a1 OK LOGOUT completed"]
        )
        self.assertTrue(session.transport.disconnecting)
