"""The ESMTP server (RFC 5321) for the MX and for message submission (RFC 6409).

Built on ``LineReceiver`` rather than ``twisted.mail.smtp.ESMTP``, which lacks SIZE, 8BITMIME,
SMTPUTF8 and CHUNKING, offers AUTH before TLS, keeps plaintext across STARTTLS, races
pipelined commands against its own lookups and fails every recipient when one fails.  What
this protocol guarantees:

- Pipelining (RFC 2920): commands are answered strictly in order.  While a command waits for
  the store, later commands stay in the line buffer unprocessed (reading stops only if a
  client sends more than ``_BACKLOG`` meanwhile), so no reply races another.
- STARTTLS (RFC 3207 §4.2): plaintext buffered behind the command is thrown away and the
  session starts over; AUTH is offered only under TLS (RFC 4954 §4).
- Content (DATA, and BDAT of RFC 3030) streams into the blob store as it arrives, with
  back-pressure; a ``250`` is sent only when the message and every local copy are durable.
"""

from __future__ import annotations

import re

from twisted.cred import error as cred_error
from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from mailbox_appliance import sasl
from mailbox_appliance.addresses import normalize_address, split_address
from mailbox_appliance.errors import InvalidAddress, disk_full
from mailbox_appliance.interfaces import IAccount
from mailbox_appliance.mime.scanner import MimeScanner
from mailbox_appliance.netutil import no_delay
from mailbox_appliance.protocols import peer_host
from mailbox_appliance.smtp import received
from mailbox_appliance.smtp.framing import DotDecoder
from mailbox_appliance.smtp.paths import SMTPReplyError, parse_mail, parse_rcpt
from mailbox_appliance.smtp.transaction import MailTransaction, Recipient, Reply
from mailbox_appliance.store.quota import admit

log = Logger()

_BDAT = re.compile(r"^(\d{1,20})(?: +(LAST))? *$", re.IGNORECASE)
#: Bytes a client may send ahead while a command waits, before reading stops.
_BACKLOG = 256 * 1024
#: Replies that count towards ``smtp.max_errors`` (bad commands, unknown users, relaying).
_COUNTED = frozenset({500, 501, 502, 503, 504, 530, 535, 550, 553, 554, 555})


@implementer(IPushProducer)
class _Hold:
    """Lets the blob writer pause and resume reading from the client (back-pressure)."""

    def __init__(self, protocol: SMTPServer, reason: str):
        self.protocol = protocol
        self.reason = reason

    def pauseProducing(self) -> None:
        self.protocol.hold(self.reason)

    def resumeProducing(self) -> None:
        self.protocol.release(self.reason)

    def stopProducing(self) -> None:
        pass


