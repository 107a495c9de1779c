"""The IMAP4rev1 server protocol (RFC 3501): connection states, commands, untagged updates.

Built as our own protocol rather than on ``twisted.mail.imap4.IMAP4Server``, which buffers
whole literals, sends whole bodies for partial FETCH, ends IDLE on any line and lacks most
extensions clients use today (see docs/imap.md).  This module holds the session: reading
commands (framing.py), the not-authenticated commands, STARTTLS, IDLE and the rules of when
other sessions' changes are reported (selected.py).  Mailbox commands are in folders.py,
commands on messages in messages.py and fetch.py; the store does the mailbox logic.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mailbox_appliance import sasl
from mailbox_appliance.errors import MailboxError
from mailbox_appliance.imap import folders, messages
from mailbox_appliance.imap.framing import CommandReader, TooBig
from mailbox_appliance.imap.parser import BadCharset, ParseError, parse_command
from mailbox_appliance.imap.replies import IMAPError
from mailbox_appliance.imap.selected import SelectedMailbox
from mailbox_appliance.imap.wire import flag_list
from mailbox_appliance.output import ConnectionGone
from mailbox_appliance.protocols import LoginRefused, MailSession

log = Logger()

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "not authenticated", "auth", "selected", "out"
#: Bytes a client may send ahead while a command runs, before reading stops.
_BACKLOG = 1024 * 1024
#: Commands during which no EXPUNGE may be sent (RFC 3501 §7.4.1; the UID forms may).
_NO_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH"})


class IMAPServer(MailSession):
    def __init__(self, factory):
        self.factory = factory
        self.settings = factory.settings
        self.store = factory.store
        self.secure = factory.implicit_tls
        self.state = NOT_AUTHENTICATED
        self.account = None
        self.selected: SelectedMailbox | None = None
        self.enabled: set[str] = set()
        self.condstore = False
        self.reader = CommandReader(
            max_line=self.settings.max_line,
            on_command=self._command,
            on_error=self._skipped,
            on_continue=lambda: self.write(b"+ Ready for literal data\r\n"),
            message_sink=self._message_sink,
        )
        self._busy = False
        self._holds: set[str] = set()
        self._idle: tuple[str, Deferred] | None = None
        self._sasl_step = None
        self._refreshing = False
        self._refresh_waiters: list[Deferred] = []

    # -- connection ---------------------------------------------------------------------

    def connectionMade(self):
        refusal = b"* BYE [UNAVAILABLE] Too many connections, try later\r\n"
        if not self.open_session(refusal, self.settings.login_timeout, self._pump):
            return
        caps = " ".join(self.capabilities())
        self.write(f"* OK [CAPABILITY {caps}] {self.factory.hostname} IMAP4rev1 ready\r\n".encode())

    def connectionLost(self, reason):
        self.release_slot()
        self.reader.lost()
        self._unselect()
        self._idle = None

    def timeoutConnection(self):
        self.write(b"* BYE Autologout; idle for too long\r\n")
        self.close()

    @property
    def login_allowed(self) -> bool:
        """RFC 3501 §6.2.3 / RFC 8314: passwords only under TLS, except from this box."""
        return self.secure or self.loopback

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE"]
        if self.state == NOT_AUTHENTICATED:
            if self.factory.offer_starttls and not self.secure:
                caps.append("STARTTLS")
            if self.login_allowed:
                caps.append("AUTH=PLAIN")
            else:
                caps.append("LOGINDISABLED")
            return caps
        return caps + [
            "NAMESPACE",
            "UIDPLUS",
            "MOVE",
            "UNSELECT",
            "CHILDREN",
            "SPECIAL-USE",
            "CONDSTORE",
            "QUOTA",
            "QUOTA=RES-STORAGE",
            f"APPENDLIMIT={self.settings.append_limit}",
        ]

    # -- output ---------------------------------------------------------------------------

    def untagged(self, text: str | bytes) -> None:
        if isinstance(text, str):
            text = text.encode("utf-8")
        self.write(b"* " + text + b"\r\n")

    def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        code_part = f"[{code}] " if code else ""
        self.write(f"{tag} {status} {code_part}{text}\r\n".encode("utf-8", "replace"))

    # -- input ----------------------------------------------------------------------------

    def dataReceived(self, data: bytes):
        if self.state != NOT_AUTHENTICATED:  # the login timeout runs from the connection
            self.resetTimeout()
        self.reader.buffer += data
        self._pump()

    def _pump(self) -> None:
        reader = self.reader
        while not self._closed and not self.out.paused:
            if self._idle is not None or self._sasl_step is not None:
                line = reader.next_line()
                if line is None:
                    break
                if self._idle is not None:
                    self._idle_line(line)
                else:
                    step, self._sasl_step = self._sasl_step, None
                    step(line)
                continue
            if self._busy or not reader.step():
                break
        if self._busy and len(reader.buffer) > _BACKLOG and not reader.in_literal:
            self.hold("flood")

    def hold(self, reason: str) -> None:
        if not self._holds and not self._closed:
            self.transport.pauseProducing()
        self._holds.add(reason)

    def release(self, reason: str) -> None:
        if reason in self._holds:
            self._holds.discard(reason)
            if not self._holds and not self._closed:
                self.transport.resumeProducing()

    def _skipped(self, tag: str, message: str, code: str | None) -> None:
        status = "NO" if code else "BAD"
        self.tagged(tag, status, message, code)

    def _message_sink(self, size: int, pieces: list):
        """Where an APPEND's message literal goes: a blob writer (RFC 3501 §6.3.11)."""
        if self.state not in (AUTHENTICATED, SELECTED):
            raise TooBig("Log in first")
        if size > self.settings.append_limit:
            raise TooBig(f"Message too big (limit {self.settings.append_limit} bytes)", "TOOBIG")
        return messages.AppendSink(self, size)

    def _command(self, pieces: list) -> None:
        try:
            command = parse_command(pieces)
        except BadCharset as e:
            _abort_literals(pieces)
            self.tagged(_tag(e), "NO", "Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
            return
        except ParseError as e:
            _abort_literals(pieces)
            self.tagged(_tag(e), "BAD", str(e) or "Syntax error")
            return
        handler, states = _HANDLERS.get(command.name, (None, ()))
        if handler is None or self.state not in states:
            _abort_literals(pieces)
            why = "Not allowed now" if handler is not None else "Unknown command"
            if handler is not None and self.state == NOT_AUTHENTICATED:
                why = "Log in first"
            elif handler is not None and self.state == AUTHENTICATED and SELECTED in states:
                why = "No mailbox selected"
            self.tagged(command.tag, "BAD", why)
            return
        self._busy = True
        d = Deferred.fromCoroutine(self._run(handler, command))
        d.addBoth(self._done)

    async def _run(self, handler, command) -> None:
        try:
            result = await handler(self, command)
        except IMAPError as e:
            await self._report_changes(command)
            self.tagged(command.tag, e.status, e.text, e.code)
            return
        except MailboxError as e:
            await self._report_changes(command)
            self.tagged(command.tag, "NO", str(e), e.code)
            return
        except ConnectionGone:
            return
        if result is None:  # the handler answered by itself (IDLE, LOGOUT)
            return
        await self._report_changes(command)
        text, code = result if isinstance(result, tuple) else (result, None)
        self.tagged(command.tag, "OK", text, code)

    def _done(self, result) -> None:
        if result is not None and hasattr(result, "getTraceback"):
            if not self._closed:
                log.failure("IMAP session with {ip} failed", result, ip=self.peer_ip)
                self.write(b"* BYE Internal error, sorry\r\n")
                self.close()
            return
        self._busy = False
        self.release("flood")
        if not self._closed:
            self._pump()

    # -- changes made by other sessions --------------------------------------------------

    def _changed(self, *_) -> None:
        """The store committed a change to our selected mailbox."""
        if self.selected is None:
            return
        self.selected.dirty = True
        if self._idle is not None:
            Deferred.fromCoroutine(self.refresh(allow_expunge=True)).addErrback(self._idle_error)

    def _idle_error(self, failure):
        if not failure.check(ConnectionGone):
            log.failure("IMAP IDLE update failed", failure)

    async def _report_changes(self, command) -> None:
        if self.selected is None or self._closed:
            return
        allow = command.uid or command.name not in _NO_EXPUNGE
        if self.selected.dirty or (allow and self.selected.gone):
            await self.refresh(allow_expunge=allow)

    async def refresh(self, *, allow_expunge: bool) -> None:
        """Fetch what changed since our highest modseq and report it (RFC 3501 §7.3, §7.4)."""
        box = self.selected
        if self._refreshing or box is None:
            return
        self._refreshing = True
        try:
            while box.dirty or (allow_expunge and box.gone):
                box.dirty = False
                changes = await self.store.mailbox_changes(box.id, box.highestmodseq)
                if self.selected is not box:
                    return
                if not changes["exists"]:
                    self.write(b"* BYE The selected mailbox was deleted\r\n")
                    self.close()
                    return
                before = box.max_uid
                updates = box.apply(changes, allow_expunge=allow_expunge)
                if updates.exists is not None and not box.read_only:
                    first = await self.store.claim_recent(box.id, box.uidnext)
                    box.claim_recent([uid for uid in box.uids if uid > before and uid >= first])
                self.report(updates)
        finally:
            self._refreshing = False
            waiters, self._refresh_waiters = self._refresh_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def report(self, updates) -> None:
        box = self.selected
        parts = [f"* {n} EXPUNGE\r\n" for n in updates.expunged]
        if updates.exists is not None:
            parts.append(f"* {updates.exists} EXISTS\r\n* {len(box.recent)} RECENT\r\n")
        for uid in updates.flags:
            seq = box.seq_of(uid)
            if seq is None:
                continue
            modseq = f" MODSEQ ({box.modseqs[uid]})" if self.condstore else ""
            flags = flag_list(box.flag_list(uid)).decode()
            parts.append(f"* {seq} FETCH (UID {uid} FLAGS {flags}{modseq})\r\n")
        if parts:
            self.write("".join(parts).encode("utf-8"))

    def select(self, box: SelectedMailbox | None) -> None:
        self._unselect()
        self.selected = box
        if box is not None:
            box.watch = self.store.watch(box.id, self._changed)
            self.state = SELECTED
        else:
            self.state = AUTHENTICATED

    def _unselect(self) -> None:
        if self.selected is not None and self.selected.watch is not None:
            self.selected.watch.cancel()
        self.selected = None

    # -- any state (RFC 3501 §6.1) -------------------------------------------------------

    async def cmd_capability(self, command):
        self.untagged("CAPABILITY " + " ".join(self.capabilities()))
        return "CAPABILITY completed"

    async def cmd_noop(self, command):
        if self.selected is not None:
            self.selected.dirty = True  # a NOOP is how clients poll: look for sure
        return "NOOP completed"

    async def cmd_logout(self, command):
        self.untagged("BYE Logging out")
        self.tagged(command.tag, "OK", "LOGOUT completed")
        self.state = LOGOUT
        self.close()

    async def cmd_id(self, command):
        """RFC 2971: say who we are; what the client says is only logged."""
        if command.args.params:
            params = dict(command.args.params)
            log.info("IMAP client {ip} says it is {id}", ip=self.peer_ip, id=params)
        self.untagged('ID ("name" "mailbox-appliance" "vendor" "mailbox-appliance")')
        return "ID completed"

    async def cmd_enable(self, command):
        """RFC 5161; CONDSTORE is the one extension here that needs enabling."""
        newly = []
        for capability in command.args.capabilities:
            name = capability.upper()
            if name == "CONDSTORE" and name not in self.enabled:
                self.enabled.add(name)
                self.condstore = True
                newly.append(name)
        self.untagged("ENABLED" + "".join(" " + n for n in newly))
        return "ENABLE completed"

    # -- not authenticated (RFC 3501 §6.2) -----------------------------------------------

    async def cmd_starttls(self, command):
        if not self.factory.offer_starttls or self.secure:
            raise IMAPError("BAD", "TLS is already active")
        self.tagged(command.tag, "OK", "Begin TLS negotiation now")
        # RFC 3501 §6.2.1 / RFC 2595 §3.1: nothing sent in plaintext after STARTTLS counts.
        self.reader.reset()
        self.transport.startTLS(self.factory.tls_context)
        self.secure = True

    async def cmd_login(self, command):
        if not self.login_allowed:
            raise IMAPError("NO", "Log in after STARTTLS", "PRIVACYREQUIRED")
        return await self._authenticate(command.args.user, command.args.password)

    async def cmd_authenticate(self, command):
        """RFC 3501 §6.2.2 with the initial response of RFC 4959 (SASL-IR)."""
        if command.args.mechanism.upper() != "PLAIN":
            raise IMAPError("NO", "Unsupported authentication mechanism", "CANNOT")
        if not self.login_allowed:
            raise IMAPError("NO", "Authenticate after STARTTLS", "PRIVACYREQUIRED")
        initial = command.args.initial
        if initial is None:
            d: Deferred[bytes] = Deferred()
            self._sasl_step = d.callback
            self.write(b"+ \r\n")
            initial = await d
        try:
            response = sasl.decode_response(initial)
        except sasl.SASLAborted:
            raise IMAPError("BAD", "Authentication aborted") from None
        except sasl.SASLError:
            raise IMAPError("BAD", "Cannot decode the response") from None
        try:
            user, password = sasl.parse_plain(response)
        except sasl.SASLError:
            raise IMAPError("NO", "Authentication failed", "AUTHENTICATIONFAILED") from None
        return await self._authenticate(user, password)

    async def _authenticate(self, user: str, password: str):
        try:
            avatar = await self.check_password(user, password, "IMAP")
        except LoginRefused as e:
            if e.locked:
                raise IMAPError(
                    "NO", "Too many failed logins, try again later", "UNAVAILABLE"
                ) from None
            raise IMAPError("NO", "Authentication failed", "AUTHENTICATIONFAILED") from None
        self.account = avatar
        self.state = AUTHENTICATED
        self.setTimeout(self.settings.idle_timeout)
        return "Logged in", "CAPABILITY " + " ".join(self.capabilities())

    # -- IDLE (RFC 2177) -----------------------------------------------------------------

    async def cmd_idle(self, command):
        done: Deferred[bytes] = Deferred()
        self._idle = (command.tag, done)
        self.write(b"+ idling\r\n")
        if self.selected is not None:
            await self.refresh(allow_expunge=True)
        line = await done
        if self._refreshing:
            # An update begun during IDLE may send EXPUNGE: it ends before IDLE does, not
            # during the next command (RFC 3501 §7.4.1).
            finished: Deferred[None] = Deferred()
            self._refresh_waiters.append(finished)
            await finished
        if line.strip().upper() != b"DONE":
            raise IMAPError("BAD", "Expected DONE")
        return "IDLE terminated"

    def _idle_line(self, line: bytes) -> None:
        tag, done = self._idle
        self._idle = None
        done.callback(line)


def _tag(error) -> str:
    tag = error.tag.decode("ascii", "replace") if isinstance(error.tag, bytes) else error.tag
    return tag or "*"


def _abort_literals(pieces: list) -> None:
    """A command that will not run: discard its streamed message, if any."""
    for piece in pieces:
        ref = getattr(piece, "ref", None)
        if ref is not None and hasattr(ref, "abort"):
            ref.abort()


_ANY = (NOT_AUTHENTICATED, AUTHENTICATED, SELECTED)
_AUTH = (AUTHENTICATED, SELECTED)
_SEL = (SELECTED,)

_HANDLERS = {
    "CAPABILITY": (IMAPServer.cmd_capability, _ANY),
    "NOOP": (IMAPServer.cmd_noop, _ANY),
    "LOGOUT": (IMAPServer.cmd_logout, _ANY),
    "ID": (IMAPServer.cmd_id, _ANY),
    "ENABLE": (IMAPServer.cmd_enable, _AUTH),
    "STARTTLS": (IMAPServer.cmd_starttls, (NOT_AUTHENTICATED,)),
    "LOGIN": (IMAPServer.cmd_login, (NOT_AUTHENTICATED,)),
    "AUTHENTICATE": (IMAPServer.cmd_authenticate, (NOT_AUTHENTICATED,)),
    "IDLE": (IMAPServer.cmd_idle, _AUTH),
    **{name: (handler, _AUTH) for name, handler in folders.HANDLERS.items()},
    **{name: (handler, _SEL) for name, handler in messages.SELECTED_HANDLERS.items()},
    **{name: (handler, _AUTH) for name, handler in messages.AUTH_HANDLERS.items()},
}
