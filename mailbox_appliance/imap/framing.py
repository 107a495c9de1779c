"""Cutting the client's byte stream into IMAP commands: lines and literals (RFC 3501 §4.3).

A command is a line, or lines joined by literals (``{N}`` synchronising: the server answers
``+`` first; ``{N+}`` non-synchronising, RFC 7888).  :class:`CommandReader` collects the
pieces of one command and hands them over complete; it never holds more than the configured
line and literal limits, except for the one literal that is a message (APPEND), which goes to
a sink given by the session (the blob store) as it arrives.  Over-long lines and literals are
skipped to the end of the command, and the command is then answered BAD, so the session goes
on (Twisted's ``LineReceiver`` would drop the connection instead).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mailbox_appliance.imap.wire import Literal, ParseError, literal_at_end

#: Literals that are arguments (not a message) may be at most this big.
MAX_ARGUMENT_LITERAL = 64 * 1024
#: All the argument literals of one command together.
MAX_COMMAND = 1024 * 1024

_TAG = re.compile(rb"^([\x21\x23\x24\x26\x27\x2c-\x5a\x5e-\x7a\x7c\x7e]+)")
_APPEND = re.compile(rb"^\S+ +(?:UID +)?APPEND +(.*)$", re.IGNORECASE | re.DOTALL)


def tag_of(piece: bytes) -> str:
    """The tag of a (possibly broken) command, or ``*`` when none can be read."""
    m = _TAG.match(piece)
    if m is None or m.group(1) == b"+":
        return "*"
    return m.group(1).decode("ascii")


class TooBig(Exception):
    """A literal is over a limit; ``message`` says which."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class CommandReader:
    """Feeds lines and literals; calls back with each complete command's pieces.

    ``on_command(pieces)``: a complete command (a list of ``bytes`` lines without CRLF and
    :class:`Literal` values).  ``on_error(tag, message, code)``: a command that was skipped
    (too long).  ``on_continue()``: a synchronising literal may be sent.  ``message_sink(size,
    pieces)``: called for the message literal of an APPEND; returns an object with ``write``
    (or raises :class:`TooBig`, which answers the command NO with the exception's code).
    """

    def __init__(
        self,
        *,
        max_line: int,
        on_command: Callable[[list], None],
        on_error: Callable[[str, str, str | None], None],
        on_continue: Callable[[], None],
        message_sink: Callable[[int, list], object],
    ):
        self.max_line = max_line
        self.on_command = on_command
        self.on_error = on_error
        self.on_continue = on_continue
        self.message_sink = message_sink
        self.buffer = bytearray()
        self._pieces: list = []
        self._size = 0
        self._literal: Literal | None = None
        self._literal_left = 0
        self._sink = None
        self._skip_literal = 0  # bytes of an unwanted literal still to throw away
        self._skipping: tuple[str, str, str | None] | None = None  # error to give at the end
        self._discard_line = False

    @property
    def in_literal(self) -> bool:
        return self._literal_left > 0 or self._skip_literal > 0

    def reset(self) -> None:
        """Forget everything buffered (after STARTTLS, RFC 3501 §6.2.1)."""
        self.buffer = bytearray()
        self._abort_sink()
        self._pieces, self._size, self._literal = [], 0, None
        self._literal_left = self._skip_literal = 0
        self._skipping, self._discard_line = None, False

    def _abort_sink(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None and hasattr(sink, "abort"):
            sink.abort()

    def lost(self) -> None:
        """The connection went away: a message literal being received is discarded."""
        self._abort_sink()

    def next_line(self) -> bytes | None:
        """Take one raw line off the buffer (for IDLE's DONE and SASL responses)."""
        i = self.buffer.find(b"\n")
        if i < 0:
            return None
        line = bytes(self.buffer[:i])
        del self.buffer[: i + 1]
        return line[:-1] if line.endswith(b"\r") else line

    def step(self) -> bool:
        """Process what is buffered until a command is complete or more input is needed.

        Returns True when it made progress (the caller may call again).
        """
        if self._skip_literal:
            take = min(self._skip_literal, len(self.buffer))
            del self.buffer[:take]
            self._skip_literal -= take
            return take > 0
        if self._literal_left:
            return self._take_literal()
        i = self.buffer.find(b"\n")
        if i < 0:
            # +1: a line of max_line octets may be here with its CR, its LF still to come.
            if len(self.buffer) > self.max_line + 1:
                # Too long: keep only what is needed to find the tag, skip to the line's end.
                if self._skipping is None:
                    first = self._pieces[0] if self._pieces else bytes(self.buffer[:64])
                    self._skipping = (tag_of(first), "Command line too long", None)
                self._discard_line = True
                # Keep the tail: the line may end in a {N+} whose octets must be skipped too.
                del self.buffer[:-_LITERAL_TAIL]
            return False
        line = bytes(self.buffer[:i])
        del self.buffer[: i + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._discard_line:  # the rest of a line we skip; only a literal at its end counts
            self._discard_line = False
        elif len(line) > self.max_line and self._skipping is None:
            first = self._pieces[0] if self._pieces else line[:64]
            self._skipping = (tag_of(first), "Command line too long", None)
        self._line(line)
        return True

    def _line(self, line: bytes) -> None:
        try:
            literal = literal_at_end(line) if self._skipping is None else _any_literal(line)
        except ParseError as e:  # a literal size past 2**63
            first = self._pieces[0] if self._pieces else line
            self._pieces, self._size = [], 0
            self.on_error(tag_of(first), e.message, None)
            return
        if self._skipping is not None:
            if literal is not None and literal[1]:
                self._skip_literal = literal[0]  # RFC 7888: it comes anyway; drop it
                return
            # The end of the command, or a synchronising literal that we never ask for.
            self._finish_skipped()
            return
        self._pieces.append(line)
        self._size += len(line)
        if literal is None:
            pieces, self._pieces, self._size = self._pieces, [], 0
            self.on_command(pieces)
            return
        size, nonsync = literal
        self._start_literal(size, nonsync)

    def _start_literal(self, size: int, nonsync: bool) -> None:
        tag = tag_of(self._pieces[0])
        if self._is_message_literal():
            try:
                self._sink = self.message_sink(size, self._pieces)
            except TooBig as e:
                self._refuse(tag, str(e), e.code, size, nonsync)
                return
            self._literal = Literal(None, size, self._sink)
        else:
            if size > MAX_ARGUMENT_LITERAL or self._size + size > MAX_COMMAND:
                self._refuse(tag, "Literal too big", None, size, nonsync)
                return
            self._literal = Literal(None, size)
            self._literal_parts: list[bytes] = []
        self._literal_left = size
        if not nonsync:
            self.on_continue()
        if size == 0:
            self._end_literal()

    def _refuse(self, tag: str, message: str, code: str | None, size: int, nonsync: bool):
        """Answer a command whose literal we will not take; skip what the client sends."""
        self._skipping = (tag, message, code)
        if nonsync:  # RFC 7888 §4: the bytes come anyway; read and drop them
            self._skip_literal = size
        else:
            # The client waits for "+", which never comes: the command ends here.
            self._finish_skipped()

    def _finish_skipped(self) -> None:
        tag, message, code = self._skipping
        self._skipping = None
        self._pieces, self._size = [], 0
        self.on_error(tag, message, code)

    def _take_literal(self) -> bool:
        take = min(self._literal_left, len(self.buffer))
        if not take:
            return False
        chunk = bytes(self.buffer[:take])
        del self.buffer[:take]
        self._literal_left -= take
        if self._sink is not None:
            self._sink.write(chunk)
        else:
            self._literal_parts.append(chunk)
            self._size += take
        if not self._literal_left:
            self._end_literal()
        return True

    def _end_literal(self) -> None:
        literal, self._literal = self._literal, None
        if self._sink is None:
            literal = Literal(b"".join(self._literal_parts))
            self._literal_parts = []
        self._sink = None
        self._pieces.append(literal)

    def _is_message_literal(self) -> bool:
        """Whether the literal that starts now is an APPEND's message (RFC 3501 §6.3.11).

        It is once the mailbox argument is complete: given before the literal on the first
        line, or as an earlier literal.
        """
        m = _APPEND.match(self._pieces[0])
        if m is None:
            return False
        if len(self._pieces) > 1:
            return True
        before = m.group(1)
        return bool(before[: before.rfind(b"{")].strip())


#: Enough of a skipped line's end to hold "{" 19 digits "+}" and a CR.
_LITERAL_TAIL = 32
_ANY_LITERAL = re.compile(rb"\{(\d{1,19})(\+?)\}$")


def _any_literal(line: bytes) -> tuple[int, bool] | None:
    m = _ANY_LITERAL.search(line)
    return (int(m.group(1)), bool(m.group(2))) if m else None
