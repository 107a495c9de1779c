"""A fast SMTP sink: accepts every message, keeps none, counts what arrived.

What it is for
    The far end of ``benchmarks/outbound_bench.py``: the server under test relays to it, and
    the benchmark asks it how many messages and recipients have arrived.  It runs as its own
    process so that it does not take CPU from the benchmark's event loop.

What it speaks
    ESMTP (RFC 5321) on ``--interface``:``--port``, any number of connections, any number of
    transactions per connection.  EHLO advertises PIPELINING (RFC 2920), 8BITMIME (RFC 6152)
    and SIZE (RFC 1870, no limit); HELO, MAIL, RCPT, DATA, RSET, NOOP, VRFY and QUIT are
    answered at once, MAIL and RCPT with 250 whatever their address.  Replies to pipelined
    commands that arrive in one read go out in one write.  DATA without MAIL is 503, without an
    accepted RCPT 554; otherwise 354, and the content is thrown away as it arrives: only the
    end-of-data sequence CRLF "." CRLF is looked for, also across reads.  A message counts
    when its end of data arrives (and gets its 250); its recipients are the RCPTs of its
    transaction.  Nothing is written per message.

    The counters go out on request: the (non-standard) command ``XSTAT``, on any connection,
    gets ``250 messages=N recipients=N bytes=N connections=N pid=N``: totals since the sink
    started, never reset (a client takes differences).  ``bytes`` counts the content as sent
    (dot-stuffed, with its end-of-data line).

How to run it
    From the repository root::

        python -m benchmarks.sink --port 15025 [--interface 127.0.0.1]

    It prints one line when it listens and one with its totals when it gets SIGINT or SIGTERM.
    ``python -m benchmarks.sink --port 15025 --stat`` asks a running sink for its counters.

The client side
    ``SinkWatch`` polls a sink's counters and remembers when they changed;
    ``find_or_start_sink`` connects to a sink, or starts one as a child process if nothing
    listens on a loopback address (``stop_sink`` ends it).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MAX_LINE = 64 * 1024  # longest command line before the connection is dropped
END_OF_DATA = b"\r\n.\r\n"
EHLO_REPLY = b"250-%s\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n"
SETTLE = 0.5  # seconds the counters must stand still for SinkWatch.settle
START_TIMEOUT = 10.0  # seconds a started sink may take to listen
REPO = Path(__file__).resolve().parent.parent

# --- the sink ----------------------------------------------------------------------------------


@dataclass
class Counters:
    """Totals since the sink started."""

    messages: int = 0
    recipients: int = 0
    bytes: int = 0
    connections: int = 0

    def line(self) -> str:
        return (
            f"messages={self.messages} recipients={self.recipients} bytes={self.bytes} "
            f"connections={self.connections} pid={os.getpid()}"
        )


class SinkProtocol(asyncio.Protocol):
    """One SMTP connection: a command parser and an end-of-data scanner, nothing stored."""

    def __init__(self, counters: Counters, hostname: bytes):
        self.counters = counters
        self.hostname = hostname
        self.transport: asyncio.Transport | None = None
        self.partial = b""  # an incomplete command line
        self.in_data = False
        self.tail = b""  # the last (up to 4) content bytes, for a terminator split across reads
        self.has_mail = False
        self.rcpts = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.counters.connections += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(b"220 %s ESMTP benchmarks.sink\r\n" % self.hostname)

    def data_received(self, data: bytes) -> None:
        replies: list[bytes] = []
        closing = False
        while data and not closing:
            if self.in_data:
                data = self.content(data, replies)
            else:
                data, closing = self.commands(data, replies)
        assert self.transport is not None
        if replies:
            self.transport.write(b"".join(replies))
        if closing:
            self.transport.close()

    def content(self, data: bytes, replies: list[bytes]) -> bytes:
        """Skip message content; what follows its end-of-data line is returned."""
        joined = self.tail + data
        at = joined.find(END_OF_DATA)
        if at < 0:
            self.tail = joined[-4:]
            self.counters.bytes += len(data)
            return b""
        used = at + len(END_OF_DATA) - len(self.tail)
        self.counters.bytes += used
        self.counters.messages += 1
        self.counters.recipients += self.rcpts
        self.reset()
        replies.append(b"250 2.0.0 discarded\r\n")
        return data[used:]

    def commands(self, data: bytes, replies: list[bytes]) -> tuple[bytes, bool]:
        """Answer complete command lines; stop after DATA (content follows) or QUIT."""
        buffer = self.partial + data if self.partial else data
        self.partial = b""
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                rest = buffer[start:]
                if len(rest) > MAX_LINE:
                    replies.append(b"500 5.5.2 line too long\r\n")
                    return b"", True
                self.partial = rest
                return b"", False
            line = buffer[start:end].rstrip(b"\r")
            start = end + 1
            reply = self.command(line)
            replies.append(reply)
            if self.in_data:
                return buffer[start:], False
            if reply.startswith(b"221"):
                return b"", True

    def command(self, line: bytes) -> bytes:
        """The reply to one command line (RFC 5321 4.1.1)."""
        verb = line[:4].upper()
        if verb == b"MAIL":
            self.has_mail = True
            self.rcpts = 0
            return b"250 2.1.0 ok\r\n"
        if verb == b"RCPT":
            if not self.has_mail:
                return b"503 5.5.1 MAIL first\r\n"
            self.rcpts += 1
            return b"250 2.1.5 ok\r\n"
        if verb == b"DATA":
            if not self.has_mail:
                return b"503 5.5.1 MAIL first\r\n"
            if not self.rcpts:
                return b"554 5.5.1 no valid recipients\r\n"
            self.in_data = True
            self.tail = b"\r\n"  # the CRLF that ended DATA: "." CRLF at once ends an empty body
            return b"354 end with <CRLF>.<CRLF>\r\n"
        if verb == b"EHLO":
            self.reset()
            return EHLO_REPLY % self.hostname
        if verb in (b"HELO", b"RSET"):
            self.reset()
            return b"250 2.0.0 ok\r\n"
        if verb == b"NOOP":
            return b"250 2.0.0 ok\r\n"
        if verb == b"QUIT":
            return b"221 2.0.0 bye\r\n"
        if verb == b"VRFY":
            return b"252 2.1.5 cannot verify\r\n"
        if line.upper() == b"XSTAT":
            return b"250 " + self.counters.line().encode() + b"\r\n"
        return b"500 5.5.2 unknown command\r\n"

    def reset(self) -> None:
        self.in_data = False
        self.tail = b""
        self.has_mail = False
        self.rcpts = 0


async def serve(interface: str, port: int) -> Counters:
    """Listen until SIGINT or SIGTERM; the totals then."""
    counters = Counters()
    hostname = socket.gethostname().encode("ascii", "replace") or b"sink.invalid"
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SinkProtocol(counters, hostname), interface, port, backlog=1024
    )
    print(f"sink listening on {interface}:{port} (pid {os.getpid()})", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
    return counters


# --- the client side ---------------------------------------------------------------------------


class SinkError(Exception):
    """The sink can't be used: what listens does not answer like one, or it is busy."""


