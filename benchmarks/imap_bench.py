"""IMAP read benchmark: opening a big mailbox, downloading it, and searching its headers.

What it measures
    A running IMAP server at ``--host``:``--port`` (any server: the appliance, Dovecot, ...),
    with Python's ``imaplib`` as the client, over one mailbox (``--mailbox``, default INBOX) of
    ``--user``.  Each run opens one connection (plain, ``--starttls`` or implicit ``--tls``)
    and times, with the wall clock:

    1. *open*: ``LOGIN`` + ``SELECT`` + ``FETCH 1:* (FLAGS RFC822.SIZE)``, what a client does
       to show a mailbox's list.  Connecting, the greeting and TLS are not in the window.
       ``LOGIN`` is also shown on its own: it costs what the server's password hash costs
       (argon2id with 64 MiB and 3 passes: 0.1-0.2 s on a 2-core VM, whichever server).
    2. *download*: ``FETCH 1:* BODY.PEEK[]``, every message whole; MB/s are the literals'
       bytes (10**6 bytes per MB) over the command's wall time.
    3. *search*: ``UID SEARCH HEADER Message-ID <id>`` and ``UID SEARCH SUBJECT "<subject>"``,
       with the Message-ID and Subject of the message in the middle of the mailbox (read
       before the runs), so each should find exactly that message.

    Then it logs out.  Every answer is checked: the open must list every message, the
    download must carry every message with the total of the sizes listed, and both searches
    must find the chosen message; a run that fails a check is marked and the exit status is 1.
    ``imaplib`` reads whole answers into memory (about 100 MB for the download of 10,000
    messages of 10 KiB): the client needs that much free memory, and its CPU time is shown
    per phase, to tell a slow client from a slow server.

    ``--server-pid PID`` (repeatable) names the server process(es) whose CPU time (utime +
    stime of all threads, from ``/proc/PID/stat``; 10 ms ticks) is reported per phase, and
    whose ``VmRSS`` and ``VmHWM`` (``/proc/PID/status``, summed over the processes) are read
    before the first run (after the benchmark's first login, which picks the search target,
    so a password hash's memory is not counted as growth) and at the end of each run, so
    memory growth over the runs shows.
    ``--server-pid auto`` adds the process(es) holding the server end of the benchmark's own
    TCP connection, found through ``/proc/net/tcp`` and ``/proc/*/fd`` (the server must run
    on this machine, readable by this user).  For a server that hands each logged-in
    connection to a process of its own, like Dovecot's ``imap``, that is the process serving
    the session: one that took the connection over at LOGIN counts for the open with all of
    its CPU time, the login process that handed it over is lost.  Dovecot verifies passwords
    in its long-lived ``auth`` process: add its pid to count LOGIN's hash.  Behind a TLS
    proxy process (Dovecot's ``imap-login`` with TLS) auto finds the proxy.

    The mailbox can be filled first: ``--populate N`` appends messages until the mailbox holds
    N (none if it holds that many already), over ``--populate-connections`` connections at
    once.  Each message is ``--size`` bytes exactly: From, To, Subject (with the message's
    number), Date, Message-ID (with the number and a random token of this invocation),
    MIME-Version and Content-Type headers and a plain-text body of English words in lines of
    at most 76 characters, different in every message; four in five are appended ``\\Seen``,
    with internal dates spread over the past year.

How to run it
    From the repository root, against a server that is already running::

        python -m benchmarks.imap_bench --host 127.0.0.1 --port 10143 \\
            --user bench@example.test --password PASSWORD --populate 10000 --size 10KiB \\
            --server-pid "$(pgrep -o -f 'twistd.* mailbox-appliance')" --runs 5

    ``--password-file FILE`` reads the password from a file instead (its first line).
    ``--tls`` is implicit TLS (port 993 style), ``--starttls`` upgrades first; ``--insecure``
    skips certificate verification (self-signed test certificates), ``--cafile`` trusts a
    given CA instead.  ``--json`` prints one JSON object instead of the tables.  The medians
    over ``--runs`` come last, each against the target of the issue (``--target-open``,
    ``--target-mbps``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import email.parser
import email.utils
import imaplib
import json
import os
import platform
import random
import re
import resource
import socket
import ssl
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

from mailbox_appliance.config import parse_size

CLK_TCK = os.sysconf("SC_CLK_TCK")
LINE_CHARS = 76  # at most, per body line
SHOWN_ERRORS = 5  # per run
SEEN_EVERY = 5  # one message in SEEN_EVERY is left unseen when populating
_EXISTS = re.compile(rb"MESSAGES (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_UID = re.compile(rb"UID (\d+)")

# --- the messages ----------------------------------------------------------------------------

_WORDS = """
the of and to in is that for it as was with be by on not he this are or his from at which but
have an they you were her she there been one all we their has would when if so no will can
more other its who what some out them time may only new about into than could these two first
any like our then now also over well way even because see most after where through back much
before good your must still those here should between never under while last might same
another just house world year place since against small part again thing number great old
long made public people often down found every being work own point case given both early
line large fact without during group order later hand power little state mail server message
mailbox folder network client delivery report meeting agenda budget review draft attached
please thanks regards tomorrow yesterday morning afternoon schedule project update question
answer invoice payment account password backup storage disk memory machine release version
""".split()
_FIRST = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy"]
_LAST = ["Smith", "Jones", "Brown", "Taylor", "Wilson", "Evans", "Thomas", "Moore", "Clark"]


def _line_pool(count: int = 512) -> list[str]:
    """Lines of English words, at most LINE_CHARS long; messages are made of these."""
    rng = random.Random(3501)
    pool = []
    for _ in range(count):
        words: list[str] = []
        while True:
            word = rng.choice(_WORDS)
            if len(" ".join([*words, word])) > LINE_CHARS:
                break
            words.append(word)
        line = " ".join(words)
        pool.append(line[0].upper() + line[1:])
    return pool


class MessageMaker:
    """Builds message number n (from 1) of exactly ``size`` bytes; each one differs."""

    def __init__(self, size: int, user: str, total: int):
        self.size = size
        self.user = user
        self.domain = user.rpartition("@")[2] or "imap-bench.invalid"
        self.token = f"{os.getpid()}.{os.urandom(4).hex()}"
        self.pool = _line_pool()
        self.now = time.time()
        self.step = 365 * 86400 / max(total, 1)

    def date(self, n: int) -> datetime.datetime:
        """Its internal date: messages are spread over the past year, oldest first."""
        when = self.now - 365 * 86400 + n * self.step
        return datetime.datetime.fromtimestamp(when, datetime.UTC)

    def build(self, n: int) -> bytes:
        rng = random.Random(n)
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        topic = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 6)))
        headers = [
            f"From: {first} {last} <{first.lower()}.{last.lower()}@remote.example>",
            f"To: {self.user}",
            f"Subject: imap-bench {n:06d}: {topic}",
            f"Date: {email.utils.format_datetime(self.date(n))}",
            f"Message-ID: <imap-bench.{n:06d}.{self.token}@{self.domain}>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=us-ascii",
            "Content-Transfer-Encoding: 7bit",
            "",
            f"Hello {self.user.partition('@')[0]},",
            "",
        ]
        text = "\r\n".join(headers) + "\r\n"
        signature = "\r\n-- \r\nimap-bench\r\n"
        left = self.size - len(text) - len(signature)
        lines = []
        while left >= LINE_CHARS + 4:  # a pool line (at most LINE_CHARS + CRLF) leaves >= 2
            line = rng.choice(self.pool)
            lines.append(line + "\r\n")
            left -= len(line) + 2
        if left >= 2:  # the last line makes the size exact
            lines.append(rng.choice(self.pool).ljust(left - 2, ".")[: left - 2] + "\r\n")
        # (a size too small for the headers and the signature is not met exactly)
        return (text + "".join(lines) + signature).encode("ascii")


# --- connections -----------------------------------------------------------------------------


@dataclass
class Target:
    host: str
    port: int
    mode: str  # "plain", "starttls" or "tls"
    context: ssl.SSLContext | None
    user: str
    password: str
    mailbox: str
    timeout: float


def quote(text: str) -> str:
    """An IMAP quoted string (RFC 3501 §4.3): imaplib leaves quoting to its caller."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def connect(target: Target) -> imaplib.IMAP4:
    """Connected, greeted and (if asked) encrypted; not logged in."""
    if target.mode == "tls":
        conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
            target.host, target.port, ssl_context=target.context, timeout=target.timeout
        )
    else:
        conn = imaplib.IMAP4(target.host, target.port, timeout=target.timeout)
        if target.mode == "starttls":
            conn.starttls(ssl_context=target.context)
    return conn


