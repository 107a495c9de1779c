"""SMTP load generator: messages/s a running SMTP server accepts, and its CPU per message.

What it measures
    ``--sessions`` concurrent SMTP connections to ``--host``:``--port`` (any server: the
    appliance, Postfix, ...).  Each one reads the 220 greeting, says EHLO, optionally upgrades
    with STARTTLS (and says EHLO again) or starts with implicit TLS (``--tls``), optionally
    authenticates with AUTH PLAIN (RFC 4954), then runs ``--messages`` mail transactions on the
    same connection and ends with QUIT.  If the server advertises PIPELINING (RFC 2920),
    ``MAIL FROM`` (with ``SIZE=`` if SIZE is advertised), every ``RCPT TO`` and ``DATA`` go out
    in one write and their replies are read in order, then the message goes out and its final
    reply is read; otherwise each command waits for its reply.  A message counts as accepted when
    every reply was the expected one and the final reply to its data was 2xx.  Any other reply
    counts the message as failed (its first unexpected reply is kept; the first few distinct
    ones are printed) and the session goes on after ``RSET``; a broken connection, a timeout
    or a 421 ends that session.

    The clock starts once every session is connected, greeted and (if asked) encrypted and
    authenticated, and stops at the last final reply to a message's data: connection set-up
    and TLS handshakes are not in the window, QUIT neither.  Per run it prints the accepted
    messages/s over that window, the failed messages (messages never sent because their session
    failed to set up or broke are reported on a line below), message MB/s, the median and
    99th-percentile time of one accepted transaction (MAIL FROM to the final reply), and the CPU
    time per accepted message of the server process(es) named by ``--server-pid`` (utime +
    stime from ``/proc/PID/stat``: all threads, but no child processes, so this suits a
    one-process server like the appliance, not Postfix; "-" if a process went away) and of this
    client itself, to show the client is not the bottleneck when both share a machine.
    ``/proc`` counts CPU in clock ticks (10 ms): keep runs to a few seconds or more.

    The message is built once: a complete RFC 5322 text/plain message of exactly ``--size``
    bytes (CRLF line endings, lines of at most 78 characters, some starting with "." so that
    dot-stuffing is exercised) whose Message-ID carries a fixed-width counter, so every message
    differs and a deduplicating store cannot skip work.

How to run it
    From the repository root, against a server that is already running::

        python -m benchmarks.smtp_load --host 127.0.0.1 --port 10025 --sessions 20 \\
            --messages 100 --size 10KiB --from bench@example.test --to user@example.test \\
            --starttls --insecure --auth user@example.test:password \\
            --server-pid "$(pgrep -o -f 'twistd.* mailbox-appliance')" --runs 5

    ``--to`` can be repeated (one RCPT TO each).  ``--tls`` is implicit TLS (port 465 style);
    ``--insecure`` skips certificate verification (self-signed test certificates), ``--cafile``
    trusts a given CA instead.  The last line is always ``median: X msg/s`` (the median over
    ``--runs``); ``--json`` prints one JSON object instead of the table.  The exit status is 1
    if any message or session failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import email.utils
import itertools
import json
import os
import platform
import resource
import ssl
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

from mailbox_appliance.config import parse_size

SEQ_WIDTH = 10  # digits of the per-message counter patched into the Message-ID
LINE_CHARS = 76  # characters per body line (at most 78 allowed)
SHOWN_ERRORS = 5  # distinct errors printed per run
SLICE = 1024 * 1024  # bytes per write of a big message
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --- the message -------------------------------------------------------------------------


@dataclass
class Message:
    """One pre-built message as sent after DATA, split around its Message-ID counter."""

    prefix: bytes  # dot-stuffed wire bytes up to the counter
    suffix: bytes  # dot-stuffed wire bytes after it, ending with CRLF "." CRLF
    size: int  # RFC 5322 size: before dot-stuffing, without the terminating "."
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def wire_size(self) -> int:
        return len(self.prefix) + SEQ_WIDTH + len(self.suffix)

    def data(self) -> list[bytes | memoryview]:
        """The next message's DATA bytes: a fresh Message-ID, nothing else rebuilt or copied.

        Big messages come in slices of ``SLICE`` bytes: TLS writes of gigabytes at once fail.
        """
        seq = next(self.counter) % 10**SEQ_WIDTH
        parts: list[bytes | memoryview] = []
        for piece in (self.prefix, b"%0*d" % (SEQ_WIDTH, seq), self.suffix):
            view = memoryview(piece)
            parts.extend(view[i : i + SLICE] for i in range(0, len(view), SLICE))
        return parts


def _fold(name: str, items: list[str]) -> list[str]:
    """``Name: a, b, ...`` folded into lines of at most 78 characters where possible."""
    tokens = [item + "," for item in items[:-1]] + items[-1:]
    lines, line = [], name + ":"
    for token in tokens:
        if len(line) + 1 + len(token) > 78 and line != name + ":":
            lines.append(line)
            line = ""
        line += " " + token
    return lines + [line]


def _body(length: int) -> bytes:
    """``length`` (>= 3) bytes of printable lines of at most 78 characters, each CRLF-ended.

    Every 16th line starts with "." (and one is a lone "."), so the sender has to dot-stuff.
    Lines come from a fixed pool: building a body of any size costs next to nothing.
    """
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?-()'/"
    state = 12345
    pool = []
    for _ in range(97):
        chars = []
        for _ in range(LINE_CHARS):
            state = (state * 1103515245 + 12345) % 2**31
            chars.append(alphabet[(state >> 8) % len(alphabet)])
        pool.append("".join(chars).strip().ljust(LINE_CHARS, "x"))
    out: list[str] = []
    remaining = length
    for i in itertools.count():
        if remaining <= LINE_CHARS + 2:
            n = remaining - 2
        else:
            n = LINE_CHARS
            if remaining - (n + 2) < 3:  # don't leave a remainder too short for a line
                n -= 3
        line = pool[i % len(pool)][:n]
        if i == 32 and remaining != 4 and remaining != 5:  # a lone "." (if 3+ bytes remain)
            line = "."
            n = 1
        elif i % 16 == 8:
            line = "." + line[1:]
        out.append(line + "\r\n")
        remaining -= n + 2
        if remaining <= 0:
            break
    return "".join(out).encode("ascii")


def build_message(size: int, sender: str, recipients: list[str]) -> Message:
    """A text/plain RFC 5322 message of ``size`` bytes (more if the headers alone are longer)."""
    domain = sender.rpartition("@")[2] or "smtp-load.invalid"
    token = f"{os.getpid()}.{os.urandom(4).hex()}"
    slot = "0" * SEQ_WIDTH
    header_lines = [
        f"From: {sender}",
        *_fold("To", recipients),
        f"Subject: smtp-load test message of {size} bytes",
        f"Date: {email.utils.formatdate(localtime=True)}",
        f"Message-ID: <smtp-load.{slot}.{token}@{domain}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
        "",
        "",
    ]
    head = "\r\n".join(header_lines).encode("utf-8")
    body = _body(max(size - len(head), 3))
    text = head + body
    # Dot-stuffing (RFC 5321 4.5.2): header lines never start with "." and the counter is
    # digits only, so stuffing the template once is the same as stuffing every message.
    wire = text.replace(b"\r\n.", b"\r\n..")
    at = wire.index(f"smtp-load.{slot}.".encode()) + len("smtp-load.")
    return Message(wire[:at], wire[at + SEQ_WIDTH :] + b".\r\n", len(text))


# --- one SMTP session ----------------------------------------------------------------------


class SessionBroken(Exception):
    """The connection can't go on: closed, unparseable reply, 421, failed RSET."""


