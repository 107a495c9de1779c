"""Talking to the appliance's IMAP services as a client would: a raw socket client, a FETCH
response parser that keeps literals and lists byte-exact, snapshots of a whole account and of
a Maildir, and running command-line mail clients.

imaplib rewrites line ends in APPEND (``MapCRLF``) and flattens responses that carry literals
inside ENVELOPE or BODYSTRUCTURE, so byte-exact tests use ``RawIMAP`` instead.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
from dataclasses import dataclass

_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}\r\n$")
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n")
_ATOM = re.compile(rb"[^ ()\r\n]+")
_FETCH_START = re.compile(rb"^\* (\d+) FETCH \(", re.M)


class IMAPFailure(AssertionError):
    """A command did not end in OK."""


class RawIMAP:
    """A line-level client for what imaplib hides: untagged data, literals, exact bytes."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock)
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()
        self._tag = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def until_tagged(self, tag: bytes) -> list[bytes]:
        """Every line up to and including the tagged one; a literal is an item of its own."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError(b"".join(lines))
            lines.append(line)
            m = _LITERAL_AT_END.search(line)
            if m:
                lines.append(self.file.read(int(m.group(1))))
                continue
            if line.startswith(tag + b" "):
                return lines

    def command(self, tag: bytes, text: bytes) -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until_tagged(tag)

    def ok(self, text: bytes, literal: bytes | None = None) -> bytes:
        """Run a command that must succeed, with an optional LITERAL+ argument (RFC 7888) at
        its end; the whole response, literals included, as one byte string."""
        self._tag += 1
        tag = b"t%d" % self._tag
        if literal is None:
            self.send(tag + b" " + text + b"\r\n")
        else:
            self.send(tag + b" " + text + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        lines = self.until_tagged(tag)
        if not lines[-1].startswith(tag + b" OK"):
            raise IMAPFailure(b"".join(lines))
        return b"".join(lines)

    def login(self, user: str, password: str) -> None:
        self.ok(b"LOGIN " + quote(user) + b" " + quote(password))

    def append(self, mailbox: str, message: bytes, flags: str = "") -> int:
        """APPEND exactly ``message`` (RFC 3501 §6.3.11); its APPENDUID (RFC 4315 §3)."""
        flag_part = f" ({flags})" if flags else ""
        response = self.ok(b"APPEND " + quote(mailbox) + flag_part.encode(), message)
        return int(re.search(rb"APPENDUID \d+ (\d+)\]", response).group(1))

    def fetch(self, sequence: str, items: str, uid: bool = False) -> dict[int, dict[str, object]]:
        """FETCH: {message number: {item name: value}}, as ``fetch_responses`` parses them."""
        prefix = b"UID FETCH " if uid else b"FETCH "
        response = self.ok(prefix + sequence.encode() + b" " + items.encode())
        result: dict[int, dict[str, object]] = {}
        for number, attributes in fetch_responses(response):
            result.setdefault(number, {}).update(attributes)
        return result

    def mailboxes(self) -> list[str]:
        """Every mailbox name from ``LIST "" "*"``, as sent (modified UTF-7)."""
        response = self.ok(b'LIST "" "*"')
        names = []
        for line in response.split(b"\r\n"):
            m = re.match(rb'\* LIST \([^)]*\) (?:"."|NIL) (.*)$', line)
            if m:
                names.append(unquote(m.group(1)).decode("ascii"))
        return names

    def status(self, mailbox: str, items: str) -> dict[str, int]:
        response = self.ok(b"STATUS " + quote(mailbox) + b" (" + items.encode() + b")")
        words = re.search(rb"\* STATUS .*\((.*)\)\r\n", response).group(1).split()
        return {words[i].decode(): int(words[i + 1]) for i in range(0, len(words), 2)}

    def logout(self) -> None:
        """LOGOUT, then wait for the server to close the connection (a test's reactor must be
        clean when it ends), then close."""
        try:
            self.send(b"z LOGOUT\r\n")
            while self.file.readline():
                pass
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def quote(text: str) -> bytes:
    """An IMAP quoted string (RFC 3501 §4.3)."""
    return b'"' + text.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def unquote(token: bytes) -> bytes:
    if token.startswith(b'"') and token.endswith(b'"'):
        return re.sub(rb"\\(.)", rb"\1", token[1:-1])
    return token


# -- FETCH responses ---------------------------------------------------------------------------


def fetch_responses(data: bytes) -> list[tuple[int, dict[str, object]]]:
    """Every ``* n FETCH (...)`` in a response, its items parsed (RFC 3501 §7.4.2).

    Item names keep their section and origin (``BODY[1.MIME]``, ``BODY[]<5>``). A literal or
    quoted value becomes its bytes, NIL becomes None, a number stays bytes, and a
    parenthesised value (FLAGS, ENVELOPE, BODYSTRUCTURE) is the exact bytes the server sent,
    parentheses and literals included, so it can be compared with a rendering byte for byte.
    """
    found = []
    for m in _FETCH_START.finditer(data):
        pos = m.end()
        items: dict[str, object] = {}
        while data[pos : pos + 1] != b")":
            name, pos = _item_name(data, pos)
            if data[pos : pos + 1] != b" ":
                raise ValueError(f"no space after {name!r} at {pos}: {data[pos : pos + 40]!r}")
            items[name], pos = _value(data, pos + 1)
            if data[pos : pos + 1] == b" ":
                pos += 1
        found.append((int(m.group(1)), items))
    return found


def _item_name(data: bytes, pos: int) -> tuple[str, int]:
    end = pos
    while data[end : end + 1] not in (b" ", b"[", b""):
        end += 1
    if data[end : end + 1] == b"[":
        end = data.index(b"]", end) + 1
        if data[end : end + 1] == b"<":
            end = data.index(b">", end) + 1
    return data[pos:end].decode("ascii"), end


def _value(data: bytes, pos: int) -> tuple[object, int]:
    c = data[pos : pos + 1]
    if c == b"(":
        end = _skip_list(data, pos)
        return data[pos:end], end
    if c == b'"':
        end = _skip_quoted(data, pos)
        return unquote(data[pos:end]), end
    if c == b"{":
        m = _LITERAL.match(data, pos)
        start = m.end()
        end = start + int(m.group(1))
        return data[start:end], end
    m = _ATOM.match(data, pos)
    return (None if m.group(0) == b"NIL" else m.group(0)), m.end()


def _skip_quoted(data: bytes, pos: int) -> int:
    pos += 1
    while True:
        c = data[pos : pos + 1]
        if c == b"\\":
            pos += 2
        elif c == b'"':
            return pos + 1
        elif not c:
            raise ValueError("unterminated quoted string")
        else:
            pos += 1


def _skip_list(data: bytes, pos: int) -> int:
    depth = 0
    while True:
        c = data[pos : pos + 1]
        if c == b"(":
            depth += 1
            pos += 1
        elif c == b")":
            depth -= 1
            pos += 1
            if depth == 0:
                return pos
        elif c == b'"':
            pos = _skip_quoted(data, pos)
        elif c == b"{" and _LITERAL.match(data, pos):
            m = _LITERAL.match(data, pos)
            pos = m.end() + int(m.group(1))
        elif not c:
            raise ValueError("unterminated list")
        else:
            pos += 1


def flags_of(value: bytes) -> frozenset[str]:
    """The flags in a FLAGS value such as ``(\\Seen $Important)``."""
    return frozenset(value.strip(b"()").decode().split())


# -- snapshots ---------------------------------------------------------------------------------


#: Session state, not the message's (RFC 3501 §2.3.2): left out of snapshots.
RECENT = frozenset({"\\Recent"})


@dataclass(frozen=True)
class Stored:
    """One message as the server keeps it (its flags without \\Recent)."""

    uid: int
    flags: frozenset[str]
    content: bytes


def account_snapshot(port: int, user: str, password: str) -> dict[str, list[Stored]]:
    """Every mailbox of the account, its messages in UID order (read-only: EXAMINE, PEEK)."""
    raw = RawIMAP(port)
    try:
        raw.login(user, password)
        snapshot = {}
        for name in raw.mailboxes():
            raw.ok(b"EXAMINE " + quote(name))
            fetched = raw.fetch("1:*", "(UID FLAGS BODY.PEEK[])", uid=True)
            messages = [
                Stored(int(items["UID"]), flags_of(items["FLAGS"]) - RECENT, items["BODY[]"])
                for items in fetched.values()
            ]
            snapshot[name] = sorted(messages, key=lambda m: m.uid)
        raw.ok(b"LOGOUT")
        return snapshot
    finally:
        raw.close()


def account_state(port: int, user: str, password: str) -> dict[str, dict[str, int]]:
    """STATUS of every mailbox: what any change (new message, flag, expunge) would move."""
    raw = RawIMAP(port)
    try:
        raw.login(user, password)
        items = "MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ"
        state = {name: raw.status(name, items) for name in raw.mailboxes()}
        raw.ok(b"LOGOUT")
        return state
    finally:
        raw.close()


def maildir_snapshot(root: str) -> dict[str, dict[str, bytes]]:
    """{folder path relative to ``root``: {"cur/name" or "new/name": bytes}} for every Maildir
    (a directory with cur/, new/ and tmp/) under ``root``; the root itself is ``"."``."""
    snapshot = {}
    for dirpath, dirnames, _ in os.walk(root):
        if not {"cur", "new", "tmp"} <= set(dirnames):
            continue
        files = {}
        for sub in ("cur", "new"):
            for name in os.listdir(os.path.join(dirpath, sub)):
                with open(os.path.join(dirpath, sub, name), "rb") as f:
                    files[f"{sub}/{name}"] = f.read()
        snapshot[os.path.relpath(dirpath, root)] = files
    return snapshot


def maildir_flags(filename: str) -> str:
    """The flag letters of a Maildir file name (``cur/...:2,FS`` -> ``"FS"``)."""
    return filename.partition(":2,")[2]


def run_client(args: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run a mail client to its end (call it in a thread); fail showing its output.

    Clients written in Python (getmail, offlineimap) run on the system's Python: they get
    no PYTHONPATH or PYTHONHOME of ours (trial -j sets them to this interpreter's paths).
    """
    if "env" not in kw:
        kw["env"] = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        done = subprocess.run(args, capture_output=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"{args[0]} did not finish within {timeout}s\n"
            f"stdout:\n{_text(e.stdout)}\nstderr:\n{_text(e.stderr)}"
        ) from None
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited with {done.returncode}\n"
            f"stdout:\n{_text(done.stdout)}\nstderr:\n{_text(done.stderr)}"
        )
    return done


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")
