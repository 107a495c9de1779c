"""Talking to the appliance's POP3 services as a client would, below poplib.

``RawPOP3`` is a line-level client for what poplib hides or cannot do: the exact bytes of a
response, PIPELINING, a PROXY protocol header, AUTH continuations, and multi-line responses
of hundreds of MiB read a chunk at a time (un-dot-stuffed and hashed as they arrive, never
held whole).  ``append_streamed`` puts a message of any size into a mailbox by IMAP APPEND with
a LITERAL+ sent in blocks, the way the big-message tests need it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import ssl
from collections.abc import Iterable

from tests.support.imap_clients import RawIMAP, quote

MiB = 1024**2
#: Three 64-byte lines, two starting with dots.  64 divides the server's read size, so in a
#: message made of them (after a header of 64 bytes) every chunk the server reads starts a
#: line, and a third of those lines start with one dot, a third with two: the places where a
#: chunk-at-a-time dot-stuffer is most easily wrong.
DOT_LINES = (
    b".one dot starts this line; the server must send it as two.....\r\n"
    b"..two dots start this one; the client removes one of them, too\r\n"
    b"and an ordinary line between them, with no dot at its start...\r\n"
)
#: A 64-byte header for them.
DOT_HEADER = b"From: a@remote.test\r\nSubject: a big one, with many dot lines\r\n\r\n"


def dot_block(size: int = MiB) -> bytes:
    """``size`` bytes of DOT_LINES (whole lines when ``size`` is a multiple of 64)."""
    return (DOT_LINES * (size // len(DOT_LINES) + 1))[:size]


class POP3Failure(AssertionError):
    """A command that had to succeed was answered ``-ERR``."""


class Unstuffer:
    """The content of a POP3 multi-line response (RFC 1939 §3), a chunk at a time.

    Fed the bytes that follow the ``+OK`` line; returns the content with the byte-stuffing
    undone, and sets ``done`` (and ``rest``: whatever came after) at the terminating
    ``.CRLF`` line.  Only whole CRLF lines are looked at, so a chunk boundary anywhere is
    harmless.  A line the server failed to stuff loses its first dot here (or, if it was a
    lone ``.``, ends the response early), so a missing stuffing shows up as wrong content.
    """

    def __init__(self) -> None:
        self.done = False
        self.rest = b""
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        if self.done:
            self.rest += chunk
            return b""
        data = self._carry + chunk
        end = data.rfind(b"\r\n") + 2
        if end < 2:
            self._carry = data
            return b""
        lines, self._carry = data[:end], data[end:]
        if lines.startswith(b".\r\n"):
            stop = 0
        else:
            stop = lines.find(b"\r\n.\r\n")
            stop = stop + 2 if stop >= 0 else -1
        if stop >= 0:
            self.done = True
            self.rest = lines[stop + 3 :] + self._carry
            lines = lines[:stop]
        if lines.startswith(b"."):
            lines = lines[1:]
        return lines.replace(b"\r\n.", b"\r\n")


class RawPOP3:
    """A blocking POP3 client on a socket (run it in a thread)."""

    def __init__(
        self,
        port: int,
        tls: ssl.SSLContext | None = None,
        timeout: float = 30,
        proxy_from: str | None = None,
        host: str = "127.0.0.1",
    ):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if proxy_from is not None:  # a PROXY protocol v1 header (haproxy: listeners)
            self.sock.sendall(
                b"PROXY TCP4 %s %s 40000 %d\r\n" % (proxy_from.encode(), host.encode(), port)
            )
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock)
        self._buffer = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self) -> bytes:
        """What has arrived (the buffered bytes first); EOFError once the server has closed."""
        if self._buffer:
            data, self._buffer = self._buffer, b""
            return data
        data = self.sock.recv(MiB)
        if not data:
            raise EOFError("the server closed the connection")
        return data

    def line(self) -> bytes:
        """One response line, CRLF included; EOFError if the server closed the connection."""
        while b"\n" not in self._buffer:
            self._buffer += self._read()
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def command(self, text: str | bytes) -> bytes:
        """Send one command; its (first) response line."""
        self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.line()

    def ok(self, text: str | bytes) -> bytes:
        line = self.command(text)
        if not line.startswith(b"+OK"):
            raise POP3Failure(f"{text!r} -> {line!r}")
        return line

    def _content(self, sink) -> None:
        """The rest of a multi-line response, un-stuffed, to ``sink`` a piece at a time."""
        unstuffer = Unstuffer()
        while not unstuffer.done:
            sink(unstuffer.feed(self._read()))
        self._buffer = unstuffer.rest

    def body(self) -> bytes:
        """The rest of a multi-line response: its content, un-stuffed, CRLFs kept."""
        parts: list[bytes] = []
        self._content(parts.append)
        return b"".join(parts)

    def multiline(self, text: str | bytes) -> tuple[bytes, bytes]:
        """A command with a multi-line answer: (first line, content un-stuffed); the
        content is b"" when the answer is ``-ERR``."""
        first = self.command(text)
        return first, (self.body() if first.startswith(b"+OK") else b"")

    def digest(self, text: str | bytes) -> tuple[bytes, int, str]:
        """RETR or TOP without holding the message: (first line, length, SHA-256 hex) of
        the un-stuffed content."""
        first = self.command(text)
        if not first.startswith(b"+OK"):
            return first, 0, ""
        digest, length = hashlib.sha256(), [0]

        def sink(content: bytes) -> None:
            digest.update(content)
            length[0] += len(content)

        self._content(sink)
        return first, length[0], digest.hexdigest()

    def login(self, user: str, password: str) -> bytes:
        self.ok("USER " + user)
        return self.ok("PASS " + password)

    def auth_plain(self, user: str, password: str) -> bytes:
        """AUTH PLAIN with an initial response (RFC 5034 §4); the answer line."""
        return self.command(b"AUTH PLAIN " + plain_token(user, password))

    def stls(self, context: ssl.SSLContext) -> bytes:
        """STLS (RFC 2595 §4), then the TLS handshake on the same socket."""
        line = self.ok("STLS")
        if self._buffer:
            raise AssertionError(f"plaintext after the STLS answer: {self._buffer!r}")
        self.sock = context.wrap_socket(self.sock)
        return line

    def quit(self) -> bytes:
        """QUIT, its answer, and the server closing the connection."""
        line = self.command("QUIT")
        self.wait_closed()
        return line

    def wait_closed(self) -> None:
        """Read until the server closes the connection, then close ours."""
        try:
            while True:
                self._read()
        except (EOFError, OSError):
            pass
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def plain_token(user: str, password: str) -> bytes:
    """A SASL PLAIN response (RFC 4616 §2), base64 as POP3 AUTH carries it."""
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())


def capabilities(raw: RawPOP3) -> list[str]:
    """The CAPA list (RFC 2449 §5), one capability line per item, in the order sent."""
    first, content = raw.multiline("CAPA")
    if not first.startswith(b"+OK"):
        raise POP3Failure(first)
    return content.decode().split("\r\n")[:-1]


def append_streamed(
    port: int, user: str, password: str, size: int, parts: Iterable[bytes], mailbox="INBOX"
) -> int:
    """APPEND ``size`` bytes to ``mailbox`` by IMAP (LITERAL+, RFC 7888), sent part by part so
    that the client never holds the message; its APPENDUID."""
    raw = RawIMAP(port, timeout=300)
    try:
        raw.login(user, password)
        raw.send(b"a APPEND " + quote(mailbox) + b" {%d+}\r\n" % size)
        sent = 0
        for part in parts:
            raw.send(part)
            sent += len(part)
        if sent != size:
            raise ValueError(f"sent {sent} bytes, announced {size}")
        raw.send(b"\r\n")
        answer = raw.until_tagged(b"a")[-1]
        m = re.match(rb"a OK \[APPENDUID \d+ (\d+)\]", answer)
        if m is None:
            raise AssertionError(answer)
        raw.logout()
        return int(m.group(1))
    finally:
        raw.close()


def append_messages(port: int, user: str, password: str, messages: Iterable[bytes]) -> list[int]:
    """APPEND each message, exactly these bytes, to INBOX; their UIDs."""
    raw = RawIMAP(port)
    try:
        raw.login(user, password)
        uids = [raw.append("INBOX", message) for message in messages]
        raw.logout()
        return uids
    finally:
        raw.close()


def pop3_form(message: bytes) -> bytes:
    """What RETR must give back for a stored message (RFC 1939 §3): every line end CRLF (a bare
    LF becomes CRLF), and a final CRLF if the message lacked one."""
    out = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out
