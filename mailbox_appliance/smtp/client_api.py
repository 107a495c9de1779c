"""What the outbound SMTP client (client.py) takes and gives back: replies, transactions,
their results and the ways a session fails; and the parsing of replies and EHLO answers.

Kept apart from the protocol so the queue runner and tests can read them without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred

#: RFC 3463 §2: class.subject.detail, then a space before the text (RFC 2034 §4).
_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?: +|$)")


@dataclass(frozen=True)
class Reply:
    """A server's reply (RFC 5321 §4.2), or one made up here (``local``) for a refusal that
    never reached the server: those say nothing about the route."""

    code: int
    text: str
    enhanced: str | None = None
    local: bool = False

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        text = self.text.replace("\n", " ")
        return " ".join(p for p in (str(self.code), self.enhanced, text) if p)


def accepted(reply: Reply) -> bool:
    return 200 <= reply.code < 300


@dataclass(frozen=True)
class Transaction:
    sender: str  # "" is the null reverse-path of a bounce: MAIL FROM:<>
    recipients: tuple[str, ...]
    size: int  # content bytes before stuffing, for SIZE= (RFC 1870)
    #: read(offset, length): content bytes from offset, at most length, non-empty before size.
    read: Callable[[int, int], Deferred[bytes]]


@dataclass
class TransactionResult:
    mail: Reply
    rcpt: dict[str, Reply]  # the RCPT reply of every recipient that got one (or a local one)
    data: Reply | None  # DATA's refusal, or the reply after the content; None: not attempted
    bytes_sent: int  # written after the 354, stuffed, the final "." line included
    data_seconds: float  # from the 354 to the final reply

    def outcome(self, recipient: str) -> Reply:
        """What happened to this recipient: a local refusal first (retrying the same way
        cannot help), then MAIL's refusal, its RCPT refusal, and else the final reply."""
        rcpt = self.rcpt.get(recipient)
        if rcpt is not None and rcpt.local:
            return rcpt
        if not accepted(self.mail):
            return self.mail
        if rcpt is None:
            raise KeyError(recipient)
        if not accepted(rcpt):
            return rcpt
        if self.data is None:  # cannot happen; never report an unsent message as delivered
            return Reply(451, "no reply to the message content", "4.4.0", local=True)
        return self.data


@dataclass(frozen=True)
class SessionInfo:
    greeting: Reply
    extensions: dict[str, str]  # EHLO keywords, upper-cased -> their parameters
    tls: bool
    tls_version: str | None
    cipher: str | None
    authenticated: str | None
    seconds: float  # connectionMade -> ready


class SMTPFailure(Exception):
    """The server said no at a session stage ("greeting", "ehlo", "auth", "rset"...), or
    (``reply.local``) this client refused on its behalf."""

    def __init__(self, reply: Reply, stage: str):
        super().__init__(f"{stage}: {reply}")
        self.reply = reply
        self.stage = stage


class SessionLost(Exception):
    """The connection dropped, timed out or the server broke the protocol, at ``stage``."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


class TLSUnavailable(Exception):
    """TLS was required but is not offered or refused (``reply``), or the handshake failed:
    the runner may retry without TLS when its policy is opportunistic."""

    def __init__(self, reason: str, reply: Reply | None = None, stage: str = "starttls"):
        super().__init__(f"{stage}: {reason}")
        self.reason = reason
        self.reply = reply
        self.stage = stage


class ContentError(Exception):
    """``Transaction.read`` failed or ended early: a local problem.  DATA cannot be taken
    back (RFC 5321 §4.1.1.4), so the connection was dropped before the final dot."""


@dataclass(frozen=True)
class Timeouts:
    """RFC 5321 §4.5.3.2 defaults, in seconds; ``quit`` bounds a polite goodbye."""

    greeting: float = 300
    command: float = 300  # EHLO, MAIL, RCPT, RSET, AUTH, STARTTLS
    data_start: float = 120
    data_block: float = 180  # each wait for the transport to take more content
    data_end: float = 600
    quit: float = 10


def make_reply(code: int, lines: list[str]) -> Reply:
    """Enhanced status codes (RFC 2034 §4) come off every line that repeats them."""
    match = _ENHANCED.match(lines[0])
    if match is None or match.group(1)[0] != str(code)[0]:
        return Reply(code, "\n".join(lines))
    enhanced = match.group(1)
    text = []
    for line in lines:
        found = _ENHANCED.match(line)
        text.append(line[found.end() :] if found and found.group(1) == enhanced else line)
    return Reply(code, "\n".join(text), enhanced)


def parse_ehlo(text: str) -> dict[str, str]:
    """The EHLO keywords (RFC 5321 §4.1.1.1) after the greeting line, upper-cased."""
    extensions: dict[str, str] = {}
    for line in text.split("\n")[1:]:
        keyword, _, params = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword.startswith("AUTH="):  # servers from before RFC 4954
            extensions.setdefault("AUTH", f"{keyword[5:]} {params}".strip())
        elif keyword:
            extensions[keyword] = params.strip()
    return extensions


def size_limit(extensions: dict[str, str]) -> int:
    """The advertised SIZE limit (RFC 1870 §4); 0 is none."""
    value = extensions.get("SIZE", "").split()
    return int(value[0]) if value and value[0].isdigit() else 0