def logged_in(target: Target) -> imaplib.IMAP4:
    conn = connect(target)
    conn.login(target.user, target.password)
    return conn


def check(typ: str, data: list, what: str) -> list:
    if typ != "OK":
        text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        raise imaplib.IMAP4.error(f"{what}: {typ} {text}")
    return data


def logout(conn: imaplib.IMAP4) -> None:
    try:
        conn.logout()
    except (imaplib.IMAP4.error, OSError):
        conn.shutdown()


# --- populating the mailbox ------------------------------------------------------------------


def message_count(conn: imaplib.IMAP4, mailbox: str) -> int | None:
    """How many messages the mailbox holds (STATUS), or None if it does not exist."""
    typ, data = conn.status(quote(mailbox), "(MESSAGES)")
    if typ != "OK":
        return None
    m = _EXISTS.search(b" ".join(d for d in data if isinstance(d, bytes)))
    if m is None:
        raise imaplib.IMAP4.error(f"no MESSAGES in the STATUS answer: {data!r}")
    return int(m.group(1))


def populate(target: Target, want: int, size: int, connections: int) -> tuple[int, float]:
    """Append messages until the mailbox holds ``want``; (appended, seconds)."""
    conn = logged_in(target)
    try:
        have = message_count(conn, target.mailbox)
        if have is None:
            check(*conn.create(quote(target.mailbox)), f"CREATE {target.mailbox}")
            have = 0
    finally:
        logout(conn)
    if have >= want:
        print(f"{target.mailbox} holds {have} messages already: nothing to append", flush=True)
        return 0, 0.0
    numbers = list(range(have + 1, want + 1))
    maker = MessageMaker(size, target.user, want)
    print(f"appending {len(numbers)} messages of {size} bytes to {target.mailbox} ...", flush=True)
    done = [0]
    lock = threading.Lock()

    def worker(mine: list[int]) -> None:
        conn = logged_in(target)
        try:
            for n in mine:
                flags = None if n % SEEN_EVERY == 0 else "(\\Seen)"
                when = imaplib.Time2Internaldate(maker.date(n))
                check(*conn.append(quote(target.mailbox), flags, when, maker.build(n)), "APPEND")
                with lock:
                    done[0] += 1
                    if done[0] % 1000 == 0:
                        print(f"  {done[0]} appended", flush=True)
        finally:
            logout(conn)

    started = time.perf_counter()
    parts = [numbers[i::connections] for i in range(connections)]
    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        for future in [pool.submit(worker, part) for part in parts if part]:
            future.result()
    seconds = time.perf_counter() - started
    print(f"appended {len(numbers)} in {seconds:.1f} s ({len(numbers) / seconds:.0f}/s)")
    return len(numbers), seconds