@dataclass
class SinkCounts:
    """A sink's counters, as one XSTAT reply gave them."""

    messages: int
    recipients: int
    bytes: int
    connections: int
    pid: int

    @classmethod
    def parse(cls, line: bytes) -> SinkCounts:
        if not line.startswith(b"250 "):
            raise SinkError(f"not a benchmarks.sink: XSTAT got {line!r}")
        values = dict(word.split(b"=", 1) for word in line[4:].split() if b"=" in word)
        try:
            return cls(*(int(values[name.encode()]) for name in cls.__dataclass_fields__))
        except (KeyError, ValueError):
            raise SinkError(f"not a benchmarks.sink: XSTAT got {line!r}") from None


class SinkWatch:
    """One connection to a sink that polls its counters and remembers when they changed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.latest: SinkCounts | None = None
        self.changes: list[tuple[float, int]] = []  # (when, recipients) at each change
        self.task: asyncio.Task | None = None
        self.polling = False

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float) -> SinkWatch:
        """Connected, greeted, and the counters read once."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            watch = cls(reader, writer)
            try:
                greeting = await reader.readline()
                if not greeting.startswith(b"220"):
                    raise SinkError(f"not a benchmarks.sink: greeting {greeting!r}")
                await watch.poll()
            except BaseException:
                writer.close()
                raise
        return watch

    @property
    def recipients(self) -> int:
        return self.changes[-1][1]

    async def poll(self) -> SinkCounts:
        """Ask for the counters once (XSTAT); note the time if the recipients changed."""
        self.writer.write(b"XSTAT\r\n")
        counts = SinkCounts.parse(await self.reader.readline())
        if not self.changes or counts.recipients != self.recipients:
            self.changes.append((time.perf_counter(), counts.recipients))
        self.latest = counts
        return counts

    async def _poll_while_asked(self, interval: float) -> None:
        while self.polling:
            await self.poll()
            await asyncio.sleep(interval)

    def start(self, interval: float) -> None:
        """Poll every ``interval`` seconds in the background; forget older changes."""
        self.changes = self.changes[-1:]
        self.polling = True
        self.task = asyncio.create_task(self._poll_while_asked(interval))

    async def stop(self) -> None:
        """Stop polling after the poll under way (no reply is left unread); raise its error."""
        assert self.task is not None
        task, self.task, self.polling = self.task, None, False
        await task

    def reached(self, recipients: int) -> float | None:
        """When the recipient count first was at least ``recipients`` (None: not yet)."""
        for when, count in self.changes:
            if count >= recipients:
                return when
        return None

    def at(self, moment: float) -> int:
        """The recipient count as the last poll before ``moment`` saw it."""
        count = self.changes[0][1]
        for when, seen in self.changes:
            if when > moment:
                break
            count = seen
        return count

    async def wait_for(
        self, recipients: int, since: float, idle: float, interval: float
    ) -> float | None:
        """When the count reached ``recipients``; None if it stood still for ``idle`` seconds.

        The count may stand still from ``since`` on without that counting as a stall.
        """
        while True:
            done = self.reached(recipients)
            if done is not None:
                return done
            if self.task is not None and self.task.done():
                self.task.result()  # the polling failed: say why
            if time.perf_counter() - max(self.changes[-1][0], since) > idle:
                return None
            await asyncio.sleep(interval)

    async def settle(self, idle: float) -> float:
        """Wait until the counters stood still for SETTLE seconds; the seconds spent beyond."""
        started = time.perf_counter()
        before = await self.poll()
        while True:
            await asyncio.sleep(SETTLE)
            now = await self.poll()
            if now.recipients == before.recipients:
                return time.perf_counter() - started - SETTLE
            if time.perf_counter() - started > idle:
                raise SinkError(f"the sink is still receiving mail after {idle:.0f} s")
            before = now

    def close(self) -> None:
        self.writer.close()