class SMTPServer(LineReceiver, TimeoutMixin):
    delimiter = b"\r\n"
    #: RFC 4954 §4: an AUTH command with its initial response may be up to 12288 octets.
    MAX_LENGTH = 12288

    def __init__(self, factory):
        self.factory = factory
        self.settings = factory.settings
        self._slot_ip = "unknown"
        self.secure = factory.implicit_tls
        self.helo: str | None = None
        self.esmtp = False
        self.account = None
        self.tx: MailTransaction | None = None
        self.errors = 0
        self._slot = False
        self._holds: set[str] = set()
        self._decoder: DotDecoder | None = None
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_refusal: Reply | None = None
        self._sasl_next = None
        self._closed = False

    # -- connection ---------------------------------------------------------------------

    @property
    def peer_ip(self) -> str:
        """The client (behind a ``haproxy:`` listener: the one its PROXY header names)."""
        return peer_host(self.transport)

    def connectionMade(self):
        self.callLater = self.factory.reactor.callLater
        self._slot_ip = self.peer_ip
        if not self.factory.limiter.acquire(self._slot_ip):
            log.warn("refused a connection from {ip}: too many connections", ip=self.peer_ip)
            self.reply(421, "4.7.0", f"{self.factory.hostname} Too many connections, try later")
            self.transport.loseConnection()
            return
        self._slot = True
        no_delay(self.transport)
        self.setTimeout(self.settings.command_timeout)
        self.transport.write(f"220 {self.factory.hostname} ESMTP mailbox-appliance\r\n".encode())

    def connectionLost(self, reason):
        self._closed = True
        self.setTimeout(None)
        self._reset_transaction()
        if self._slot:
            self._slot = False
            self.factory.limiter.release(self._slot_ip)

    def timeoutConnection(self):
        self.reply(421, "4.4.2", f"{self.factory.hostname} Timeout exceeded, closing")
        self.transport.loseConnection()

    def dataReceived(self, data):
        self.resetTimeout()
        why = super().dataReceived(data)
        if self.paused and len(self._buffer) > _BACKLOG:
            self.hold("flood")
        return why

    def lineLengthExceeded(self, line):
        self.reply(500, "5.5.2", "Line too long")
        self.transport.loseConnection()

    # -- replies, holds -----------------------------------------------------------------

    def reply(self, code: int, enhanced: str | None, text: str) -> None:
        if self._closed:
            return
        status = f"{code} {enhanced} " if enhanced else f"{code} "
        self.transport.write((status + text + "\r\n").encode("utf-8", "replace"))
        if code in _COUNTED:
            self.errors += 1
            if self.errors >= self.settings.max_errors:
                self.transport.write(b"421 4.7.0 Too many errors, closing\r\n")
                self.transport.loseConnection()
                self._closed = True

    def send(self, answer: Reply) -> None:
        self.reply(answer.code, answer.enhanced, answer.text)

    def hold(self, reason: str) -> None:
        """Stop reading from the client for ``reason`` ("disk": the blob writer is behind).

        "busy" (a command waits for the store) only stops processing: later commands stay in
        the line buffer, and reading stops only if a client sends a flood meanwhile.  That
        spares two epoll changes per command for a pipelining client.
        """
        if reason == "busy":
            self.paused = True
            return
        if not self._holds and not self._closed:
            self.transport.pauseProducing()
        self._holds.add(reason)

    def release(self, reason: str) -> None:
        if reason == "busy":
            self.paused = False
            if self._closed:
                return
            self.release("flood")
            self.dataReceived(b"")  # go on with commands that arrived meanwhile
            return
        if reason not in self._holds:
            return
        self._holds.discard(reason)
        if not self._holds and not self._closed:
            self.transport.resumeProducing()

    def _wait(self, d: Deferred) -> None:
        """Answer later: nothing after this command is processed until ``d`` has fired."""
        self.hold("busy")
        d.addErrback(self._internal_error)
        d.addBoth(lambda _: self.release("busy"))

    def _internal_error(self, failure):
        if disk_full(failure.value):
            # RFC 5321 §4.2.2 452, RFC 3463 X.3.1: the client keeps the message and retries.
            log.error("SMTP: the data directory's disk is full ({e})", e=failure.value)
            self.reply(452, "4.3.1", "Insufficient system storage, try again later")
            return
        log.failure("SMTP session with {ip} failed", failure, ip=self.peer_ip)
        self.reply(451, "4.3.0", "Temporary local problem, try again later")

    # -- command dispatch ---------------------------------------------------------------

    def lineReceived(self, line: bytes):
        if self._sasl_next is not None:
            step, self._sasl_next = self._sasl_next, None
            return self._run(step, line)
        text = line.decode("utf-8", "surrogateescape")
        verb, _, arg = text.partition(" ")
        handler = None
        if verb.isascii() and verb.isalpha():
            handler = getattr(self, "smtp_" + verb.upper(), None)
        if handler is None:
            self.reply(500, "5.5.1", "Command unrecognized")
            return
        self._run(handler, arg.strip(" "))

    def _run(self, handler, arg) -> None:
        try:
            result = handler(arg)
        except SMTPReplyError as e:
            self.reply(e.code, e.enhanced, e.text)
            return
        if isinstance(result, Deferred):
            self._wait(result)

    # -- session commands ---------------------------------------------------------------

    def smtp_EHLO(self, arg: str):
        if not arg:
            raise SMTPReplyError(501, "5.5.4", "Syntax: EHLO hostname")
        self._reset_transaction()
        self.helo, self.esmtp = arg, True
        lines = [
            f"{self.factory.hostname} greets {arg}",
            "PIPELINING",
            f"SIZE {self.factory.max_size}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
        ]
        if self.factory.offer_starttls and not self.secure:
            lines.append("STARTTLS")
        if self.factory.submission and self.secure:
            lines.append("AUTH " + " ".join(sasl.MECHANISMS))
        self.transport.write(
            "".join(f"250-{line}\r\n" for line in lines[:-1]).encode()
            + f"250 {lines[-1]}\r\n".encode()
        )

    def smtp_HELO(self, arg: str):
        if not arg:
            raise SMTPReplyError(501, "5.5.4", "Syntax: HELO hostname")
        self._reset_transaction()
        self.helo, self.esmtp = arg, False
        self.reply(250, None, self.factory.hostname)

    def smtp_NOOP(self, arg: str):
        self.reply(250, "2.0.0", "Ok")

    def smtp_RSET(self, arg: str):
        self._reset_transaction()
        self.reply(250, "2.0.0", "Ok")

    def smtp_QUIT(self, arg: str):
        self.reply(221, "2.0.0", "Bye")
        self.transport.loseConnection()
        self._closed = True

    def smtp_VRFY(self, arg: str):
        # RFC 5321 §3.5.3: do not confirm addresses to strangers; accept mail instead.
        self.reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")

    def smtp_EXPN(self, arg: str):
        self.reply(502, "5.5.1", "EXPN is not available")

    def smtp_HELP(self, arg: str):
        self.reply(214, "2.0.0", "See RFC 5321; https://www.rfc-editor.org/rfc/rfc5321")

    def smtp_STARTTLS(self, arg: str):
        if not self.factory.offer_starttls or self.secure:
            raise SMTPReplyError(503, "5.5.1", "TLS already active")
        if arg:
            raise SMTPReplyError(501, "5.5.4", "Syntax: STARTTLS")
        self.reply(220, "2.0.0", "Ready to start TLS")
        # RFC 3207 §4.2: forget everything said in plaintext, including commands a client
        # (or an attacker in the path) pipelined behind STARTTLS.
        self.clearLineBuffer()
        self._reset_transaction()
        self.helo, self.esmtp, self.account = None, False, None
        self.transport.startTLS(self.factory.tls_context)
        self.secure = True

    # -- AUTH (RFC 4954) ----------------------------------------------------------------

    def smtp_AUTH(self, arg: str):
        if not self.factory.submission:
            raise SMTPReplyError(503, "5.5.1", "Authentication is not available on this port")
        if not self.secure:
            raise SMTPReplyError(530, "5.7.0", "Must issue a STARTTLS command first")
        if self.helo is None:
            raise SMTPReplyError(503, "5.5.1", "Send EHLO first")
        if self.account is not None:
            raise SMTPReplyError(503, "5.5.1", "Already authenticated")
        if self.tx is not None:
            raise SMTPReplyError(503, "5.5.1", "AUTH is not allowed during a mail transaction")
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in sasl.MECHANISMS:
            raise SMTPReplyError(504, "5.5.4", "Unrecognized authentication type")
        if mechanism == "PLAIN":
            if initial:
                return self._auth_plain(initial.encode("ascii", "replace"))
            self._challenge(b"", self._auth_plain)
        elif initial:
            return self._auth_login_user(initial.encode("ascii", "replace"))
        else:
            self._challenge(sasl.LOGIN_USERNAME, self._auth_login_user)

    def _challenge(self, data: bytes, step) -> None:
        self.transport.write(b"334 " + sasl.encode_challenge(data) + b"\r\n")
        self._sasl_next = step

    def _decode(self, line: bytes) -> bytes:
        try:
            return sasl.decode_response(line)
        except sasl.SASLAborted:
            raise SMTPReplyError(501, "5.0.0", "Authentication aborted") from None
        except sasl.SASLError:
            raise SMTPReplyError(501, "5.5.2", "Cannot decode the response") from None

    def _auth_plain(self, line: bytes):
        try:
            username, password = sasl.parse_plain(self._decode(line))
        except sasl.SASLError:
            raise SMTPReplyError(535, "5.7.8", "Authentication credentials invalid") from None
        return self._authenticate(username, password)

    def _auth_login_user(self, line: bytes):
        try:
            username = self._decode(line).decode("utf-8")
        except UnicodeDecodeError:
            raise SMTPReplyError(501, "5.5.2", "Cannot decode the response") from None
        self._challenge(
            sasl.LOGIN_PASSWORD, lambda reply: self._auth_login_password(username, reply)
        )

    def _auth_login_password(self, username: str, line: bytes):
        try:
            password = self._decode(line).decode("utf-8")
        except UnicodeDecodeError:
            raise SMTPReplyError(501, "5.5.2", "Cannot decode the response") from None
        return self._authenticate(username, password)

    @inlineCallbacks
    def _authenticate(self, username: str, password: str):
        throttle = self.factory.throttle
        try:
            account_key = normalize_address(username)
        except InvalidAddress:
            account_key = None
        if throttle.locked(self.peer_ip, account_key) > 0:
            self.reply(454, "4.7.0", "Too many failed logins, try again later")
            return
        creds = UsernamePassword(username.encode("utf-8"), password.encode("utf-8"))
        try:
            _, avatar, _ = yield self.factory.portal.login(creds, None, IAccount)
        except cred_error.UnauthorizedLogin:
            yield throttle.hold(throttle.failed(self.peer_ip, account_key))
            log.info("SMTP AUTH failed for {user!r} from {ip}", user=username, ip=self.peer_ip)
            self.reply(535, "5.7.8", "Authentication credentials invalid")
            return
        throttle.succeeded(self.peer_ip, avatar.address)
        self.account = avatar
        self.reply(235, "2.7.0", "Authentication successful")

    # -- the mail transaction -----------------------------------------------------------

    def _reset_transaction(self) -> None:
        if self.tx is not None:
            self.tx.abort()
            self.tx = None
        self._decoder = None

    def smtp_MAIL(self, arg: str):
        if self.helo is None:
            raise SMTPReplyError(503, "5.5.1", "Send EHLO first")
        if self.factory.submission and self.account is None:
            if not self.secure:
                raise SMTPReplyError(530, "5.7.0", "Must issue a STARTTLS command first")
            raise SMTPReplyError(530, "5.7.0", "Authentication required")
        if self.tx is not None:
            raise SMTPReplyError(503, "5.5.1", "Nested MAIL command")
        path, params = parse_mail(arg)
        if not self.esmtp and params != type(params)():
            raise SMTPReplyError(555, "5.5.4", "Parameters need EHLO")
        if params.size is not None and params.size > self.factory.max_size:
            raise SMTPReplyError(552, "5.3.4", "Message size exceeds fixed maximum message size")
        sender = "" if path is None else path.address
        if self.factory.submission:
            return self._check_sender(sender, params)
        self._begin(sender, params)

    def _begin(self, sender: str, params) -> None:
        self.tx = MailTransaction(sender, params, self.factory.max_size)
        self.reply(250, "2.1.0", "Ok")

    @inlineCallbacks
    def _check_sender(self, sender: str, params):
        """RFC 6409 §6.1: a user sends as their own address or one of their aliases."""
        try:
            address = normalize_address(sender)
        except InvalidAddress:
            address = None
        owned = address == self.account.address
        if address and not owned:
            resolution = yield self.factory.store.resolve(address)
            owned = any(t.account_id == self.account.account_id for t in resolution.local)
        if not owned:
            self.reply(553, "5.7.1", f"Sender address <{sender}> is not owned by you")
            return
        self._begin(sender, params)

    def smtp_RCPT(self, arg: str):
        tx = self.tx
        if tx is None:
            raise SMTPReplyError(503, "5.5.1", "Need MAIL command")
        if tx.mode is not None:
            raise SMTPReplyError(503, "5.5.1", "RCPT after message content has started")
        if len(tx.recipients) >= self.settings.max_recipients:
            raise SMTPReplyError(452, "4.5.3", "Too many recipients")
        path = parse_rcpt(arg, tx.params.smtputf8)
        if not path.domain and path.local.lower() == "postmaster":
            return self._add_postmaster(tx, path)
        return self._add_recipient(tx, path.address, path)

    @inlineCallbacks
    def _add_postmaster(self, tx: MailTransaction, path):
        """RFC 5321 §4.5.1: <postmaster> without a domain is always accepted: it goes to
        postmaster@ this host's name, or else postmaster@ its parent domain."""
        hostname = self.factory.hostname
        candidates = [hostname, hostname.partition(".")[2]]
        for domain in filter(None, candidates):
            address = f"postmaster@{domain}"
            try:
                resolution = yield self.factory.store.resolve(normalize_address(address))
            except InvalidAddress:
                continue
            if resolution.exists:
                tx.recipients.append(Recipient(address, resolution.local, resolution.remote))
                self.reply(250, "2.1.5", "Ok")
                return
        self.reply(550, "5.1.1", "<postmaster>: no postmaster alias is configured here")

    @inlineCallbacks
    def _add_recipient(self, tx: MailTransaction, address: str, path):
        store = self.factory.store
        try:
            key = normalize_address(address)
            resolution = yield store.resolve(key)
            local_domain = resolution.local_domain
        except InvalidAddress:
            # A quoted or otherwise unusual local part is never an account here; its domain
            # alone decides between "unknown user" and relaying.
            key, resolution = address, None
            local_domain = not path.is_address_literal and (
                yield store.is_local_domain(_domain_of(address))
            )
        if local_domain:
            if resolution is None or not resolution.exists:
                original = self.factory.srs.reverse(address) if self.factory.srs else None
                if original is not None:  # a bounce of mail we forwarded: to its sender
                    tx.recipients.append(Recipient(address, (), (original,)))
                    self.reply(250, "2.1.5", "Ok")
                    return
                self.reply(550, "5.1.1", f"<{address}>: Recipient address rejected: unknown user")
                return
            full = resolution.local and not self._any_room(resolution.local, tx.params.size)
            if full and not resolution.remote:
                self.reply(452, "4.2.2", f"<{address}>: Mailbox full")
                return
            # Where an alias reaches some full mailboxes, delivery refuses those and bounces.
            tx.recipients.append(Recipient(key, resolution.local, resolution.remote))
        elif self.account is None:
            self.reply(554, "5.7.1", f"<{address}>: Relay access denied")
            return
        else:
            tx.recipients.append(Recipient(key, (), (key,)))
        self.reply(250, "2.1.5", "Ok")

    def _any_room(self, targets, declared_size: int | None) -> bool:
        """Whether any account can take a message of the declared size (RFC 1870), growing
        allowed; without SIZE, whether any has a byte left."""
        size = max(declared_size or 0, 1)
        policy = self.factory.store.quota_policy
        return any(admit(t.used_bytes, t.quota_bytes, size, policy)[0] for t in targets)

    def _start_content(self, mode: str) -> None:
        tx = self.tx
        # The MIME structure (for IMAP) is scanned once, as the message is stored.
        writer = self.factory.store.blobs.open_writer(observer=MimeScanner())
        writer.registerProducer(_Hold(self, "disk"), True)
        only = tx.recipients[0].address if len(tx.recipients) == 1 else None
        trace = received.received(
            helo=self.helo or "unknown",
            client_ip=self.peer_ip,
            hostname=self.factory.hostname,
            protocol=received.protocol_keyword(
                self.esmtp, self.secure, self.account is not None, tx.params.smtputf8
            ),
            queue_id=tx.queue_id,
            tls=received.tls_description(self.transport) if self.secure else None,
            account=self.account.address if self.account is not None else None,
            recipient=only,
            timestamp=self.factory.reactor.seconds(),
        )
        tx.begin_content(writer, received.return_path(tx.sender), trace, mode)

    def smtp_DATA(self, arg: str):
        tx = self.tx
        if tx is None:
            raise SMTPReplyError(503, "5.5.1", "Need MAIL command")
        if arg:
            raise SMTPReplyError(501, "5.5.4", "Syntax: DATA")
        if tx.mode is not None:
            raise SMTPReplyError(503, "5.5.1", "DATA cannot follow BDAT")
        if not tx.recipients:
            raise SMTPReplyError(554, "5.5.1", "No valid recipients")
        self._start_content("DATA")
        self._decoder = DotDecoder()
        self.reply(354, None, "End data with <CR><LF>.<CR><LF>")
        self.setTimeout(self.settings.data_timeout)
        self.setRawMode()

    def smtp_BDAT(self, arg: str):
        match = _BDAT.match(arg)
        if match is None:
            raise SMTPReplyError(501, "5.5.4", "Syntax: BDAT size [LAST]")
        self._bdat_left = int(match.group(1))
        self._bdat_last = match.group(2) is not None
        tx = self.tx
        # RFC 3030 §3: a refused chunk is still read to its end, then answered.
        if tx is None:
            self._bdat_refusal = Reply(503, "5.5.1", "Need MAIL command")
        elif not tx.recipients:
            self._bdat_refusal = Reply(554, "5.5.1", "No valid recipients")
        else:
            self._bdat_refusal = None
            if tx.mode is None:
                self._start_content("BDAT")
        self.setTimeout(self.settings.data_timeout)
        self.setRawMode()
        if self._bdat_left == 0:
            self.rawDataReceived(b"")

    def rawDataReceived(self, data: bytes):
        if self._decoder is not None:
            content, rest = self._decoder.feed(data)
            self.tx.write(content)
            if rest is not None:
                self._decoder = None
                self._end_of_content(rest)
            return
        chunk, rest = data[: self._bdat_left], data[self._bdat_left :]
        self._bdat_left -= len(chunk)
        if self._bdat_refusal is None:
            self.tx.write(chunk)
        if self._bdat_left:
            return
        if self._bdat_refusal is not None:
            self.setLineMode(rest)
            self.send(self._bdat_refusal)
        elif self.tx.too_big:
            self.setLineMode(rest)
            self.send(Reply(552, "5.3.4", "Message size exceeds fixed maximum message size"))
            self._reset_transaction()
        elif self._bdat_last:
            self._end_of_content(rest)
        else:
            self.setLineMode(rest)
            self.reply(250, "2.0.0", f"{self.tx.size} octets received")
        self.setTimeout(self.settings.command_timeout)

    def _end_of_content(self, rest: bytes) -> None:
        """The message is complete: hold later commands until it is durable, then answer."""
        tx, self.tx = self.tx, None
        self.setTimeout(self.settings.command_timeout)
        self.hold("busy")
        self.setLineMode(rest)
        account_id = self.account.account_id if self.account else None
        d = tx.commit(self.factory.store, account_id, self.factory.srs, self.factory.detacher)
        d.addCallback(self._committed, tx)
        d.addErrback(self._internal_error)
        d.addBoth(lambda _: self.release("busy"))

    def _committed(self, result, tx: MailTransaction) -> None:
        answer, _ = result
        log.info(
            "{queue_id}: from=<{sender}> size={size} rcpt={n} {status} ({ip})",
            queue_id=tx.queue_id,
            sender=tx.sender,
            size=tx.size,
            n=len(tx.recipients),
            status=answer.code,
            ip=self.peer_ip,
        )
        self.send(answer)


def _domain_of(address: str) -> str:
    domain = address.rpartition("@")[2]
    try:
        return split_address("x@" + domain)[1]
    except InvalidAddress:
        return domain.lower()