@dataclass
class SearchTarget:
    """The message in the middle of the mailbox, which the searches look for."""

    seq: int
    uid: int
    message_id: str | None
    subject: str | None


def choose_search_target(target: Target) -> tuple[int, SearchTarget | None]:
    """(messages in the mailbox, the message the searches should find)."""
    conn = logged_in(target)
    try:
        typ, data = conn.select(quote(target.mailbox), readonly=True)
        exists = int(check(typ, data, f"EXAMINE {target.mailbox}")[0])
        if not exists:
            return 0, None
        seq = exists // 2 + 1
        typ, data = conn.fetch(str(seq), "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)])")
        check(typ, data, "FETCH of the search target")
        item = next(d for d in data if isinstance(d, tuple))
        uid = int(_UID.search(item[0]).group(1))
        headers = email.parser.BytesHeaderParser().parsebytes(item[1])
        return exists, SearchTarget(
            seq, uid, _printable(headers.get("Message-ID")), _printable(headers.get("Subject"))
        )
    finally:
        logout(conn)


def _printable(value: object) -> str | None:
    """A header value usable in an ASCII quoted string, unfolded; None if there is none."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())
    return text if text and text.isascii() and text.isprintable() else None


# --- the server process ----------------------------------------------------------------------


def process_cpu(pids: list[int]) -> float | None:
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


def process_memory(pids: list[int]) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB, summed over ``pids``, or None if one is gone."""
    rss = hwm = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            return None
    return rss, hwm


