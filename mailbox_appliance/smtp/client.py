"""The SMTP client of the outbound queue (RFC 5321): one session per connection to a next hop.

A queue runner connects with an endpoint, waits for :attr:`OutboundSMTP.ready`, sends one or
more transactions over the connection (reuse) and quits.  What this client guarantees:

- Pipelining (RFC 2920): MAIL, every RCPT and DATA go out in one write when the server offers
  it.  Replies are matched to commands strictly in order, so one refusal never shifts another.
- Content streams from ``Transaction.read`` a chunk at a time, dot-stuffed on the way
  (RFC 5321 §4.5.2).  The protocol is the transport's push producer: the next chunk is read
  while one is written, and nothing more is written until the transport wants it, so a 2 GiB
  message never sits in memory.
- STARTTLS (RFC 3207 §4.2): the plaintext EHLO answer is forgotten, and bytes the server sent
  behind its 220 (a command-injection attack) end the session.  Credentials never travel in
  the clear (RFC 4954 §4).
- Every wait has its RFC 5321 §4.5.3.2 timeout on the injected reactor.  A failure fails every
  pending Deferred once, naming the stage where it happened, and leaves no timer behind.

The runner logs and scores attempts; this module logs nothing above debug level.
"""

from __future__ import annotations

import base64
import re
from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailbox_appliance.netutil import no_delay
from mailbox_appliance.smtp.client_api import (
    ContentError,
    Reply,
    SessionInfo,
    SessionLost,
    SMTPFailure,
    Timeouts,
    TLSUnavailable,
    Transaction,
    TransactionResult,
    accepted,
    make_reply,
    parse_ehlo,
    size_limit,
)
from mailbox_appliance.stuffing import DotStuffer

log = Logger()

#: Content bytes asked of ``Transaction.read`` at a time.
CHUNK = 256 * 1024
#: Longest reply line taken (RFC 5321 §4.5.3.1.5 says 512; servers send longer text).
MAX_LINE = 64 * 1024
#: Longest reply, all its lines together: a server that never ends a multi-line reply.
MAX_REPLY = 1024 * 1024
#: RFC 4954 §4: an AUTH command, initial response included, fits in 12288 octets.
_AUTH_LINE = 12288

_LINE = re.compile(rb"([2-5][0-9][0-9])(?:([ -])(.*))?", re.DOTALL)
#: Characters that could end a command line or break the path's brackets.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>]")


class _Wait:
    """A command waiting for its reply."""

    __slots__ = ("stage", "seconds", "deferred", "exclusive")

    def __init__(self, stage: str, seconds: float, deferred: Deferred, exclusive: bool):
        self.stage = stage
        self.seconds = seconds
        self.deferred = deferred
        #: The reply must be the last thing the server sent (STARTTLS, RFC 3207 §4.2).
        self.exclusive = exclusive


def _ignore(_failure: Failure) -> None:
    return None


