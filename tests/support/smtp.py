"""Talking to the appliance's SMTP services from tests: raw sockets and reading mailboxes."""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Iterable

from sqlalchemy import select
from twisted.internet.defer import inlineCallbacks

from mailbox_appliance.store import schema
from tests.support.appliance import insecure_tls


class RawSMTP:
    """A byte-level SMTP client for what smtplib will not do (pipelining, BDAT, bad input)."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 20):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; unread: {self.buffer!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def reply(self) -> tuple[int, list[str]]:
        """One (possibly multi-line) reply: its code and its text lines."""
        lines = []
        while True:
            line = self.line().decode("utf-8", "replace")
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), lines

    def replies(self, n: int) -> list[str]:
        """The next ``n`` replies as ``"250 2.1.0 Ok"`` strings (last line of each)."""
        out = []
        for _ in range(n):
            code, lines = self.reply()
            out.append(f"{code} {lines[-1]}")
        return out

    def command(self, line: str | bytes) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.replies(1)[0]

    def starttls(self, context: ssl.SSLContext) -> None:
        assert self.buffer == b"", self.buffer
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()


def stuffed(lines: bytes) -> bytes:
    """Whole CRLF lines dot-stuffed for DATA (RFC 5321 §4.5.2)."""
    return (b"." if lines.startswith(b".") else b"") + lines.replace(b"\r\n.", b"\r\n..")


def submit_streamed(
    port: int, recipient: str, pieces: Iterable[bytes], size: int, password: str = "pw"
) -> list[str]:
    """Submit ``pieces`` (each whole CRLF lines) as one message from alice@example.test
    (STARTTLS, AUTH PLAIN) over a raw socket, streamed: never whole here.  The replies to
    MAIL, RCPT, DATA and the final dot."""
    client = RawSMTP(port, timeout=300)
    try:
        client.reply()
        client.command("EHLO big.test")
        assert client.command("STARTTLS").startswith("220"), "no STARTTLS"
        client.starttls(insecure_tls())
        client.command("EHLO big.test")
        token = base64.b64encode(f"\0alice@example.test\0{password}".encode()).decode()
        assert client.command(f"AUTH PLAIN {token}").startswith("235"), "AUTH refused"
        client.send(
            f"MAIL FROM:<alice@example.test> SIZE={size}\r\nRCPT TO:<{recipient}>\r\n"
            "DATA\r\n".encode()
        )
        replies = client.replies(3)
        if not replies[2].startswith("354"):
            return replies
        for piece in pieces:
            client.send(stuffed(piece))
        client.send(b".\r\n")
        return replies + client.replies(1)
    finally:
        client.close()


@inlineCallbacks
def inbox(store, account_id: int, mailbox: str = "INBOX"):
    """The messages in a mailbox, oldest first, as bytes."""
    m, e, msg = schema.mailboxes, schema.mailbox_entries, schema.messages

    def _txn(conn):
        return (
            conn.execute(
                select(msg.c.blob_sha256)
                .join(e, e.c.message_id == msg.c.id)
                .join(m, m.c.id == e.c.mailbox_id)
                .where(m.c.account_id == account_id, m.c.name == mailbox)
                .order_by(e.c.uid)
            )
            .scalars()
            .all()
        )

    shas = yield store.db.read(_txn)
    contents = []
    for sha in shas:
        contents.append((yield store.blobs.read_bytes(sha)))
    return contents


def body_of(message: bytes) -> bytes:
    """The content as the client sent it: what follows our Return-Path and Received lines."""
    lines = message.split(b"\r\n")
    assert lines[0].startswith(b"Return-Path: "), lines[0]
    i = 1
    assert lines[i].startswith(b"Received: "), lines[i]
    i += 1
    while lines[i].startswith(b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])