class SetupFailed(Exception):
    """The greeting, EHLO, STARTTLS or AUTH did not get the reply it needs."""


@dataclass
class Target:
    host: str
    port: int
    mode: str  # "plain", "starttls" or "tls"
    context: ssl.SSLContext | None
    tls_name: str
    ehlo_name: str
    auth: tuple[str, str] | None
    sender: str
    recipients: list[str]
    sessions: int
    messages: int
    timeout: float
    message: Message


@dataclass
class RunStats:
    accepted: int = 0
    failed: int = 0
    unsent: int = 0
    broken_sessions: int = 0
    pipelining: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    last_final: float = 0.0


def describe_reply(lines: list[bytes]) -> str:
    text = " / ".join(line.decode("utf-8", "replace").strip() for line in lines)
    return text if len(text) <= 200 else text[:197] + "..."


def describe_exception(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


class Session:
    def __init__(self, target: Target, stats: RunStats):
        self.target = target
        self.stats = stats
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.step = "connect"
        self.pipelining = False
        self.mail = b""
        self.rcpts: list[bytes] = []
        self.envelope = b""  # MAIL + RCPTs + DATA, for one pipelined write
        self.failed_current = False

    # replies

    async def read_reply(self) -> tuple[int, list[bytes]]:
        """One reply, all of its ``XYZ-`` continuation lines and the final ``XYZ `` line."""
        assert self.reader is not None
        lines = []
        while True:
            try:
                line = await self.reader.readline()
            except ValueError:  # a line longer than the stream's limit
                raise SessionBroken("reply line too long") from None
            if not line.endswith(b"\n"):
                what = "closed" if not line else "closed in the middle of a reply"
                raise SessionBroken(f"connection {what}")
            code = line[:3]
            if not code.isdigit():
                raise SessionBroken(f"malformed reply: {describe_reply([line])}")
            lines.append(line)
            if line[3:4] != b"-":
                return int(code), lines

    async def command(self, line: bytes) -> tuple[int, list[bytes]]:
        assert self.writer is not None
        self.writer.write(line)
        return await self.read_reply()

    def fail(self, what: str, code: int, lines: list[bytes]) -> None:
        """Count the current message as failed, once, with its first unexpected reply."""
        if not self.failed_current:
            self.failed_current = True
            self.stats.failed += 1
            self.stats.errors[f"{what}: {describe_reply(lines)}"] += 1
        if code == 421:  # the server is closing the connection
            raise SessionBroken(f"421 from the server after {what}")

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
            self.writer = None

    # set-up: greeting, EHLO, TLS, AUTH

    async def setup(self) -> bool:
        """Connect and get ready for transactions; False (error counted) if that failed."""
        try:
            async with asyncio.timeout(self.target.timeout):
                await self._setup()
            return True
        except SetupFailed as e:
            error = str(e)
        except (SessionBroken, OSError) as e:
            detail = str(e) if isinstance(e, SessionBroken) else describe_exception(e)
            error = f"{self.step}: {detail}"
        self.stats.errors[f"setup: {error}"] += 1
        self.abort()
        return False

    async def expect(self, line: bytes | None, code: int, what: str) -> None:
        self.step = what
        if line is not None:
            assert self.writer is not None
            self.writer.write(line)
        got, lines = await self.read_reply()
        if got != code:
            raise SetupFailed(f"{what}: {describe_reply(lines)}")

    async def ehlo(self) -> dict[str, list[str]]:
        """EHLO (HELO if the server refuses it); the extension keywords and their arguments."""
        self.step = "EHLO"
        code, lines = await self.command(f"EHLO {self.target.ehlo_name}\r\n".encode())
        if code // 100 == 5:
            await self.expect(f"HELO {self.target.ehlo_name}\r\n".encode(), 250, "HELO")
            return {}
        if code != 250:
            raise SetupFailed(f"EHLO: {describe_reply(lines)}")
        extensions = {}
        for line in lines[1:]:
            words = line[4:].decode("utf-8", "replace").upper().split()
            if words:
                extensions[words[0]] = words[1:]
        return extensions

    async def _setup(self) -> None:
        t = self.target
        self.step = "connect"
        implicit = t.context if t.mode == "tls" else None
        self.reader, self.writer = await asyncio.open_connection(
            t.host, t.port, ssl=implicit, server_hostname=t.tls_name if implicit else None
        )
        await self.expect(None, 220, "greeting")
        extensions = await self.ehlo()
        if t.mode == "starttls":
            if "STARTTLS" not in extensions:
                raise SetupFailed("the server does not advertise STARTTLS")
            await self.expect(b"STARTTLS\r\n", 220, "STARTTLS")
            self.step = "TLS handshake"
            await self.writer.start_tls(t.context, server_hostname=t.tls_name)
            extensions = await self.ehlo()
        if t.auth is not None:
            mechanisms = extensions.get("AUTH")
            if mechanisms is None:
                hint = " (try --starttls or --tls)" if t.mode == "plain" else ""
                raise SetupFailed(f"the server does not advertise AUTH{hint}")
            if "PLAIN" not in mechanisms:
                raise SetupFailed(f"the server offers AUTH {' '.join(mechanisms)}, not PLAIN")
            user, password = t.auth
            token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
            await self.expect(b"AUTH PLAIN " + token + b"\r\n", 235, "AUTH PLAIN")
        self.pipelining = "PIPELINING" in extensions
        size = f" SIZE={t.message.size}" if "SIZE" in extensions else ""
        self.mail = f"MAIL FROM:<{t.sender}>{size}\r\n".encode()
        self.rcpts = [f"RCPT TO:<{r}>\r\n".encode() for r in t.recipients]
        self.envelope = self.mail + b"".join(self.rcpts) + b"DATA\r\n"

    # transactions

    async def transactions(self) -> None:
        """``--messages`` transactions; ends early (and counts the rest unsent) if broken."""
        stats = self.stats
        count = self.target.messages
        if self.pipelining:
            stats.pipelining += 1
        transaction = self.pipelined if self.pipelining else self.lockstep
        for i in range(count):
            self.failed_current = False
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.target.timeout):
                    ok = await transaction()
            except (SessionBroken, OSError) as e:
                if not self.failed_current:
                    stats.failed += 1
                    error = str(e) if isinstance(e, SessionBroken) else describe_exception(e)
                    stats.errors[f"{self.step}: {error}"] += 1
                stats.unsent += count - i - 1
                stats.broken_sessions += 1
                self.abort()
                return
            stats.last_final = now = time.perf_counter()
            if ok:
                stats.accepted += 1
                stats.latencies.append(now - started)

    async def pipelined(self) -> bool:
        """MAIL, RCPTs and DATA in one write (RFC 2920), replies read in order, then data."""
        assert self.writer is not None
        self.step = "MAIL FROM"
        self.writer.write(self.envelope)
        code, lines = await self.read_reply()
        if code // 100 != 2:
            self.fail("MAIL FROM", code, lines)
        recipients = 0
        for rcpt in self.rcpts:
            self.step = "RCPT TO"
            code, lines = await self.read_reply()
            if code // 100 == 2:
                recipients += 1
            else:
                self.fail(rcpt.decode(errors="replace").strip(), code, lines)
        self.step = "DATA"
        code, lines = await self.read_reply()
        return await self.after_data(code, lines, recipients > 0)

    async def lockstep(self) -> bool:
        """One command at a time; RSET at the first unexpected reply."""
        self.step = "MAIL FROM"
        code, lines = await self.command(self.mail)
        if code // 100 != 2:
            self.fail("MAIL FROM", code, lines)
        for rcpt in self.rcpts:
            if self.failed_current:
                break
            self.step = "RCPT TO"
            code, lines = await self.command(rcpt)
            if code // 100 != 2:
                self.fail(rcpt.decode(errors="replace").strip(), code, lines)
        if self.failed_current:
            await self.rset()
            return False
        self.step = "DATA"
        code, lines = await self.command(b"DATA\r\n")
        return await self.after_data(code, lines, True)

    async def after_data(self, code: int, lines: list[bytes], real: bool) -> bool:
        """Send the message on 354; RSET after any unexpected reply.  Whether it went well."""
        if code == 354:
            await self.send_data(real)
        else:
            self.fail("DATA", code, lines)
        if self.failed_current:
            await self.rset()
            return False
        return True

    async def send_data(self, real: bool) -> None:
        """The message (or, with no accepted recipient, just the "." that ends DATA)."""
        assert self.writer is not None
        self.step = "end of data"
        for part in self.target.message.data() if real else [b".\r\n"]:
            self.writer.write(part)
            await self.writer.drain()
        code, lines = await self.read_reply()
        if code // 100 != 2:
            self.fail("end of data", code, lines)

    async def rset(self) -> None:
        self.step = "RSET"
        code, lines = await self.command(b"RSET\r\n")
        if code // 100 != 2:
            raise SessionBroken(f"RSET: {describe_reply(lines)}")

    async def quit(self) -> None:
        if self.writer is None:
            return
        try:
            async with asyncio.timeout(min(self.target.timeout, 10.0)):
                self.step = "QUIT"
                await self.command(b"QUIT\r\n")
                self.writer.close()
                await self.writer.wait_closed()
            self.writer = None
        except (SessionBroken, OSError):
            self.abort()