@implementer(IPushProducer)
class OutboundSMTP(Protocol):
    """One outbound SMTP session.  It registers itself as the transport's push producer."""

    def __init__(
        self,
        *,
        reactor: IReactorTime,
        helo: str,
        tls: str = "opportunistic",
        tls_options: Callable[[], object] | None = None,
        auth: tuple[str, str] | None = None,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen, so sharing is safe
    ):
        if tls not in ("none", "opportunistic", "required"):
            raise ValueError(f"tls must be none, opportunistic or required, not {tls!r}")
        if tls != "none" and tls_options is None:
            raise ValueError("tls_options is needed unless tls is 'none'")
        self._reactor = reactor
        self._helo = helo
        self._tls_mode = tls
        self._tls_options = tls_options
        self._auth = auth
        self._timeouts = timeouts
        #: Fires with :class:`SessionInfo` once the session can take transactions.
        self.ready: Deferred[SessionInfo] = Deferred(lambda _: self.abort())
        self._info: SessionInfo | None = None
        self._extensions: dict[str, str] = {}
        self._tls = False
        self._handshaking = False
        self._authenticated: str | None = None
        self._started = 0.0
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._code: int | None = None
        self._reply_size = 0
        self._pending: deque[_Wait] = deque()
        self._timer: IDelayedCall | None = None
        self._paused = False
        self._drain: Deferred[None] | None = None
        self._activity = "idle"  # the stage when no reply is awaited
        self._connected = False
        self._aborted = False
        self._dead = False  # input is ignored from now on
        self._failure: Exception | None = None  # the first fatal one
        self._setup_error: Exception | None = None
        self._unusable: Exception | None = None
        self._setting_up = True
        self._busy = False
        self._need_rset = False
        self._quitting = False
        self._quit_waiters: list[Deferred[None]] = []

    # -- public API ---------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        """Whether a new :meth:`send` may be made now."""
        return (
            self._connected
            and self._info is not None
            and self._failure is None
            and self._unusable is None
            and not self._busy
            and not self._quitting
        )

    def send(self, tx: Transaction) -> Deferred[TransactionResult]:
        """Run one mail transaction; the result says what happened to each recipient.

        Errbacks with SMTPFailure (421, a refused RSET), SessionLost or ContentError: after
        those the session is not reusable.
        """
        if not tx.recipients:
            raise ValueError("a transaction needs at least one recipient")
        if self._busy:
            raise RuntimeError("a transaction is already running on this session")
        if self._setting_up:
            raise RuntimeError("send() before ready")
        problem = self._failure or self._setup_error or self._unusable
        if problem is not None or not self._connected or self._quitting:
            return fail(SessionLost("mail", f"the session is not usable: {problem or 'closing'}"))
        self._busy = True
        d = Deferred.fromCoroutine(self._transaction(tx))
        d.addBoth(self._transaction_done)
        return d

    def quit(self) -> Deferred[None]:
        """QUIT, wait for the reply and the close (each bounded by ``timeouts.quit``).

        Never errbacks.  In the middle of something (setup, a transaction) the connection is
        dropped instead: QUIT would be read as message content or confuse reply order.
        """
        d: Deferred[None] = Deferred()
        if not self._connected:
            d.callback(None)
            return d
        self._quit_waiters.append(d)
        if self._quitting:
            return d
        self._quitting = True
        idle = not (self._busy or self._setting_up or self._pending or self._aborted)
        if self._failure is None and idle:
            wait = self._expect("quit", self._timeouts.quit)
            self._write("QUIT")
            wait.addBoth(self._close)
        elif self._failure is not None and not self._aborted:
            self._close(None)  # after a 421: the close is under way already
        else:
            self.abort()
        return d

    def abort(self) -> None:
        """Drop the connection now; whatever was pending fails with SessionLost."""
        if self._connected:
            self._die(SessionLost(self._stage(), "aborted"))
        self._finish_quit()

    # -- session setup ------------------------------------------------------------------

    def connectionMade(self) -> None:
        self._connected = True
        self._started = self._reactor.seconds()
        no_delay(self.transport)
        self.transport.registerProducer(self, True)
        Deferred.fromCoroutine(self._setup()).addBoth(self._setup_done)

    async def _setup(self) -> SessionInfo:
        greeting = await self._expect("greeting", self._timeouts.greeting)
        if not accepted(greeting):  # 554: no service here (RFC 5321 §3.1)
            raise SMTPFailure(greeting, "greeting")
        await self._hello()
        if self._tls_mode != "none":
            await self._starttls()
        if self._auth is not None:
            await self._authenticate(*self._auth)
        version, cipher = self._tls_details() if self._tls else (None, None)
        return SessionInfo(
            greeting=greeting,
            extensions=dict(self._extensions),
            tls=self._tls,
            tls_version=version,
            cipher=cipher,
            authenticated=self._authenticated,
            seconds=self._reactor.seconds() - self._started,
        )

    def _setup_done(self, result: SessionInfo | Failure) -> None:
        self._setting_up = False
        if isinstance(result, Failure):
            self._setup_error = result.value
            self.ready.errback(result)
        else:
            self._info = result
            self.ready.callback(result)

    async def _hello(self) -> None:
        """EHLO, or HELO for a server that refuses it permanently (RFC 5321 §3.2)."""
        reply = await self._command(f"EHLO {self._helo}", "ehlo")
        if accepted(reply):
            self._extensions = parse_ehlo(reply.text)
            return
        if not reply.permanent:
            raise SMTPFailure(reply, "ehlo")
        reply = await self._command(f"HELO {self._helo}", "helo")
        if not accepted(reply):
            raise SMTPFailure(reply, "helo")
        self._extensions = {}

    async def _starttls(self) -> None:
        required = self._tls_mode == "required"
        if "STARTTLS" not in self._extensions:
            if required:
                raise TLSUnavailable("the server does not offer STARTTLS")
            return
        reply = await self._command("STARTTLS", "starttls", exclusive=True)
        if reply.code != 220:
            if required:
                raise TLSUnavailable("the server refused STARTTLS", reply)
            return  # opportunistic: carry on in plaintext (RFC 3207 §4.1)
        start_tls = getattr(self.transport, "startTLS", None)
        if start_tls is None:
            raise self._die(TLSUnavailable("the transport cannot start TLS"))
        try:
            start_tls(self._tls_options())
        except Exception as e:
            raise self._die(TLSUnavailable(f"cannot start TLS: {e}")) from e
        # Until a reply decrypts, a lost connection or a timeout is the handshake's failure.
        self._handshaking = True
        self._tls = True
        self._extensions = {}  # RFC 3207 §4.2: forget what was said in plaintext
        await self._hello()

    def _tls_details(self) -> tuple[str | None, str | None]:
        try:
            handle = self.transport.getHandle()
            return handle.get_protocol_version_name(), handle.get_cipher_name()
        except Exception:  # not an OpenSSL connection (a test transport, another TLS stack)
            return None, None

    async def _authenticate(self, username: str, password: str) -> None:
        """AUTH PLAIN (RFC 4616), or LOGIN when only that is offered (RFC 4954)."""
        if not self._tls:
            reply = Reply(538, "not sending credentials without TLS", "5.7.11", local=True)
            raise SMTPFailure(reply, "auth")
        offered = self._extensions.get("AUTH", "").upper().split()
        user, secret = username.encode("utf-8"), password.encode("utf-8")
        if "PLAIN" in offered:
            initial = _b64(b"\0" + user + b"\0" + secret)
            if len("AUTH PLAIN ") + len(initial) + 2 <= _AUTH_LINE:
                command, responses = f"AUTH PLAIN {initial}", []
            else:  # too long for the command line: answer the empty challenge instead
                command, responses = "AUTH PLAIN", [initial]
        elif "LOGIN" in offered:
            command, responses = "AUTH LOGIN", [_b64(user), _b64(secret)]
        else:
            text = f"no usable AUTH mechanism offered ({' '.join(offered) or 'none'})"
            raise SMTPFailure(Reply(504, text, "5.5.4", local=True), "auth")
        reply = await self._command(command, "auth")
        for response in responses:
            if reply.code != 334:
                break
            reply = await self._command(response, "auth")
        if reply.code == 334:  # the server wants more than the mechanism has: cancel (§4)
            cancelled = await self._command("*", "auth")
            raise SMTPFailure(cancelled if not accepted(cancelled) else reply, "auth")
        if not accepted(reply):
            raise SMTPFailure(reply, "auth")
        self._authenticated = username

    # -- the transaction ----------------------------------------------------------------

    async def _transaction(self, tx: Transaction) -> TransactionResult:
        refusal, rcpt, recipients, smtputf8 = self._screen(tx)
        if refusal is not None:
            return TransactionResult(refusal, rcpt, None, 0, 0.0)
        if self._need_rset:  # the last transaction left the server's state behind
            reply = await self._command("RSET", "rset")
            if not accepted(reply):
                self._unusable = SMTPFailure(reply, "rset")
                raise self._unusable
            self._need_rset = False
        mail_line = _mail_command(tx, self._extensions, smtputf8)
        rcpt_lines = [f"RCPT TO:<{r}>" for r in recipients]
        t = self._timeouts
        data: Reply | None = None
        if "PIPELINING" in self._extensions:  # RFC 2920 §3.1: DATA may end the group
            waits = [self._expect("mail", t.command)]
            waits += [self._expect("rcpt", t.command) for _ in recipients]
            waits.append(self._expect("data", t.data_start))
            self._write(mail_line, *rcpt_lines, "DATA")
            try:
                mail = await waits[0]
                for address, wait in zip(recipients, waits[1:-1], strict=True):
                    rcpt[address] = await wait
                data = await waits[-1]
            finally:
                for wait in waits:
                    wait.addErrback(_ignore)
        else:
            mail = await self._command(mail_line, "mail")
            if accepted(mail):
                for address, line in zip(recipients, rcpt_lines, strict=True):
                    rcpt[address] = await self._command(line, "rcpt")
                if any(accepted(rcpt[r]) for r in recipients):
                    data = await self._command("DATA", "data", t.data_start)
        if not (accepted(mail) and any(accepted(rcpt[r]) for r in recipients)):
            self._need_rset = True
            if data is not None and data.code == 354:  # a broken server: end it empty
                await self._end_content(b".\r\n")
            return TransactionResult(mail, rcpt, None, 0, 0.0)
        assert data is not None
        if data.code != 354:
            if data.positive:
                raise self._die(SessionLost("data", f"protocol error: {data} to DATA"))
            self._need_rset = True  # MAIL and RCPT still stand
            return TransactionResult(mail, rcpt, data, 0, 0.0)
        started = self._reactor.seconds()
        sent, final = await self._content(tx)
        return TransactionResult(mail, rcpt, final, sent, self._reactor.seconds() - started)

    def _screen(self, tx: Transaction) -> tuple[Reply | None, dict[str, Reply], list[str], bool]:
        """Refusals decided here, before anything is sent: (whole refusal, local RCPT
        refusals, recipients to send, whether SMTPUTF8 is needed)."""
        smtputf8 = "SMTPUTF8" in self._extensions
        rcpt: dict[str, Reply] = {}
        if _UNSAFE.search(tx.sender):
            return Reply(501, "bad sender address syntax", "5.1.7", local=True), rcpt, [], False
        if not tx.sender.isascii() and not smtputf8:  # RFC 6531 §3.2
            text = "the sender address needs SMTPUTF8, which the server does not offer"
            return Reply(553, text, "5.6.7", local=True), rcpt, [], False
        limit = size_limit(self._extensions)
        if limit and tx.size > limit:  # RFC 1870 §6.1
            text = f"message size exceeds fixed maximum message size ({limit} bytes)"
            return Reply(552, text, "5.3.4", local=True), rcpt, [], False
        recipients = []
        for address in dict.fromkeys(tx.recipients):
            if _UNSAFE.search(address):
                rcpt[address] = Reply(501, "bad recipient address syntax", "5.1.3", local=True)
            elif not address.isascii() and not smtputf8:
                text = "the recipient address needs SMTPUTF8, which the server does not offer"
                rcpt[address] = Reply(553, text, "5.6.7", local=True)
            else:
                recipients.append(address)
        if not recipients:
            return next(iter(rcpt.values())), rcpt, [], False
        needed = not tx.sender.isascii() or not all(r.isascii() for r in recipients)
        return None, rcpt, recipients, needed

    async def _content(self, tx: Transaction) -> tuple[int, Reply]:
        """Stream the content: a chunk is written only when the transport wants more, and the
        next one is read while the transport sends it, so at most one chunk waits here."""
        self._activity = "content"
        stuffer, sent, offset = DotStuffer(), 0, 0
        ahead = self._read(tx, 0) if tx.size > 0 else None
        while ahead is not None:
            try:
                chunk = await ahead
                if not chunk:
                    raise ContentError(f"the content ended at {offset} of {tx.size} bytes")
            except ContentError as e:
                self._die(e)
                raise
            ahead = None
            if self._failure is not None:  # the session failed while the chunk was read
                raise self._failure
            if len(chunk) > tx.size - offset:
                chunk = chunk[: tx.size - offset]
            offset += len(chunk)
            data = stuffer.feed(chunk)
            if data:
                await self._writable()
                self.transport.write(data)
                sent += len(data)
            if offset < tx.size:
                ahead = self._read(tx, offset)
        tail = stuffer.close()
        await self._writable()
        return sent + len(tail), await self._end_content(tail)

    def _read(self, tx: Transaction, offset: int) -> Deferred[bytes]:
        def failed(failure: Failure) -> None:
            message = f"reading the content at {offset} failed: {failure.getErrorMessage()}"
            raise ContentError(message) from failure.value

        return maybeDeferred(tx.read, offset, min(CHUNK, tx.size - offset)).addErrback(failed)

    async def _writable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._paused:
            self._drain = Deferred(lambda _: self.abort())
            seconds = self._timeouts.data_block
            self._arm(seconds, self._timed_out, "content", seconds)
            await self._drain

    async def _end_content(self, tail: bytes) -> Reply:
        wait = self._expect("data-end", self._timeouts.data_end)
        self.transport.write(tail)
        return await wait

    def _transaction_done(self, result: TransactionResult | Failure):
        self._busy = False
        self._activity = "idle"
        if isinstance(result, Failure) and self._failure is None and self._unusable is None:
            # Something unforeseen in mid-transaction: the server's state is unknown.
            self._unusable = result.value
            self._drop()
        return result

    # -- IPushProducer: the transport's back-pressure ----------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        drain, self._drain = self._drain, None
        if drain is not None:
            self._disarm()
            drain.callback(None)

    def stopProducing(self) -> None:
        pass  # connectionLost follows and fails what waits

    # -- commands and replies -----------------------------------------------------------

    def _write(self, *lines: str) -> None:
        self.transport.write("".join(line + "\r\n" for line in lines).encode("utf-8"))

    def _command(
        self, line: str, stage: str, seconds: float | None = None, exclusive: bool = False
    ) -> Deferred[Reply]:
        wait = self._expect(
            stage, self._timeouts.command if seconds is None else seconds, exclusive
        )
        self._write(line)
        return wait

    def _expect(self, stage: str, seconds: float, exclusive: bool = False) -> Deferred[Reply]:
        d: Deferred[Reply] = Deferred(lambda _: self.abort())
        if self._failure is not None:
            d.errback(self._failure)
            return d
        self._pending.append(_Wait(stage, seconds, d, exclusive))
        if len(self._pending) == 1:
            self._arm(seconds, self._timed_out, stage, seconds)
        return d

    def dataReceived(self, data: bytes) -> None:
        if self._dead:
            return
        self._buffer += data
        while not self._dead:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE + 1:
                    self._protocol_error("reply line too long")
                return
            line = bytes(self._buffer[:end]).removesuffix(b"\r")
            del self._buffer[: end + 1]
            if len(line) > MAX_LINE:
                self._protocol_error("reply line too long")
                return
            self._line(line)

    def _line(self, line: bytes) -> None:
        match = _LINE.fullmatch(line)
        if match is None:
            self._protocol_error(f"malformed reply {line[:80]!r}")
            return
        code = int(match.group(1))
        if self._code is not None and code != self._code:
            self._protocol_error(f"multi-line reply changes its code to {code}")
            return
        self._code = code
        self._lines.append((match.group(3) or b"").decode("utf-8", "replace"))
        self._reply_size += len(line)
        if self._reply_size > MAX_REPLY:
            self._protocol_error("reply too long")
        elif match.group(2) != b"-":
            lines, self._lines, self._code, self._reply_size = self._lines, [], None, 0
            self._dispatch(make_reply(code, lines))

    def _dispatch(self, reply: Reply) -> None:
        if reply.code == 421:  # the server is closing the channel, at any point (§3.8)
            self._fail(SMTPFailure(reply, self._stage()))
            self.transport.loseConnection()
            return
        if not self._pending:
            self._protocol_error(f"unexpected reply {reply}")
            return
        if self._pending[0].exclusive and self._buffer:
            self._protocol_error(f"data after the reply {reply}")
            return
        wait = self._pending.popleft()
        self._handshaking = False
        self._disarm()
        if self._pending:
            head = self._pending[0]
            self._arm(head.seconds, self._timed_out, head.stage, head.seconds)
        wait.deferred.callback(reply)

    def _stage(self) -> str:
        return self._pending[0].stage if self._pending else self._activity

    # -- failures, timers, the end ------------------------------------------------------

    def _protocol_error(self, what: str) -> None:
        log.debug("SMTP protocol error: {what}", what=what)
        self._die(SessionLost(self._stage(), f"protocol error: {what}"))

    def _die(self, exc: Exception) -> Exception:
        """Drop the connection and fail everything pending with ``exc``; returns it."""
        self._drop()
        self._fail(exc)
        return exc

    def _drop(self) -> None:
        if self._connected and not self._aborted:
            self._aborted = True
            self.transport.abortConnection()

    def _fail(self, exc: Exception) -> None:
        if self._failure is None:
            self._failure = exc
        self._dead = True
        self._disarm()
        pending, self._pending = self._pending, deque()
        for wait in pending:
            wait.deferred.errback(self._failure)
        drain, self._drain = self._drain, None
        if drain is not None:
            drain.errback(self._failure)

    def _arm(self, seconds: float, call: Callable, *args: object) -> None:
        self._disarm()
        self._timer = self._reactor.callLater(seconds, call, *args)

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _timed_out(self, stage: str, seconds: float) -> None:
        self._timer = None
        if self._handshaking:
            self._die(TLSUnavailable(f"no answer within {seconds:g}s of starting TLS"))
        else:
            self._die(SessionLost(stage, f"timeout: nothing for {seconds:g}s"))

    def _close(self, _result: object) -> None:
        if self._connected and not self._aborted:
            self.transport.loseConnection()
            self._arm(self._timeouts.quit, self._close_timed_out)
        else:
            self._finish_quit()

    def _close_timed_out(self) -> None:
        self._timer = None
        self._drop()
        self._finish_quit()

    def _finish_quit(self) -> None:
        waiters, self._quit_waiters = self._quit_waiters, []
        for d in waiters:
            d.callback(None)

    def connectionLost(self, reason: Failure) -> None:
        self._connected = False
        if self._handshaking:
            exc: Exception = TLSUnavailable(f"TLS handshake failed: {reason.getErrorMessage()}")
        else:
            exc = SessionLost(self._stage(), f"connection lost: {reason.getErrorMessage()}")
        self._fail(exc)
        self._disarm()
        self._finish_quit()


def _mail_command(tx: Transaction, extensions: dict[str, str], smtputf8: bool) -> str:
    params = [f"MAIL FROM:<{tx.sender}>"]
    if "SIZE" in extensions:
        params.append(f"SIZE={tx.size}")
    if "8BITMIME" in extensions:  # RFC 6152
        params.append("BODY=8BITMIME")
    if smtputf8:  # RFC 6531 §3.4
        params.append("SMTPUTF8")
    return " ".join(params)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii") or "="  # RFC 4954 §4: "=" is empty
