"""A controllable ESMTP receiving server on loopback: where outbound delivery tests send mail.

The sink runs in-process on the reactor.  ``Sink.behaviour`` says how it answers (refusals,
STARTTLS, AUTH, a slow server, a mid-DATA drop) and is read at every command, so a test can
flip it at any time; a new ``SinkBehaviour`` or a changed field applies from the next command
on, open connections included.  What arrived is in ``messages``; ``wait_for`` waits for it.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import hashlib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from twisted.internet import defer, protocol, ssl
from twisted.internet.interfaces import IListeningPort
from twisted.protocols.basic import LineReceiver

DEFAULT_EXTENSIONS = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE 0")

_MAIL = re.compile(r"MAIL FROM:\s*<([^>]*)>\s*(.*)$", re.IGNORECASE)
_RCPT = re.compile(r"RCPT TO:\s*<([^>]*)>\s*(.*)$", re.IGNORECASE)
_DOT_LINE = b"\r\n."


@dataclass
class SinkBehaviour:
    """How the sink answers; every reply is a ``(code, "x.y.z text")`` pair."""

    extensions: list[str] = field(default_factory=lambda: list(DEFAULT_EXTENSIONS))
    #: Server TLS options; STARTTLS is offered (outside TLS) when set.
    tls: Any = None
    #: MAIL before STARTTLS is 530 5.7.0 (RFC 3207 section 4).
    require_tls: bool = False
    #: user -> password.  When set, AUTH PLAIN/LOGIN is offered and MAIL needs it (530 5.7.0).
    auth: dict[str, str] | None = None
    #: (554, ...) refuses the session (503 to all but QUIT); (421, ...) closes it at once.
    greeting: tuple[int, str] = (220, "sink ESMTP")
    mail_reply: tuple[int, str] | None = None
    #: By lower-cased address; others get 250 2.1.5.
    rcpt_replies: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: The reply after the final dot; a non-2xx one puts the message in ``Sink.refused``.
    data_reply: tuple[int, str] | None = None
    #: Seconds before every reply, greeting included; replies are serial, as from a slow server.
    delay: float = 0.0
    #: Abort the connection (no reply) once this many DATA content bytes arrived.
    drop_after_bytes: int | None = None
    #: False keeps only size and sha256 of each message (big messages, benchmarks).
    keep_content: bool = True


@dataclass
class ReceivedMessage:
    """One message as the sink got it; ``data`` is un-dot-stuffed, without the final dot."""

    sender: str
    recipients: list[str]
    data: bytes | None
    size: int
    sha256: str
    tls: bool
    auth_user: str | None
    helo: str
    peer: tuple[str, int]
    #: The address the client connected to (which of several listening interfaces).
    local: tuple[str, int]
    #: Serial number of the TCP connection, to count connection reuse.
    connection: int
    esmtp_params: dict[str, str | None] = field(default_factory=dict)


class _DataReader:
    """Finds the end of DATA content across chunks, removing dot-stuffing (RFC 5321 4.5.2).

    Only ``\\r\\n.`` sequences are examined (with ``bytes.find``), so big messages cost a copy
    and a hash per chunk.  ``_held`` keeps the bytes that cannot be judged yet; its first
    ``_context`` bytes are a line end already passed on (or the virtual one before the first
    line), kept only so that a dot after it is seen at the start of a line.
    """

    def __init__(self, keep: bool):
        self.digest = hashlib.sha256()
        self.size = 0
        self.received = 0
        self._pieces: list[bytes] | None = [] if keep else None
        self._held = b"\r\n"
        self._context = 2

    def _emit(self, piece: bytes) -> None:
        if piece:
            self.digest.update(piece)
            self.size += len(piece)
            if self._pieces is not None:
                self._pieces.append(piece)

    @property
    def data(self) -> bytes | None:
        return None if self._pieces is None else b"".join(self._pieces)

    def feed(self, chunk: bytes) -> bytes | None:
        """Take content; at the terminator return what follows it (maybe b""), else None."""
        self.received += len(chunk)
        buf = self._held + chunk
        start, search = self._context, 0
        while True:
            i = buf.find(_DOT_LINE, search)
            if i < 0:
                break
            if len(buf) < i + 5:  # cannot tell ".\r\n" from a stuffed dot yet
                self._emit(buf[start : i + 2])
                self._held, self._context = buf[i:], 2
                return None
            self._emit(buf[start : i + 2])
            if buf[i + 3 : i + 5] == b"\r\n":
                return buf[i + 5 :]
            start = search = i + 3  # drop the stuffed dot
        if buf.endswith(b"\r\n"):
            self._emit(buf[start:])
            self._held, self._context = b"\r\n", 2
        elif buf.endswith(b"\r"):
            self._emit(buf[start:-1])
            self._held, self._context = b"\r", 0
        else:
            self._emit(buf[start:])
            self._held, self._context = b"", 0
        return None


class _SinkProtocol(LineReceiver):
    """One SMTP session; see ``SinkBehaviour`` for what it can be told to do."""

    MAX_LENGTH = 16384

    def __init__(self, sink: Sink, serial: int):
        self.sink = sink
        self.serial = serial
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._queue: list[tuple[float, bytes, Callable[[], None] | None]] = []
        self._timer: Any = None
        self._last_due = 0.0
        self._tls = False
        self._refusing = False
        self._discarding = False
        self._closing = False
        self._helo = ""
        self._auth_user: str | None = None
        self._auth_step: str | None = None  # "PLAIN", "LOGIN-USER" or "LOGIN-PASS"
        self._login_user = ""
        self._reader: _DataReader | None = None
        self._reset()

    @property
    def behaviour(self) -> SinkBehaviour:
        return self.sink.behaviour

    def _reset(self) -> None:
        self._sender: str | None = None
        self._params: dict[str, str | None] = {}
        self._recipients: list[str] = []

    # Replies: queued so that a delay keeps them in order.

    def _reply(self, code: int, text: str, then: Callable[[], None] | None = None) -> None:
        lines = text.split("\n")
        out = "".join(f"{code}-{line}\r\n" for line in lines[:-1]) + f"{code} {lines[-1]}\r\n"
        delay = self.behaviour.delay
        if delay <= 0 and not self._queue:
            self._send(out.encode(), then)
            return
        now = self.sink.reactor.seconds()
        self._last_due = max(now, self._last_due) + delay
        self._queue.append((self._last_due, out.encode(), then))
        if self._timer is None:
            self._schedule()

    def _schedule(self) -> None:
        if self._queue:
            wait = max(0.0, self._queue[0][0] - self.sink.reactor.seconds())
            self._timer = self.sink.reactor.callLater(wait, self._flush)

    def _flush(self) -> None:
        self._timer = None
        now = self.sink.reactor.seconds()
        while self._queue and self._queue[0][0] <= now and self.transport is not None:
            _, out, then = self._queue.pop(0)
            self._send(out, then)
        self._schedule()

    def _send(self, out: bytes, then: Callable[[], None] | None) -> None:
        self.transport.write(out)
        if then is not None:
            then()

    def _close(self) -> None:
        self._queue.clear()
        self.transport.loseConnection()

    # Connection events.

    def connectionMade(self) -> None:
        peer, host = self.transport.getPeer(), self.transport.getHost()
        self.peer = (peer.host, peer.port)
        self.local = (host.host, host.port)
        self.sink._open.add(self)
        self.sink.most_open = max(self.sink.most_open, len(self.sink._open))
        code, text = self.behaviour.greeting
        if code == 421:
            self._closing = True
            self._reply(code, text, self._close)
            return
        self._refusing = code >= 400
        self._reply(code, text)

    def connectionLost(self, reason: Any = None) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._queue.clear()
        self.sink._open.discard(self)
        self.lost.callback(None)

    # Commands.

    def lineReceived(self, line: bytes) -> None:
        if self._discarding or self._closing:
            return
        text = line.decode("utf-8", "replace")
        if self._auth_step is not None:
            self._auth_continue(text)
            return
        self.sink.commands.append(text)
        verb = text.split(" ", 1)[0].upper()
        if self._refusing and verb != "QUIT":
            self._reply(503, "5.5.1 No valid session, only QUIT")
            return
        handler = getattr(self, f"smtp_{verb}", None)
        if handler is None or not verb.isalpha():
            self._reply(500, "5.5.2 Command unrecognized")
            return
        handler(text[len(verb) :].strip())

    def smtp_HELO(self, arg: str) -> None:
        if not arg:
            self._reply(501, "5.5.4 HELO needs a domain")
            return
        self._helo = arg
        self._reset()
        self._reply(250, "sink")

    def smtp_EHLO(self, arg: str) -> None:
        if not arg:
            self._reply(501, "5.5.4 EHLO needs a domain")
            return
        self._helo = arg
        self._reset()
        b = self.behaviour
        extensions = list(b.extensions)
        if b.tls is not None and not self._tls:
            extensions.append("STARTTLS")
        if b.auth is not None:
            extensions.append("AUTH PLAIN LOGIN")
        self._reply(250, "\n".join([f"sink greets {arg}", *extensions]))

    def smtp_NOOP(self, arg: str) -> None:
        self._reply(250, "2.0.0 Ok")

    def smtp_RSET(self, arg: str) -> None:
        self._reset()
        self._reply(250, "2.0.0 Ok")

    def smtp_QUIT(self, arg: str) -> None:
        self._closing = True
        self._reply(221, "2.0.0 Bye", self._close)

    def smtp_STARTTLS(self, arg: str) -> None:
        """RFC 3207: 220, then TLS; pipelined plaintext behind the command is discarded."""
        tls = self.behaviour.tls
        if tls is None or self._tls:
            self._reply(502 if tls is None else 503, "5.5.1 STARTTLS not available")
            return
        self._discarding = True
        self.clearLineBuffer()

        def start() -> None:
            self.clearLineBuffer()
            self.transport.startTLS(tls)
            self._tls, self._discarding = True, False
            self._helo, self._auth_user = "", None
            self._reset()

        self._reply(220, "2.0.0 Ready to start TLS", start)

    def smtp_AUTH(self, arg: str) -> None:
        """RFC 4954 with PLAIN (RFC 4616) and LOGIN, initial response or continuation."""
        if self.behaviour.auth is None:
            self._reply(502, "5.5.1 AUTH not available")
            return
        if not self._helo or self._auth_user is not None or self._sender is not None:
            self._reply(503, "5.5.1 AUTH not allowed now")
            return
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            self._reply(504, "5.5.4 Unrecognized authentication type")
            return
        if mechanism == "LOGIN":
            self._auth_step = "LOGIN-USER"
            if initial:
                self._auth_continue(initial)
            else:
                self._reply(334, "VXNlcm5hbWU6")
            return
        self._auth_step = "PLAIN"
        if initial:
            self._auth_continue(initial)
        else:
            self._reply(334, "")

    def _auth_continue(self, text: str) -> None:
        step, self._auth_step = self._auth_step, None
        if text.strip() == "*":
            self._reply(501, "5.7.0 Authentication cancelled")
            return
        try:
            decoded = b"" if text.strip() == "=" else base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self._reply(501, "5.5.2 Cannot decode response")
            return
        if step == "LOGIN-USER":
            self._login_user = decoded.decode("utf-8", "replace")
            self._auth_step = "LOGIN-PASS"
            self._reply(334, "UGFzc3dvcmQ6")
            return
        if step == "LOGIN-PASS":
            user, password = self._login_user, decoded.decode("utf-8", "replace")
        else:
            parts = decoded.split(b"\0")
            if len(parts) != 3:
                self._reply(501, "5.5.2 Malformed PLAIN response")
                return
            user, password = (p.decode("utf-8", "replace") for p in parts[1:])
        if self.behaviour.auth.get(user) != password:
            self._reply(535, "5.7.8 Authentication credentials invalid")
            return
        self._auth_user = user
        self._reply(235, "2.7.0 Authentication successful")

    def smtp_MAIL(self, arg: str) -> None:
        b = self.behaviour
        m = _MAIL.match(f"MAIL {arg}")
        if not self._helo:
            self._reply(503, "5.5.1 EHLO first")
        elif self._sender is not None:
            self._reply(503, "5.5.1 Nested MAIL command")
        elif m is None:
            self._reply(501, "5.5.4 Syntax: MAIL FROM:<address>")
        elif b.require_tls and not self._tls:
            self._reply(530, "5.7.0 Must issue a STARTTLS command first")
        elif b.auth is not None and self._auth_user is None:
            self._reply(530, "5.7.0 Authentication required")
        else:
            code, text = b.mail_reply or (250, "2.1.0 Ok")
            if 200 <= code < 300:
                self._sender = m.group(1)
                self._params = _params(m.group(2))
            self._reply(code, text)

    def smtp_RCPT(self, arg: str) -> None:
        m = _RCPT.match(f"RCPT {arg}")
        if self._sender is None:
            self._reply(503, "5.5.1 MAIL first")
        elif m is None:
            self._reply(501, "5.5.4 Syntax: RCPT TO:<address>")
        else:
            address = m.group(1)
            code, text = self.behaviour.rcpt_replies.get(address.lower(), (250, "2.1.5 Ok"))
            if 200 <= code < 300:
                self._recipients.append(address)
            self._reply(code, text)

    def smtp_DATA(self, arg: str) -> None:
        if self._sender is None:
            self._reply(503, "5.5.1 MAIL first")
        elif not self._recipients:
            self._reply(554, "5.5.1 No valid recipients")
        else:
            self._reader = _DataReader(self.behaviour.keep_content)
            self.setRawMode()
            self._reply(354, "End data with <CR><LF>.<CR><LF>")

    # Content.

    def rawDataReceived(self, data: bytes) -> None:
        reader = self._reader
        assert reader is not None
        rest = reader.feed(data)
        limit = self.behaviour.drop_after_bytes
        seen = reader.received if rest is None else reader.size
        if limit is not None and seen >= limit:
            self._closing = True
            self._queue.clear()
            self.transport.abortConnection()
            return
        if rest is None:
            return
        self._reader = None
        message = ReceivedMessage(
            sender=self._sender or "",
            recipients=list(self._recipients),
            data=reader.data,
            size=reader.size,
            sha256=reader.digest.hexdigest(),
            tls=self._tls,
            auth_user=self._auth_user,
            helo=self._helo,
            peer=self.peer,
            local=self.local,
            connection=self.serial,
            esmtp_params=self._params,
        )
        self._reset()
        code, text = self.behaviour.data_reply or (250, "2.0.0 Ok")
        if 200 <= code < 300:
            self._reply(code, text, lambda: self.sink._received(message))
        else:
            self._reply(code, text, lambda: self.sink.refused.append(message))
        self.setLineMode(rest)


def _params(text: str) -> dict[str, str | None]:
    """ESMTP parameters (``SIZE=10 BODY=8BITMIME SMTPUTF8``), keys upper-cased."""
    params: dict[str, str | None] = {}
    for word in text.split():
        key, eq, value = word.partition("=")
        params[key.upper()] = value if eq else None
    return params


class _SinkFactory(protocol.ServerFactory):
    def __init__(self, sink: Sink):
        self.sink = sink

    def buildProtocol(self, addr: Any) -> _SinkProtocol:
        self.sink.connections += 1
        return _SinkProtocol(self.sink, self.sink.connections)


class Sink:
    """An ESMTP server that keeps what it receives; listen with ``start``, end with ``stop``."""

    def __init__(self, behaviour: SinkBehaviour | None = None, reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.behaviour = behaviour or SinkBehaviour()
        self.messages: list[ReceivedMessage] = []
        self.refused: list[ReceivedMessage] = []
        self.commands: list[str] = []
        self.connections = 0
        #: The most connections open at once (concurrency limits).
        self.most_open = 0
        self._ports: list[IListeningPort] = []
        self._open: set[_SinkProtocol] = set()
        self._waiters: list[tuple[int, defer.Deferred[list[ReceivedMessage]]]] = []
        self._factory = _SinkFactory(self)

    def start(self, interface: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``interface``; call again to add interfaces (all of 127/8 is loopback)."""
        listening = self.reactor.listenTCP(port, self._factory, interface=interface)
        self._ports.append(listening)
        return listening.getHost().port

    @property
    def port(self) -> int:
        """The port of the first listener."""
        return self._ports[0].getHost().port

    def close_connections(self) -> defer.Deferred[None]:
        """Abort every open session; fires when all are gone."""
        lost = [p.lost for p in self._open]
        for p in list(self._open):
            p.transport.abortConnection()
        return defer.gatherResults(lost, consumeErrors=True).addCallback(lambda _: None)

    def stop(self) -> defer.Deferred[None]:
        """Stop listening, close open connections and cancel pending ``wait_for`` calls."""
        ports, self._ports = self._ports, []
        waits = [defer.maybeDeferred(p.stopListening) for p in ports]
        waits.append(self.close_connections())
        for _, d in list(self._waiters):
            d.cancel()
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    def _received(self, message: ReceivedMessage) -> None:
        self.messages.append(message)
        for waiter in list(self._waiters):
            count, d = waiter
            if len(self.messages) >= count:
                self._waiters.remove(waiter)
                d.callback(list(self.messages))

    def wait_for(self, count: int, timeout: float = 30) -> defer.Deferred[list[ReceivedMessage]]:
        """Fire with ``messages`` once there are ``count``; TimeoutError after ``timeout``."""
        if len(self.messages) >= count:
            return defer.succeed(list(self.messages))

        def cancel(d: defer.Deferred[list[ReceivedMessage]]) -> None:
            self._waiters[:] = [w for w in self._waiters if w[1] is not d]

        def timed_out(failure: Any) -> None:
            failure.trap(defer.TimeoutError)
            raise defer.TimeoutError(
                f"sink got {len(self.messages)} of {count} messages in {timeout}s"
            )

        d: defer.Deferred[list[ReceivedMessage]] = defer.Deferred(cancel)
        self._waiters.append((count, d))
        d.addTimeout(timeout, self.reactor)
        d.addErrback(timed_out)
        return d

    def by_recipient(self, address: str) -> list[ReceivedMessage]:
        """The messages that ``address`` (any case) was an accepted recipient of."""
        address = address.lower()
        return [m for m in self.messages if address in (r.lower() for r in m.recipients)]


@functools.cache
def _self_signed(hostname: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(hostname),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def sink_tls(hostname: str = "relay.test") -> ssl.CertificateOptions:
    """Server TLS options with a self-signed certificate for ``hostname``, localhost, 127.0.0.1.

    The certificate is made once per hostname; ``sink_tls_pem`` gives it to clients to trust.
    """
    cert_pem, key_pem = _self_signed(hostname)
    return ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(
            serialization.load_pem_private_key(key_pem, password=None)
        ),
        certificate=crypto.X509.from_cryptography(x509.load_pem_x509_certificate(cert_pem)),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


def sink_tls_pem(hostname: str = "relay.test") -> bytes:
    """The PEM certificate ``sink_tls(hostname)`` serves."""
    return _self_signed(hostname)[0]
