"""POP3 download benchmark: RETR of every message of a big maildrop.

What it measures
    A running POP3 server at ``--host``:``--port`` (any server: the appliance, Dovecot, ...),
    with Python's ``poplib`` as the client, as ``--user``.  Each run opens one connection
    (plain, ``--stls`` or implicit ``--tls``) and times, with the wall clock:

    1. *login*: ``USER`` + ``PASS``.  It costs what the server's password hash costs
       (argon2id with 64 MiB and 3 passes: 0.1-0.2 s on a 2-core VM, whichever server), and
       a server that builds its maildrop listing at login pays for that here too.
    2. *listing*: ``STAT``, ``LIST`` and ``UIDL``, what a client does to decide what to
       download.
    3. *download*: ``RETR 1`` ... ``RETR N``, one after the other, every message whole.
       Messages/s and MB/s (10**6 bytes per MB, of message octets as ``LIST`` gave them) over
       the RETRs' wall time.

    Nothing is deleted (no ``DELE``); the run ends with ``QUIT``, outside the windows.
    Connecting, the greeting and TLS are not in any window either.  Every answer is checked:
    ``LIST`` and ``UIDL`` must list as many messages as ``STAT`` counts, and each ``RETR`` must
    bring as many octets (un-stuffed, CRLF line ends) as ``LIST`` said; a run that fails a
    check is marked and the exit status is 1.  ``poplib`` reads a message a line at a time
    (``readline`` per line, about 140 lines per 10 KiB message): the client's CPU time is
    shown per phase, to tell a slow client from a slow server.

    ``--server-pid PID`` (repeatable) names the server process(es) whose CPU time (utime +
    stime of all threads, from ``/proc/PID/stat``; 10 ms ticks) is reported per phase, and
    whose ``VmRSS`` and ``VmHWM`` (``/proc/PID/status``, summed) are read before the first
    run (after a first login, so that a password hash's memory is not counted as growth) and
    at the end of each, before ``QUIT``.  ``--server-pid auto`` adds the process(es)
    holding the server end of the benchmark's own TCP connection, as in
    ``benchmarks/imap_bench.py``: Dovecot's per-session ``pop3`` process (which takes the
    connection over at login, so its CPU time for the login is counted in full; Dovecot's
    ``auth`` process verifies passwords: give its pid too to count the hash).

    The maildrop can be filled first: ``--populate N`` appends messages to the account's
    INBOX over IMAP (``--imap-port``, plain IMAP on the same host, the same user and
    password) until it holds N, with the message generator of ``benchmarks/imap_bench.py``:
    each message exactly ``--size`` bytes, different in every message, CRLF lines of English
    words of at most 76 characters.  The appliance and Dovecot serve POP3 from the IMAP INBOX,
    so this works for both.

How to run it
    From the repository root, against a server that is already running::

        python -m benchmarks.pop3_bench --port 12110 --user pop@example.test \\
            --password PASSWORD --populate 5000 --size 10KiB --imap-port 12143 \\
            --server-pid "$(pgrep -o -f 'twistd.* mailbox-appliance')" --runs 5

    ``--password-file FILE`` reads the password from a file instead (its first line).
    ``--tls`` is implicit TLS (port 995 style), ``--stls`` upgrades first (RFC 2595);
    ``--insecure`` skips certificate verification (self-signed test certificates),
    ``--cafile`` trusts a given CA instead.  ``--json`` prints one JSON object instead of the
    tables.  The medians over ``--runs`` come last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import poplib
import ssl
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

from benchmarks.imap_bench import (
    ServerWatch,
    Target,
    add_run_arguments,
    check_run_arguments,
    client_context,
    client_cpu,
    delta,
    populate,
)

SHOWN_ERRORS = 5  # per run

# --- connections -----------------------------------------------------------------------------


@dataclass
class POP3Target:
    host: str
    port: int
    mode: str  # "plain", "stls" or "tls"
    context: ssl.SSLContext | None
    user: str
    password: str
    timeout: float


def connect(target: POP3Target) -> poplib.POP3:
    """Connected, greeted and (if asked) encrypted; not logged in."""
    if target.mode == "tls":
        return poplib.POP3_SSL(
            target.host, target.port, context=target.context, timeout=target.timeout
        )
    conn = poplib.POP3(target.host, target.port, timeout=target.timeout)
    if target.mode == "stls":
        conn.stls(context=target.context)
    return conn


def quit_(conn: poplib.POP3) -> None:
    """QUIT; a server that already went away is not an error here."""
    try:
        conn.quit()
    except (poplib.error_proto, OSError):
        conn.close()


# --- one run ---------------------------------------------------------------------------------


@dataclass
class RunResult:
    run: int
    messages: int  # STAT's count
    login_s: float
    listing_s: float  # STAT + LIST + UIDL
    download_s: float
    download_bytes: int  # message octets, as LIST gave them
    wire_bytes: int  # what poplib read for the RETRs: lines with CRLF, un-stuffed
    messages_per_s: float
    download_mb_per_s: float
    server_pids: list[int]
    server_cpu_login_s: float | None
    server_cpu_listing_s: float | None
    server_cpu_download_s: float | None
    client_cpu_listing_s: float
    client_cpu_download_s: float
    server_rss_kib: int | None  # at the end of the run, before QUIT
    server_hwm_kib: int | None
    errors: list[str] = field(default_factory=list)

    def line(self, label: str = "") -> str:
        def num(value: float | None, width: int, digits: int) -> str:
            return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

        mib = None if self.server_rss_kib is None else self.server_rss_kib / 1024
        hwm = None if self.server_hwm_kib is None else self.server_hwm_kib / 1024
        return (
            f"{self.run:>4} {self.messages:>6} {self.login_s * 1000:>6.0f} "
            f"{self.listing_s * 1000:>6.0f} {self.download_s:>7.3f} "
            f"{self.messages_per_s:>7.0f} {self.download_mb_per_s:>7.1f} "
            f"{num(self.server_cpu_login_s, 7, 2)} {num(self.server_cpu_listing_s, 7, 2)} "
            f"{num(self.server_cpu_download_s, 7, 2)} {self.client_cpu_download_s:>7.2f} "
            f"{num(mib, 7, 1)} {num(hwm, 7, 1)}"
            f"{'  FAILED' if self.errors else ''}  {label}"
        ).rstrip()


HEADER = (
    f"{'run':>4} {'msgs':>6} {'login':>6} {'list':>6} {'RETR s':>7} {'msg/s':>7} {'MB/s':>7} "
    f"{'srv':>7} {'srv':>7} {'srv':>7} {'cli':>7} {'srv RSS':>7} {'srv HWM':>7}\n"
    f"{'':>4} {'':>6} {'ms':>6} {'ms':>6} {'':>7} {'':>7} {'':>7} "
    f"{'login s':>7} {'list s':>7} {'RETR s':>7} {'RETR s':>7} {'MiB':>7} {'MiB':>7}"
)


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def _listing(lines: list[bytes]) -> dict[int, bytes]:
    """``n value`` lines of LIST or UIDL, by message number."""
    out = {}
    for line in lines:
        number, _, value = line.partition(b" ")
        out[int(number)] = value
    return out


def run_once(target: POP3Target, watch: ServerWatch, number: int) -> RunResult:
    errors: list[str] = []
    conn = connect(target)
    try:
        server_before = watch.before_login(conn)
        started = time.perf_counter()
        conn.user(target.user)
        conn.pass_(target.password)
        login_s = time.perf_counter() - started
        server_login = watch.after_login(conn, server_before)

        server_before, client_before = watch.cpu(), client_cpu()
        started = time.perf_counter()
        count, total = conn.stat()
        _, list_lines, _ = conn.list()
        _, uidl_lines, _ = conn.uidl()
        listing_s = time.perf_counter() - started
        client_listing = client_cpu() - client_before
        server_listing = delta(watch.cpu(), server_before)
        sizes = {n: int(size) for n, size in _listing(list_lines).items()}
        uidls = _listing(uidl_lines)
        if len(sizes) != count or sum(sizes.values()) != total:
            errors.append(f"LIST gave {len(sizes)} messages, STAT {count} ({total} octets)")
        if len(uidls) != count or len(set(uidls.values())) != count:
            errors.append(f"UIDL gave {len(set(uidls.values()))} distinct UIDLs of {count}")

        server_before, client_before = watch.cpu(), client_cpu()
        got = wire = 0
        started = time.perf_counter()
        for n in range(1, count + 1):
            _, lines, octets = conn.retr(n)
            wire += octets
            got += sizes.get(n, 0)
            if octets != sizes.get(n):
                errors.append(f"RETR {n} brought {octets} octets; LIST said {sizes.get(n)}")
            del lines
        download_s = time.perf_counter() - started
        client_download = client_cpu() - client_before
        server_download = delta(watch.cpu(), server_before)
        memory = watch.memory()
    finally:
        quit_(conn)
    return RunResult(
        run=number,
        messages=count,
        login_s=login_s,
        listing_s=listing_s,
        download_s=download_s,
        download_bytes=got,
        wire_bytes=wire,
        messages_per_s=count / download_s,
        download_mb_per_s=got / download_s / 1e6,
        server_pids=list(watch.pids),
        server_cpu_login_s=server_login,
        server_cpu_listing_s=server_listing,
        server_cpu_download_s=server_download,
        client_cpu_listing_s=client_listing,
        client_cpu_download_s=client_download,
        server_rss_kib=memory[0] if memory else None,
        server_hwm_kib=memory[1] if memory else None,
        errors=errors,
    )


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="POP3 download benchmark: RETR of every message of a big maildrop.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="server address (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, metavar="PORT", help="server port (default: 110, with --tls 995)"
    )
    parser.add_argument("--user", required=True, help="the account to log in as")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password", help="its password")
    secret.add_argument("--password-file", metavar="FILE", help="read the password from FILE")
    parser.add_argument(
        "--populate",
        type=int,
        default=0,
        metavar="N",
        help="first append messages over IMAP until INBOX holds N (default: append none)",
    )
    parser.add_argument("--size", default="10KiB", help="size of appended messages (10KiB)")
    parser.add_argument(
        "--imap-port", type=int, default=143, metavar="PORT", help="IMAP port for --populate"
    )
    parser.add_argument(
        "--populate-connections",
        type=int,
        default=4,
        metavar="N",
        help="IMAP connections appending at once (4)",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--stls", action="store_true", help="upgrade with STLS first")
    tls.add_argument("--tls", action="store_true", help="implicit TLS from the first byte")
    add_run_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    check_run_arguments(parser, args, upgraded=args.stls, upgrade_flag="--stls")
    if args.port is None:
        args.port = 995 if args.tls else 110
    return args


def make_target(args: argparse.Namespace) -> POP3Target:
    context = client_context(args, args.stls)
    return POP3Target(
        host=args.host,
        port=args.port,
        mode="tls" if args.tls else "stls" if args.stls else "plain",
        context=context,
        user=args.user,
        password=args.password,
        timeout=args.timeout,
    )


def imap_target(args: argparse.Namespace) -> Target:
    """Where ``--populate`` appends: plain IMAP on the same host, the same account."""
    return Target(
        host=args.host,
        port=args.imap_port,
        mode="plain",
        context=None,
        user=args.user,
        password=args.password,
        mailbox="INBOX",
        timeout=args.timeout,
    )


def describe(args: argparse.Namespace, target: POP3Target) -> str:
    security = {"plain": "no TLS", "stls": "STLS", "tls": "implicit TLS"}[target.mode]
    if target.context is not None and args.insecure:
        security += ", not verified"
    pids = ",".join(args.server_pid) or "not given"
    return (
        f"python {platform.python_version()} (poplib) on {platform.system()} "
        f"{platform.release()}, {os.cpu_count()} CPUs; POP3 {target.host}:{target.port} "
        f"({security}) as {target.user}; server pid {pids}; {args.runs} run(s)"
    )


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


MEDIANS = (
    "login_s",
    "listing_s",
    "download_s",
    "messages_per_s",
    "download_mb_per_s",
    "server_cpu_login_s",
    "server_cpu_listing_s",
    "server_cpu_download_s",
    "client_cpu_listing_s",
    "client_cpu_download_s",
)


def summary(results: list[RunResult]) -> dict:
    return {key: median([getattr(r, key) for r in results]) for key in MEDIANS}


def print_summary(
    results: list[RunResult], med: dict, before: tuple[int, int] | None, before_pids: list[int]
) -> None:
    def row(name: str, key: str, scale: float, digits: int, unit: str) -> None:
        value = med[key]
        shown = "-" if value is None else f"{value * scale:.{digits}f} {unit}"
        present = sorted(getattr(r, key) * scale for r in results if getattr(r, key) is not None)
        runs = f"{present[0]:.{digits}f}-{present[-1]:.{digits}f}" if present else "-"
        print(f"  {name:<36} {shown:>14}  {runs:>17}")

    print(f"\nmedians over {len(results)} run(s) ({results[0].messages} messages):")
    print(f"  {'':<36} {'median':>14}  {'runs (min-max)':>17}")
    row("login: USER + PASS", "login_s", 1000, 0, "ms")
    row("listing: STAT + LIST + UIDL", "listing_s", 1000, 0, "ms")
    row("download: RETR of every message", "messages_per_s", 1, 0, "msg/s")
    row("  MB/s", "download_mb_per_s", 1, 1, "MB/s")
    row("  its wall time", "download_s", 1, 3, "s")
    row("server CPU: login", "server_cpu_login_s", 1, 2, "s")
    row("server CPU: listing", "server_cpu_listing_s", 1, 2, "s")
    row("server CPU: download", "server_cpu_download_s", 1, 2, "s")
    row("client CPU: listing", "client_cpu_listing_s", 1, 2, "s")
    row("client CPU: download", "client_cpu_download_s", 1, 2, "s")
    last = results[-1]
    if last.server_rss_kib is None:
        return
    if before is not None and {tuple(r.server_pids) for r in results} == {tuple(before_pids)}:
        print(
            f"  server memory (pid {','.join(map(str, last.server_pids))}): VmRSS "
            f"{before[0] / 1024:.1f} -> {last.server_rss_kib / 1024:.1f} MiB, VmHWM "
            f"{before[1] / 1024:.1f} -> {last.server_hwm_kib / 1024:.1f} MiB "
            f"(after a first login -> end of the last run, before QUIT)"
        )
    else:
        rss = [r.server_rss_kib / 1024 for r in results if r.server_rss_kib is not None]
        peaks = [r.server_hwm_kib / 1024 for r in results if r.server_hwm_kib is not None]
        print(
            f"  server memory: other processes each run (last: pids "
            f"{','.join(map(str, last.server_pids))}); at the end of a run VmRSS "
            f"{min(rss):.1f}-{max(rss):.1f} MiB, VmHWM {min(peaks):.1f}-{max(peaks):.1f} MiB"
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
            populated = populate(
                imap_target(args), args.populate, args.size_bytes, args.populate_connections
            )
        finally:
            sys.stdout = stdout
    # A first login, so that the memory its password hash takes is not counted as growth
    # (and, with auto, to find the processes serving a logged-in session).
    watch = ServerWatch(args.pids, args.auto)
    conn = connect(target)
    try:
        before_cpu = watch.before_login(conn)
        conn.user(target.user)
        conn.pass_(target.password)
        watch.after_login(conn, before_cpu)
        before_pids, before = list(watch.pids), watch.memory()
    finally:
        quit_(conn)
    if not quiet:
        print(HEADER, flush=True)
    results = []
    for number in range(1, args.runs + 1):
        result = run_once(target, watch, number)
        results.append(result)
        if not quiet:
            print(result.line(), flush=True)
            for error in result.errors[:SHOWN_ERRORS]:
                print(f"      {error}")
    if not results[0].messages:
        print("the maildrop is empty: nothing to measure (see --populate)", file=sys.stderr)
        return 1
    med = summary(results)
    if quiet:
        print(
            json.dumps(
                {
                    "target": f"{target.host}:{target.port}",
                    "tls": target.mode,
                    "messages": results[0].messages,
                    "populated": populated,
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
        print_summary(results, med, before, before_pids)
    return 0 if not any(r.errors for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