def is_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def find_or_start_sink(
    host: str, port: int, timeout: float
) -> tuple[SinkWatch, subprocess.Popen | None]:
    """A watch on the sink at host:port, and the sink's process if it had to be started.

    Only a sink on a loopback address is started, as ``python -m benchmarks.sink``.
    """
    try:
        return await SinkWatch.connect(host, port, timeout), None
    except ConnectionRefusedError:
        if not is_local(host):
            raise
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sink", "--port", str(port), "--interface", host],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # a ^C to the benchmark does not reach it
    )
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return await SinkWatch.connect(host, port, timeout), process
        except ConnectionRefusedError:
            if process.poll() is not None:
                failure = f"exited with status {process.returncode}"
            elif time.monotonic() > deadline:
                stop_sink(process)
                failure = f"did not listen in {START_TIMEOUT:.0f} s"
            else:
                await asyncio.sleep(0.05)
                continue
            raise SinkError(f"benchmarks.sink {failure}") from None


def stop_sink(process: subprocess.Popen) -> None:
    """SIGTERM to a sink started by find_or_start_sink; SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _stat(host: str, port: int) -> SinkCounts:
    watch = await SinkWatch.connect(host, port, 10.0)
    watch.close()
    assert watch.latest is not None
    return watch.latest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SMTP sink: accepts, counts and discards mail.")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument(
        "--interface", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--stat", action="store_true", help="print a running sink's counters and exit"
    )
    args = parser.parse_args(argv)
    if args.stat:
        try:
            counts = asyncio.run(_stat(args.interface, args.port))
        except (OSError, SinkError) as e:
            print(f"{args.interface}:{args.port}: {e or type(e).__name__}", file=sys.stderr)
            return 1
        print(" ".join(f"{k}={v}" for k, v in vars(counts).items()))
        return 0
    try:
        counters = asyncio.run(serve(args.interface, args.port))
    except OSError as e:
        print(f"sink: cannot listen on {args.interface}:{args.port}: {e}", file=sys.stderr)
        return 1
    print(f"sink stopped: {counters.line()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
