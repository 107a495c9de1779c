"""The POP3 server (RFC 1939) with CAPA and response codes (RFC 2449), STLS (RFC 2595) and
SASL PLAIN (RFC 5034).

Our own protocol rather than ``twisted.mail.pop3.POP3``, which has no STLS, corrupts CRLF and
dot-stuffing at buffer boundaries and lists the whole mailbox for every STAT/LIST/UIDL.  The
maildrop is the account's INBOX as it was at login (a snapshot: numbers and sizes do not
change during the session); DELE only marks, and the marked messages are expunged durably in
the UPDATE state at QUIT, so IMAP sessions on INBOX see them go as ordinary expunges.  One
POP3 session per maildrop: a second gets ``-ERR [IN-USE]``.  Content streams from the blob
through the dot-stuffer (stuffing.py); UIDLs are ``<UIDVALIDITY>.<UID>``, the same in every
session and forever.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mailbox_appliance import sasl
from mailbox_appliance.output import ConnectionGone
from mailbox_appliance.pop3.stuffing import TopFilter
from mailbox_appliance.protocols import LoginRefused, MailSession
from mailbox_appliance.stuffing import DotStuffer

log = Logger()

#: RFC 2449 §4: a command line is at most 255 octets; AUTH's initial response may be longer.
MAX_LINE = 8192
#: Messages up to this size are read in one trip; larger ones are streamed in chunks.
SMALL = 256 * 1024
#: RETR of a small message reads up to this many following small messages with it.
READ_AHEAD = 64
READ_AHEAD_BYTES = 1024 * 1024
#: Bytes a client may send ahead while a command runs or answers wait, before reading stops.
BACKLOG = 1024 * 1024
AUTHORIZATION, TRANSACTION = "AUTHORIZATION", "TRANSACTION"


def _allowed(*states: str):
    """The states a command is allowed in (the default: TRANSACTION only)."""

    def mark(handler):
        handler.states = states
        return handler

    return mark


class POP3Error(Exception):
    """Answer ``-ERR [code] text``."""

    def __init__(self, text: str, code: str | None = None):
        super().__init__(text)
        self.text = text
        self.code = code


class POP3Server(MailSession):
    def __init__(self, factory):
        self.factory = factory
        self.store = factory.store
        self.secure = factory.implicit_tls
        self.state = AUTHORIZATION
        self.account = None
        self.user: str | None = None
        self.messages: list[tuple[int, int]] = []  # (uid, size), message n at index n - 1
        self.deleted: set[int] = set()  # message numbers
        self._ahead: dict[int, bytes | None] = {}  # read ahead: message number -> content
        self.mailbox_id: int | None = None
        self.uidvalidity = 0
        self._buffer = bytearray()
        self._discarding = False
        self._busy = False
        self._reading_paused = False
        self._answering = False  # a +OK multi-line answer has started
        self._sasl_step = None
        self._locked = False

    # -- connection -----------------------------------------------------------------------

    def connectionMade(self):
        refusal = b"-ERR [SYS/TEMP] Too many connections, try later\r\n"
        if self.open_session(refusal, self.factory.settings.timeout, self._pump):
            self.write(f"+OK {self.factory.hostname} POP3 ready\r\n".encode())

    def connectionLost(self, reason):
        self.release_slot()
        self._unlock()

    def timeoutConnection(self):
        # RFC 1939 §3: an autologout does not enter the UPDATE state; nothing is deleted.
        self.write(b"-ERR Autologout; idle for too long\r\n")
        self.close()

    def _unlock(self) -> None:
        if self._locked:
            self._locked = False
            self.factory.maildrops.discard(self.account.account_id)

    @property
    def login_allowed(self) -> bool:
        """RFC 2595 §2 / RFC 8314: passwords only under TLS, except from this box."""
        return self.secure or self.loopback

    # -- output ---------------------------------------------------------------------------

    def ok(self, text: str = "") -> None:
        self.write(("+OK " + text).rstrip(" ").encode("utf-8") + b"\r\n")

    def err(self, text: str, code: str | None = None) -> None:
        prefix = f"-ERR [{code}] " if code else "-ERR "
        self.write((prefix + text).encode("utf-8") + b"\r\n")

    # -- input ----------------------------------------------------------------------------

    def dataReceived(self, data: bytes):
        self.resetTimeout()
        self._buffer += data
        self._pump()

    def _pump(self) -> None:
        """Answer buffered commands in order, while the client reads what we send."""
        while not self._busy and not self._closed and not self.out.paused:
            i = self._buffer.find(b"\n")
            if i < 0:
                # +1: a line of MAX_LINE octets may be here with its CR, its LF to come.
                if len(self._buffer) > MAX_LINE + 1:
                    del self._buffer[:]
                    self._discarding = True
                break
            line = bytes(self._buffer[:i]).rstrip(b"\r")
            del self._buffer[: i + 1]
            if self._discarding:
                self._discarding = False
                self.err("Line too long")
                continue
            if len(line) > MAX_LINE:
                self.err("Line too long")
                continue
            self._line(line)
        backlog = len(self._buffer) > BACKLOG
        if backlog != self._reading_paused and not self._closed:
            self._reading_paused = backlog
            if backlog:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    def _line(self, line: bytes) -> None:
        if self._sasl_step is not None:
            step, self._sasl_step = self._sasl_step, None
            self._run(step, line)
            return
        text = line.decode("utf-8", "replace")
        verb, _, arg = text.partition(" ")
        handler = getattr(self, "do_" + verb.upper(), None) if verb.isalpha() else None
        if handler is None:
            self.err("Unknown command")
            return
        allowed = getattr(handler, "states", (TRANSACTION,))
        if self.state not in allowed:
            self.err("Not allowed now" if self.state == TRANSACTION else "Log in first")
            return
        self._run(handler, arg)

    def _run(self, handler, arg) -> None:
        try:
            result = handler(arg)
        except POP3Error as e:
            self.err(e.text, e.code)
            return
        if isinstance(result, Deferred) or hasattr(result, "__await__"):
            d = result if isinstance(result, Deferred) else Deferred.fromCoroutine(result)
            d.addErrback(self._failed)
            if not d.called:  # answered later: nothing after it runs meanwhile
                self._busy = True
                d.addBoth(self._done)

    def _failed(self, failure):
        if failure.check(ConnectionGone):
            pass  # the client hung up: nothing to answer, nothing to log
        elif self._answering:
            # Part of a message went out after +OK: no -ERR can follow it (RFC 1939 §3).
            log.failure("POP3 answer to {ip} broke off", failure, ip=self.peer_ip)
            self.close()
        elif failure.check(POP3Error):
            self.err(failure.value.text, failure.value.code)
        else:
            log.failure("POP3 session with {ip} failed", failure, ip=self.peer_ip)
            self.err("Internal error, try again later", "SYS/TEMP")

    def _done(self, _) -> None:
        self._busy = False
        if not self._closed:
            self._pump()

    # -- AUTHORIZATION state (RFC 1939 §4, RFC 2449, RFC 2595, RFC 5034) ------------------

    def capabilities(self) -> list[str]:
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.login_allowed or self.state != AUTHORIZATION:
            caps += ["USER", "SASL PLAIN"]
        if self.factory.offer_stls and not self.secure and self.state == AUTHORIZATION:
            caps.append("STLS")
        return caps + ["EXPIRE NEVER", "LOGIN-DELAY 0", "IMPLEMENTATION mailbox-appliance"]

    @_allowed(AUTHORIZATION, TRANSACTION)
    def do_CAPA(self, arg):
        lines = "".join(f"{c}\r\n" for c in self.capabilities())
        self.write(f"+OK Capability list follows\r\n{lines}.\r\n".encode())

    @_allowed(AUTHORIZATION, TRANSACTION)
    def do_QUIT(self, arg):
        if self.state == TRANSACTION:
            return self._update()
        self.ok(f"{self.factory.hostname} closing")
        self.close()

    @_allowed(AUTHORIZATION, TRANSACTION)
    def do_NOOP(self, arg):
        self.ok()

    @_allowed(AUTHORIZATION)
    def do_STLS(self, arg):
        if not self.factory.offer_stls or self.secure:
            raise POP3Error("TLS is already active")
        self.ok("Begin TLS negotiation")
        # RFC 2595 §4: anything the client pipelined in plaintext behind STLS is discarded.
        del self._buffer[:]
        self.transport.startTLS(self.factory.tls_context)
        self.secure = True

    @_allowed(AUTHORIZATION)
    def do_USER(self, arg):
        if not self.login_allowed:
            raise POP3Error("Log in after STLS", "AUTH")
        if not arg:
            raise POP3Error("Syntax: USER name")
        self.user = arg
        self.ok("Send PASS")

    @_allowed(AUTHORIZATION)
    def do_PASS(self, arg):
        if self.user is None:
            raise POP3Error("Send USER first")
        user, self.user = self.user, None
        return self._login(user, arg)

    @_allowed(AUTHORIZATION)
    def do_AUTH(self, arg):
        if not arg:  # the mechanisms, as many clients ask (RFC 1734 style)
            self.write(b"+OK\r\nPLAIN\r\n.\r\n")
            return None
        mechanism, _, initial = arg.partition(" ")
        if mechanism.upper() != "PLAIN":
            raise POP3Error("Unsupported authentication mechanism")
        if not self.login_allowed:
            raise POP3Error("Authenticate after STLS", "AUTH")
        if initial:
            return self._auth_plain(initial.encode("ascii", "replace"))
        self.write(b"+ \r\n")
        self._sasl_step = self._auth_plain
        return None

    def _auth_plain(self, response: bytes):
        try:
            user, password = sasl.parse_plain(sasl.decode_response(response))
        except sasl.SASLAborted:
            raise POP3Error("Authentication aborted") from None
        except sasl.SASLError:
            raise POP3Error("Authentication failed", "AUTH") from None
        return self._login(user, password)

    async def _login(self, user: str, password: str):
        try:
            avatar = await self.check_password(user, password, "POP3")
        except LoginRefused as e:
            if e.locked:
                raise POP3Error("Too many failed logins, try again later", "SYS/TEMP") from None
            raise POP3Error("Authentication failed", "AUTH") from None
        if avatar.account_id in self.factory.maildrops:
            raise POP3Error("The maildrop is in use by another POP3 session", "IN-USE")
        if self._closed:  # the client went away during the password check
            return
        self.factory.maildrops.add(avatar.account_id)
        self.account, self._locked = avatar, True
        try:
            info = await self.store.select_mailbox(avatar.account_id, "INBOX", claim_recent=False)
        except BaseException:
            self._unlock()
            raise
        if self._closed:
            self._unlock()
            return
        self.mailbox_id, self.uidvalidity = info["id"], info["uidvalidity"]
        self.messages = [
            (entry[0], size) for entry, size in zip(info["entries"], info["sizes"], strict=True)
        ]
        self.state = TRANSACTION
        total = sum(size for _, size in self.messages)
        self.ok(f"Logged in, {len(self.messages)} messages ({total} octets)")

    # -- TRANSACTION state (RFC 1939 §5, §7) ----------------------------------------------

    def _message(self, arg: str) -> int:
        """A message number that exists and is not deleted."""
        word = arg.split(" ")[0] if arg else ""
        if not word.isdigit():
            raise POP3Error("Syntax: a message number is needed")
        n = int(word)
        if not 1 <= n <= len(self.messages):
            raise POP3Error(f"No such message (there are {len(self.messages)})")
        if n in self.deleted:
            raise POP3Error(f"Message {n} is deleted")
        return n

    def _listing(self, arg: str, value) -> None:
        if arg:
            n = self._message(arg)
            self.ok(f"{n} {value(n)}")
            return
        lines = [
            f"{n} {value(n)}\r\n" for n in range(1, len(self.messages) + 1) if n not in self.deleted
        ]
        self.write(("+OK\r\n" + "".join(lines) + ".\r\n").encode())

    def do_STAT(self, arg):
        live = [size for n, (_, size) in enumerate(self.messages, 1) if n not in self.deleted]
        self.ok(f"{len(live)} {sum(live)}")

    def do_LIST(self, arg):
        self._listing(arg, lambda n: self.messages[n - 1][1])

    def do_UIDL(self, arg):
        self._listing(arg, lambda n: f"{self.uidvalidity}.{self.messages[n - 1][0]}")

    def do_DELE(self, arg):
        n = self._message(arg)
        self.deleted.add(n)
        self.ok(f"Message {n} deleted")

    def do_RSET(self, arg):
        self.deleted.clear()
        self.ok(f"{len(self.messages)} messages")

    def do_RETR(self, arg):
        n = self._message(arg)
        return self._send(n, None)

    def do_TOP(self, arg):
        parts = arg.split(" ")
        if len(parts) != 2 or not parts[1].isdigit():
            raise POP3Error("Syntax: TOP message lines")
        n = self._message(parts[0])
        return self._send(n, int(parts[1]))

    async def _send(self, n: int, top: int | None) -> None:
        """RETR or TOP: the message, CRLF lines, dot-stuffed, streamed from its blob."""
        uid, size = self.messages[n - 1]
        stuffer = DotStuffer()
        flt = TopFilter(top) if top is not None else None

        def transform(chunk: bytes) -> bytes:
            return stuffer.feed(flt.feed(chunk) if flt is not None else chunk)

        if size <= SMALL:
            data = await self._small_content(n)
            # "+OK" only once the content is here, so a failed read is a clean -ERR.
            self.write(b"+OK message follows\r\n" + transform(data) + stuffer.close())
            return
        (row,) = await self.store.fetch_entries(self.mailbox_id, [uid]) or [None]
        if row is None:
            raise POP3Error("The message was removed by another session", "SYS/TEMP")
        self.write(b"+OK message follows\r\n")
        self._answering = True
        await self.out.stream(
            row["sha256"], 0, size, transform, done=(lambda: flt.done) if flt else None
        )
        self._answering = False
        self.write(stuffer.close())

    async def _small_content(self, n: int) -> bytes:
        """Message ``n``, read together with the small ones after it that a client downloading
        its maildrop asks for next: two store trips per batch instead of two per message."""
        if n not in self._ahead:
            batch, total = [], 0
            for m in range(n, len(self.messages) + 1):
                size = self.messages[m - 1][1]
                if m in self.deleted or size > SMALL:
                    continue
                if batch and (total + size > READ_AHEAD_BYTES or len(batch) >= READ_AHEAD):
                    break
                batch.append(m)
                total += size
            uids = [self.messages[m - 1][0] for m in batch]
            rows = await self.store.fetch_entries(self.mailbox_id, uids)
            sha = {row["uid"]: row["sha256"] for row in rows}
            present = [m for m in batch if self.messages[m - 1][0] in sha]
            datas = await self.store.blobs.read_ranges(
                [(sha[self.messages[m - 1][0]], 0, self.messages[m - 1][1]) for m in present]
            )
            self._ahead = dict.fromkeys(batch)
            self._ahead.update(zip(present, datas, strict=True))
        data = self._ahead.pop(n)
        if data is None:
            raise POP3Error("The message was removed by another session", "SYS/TEMP")
        return data

    async def _update(self):
        """The UPDATE state (RFC 1939 §6): marked messages go, durably, before +OK."""
        uids = [self.messages[n - 1][0] for n in sorted(self.deleted)]
        if uids:
            try:
                await self.store.store_flags(self.mailbox_id, uids, "+", ["\\Deleted"])
                await self.store.expunge(self.mailbox_id, uids)
            except Exception:
                log.failure("POP3 UPDATE for {ip} failed", ip=self.peer_ip)
                self.err("Some deleted messages were not removed", "SYS/TEMP")
                self.close()
                return
        self._unlock()
        self.ok(f"{self.factory.hostname} closing ({len(uids)} messages removed)")
        self.close()