def serving_pids(sock: socket.socket) -> list[int]:
    """The processes holding the server end of this (local) TCP connection, if readable."""
    client_port = sock.getsockname()[1]
    server_port = sock.getpeername()[1]
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, remote = cols[1], cols[2]
            if (
                int(local.rpartition(":")[2], 16) == server_port
                and int(remote.rpartition(":")[2], 16) == client_port
                and cols[9] != "0"
            ):
                inode = cols[9]
                break
        if inode:
            break
    if inode is None:
        return []
    wanted = f"socket:[{inode}]"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{name}/fd/{fd}") == wanted:
                    found.append(int(name))
                    break
            except OSError:
                continue
    return sorted(found)


class ServerWatch:
    """CPU time and memory of the server: fixed pids, plus (auto) those serving the session."""

    def __init__(self, fixed: list[int], auto: bool):
        self.fixed = fixed
        self.auto = auto
        self.pids: list[int] = list(fixed)

    def _find(self, conn: imaplib.IMAP4) -> None:
        if self.auto:
            found = [pid for pid in serving_pids(conn.sock) if pid not in self.fixed]
            self.pids = self.fixed + found

    def before_login(self, conn: imaplib.IMAP4) -> dict[int, float] | None:
        """CPU time of each process serving the connection before LOGIN."""
        self._find(conn)
        times = {pid: process_cpu([pid]) for pid in self.pids}
        return None if not times or None in times.values() else times

    def after_login(self, conn: imaplib.IMAP4, before: dict[int, float] | None) -> float | None:
        """CPU time the processes serving the session after LOGIN spent on the open.

        A process that took the session over at LOGIN (auto) counts with all of its time;
        one that handed it over and went away is not counted after the hand-over.
        """
        self._find(conn)
        if before is None or not self.pids:
            return None
        total = 0.0
        for pid in self.pids:
            now = process_cpu([pid])
            if now is None:
                return None
            total += now - before.get(pid, 0.0)
        return total

    def cpu(self) -> float | None:
        return process_cpu(self.pids) if self.pids else None

    def memory(self) -> tuple[int, int] | None:
        return process_memory(self.pids) if self.pids else None


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


# --- one run ---------------------------------------------------------------------------------


@dataclass
class RunResult:
    run: int
    messages: int  # EXISTS after SELECT
    login_s: float
    select_s: float
    flags_fetch_s: float
    open_s: float  # the three above
    download_s: float
    download_bytes: int
    download_mb_per_s: float
    msgid_search_s: float | None
    subject_search_s: float | None
    server_pids: list[int]
    server_cpu_open_s: float | None
    server_cpu_download_s: float | None
    server_cpu_search_s: float | None
    client_cpu_open_s: float
    client_cpu_download_s: float
    client_cpu_search_s: float
    server_rss_kib: int | None  # at the end of the run, before LOGOUT
    server_hwm_kib: int | None
    errors: list[str] = field(default_factory=list)

    def line(self, label: str = "") -> str:
        def num(value: float | None, width: int, scale: float = 1.0, digits: int = 3) -> str:
            if value is None:
                return f"{'-':>{width}}"
            return f"{value * scale:>{width}.{digits}f}"

        mib = None if self.server_rss_kib is None else self.server_rss_kib / 1024
        hwm = None if self.server_hwm_kib is None else self.server_hwm_kib / 1024
        return (
            f"{self.run:>4} {self.messages:>6} {self.open_s:>7.3f} {self.login_s * 1000:>6.0f} "
            f"{self.select_s * 1000:>7.0f} {self.flags_fetch_s * 1000:>6.0f} "
            f"{self.download_s:>7.3f} {self.download_mb_per_s:>7.1f} "
            f"{num(self.msgid_search_s, 7, 1000, 1)} {num(self.subject_search_s, 7, 1000, 1)} "
            f"{num(self.server_cpu_open_s, 7, 1, 2)} {num(self.server_cpu_download_s, 7, 1, 2)} "
            f"{num(self.server_cpu_search_s, 7, 1, 2)} {self.client_cpu_open_s:>7.2f} "
            f"{self.client_cpu_download_s:>7.2f} {num(mib, 7, 1, 1)} {num(hwm, 7, 1, 1)}"
            f"{'  FAILED' if self.errors else ''}  {label}"
        ).rstrip()