# --- runs ----------------------------------------------------------------------------------


def server_cpu(pids: list[int]) -> float | None:
    """utime + stime of ``pids`` in seconds (all threads), or None if one is gone."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return None
        fields = stat[stat.rindex(b")") + 2 :].split()  # the name may contain spaces
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / CLK_TCK


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class RunResult:
    run: int
    sessions: int  # connected and ready when the clock started
    accepted: int
    failed: int
    unsent: int  # not attempted: their session failed to set up or broke
    broken_sessions: int
    seconds: float
    msgs_per_s: float
    mb_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_ms_per_msg: float | None
    client_cpu_ms_per_msg: float | None
    pipelining_sessions: int
    errors: list[tuple[int, str]]  # (count, text), most frequent first

    @property
    def clean(self) -> bool:
        return not (self.failed or self.unsent or self.broken_sessions)

    def line(self, label: str = "") -> str:
        def num(value: float | None, width: int, digits: int) -> str:
            return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

        if not self.sessions:
            pipe = "-"
        elif self.pipelining_sessions == self.sessions:
            pipe = "yes"
        else:
            pipe = str(self.pipelining_sessions or "no")
        return (
            f"{self.run:>4} {self.sessions:>5} {self.accepted:>8} {self.failed:>7} "
            f"{self.seconds:>8.3f} {self.msgs_per_s:>9.1f} {self.mb_per_s:>7.1f} "
            f"{num(self.p50_ms, 7, 2)} {num(self.p99_ms, 7, 2)} "
            f"{num(self.server_cpu_ms_per_msg, 10, 3)} {num(self.client_cpu_ms_per_msg, 10, 3)} "
            f"{pipe:>4}  {label}"
        ).rstrip()


HEADER = (
    f"{'run':>4} {'sess':>5} {'accepted':>8} {'failed':>7} {'seconds':>8} {'msg/s':>9} "
    f"{'MB/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'srv ms/msg':>10} {'cli ms/msg':>10} {'pipe':>4}"
)


def percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


async def run_once(target: Target, server_pids: list[int], number: int) -> RunResult:
    """One run: connect every session, then time their transactions, then QUIT."""
    stats = RunStats()
    sessions = [Session(target, stats) for _ in range(target.sessions)]
    ready = await asyncio.gather(*(s.setup() for s in sessions))
    live = [s for s, ok in zip(sessions, ready, strict=True) if ok]
    stats.unsent += (len(sessions) - len(live)) * target.messages

    server_before = server_cpu(server_pids) if server_pids else None
    client_before = client_cpu()
    started = stats.last_final = time.perf_counter()
    await asyncio.gather(*(s.transactions() for s in live))
    client_used = client_cpu() - client_before
    server_after = server_cpu(server_pids) if server_pids else None
    await asyncio.gather(*(s.quit() for s in live))

    seconds = stats.last_final - started
    accepted = stats.accepted
    rate = accepted / seconds if seconds > 0 else 0.0
    server_ms = None
    if server_before is not None and server_after is not None and accepted:
        server_ms = (server_after - server_before) * 1000 / accepted
    ordered = sorted(stats.latencies)
    return RunResult(
        run=number,
        sessions=len(live),
        accepted=accepted,
        failed=stats.failed,
        unsent=stats.unsent,
        broken_sessions=stats.broken_sessions + len(sessions) - len(live),
        seconds=seconds,
        msgs_per_s=rate,
        mb_per_s=rate * target.message.size / 1e6,
        p50_ms=percentile(ordered, 0.5),
        p99_ms=percentile(ordered, 0.99),
        server_cpu_ms_per_msg=server_ms,
        client_cpu_ms_per_msg=client_used * 1000 / accepted if accepted else None,
        pipelining_sessions=stats.pipelining,
        errors=[(n, text) for text, n in stats.errors.most_common()],
    )


async def run_all(
    target: Target, server_pids: list[int], runs: int, quiet: bool
) -> list[RunResult]:
    results = []
    for number in range(1, runs + 1):
        result = await run_once(target, server_pids, number)
        results.append(result)
        if not quiet:
            print(result.line(), flush=True)
            if result.sessions < target.sessions:
                lost = target.sessions - result.sessions
                print(f"      {lost} of {target.sessions} sessions failed to set up")
            if result.unsent:
                print(f"      {result.unsent} messages not sent: their session failed or broke")
            for n, text in result.errors[:SHOWN_ERRORS]:
                print(f"      {n}x {text}")
            if len(result.errors) > SHOWN_ERRORS:
                print(f"      ... and {len(result.errors) - SHOWN_ERRORS} more distinct errors")
            sys.stdout.flush()
    return results


# --- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="SMTP load generator: accepted messages/s and server CPU per message.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="server address (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, metavar="PORT", help="server port (default: 25, with --tls 465)"
    )
    parser.add_argument(
        "--sessions", type=int, default=20, metavar="N", help="concurrent connections (20)"
    )
    parser.add_argument(
        "--messages", type=int, default=100, metavar="N", help="messages per session (100)"
    )
    parser.add_argument("--size", default="10KiB", help="message size, e.g. 500000, 1MiB (10KiB)")
    parser.add_argument(
        "--from",
        dest="sender",
        default="bench@example.test",
        metavar="ADDRESS",
        help="envelope and From: sender (default: bench@example.test)",
    )
    parser.add_argument(
        "--to",
        dest="recipients",
        action="append",
        metavar="ADDRESS",
        help="recipient; repeat for several (default: user@example.test)",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--starttls", action="store_true", help="upgrade with STARTTLS after EHLO")
    tls.add_argument("--tls", action="store_true", help="implicit TLS from the first byte")
    parser.add_argument("--insecure", action="store_true", help="don't verify the certificate")
    parser.add_argument("--cafile", help="verify the certificate against this CA file")
    parser.add_argument(
        "--tls-name", metavar="NAME", help="name to verify and send as SNI (default: --host)"
    )
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="AUTH PLAIN with these")
    parser.add_argument(
        "--ehlo", default="smtp-load.invalid", metavar="NAME", help="EHLO name (smtp-load.invalid)"
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        metavar="PID",
        help="server process whose CPU time to report; repeat to sum several",
    )
    parser.add_argument(
        "--runs", type=int, default=1, metavar="N", help="repeat everything N times (1)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="allowed per session set-up and per transaction (default: 60)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        args.size_bytes = parse_size(args.size)
    except ValueError as e:
        parser.error(str(e))
    if min(args.sessions, args.messages, args.runs, args.size_bytes) < 1 or args.timeout <= 0:
        parser.error("--sessions, --messages, --runs, --size and --timeout must be positive")
    if (args.insecure or args.cafile or args.tls_name) and not (args.tls or args.starttls):
        parser.error("--insecure, --cafile and --tls-name need --tls or --starttls")
    if args.insecure and args.cafile:
        parser.error("--insecure and --cafile contradict each other")
    if args.auth is not None and ":" not in args.auth:
        parser.error("--auth takes USER:PASSWORD")
    for pid in args.server_pid:
        if server_cpu([pid]) is None:
            parser.error(f"--server-pid {pid}: no such process (/proc/{pid}/stat)")
    args.recipients = args.recipients or ["user@example.test"]
    if args.port is None:
        args.port = 465 if args.tls else 25
    return args


def make_target(args: argparse.Namespace) -> Target:
    context = None
    if args.tls or args.starttls:
        context = ssl.create_default_context(cafile=args.cafile)
        if args.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    auth = None
    if args.auth is not None:
        user, _, password = args.auth.partition(":")
        auth = (user, password)
    return build_target(args, context, auth)


def build_target(
    args: argparse.Namespace, context: ssl.SSLContext | None, auth: tuple[str, str] | None
) -> Target:
    """The Target the common options describe (also used by outbound_bench)."""
    return Target(
        host=args.host,
        port=args.port,
        mode="tls" if args.tls else "starttls" if args.starttls else "plain",
        context=context,
        tls_name=args.tls_name or args.host,
        ehlo_name=args.ehlo,
        auth=auth,
        sender=args.sender,
        recipients=args.recipients,
        sessions=args.sessions,
        messages=args.messages,
        timeout=args.timeout,
        message=build_message(args.size_bytes, args.sender, args.recipients),
    )


def describe(args: argparse.Namespace, target: Target) -> str:
    security = {"plain": "no TLS", "starttls": "STARTTLS", "tls": "implicit TLS"}[target.mode]
    if target.context is not None:
        security += ", not verified" if args.insecure else f", verified as {target.tls_name}"
    auth = f"AUTH PLAIN as {target.auth[0]}" if target.auth else "no AUTH"
    pids = ",".join(map(str, args.server_pid)) or "not given"
    return (
        f"python {platform.python_version()} on {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs; SMTP {target.host}:{target.port} ({security}; {auth}); "
        f"server pid {pids}\n"
        f"{target.sessions} sessions x {target.messages} messages of {target.message.size} bytes "
        f"({target.message.wire_size} after DATA) from {target.sender} to "
        f"{len(target.recipients)} recipient(s); {args.runs} run(s)"
    )


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    target = make_target(args)
    if not args.json:
        print(describe(args, target))
        print(HEADER, flush=True)
    try:
        results = asyncio.run(run_all(target, args.server_pid, args.runs, args.json))
    except KeyboardInterrupt:
        return 130
    rate = median([r.msgs_per_s for r in results])
    server = median(
        [r.server_cpu_ms_per_msg for r in results if r.server_cpu_ms_per_msg is not None]
    )
    if args.json:
        print(
            json.dumps(
                {
                    "target": f"{target.host}:{target.port}",
                    "tls": target.mode,
                    "auth": target.auth is not None,
                    "sessions": target.sessions,
                    "messages_per_session": target.messages,
                    "message_bytes": target.message.size,
                    "recipients": len(target.recipients),
                    "server_pids": args.server_pid,
                    "cpus": os.cpu_count(),
                    "runs": [asdict(r) for r in results],
                    "median_msgs_per_s": rate,
                    "median_server_cpu_ms_per_msg": server,
                },
                indent=2,
            )
        )
    else:
        if args.runs > 1:
            middle = sorted(results, key=lambda r: r.msgs_per_s)[len(results) // 2]
            print(middle.line("median run"))
        if server is not None:
            print(f"median server CPU: {server:.3f} ms/msg")
        print(f"median: {rate:.1f} msg/s")
    return 0 if all(r.clean for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