HEADER = (
    f"{'run':>4} {'msgs':>6} {'open s':>7} {'login':>6} {'select':>7} {'flags':>6} "
    f"{'body s':>7} {'MB/s':>7} {'msgid':>7} {'subject':>7} "
    f"{'srv':>7} {'srv':>7} {'srv':>7} {'cli':>7} {'cli':>7} {'srv RSS':>7} {'srv HWM':>7}\n"
    f"{'':>4} {'':>6} {'':>7} {'ms':>6} {'ms':>7} {'ms':>6} {'':>7} {'':>7} {'ms':>7} {'ms':>7} "
    f"{'open s':>7} {'body s':>7} {'srch s':>7} {'open s':>7} {'body s':>7} {'MiB':>7} {'MiB':>7}"
)


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def run_once(
    target: Target, search: SearchTarget | None, watch: ServerWatch, number: int
) -> RunResult:
    errors: list[str] = []
    conn = connect(target)
    try:
        server_before = watch.before_login(conn)
        client_before = client_cpu()
        started = time.perf_counter()
        _, login_s = timed(conn.login, target.user, target.password)
        (typ, data), select_s = timed(conn.select, quote(target.mailbox))
        after_select = time.perf_counter()
        typ2, listing = conn.fetch("1:*", "(FLAGS RFC822.SIZE)")
        opened = time.perf_counter()
        client_open = client_cpu() - client_before
        server_open = watch.after_login(conn, server_before)
        exists = int(check(typ, data, f"SELECT {target.mailbox}")[0])
        check(typ2, listing, "FETCH 1:* (FLAGS RFC822.SIZE)")
        sizes = [int(m.group(1)) for m in map(_SIZE.search, listing) if m is not None]
        if len(sizes) != exists:
            errors.append(f"FETCH FLAGS listed {len(sizes)} of {exists} messages")

        server_before, client_before = watch.cpu(), client_cpu()
        (typ, bodies), download_s = timed(conn.fetch, "1:*", "(BODY.PEEK[])")
        client_download = client_cpu() - client_before
        server_download = delta(watch.cpu(), server_before)
        check(typ, bodies, "FETCH 1:* BODY.PEEK[]")
        literals = [item[1] for item in bodies if isinstance(item, tuple)]
        got = sum(map(len, literals))
        if len(literals) != exists or got != sum(sizes):
            errors.append(
                f"BODY.PEEK[] brought {len(literals)} messages of {got} bytes in all; "
                f"FETCH FLAGS listed {exists} of {sum(sizes)}"
            )
        del bodies, literals

        server_before, client_before = watch.cpu(), client_cpu()
        msgid_s = subject_s = None
        for kind, criteria in _searches(search):
            (typ, data), seconds = timed(conn.uid, "SEARCH", *criteria)
            hits = check(typ, data, f"UID SEARCH {kind}")[0].split()
            if kind == "Message-ID":
                msgid_s = seconds
            else:
                subject_s = seconds
            if str(search.uid).encode() not in hits:
                errors.append(f"UID SEARCH {kind} missed UID {search.uid} (hits: {len(hits)})")
        client_search = client_cpu() - client_before
        server_search = delta(watch.cpu(), server_before)
        memory = watch.memory()
    finally:
        logout(conn)
    return RunResult(
        run=number,
        messages=exists,
        login_s=login_s,
        select_s=select_s,
        flags_fetch_s=opened - after_select,
        open_s=opened - started,
        download_s=download_s,
        download_bytes=got,
        download_mb_per_s=got / download_s / 1e6,
        msgid_search_s=msgid_s,
        subject_search_s=subject_s,
        server_pids=list(watch.pids),
        server_cpu_open_s=server_open,
        server_cpu_download_s=server_download,
        server_cpu_search_s=server_search,
        client_cpu_open_s=client_open,
        client_cpu_download_s=client_download,
        client_cpu_search_s=client_search,
        server_rss_kib=memory[0] if memory else None,
        server_hwm_kib=memory[1] if memory else None,
        errors=errors,
    )


def _searches(search: SearchTarget | None) -> list[tuple[str, tuple[str, ...]]]:
    if search is None:
        return []
    out = []
    if search.message_id:
        out.append(("Message-ID", ("HEADER", "Message-ID", quote(search.message_id))))
    if search.subject:
        out.append(("SUBJECT", ("SUBJECT", quote(search.subject))))
    return out


# --- command line ----------------------------------------------------------------------------


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every read benchmark (IMAP, POP3) has: certificate checks, server, runs."""
    parser.add_argument("--insecure", action="store_true", help="don't verify the certificate")
    parser.add_argument("--cafile", help="verify the certificate against this CA file")
    parser.add_argument(
        "--server-pid",
        action="append",
        default=[],
        metavar="PID",
        help="server process whose CPU and memory to report; repeat to sum several; "
        "'auto' adds the process(es) serving the benchmark's connection",
    )
    parser.add_argument(
        "--runs", type=int, default=1, metavar="N", help="repeat the measurements N times (1)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, metavar="SECONDS", help="socket timeout (300)"
    )


def check_run_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *, upgraded: bool, upgrade_flag: str
) -> None:
    """Check and complete what add_run_arguments and the populate/password options gave."""
    try:
        args.size_bytes = parse_size(args.size)
    except ValueError as e:
        parser.error(str(e))
    if min(args.runs, args.populate_connections, args.size_bytes) < 1 or args.timeout <= 0:
        parser.error("--runs, --populate-connections, --size and --timeout must be positive")
    if args.populate < 0:
        parser.error("--populate must be zero or more")
    if (args.insecure or args.cafile) and not (args.tls or upgraded):
        parser.error(f"--insecure and --cafile need --tls or {upgrade_flag}")
    if args.insecure and args.cafile:
        parser.error("--insecure and --cafile contradict each other")
    if args.password_file is not None:
        try:
            with open(args.password_file) as f:
                args.password = f.readline().rstrip("\r\n")
        except OSError as e:
            parser.error(f"--password-file: {e}")
    args.auto = "auto" in args.server_pid
    try:
        args.pids = [int(pid) for pid in args.server_pid if pid != "auto"]
    except ValueError:
        parser.error("--server-pid takes a process id or 'auto'")
    for pid in args.pids:
        if process_cpu([pid]) is None:
            parser.error(f"--server-pid {pid}: no such process (/proc/{pid}/stat)")


def client_context(args: argparse.Namespace, upgraded: bool) -> ssl.SSLContext | None:
    """The TLS context for --tls or the protocol's upgrade, checked unless --insecure."""
    if not (args.tls or upgraded):
        return None
    context = ssl.create_default_context(cafile=args.cafile)
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="IMAP read benchmark: open, download and search a big mailbox.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="server address (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, metavar="PORT", help="server port (default: 143, with --tls 993)"
    )
    parser.add_argument("--user", required=True, help="the account to log in as")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password", help="its password")
    secret.add_argument("--password-file", metavar="FILE", help="read the password from FILE")
    parser.add_argument("--mailbox", default="INBOX", help="the mailbox to measure (INBOX)")
    parser.add_argument(
        "--populate",
        type=int,
        default=0,
        metavar="N",
        help="first append messages until the mailbox holds N (default: append none)",
    )
    parser.add_argument("--size", default="10KiB", help="size of appended messages (10KiB)")
    parser.add_argument(
        "--populate-connections",
        type=int,
        default=4,
        metavar="N",
        help="connections appending at once (4)",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--starttls", action="store_true", help="upgrade with STARTTLS first")
    tls.add_argument("--tls", action="store_true", help="implicit TLS from the first byte")
    add_run_arguments(parser)
    parser.add_argument(
        "--target-open", type=float, default=0.3, metavar="SECONDS", help="open target (0.3)"
    )
    parser.add_argument(
        "--target-mbps", type=float, default=100.0, metavar="MB/S", help="download target (100)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    check_run_arguments(parser, args, upgraded=args.starttls, upgrade_flag="--starttls")
    if args.port is None:
        args.port = 993 if args.tls else 143
    return args


def make_target(args: argparse.Namespace) -> Target:
    context = client_context(args, args.starttls)
    return Target(
        host=args.host,
        port=args.port,
        mode="tls" if args.tls else "starttls" if args.starttls else "plain",
        context=context,
        user=args.user,
        password=args.password,
        mailbox=args.mailbox,
        timeout=args.timeout,
    )


def describe(args: argparse.Namespace, target: Target) -> str:
    security = {"plain": "no TLS", "starttls": "STARTTLS", "tls": "implicit TLS"}[target.mode]
    if target.context is not None and args.insecure:
        security += ", not verified"
    pids = ",".join(args.server_pid) or "not given"
    return (
        f"python {platform.python_version()} (imaplib) on {platform.system()} "
        f"{platform.release()}, {os.cpu_count()} CPUs; IMAP {target.host}:{target.port} "
        f"({security}) as {target.user}, mailbox {target.mailbox}; server pid {pids}; "
        f"{args.runs} run(s)"
    )


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summary(results: list[RunResult], args: argparse.Namespace) -> dict:
    """Medians over the runs, and how memory moved."""
    out = {
        "open_s": median([r.open_s for r in results]),
        "login_s": median([r.login_s for r in results]),
        "select_s": median([r.select_s for r in results]),
        "flags_fetch_s": median([r.flags_fetch_s for r in results]),
        "download_s": median([r.download_s for r in results]),
        "download_mb_per_s": median([r.download_mb_per_s for r in results]),
        "msgid_search_s": median([r.msgid_search_s for r in results]),
        "subject_search_s": median([r.subject_search_s for r in results]),
        "server_cpu_open_s": median([r.server_cpu_open_s for r in results]),
        "server_cpu_download_s": median([r.server_cpu_download_s for r in results]),
        "server_cpu_search_s": median([r.server_cpu_search_s for r in results]),
        "client_cpu_open_s": median([r.client_cpu_open_s for r in results]),
        "client_cpu_download_s": median([r.client_cpu_download_s for r in results]),
    }
    out["open_met"] = out["open_s"] < args.target_open
    out["download_met"] = out["download_mb_per_s"] >= args.target_mbps
    return out


def print_summary(
    results: list[RunResult],
    med: dict,
    before: tuple[int, int] | None,
    before_pids: list[int],
    args: argparse.Namespace,
) -> None:
    def spread(values: list[float | None], scale: float, digits: int) -> str:
        present = sorted(v * scale for v in values if v is not None)
        if not present:
            return "-"
        return f"{present[0]:.{digits}f}-{present[-1]:.{digits}f}"

    def row(name, key, scale, digits, unit, target=""):
        value = med[key]
        shown = "-" if value is None else f"{value * scale:.{digits}f} {unit}"
        runs = spread([getattr(r, key) for r in results], scale, digits)
        print(f"  {name:<44} {shown:>12}  {runs:>15}  {target}".rstrip())

    met = {True: "met", False: "NOT met"}
    print(f"\nmedians over {len(results)} run(s) ({results[0].messages} messages):")
    print(f"  {'':<44} {'median':>12}  {'runs (min-max)':>15}  target")
    row(
        "open: LOGIN + SELECT + FETCH 1:* (FLAGS ...)",
        "open_s",
        1,
        3,
        "s",
        f"< {args.target_open} s: {met[med['open_met']]}",
    )
    row("  LOGIN", "login_s", 1000, 0, "ms")
    row("  SELECT", "select_s", 1000, 0, "ms")
    row("  FETCH 1:* (FLAGS RFC822.SIZE)", "flags_fetch_s", 1000, 0, "ms")
    row(
        "download: FETCH 1:* BODY.PEEK[]",
        "download_mb_per_s",
        1,
        1,
        "MB/s",
        f">= {args.target_mbps:g} MB/s: {met[med['download_met']]}",
    )
    row("  its wall time", "download_s", 1, 3, "s")
    row("UID SEARCH HEADER Message-ID", "msgid_search_s", 1000, 1, "ms")
    row("UID SEARCH SUBJECT", "subject_search_s", 1000, 1, "ms")
    row("server CPU: open", "server_cpu_open_s", 1, 2, "s")
    row("server CPU: download", "server_cpu_download_s", 1, 2, "s")
    row("server CPU: both searches", "server_cpu_search_s", 1, 2, "s")
    row("client CPU: open", "client_cpu_open_s", 1, 2, "s")
    row("client CPU: download", "client_cpu_download_s", 1, 2, "s")
    last = results[-1]
    if last.server_rss_kib is not None:
        same = {tuple(r.server_pids) for r in results} == {tuple(before_pids)}
        if before is not None and same:
            print(
                f"  server memory (pid {','.join(map(str, last.server_pids))}): VmRSS "
                f"{before[0] / 1024:.1f} -> {last.server_rss_kib / 1024:.1f} MiB, VmHWM "
                f"{before[1] / 1024:.1f} -> {last.server_hwm_kib / 1024:.1f} MiB "
                f"(before the first run, after a login -> after the last)"
            )
        else:
            peaks = [r.server_hwm_kib / 1024 for r in results if r.server_hwm_kib is not None]
            print(
                f"  server memory: other processes each run (last: pids "
                f"{','.join(map(str, last.server_pids))}); VmHWM at the end of a run "
                f"{min(peaks):.1f}-{max(peaks):.1f} MiB"
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    target = make_target(args)
    quiet = args.json
    if not quiet:
        print(describe(args, target), flush=True)
    populated = None
    if args.populate:
        stdout = sys.stdout
        if quiet:  # progress goes to stderr so that stdout stays JSON
            sys.stdout = sys.stderr
        try:
            populated = populate(target, args.populate, args.size_bytes, args.populate_connections)
        finally:
            sys.stdout = stdout
    exists, search = choose_search_target(target)
    if not exists:
        print(f"{target.mailbox} is empty: nothing to measure (see --populate)", file=sys.stderr)
        return 1
    if not quiet:
        if search is not None:
            print(
                f"searches look for message {search.seq} (UID {search.uid}): "
                f"Message-ID {search.message_id}, Subject {search.subject!r}"
            )
        print(HEADER, flush=True)
    watch = ServerWatch(args.pids, args.auto)
    if args.auto:  # which processes serve a logged-in session, before the runs
        conn = logged_in(target)
        watch.before_login(conn)
        logout(conn)
    before_pids, before = list(watch.pids), watch.memory()
    results = []
    for number in range(1, args.runs + 1):
        result = run_once(target, search, watch, number)
        results.append(result)
        if not quiet:
            print(result.line(), flush=True)
            for error in result.errors[:SHOWN_ERRORS]:
                print(f"      {error}")
    med = summary(results, args)
    if quiet:
        print(
            json.dumps(
                {
                    "target": f"{target.host}:{target.port}",
                    "tls": target.mode,
                    "mailbox": target.mailbox,
                    "messages": exists,
                    "populated": populated,
                    "search_target": asdict(search) if search else None,
                    "cpus": os.cpu_count(),
                    "server_pids_before": before_pids,
                    "server_memory_before_kib": before,
                    "runs": [asdict(r) for r in results],
                    "median": med,
                },
                indent=2,
            )
        )
    else:
        if args.runs > 1:
            middle = sorted(results, key=lambda r: r.download_mb_per_s)[len(results) // 2]
            print(middle.line("median run by MB/s"))
        print_summary(results, med, before, before_pids, args)
    return 0 if not any(r.errors for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
