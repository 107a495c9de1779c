"""Outbound delivery benchmark: messages/s a server accepts AND relays on to an SMTP sink.

What it measures
    The server under test at ``--host``:``--port`` (the appliance, Postfix, ...) must relay
    everything for ``--to``'s domain to the SMTP sink of ``benchmarks/sink.py`` at
    ``--sink-host``:``--sink-port``.  Each run submits ``--messages`` messages of ``--size``
    over ``--sessions`` concurrent SMTP connections (the messages shared out evenly), with the
    client of ``benchmarks/smtp_load.py``: EHLO, optionally STARTTLS (``--starttls``) or
    implicit TLS (``--tls``), optionally AUTH PLAIN (``--user`` with ``--password`` or
    ``--password-file``), then pipelined MAIL/RCPT/DATA if the server offers PIPELINING; every
    message differs (a counter in its Message-ID) and exercises dot-stuffing.

    Meanwhile one more connection asks the sink for its counters (``XSTAT``) every
    ``--poll-interval`` seconds.  The clock starts once every session is connected, greeted,
    encrypted and authenticated (as in ``smtp_load``), just before the first MAIL FROM.  Per run:

    * *submit*: until the last message's final reply; accepted messages/s over that time.
    * *end to end*: until the sink has received every recipient of every accepted message
      (``--to`` repeated gives several recipients per message; a server may relay them in one
      transaction or several, so recipients are what is counted).  Accepted messages/s over
      that time: the server's sustained delivery rate, accepting and relaying.
    * *drain*: end to end minus submit, the time the server needed to empty the backlog it
      had when the last submission was accepted (*backlog*: accepted but not yet at the
      sink then, as last polled).  The times have the resolution of the polling (5 ms).

    ``--server-pid PID`` (repeatable) adds the server's CPU time (utime + stime from
    ``/proc/PID/stat``, 10 ms ticks) over the end-to-end window, per accepted message.  For a
    one-process server like the appliance that is enough; for a multi-process server like
    Postfix add ``--server-tree`` and give the master's pid: the processes below it count too,
    those still running and those that exited and were waited for (cutime + cstime).  The
    sink's CPU time and this client's are shown too, to show neither is the bottleneck when
    all share a machine, and so is the busy time of all the machine's CPUs (``/proc/stat``):
    much more than the sum of the others means something else was running.

    Before each run the sink must have been quiet for half a second (a backlog from an
    earlier run would otherwise be counted); a run whose sink count does not grow for
    ``--drain-timeout`` seconds is given up as incomplete.

The sink
    If nothing listens on ``--sink-host``:``--sink-port``, the benchmark starts
    ``python -m benchmarks.sink`` there as a child process and stops it at the end.  If
    something listens there, it must answer ``XSTAT`` like ``benchmarks.sink`` and is used as
    it is (start one yourself to keep it across benchmarks, or to run it on another core with
    ``taskset``); its counters are never reset, the benchmark takes differences, so nothing
    else should send to it during a run.

How to run it
    From the repository root.  Against Postfix with ``relayhost = [127.0.0.1]:15025`` and
    ``mynetworks`` covering 127.0.0.1 (relay without AUTH)::

        python -m benchmarks.outbound_bench --host 127.0.0.1 --port 10029 \\
            --messages 2000 --size 10KiB --sessions 20 \\
            --from bench@example.test --to user@sink.test --sink-port 15025 \\
            --server-pid "$(cat /var/spool/postfix/pid/master.pid)" --server-tree --runs 3

    Against the appliance's submission port, relaying to the sink by its smarthost route::

        python -m benchmarks.outbound_bench --host 127.0.0.1 --port 10587 --starttls \\
            --user bench@example.test --password-file /tmp/bench.pw \\
            --messages 2000 --size 10KiB --sessions 20 \\
            --from bench@example.test --to user@sink.test --sink-port 15025 \\
            --server-pid "$(pgrep -o -f 'twistd.* mailbox-appliance')" --runs 3

    TLS certificates are not verified unless ``--cafile`` is given.  The last line is always
    ``median: X msg/s end to end``; ``--json`` prints one JSON object instead.  The exit
    status is 1 if a message or session failed or a run did not complete.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import os
import platform
import ssl
import sys
import time
from dataclasses import asdict, dataclass, field

from benchmarks.imap_bench import delta
from benchmarks.pop3_bench import median
from benchmarks.sink import SinkError, SinkWatch, find_or_start_sink, is_local, stop_sink
from benchmarks.smtp_load import (
    SHOWN_ERRORS,
    RunStats,
    Session,
    Target,
    build_target,
    client_cpu,
    percentile,
    server_cpu,
)
from mailbox_appliance.config import parse_size

# --- server CPU --------------------------------------------------------------------------------


def tree_cpu(roots: list[int]) -> float | None:
    """CPU seconds of ``roots`` and everything below them, running or exited and waited for.

    utime + stime + cutime + cstime (proc(5) fields 14-17) summed over the trees: a child that
    exits moves its time into its parent's cutime/cstime, so the sum only grows.  None if a
    root is gone.
    """
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(b")") + 2 :].split()
        pid = int(name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(value) for value in fields[11:15])
    if any(root not in ticks for root in roots):
        return None
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, parent in parents.items():
        children[parent].append(pid)
    total, seen, todo = 0, set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            total += ticks[pid]
            todo.extend(children[pid])
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine, all CPUs (``/proc/stat``: all but idle, iowait)."""
    with open("/proc/stat", "rb") as f:
        ticks = [int(value) for value in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


# --- runs --------------------------------------------------------------------------------------


@dataclass
class RunResult:
    run: int
    sessions: int  # connected and ready when the clock started
    accepted: int
    failed: int
    unsent: int  # not attempted: their session failed to set up or broke
    broken_sessions: int
    complete: bool  # the sink got every recipient of every accepted message
    submit_s: float
    drain_s: float | None
    end_to_end_s: float | None
    submit_msgs_per_s: float
    end_to_end_msgs_per_s: float | None
    first_relay_ms: float | None  # clock start to the sink's first new recipient
    backlog: int  # accepted, not at the sink when the last submission was accepted
    relayed_recipients: int
    settle_wait_s: float  # waited for an earlier backlog before the run
    submit_p50_ms: float | None
    submit_p99_ms: float | None
    server_cpu_ms_per_msg: float | None
    sink_cpu_ms_per_msg: float | None
    client_cpu_ms_per_msg: float | None
    machine_cpu_ms_per_msg: float | None  # every CPU's busy time: other load shows here
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.complete and not (self.failed or self.unsent or self.broken_sessions)

    def line(self, label: str = "") -> str:
        def num(value: float | None, width: int, digits: int) -> str:
            return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

        return (
            f"{self.run:>4} {self.sessions:>5} {self.accepted:>8} {self.failed:>6} "
            f"{self.submit_s:>8.3f} {self.submit_msgs_per_s:>8.1f} {self.backlog:>7} "
            f"{num(self.drain_s, 7, 3)} {num(self.end_to_end_s, 8, 3)} "
            f"{num(self.end_to_end_msgs_per_s, 8, 1)} {num(self.server_cpu_ms_per_msg, 7, 3)} "
            f"{num(self.sink_cpu_ms_per_msg, 7, 3)} {num(self.client_cpu_ms_per_msg, 7, 3)} "
            f"{num(self.machine_cpu_ms_per_msg, 7, 3)}"
            f"{'' if self.complete else '  INCOMPLETE'}  {label}"
        ).rstrip()


HEADER = (
    f"{'run':>4} {'sess':>5} {'accepted':>8} {'failed':>6} {'submit':>8} {'submit':>8} "
    f"{'backlog':>7} {'drain':>7} {'e2e':>8} {'e2e':>8} {'srv ms':>7} {'sink ms':>7} "
    f"{'cli ms':>7} {'all ms':>7}\n"
    f"{'':>4} {'':>5} {'':>8} {'':>6} {'s':>8} {'msg/s':>8} {'msgs':>7} {'s':>7} {'s':>8} "
    f"{'msg/s':>8} {'/msg':>7} {'/msg':>7} {'/msg':>7} {'/msg':>7}"
)


@dataclass
class Bench:
    """What every run shares."""

    target: Target
    plan: list[int]  # messages per session
    sink: SinkWatch
    sink_pid: int | None
    server_pids: list[int]
    server_tree: bool
    poll_interval: float
    drain_timeout: float

    def server_cpu(self) -> float | None:
        if not self.server_pids:
            return None
        return (tree_cpu if self.server_tree else server_cpu)(self.server_pids)

    def sink_cpu(self) -> float | None:
        return server_cpu([self.sink_pid]) if self.sink_pid is not None else None


def per_message(seconds: float | None, count: int) -> float | None:
    return seconds * 1000 / count if seconds is not None and count else None


async def run_once(bench: Bench, number: int) -> RunResult:
    """Set up the sessions, submit every message, wait for the sink to have them all."""
    settle_wait = await bench.sink.settle(bench.drain_timeout)
    stats = RunStats()
    sessions = [Session(dataclasses.replace(bench.target, messages=n), stats) for n in bench.plan]
    ready = await asyncio.gather(*(s.setup() for s in sessions))
    live = [s for s, ok in zip(sessions, ready, strict=True) if ok]
    stats.unsent += sum(s.target.messages for s, ok in zip(sessions, ready, strict=True) if not ok)
    base = (await bench.sink.poll()).recipients

    server_before, sink_before = bench.server_cpu(), bench.sink_cpu()
    client_before, machine_before = client_cpu(), machine_cpu()
    started = stats.last_final = time.perf_counter()
    bench.sink.start(bench.poll_interval)
    try:
        await asyncio.gather(*(s.transactions() for s in live))
        submitted = stats.last_final
        per_rcpt = len(bench.target.recipients)
        want = base + stats.accepted * per_rcpt
        done = await bench.sink.wait_for(want, submitted, bench.drain_timeout, bench.poll_interval)
    finally:
        await bench.sink.stop()
    server_after, sink_after = bench.server_cpu(), bench.sink_cpu()
    client_used, machine_used = client_cpu() - client_before, machine_cpu() - machine_before
    await asyncio.gather(*(s.quit() for s in live))

    accepted = stats.accepted
    submit_s = submitted - started
    end_to_end_s = max(done, submitted) - started if done is not None else None
    first = bench.sink.reached(base + 1)
    relayed = bench.sink.recipients - base
    ordered = sorted(stats.latencies)
    return RunResult(
        run=number,
        sessions=len(live),
        accepted=accepted,
        failed=stats.failed,
        unsent=stats.unsent,
        broken_sessions=stats.broken_sessions + len(sessions) - len(live),
        complete=done is not None,
        submit_s=submit_s,
        drain_s=end_to_end_s - submit_s if end_to_end_s is not None else None,
        end_to_end_s=end_to_end_s,
        submit_msgs_per_s=accepted / submit_s if submit_s > 0 else 0.0,
        end_to_end_msgs_per_s=accepted / end_to_end_s if end_to_end_s else None,
        first_relay_ms=(first - started) * 1000 if first is not None and relayed else None,
        backlog=max(0, accepted - (bench.sink.at(submitted) - base) // per_rcpt),
        relayed_recipients=relayed,
        settle_wait_s=settle_wait,
        submit_p50_ms=percentile(ordered, 0.5),
        submit_p99_ms=percentile(ordered, 0.99),
        server_cpu_ms_per_msg=per_message(delta(server_after, server_before), accepted),
        sink_cpu_ms_per_msg=per_message(delta(sink_after, sink_before), accepted),
        client_cpu_ms_per_msg=per_message(client_used, accepted),
        machine_cpu_ms_per_msg=per_message(machine_used, accepted),
        errors=[(n, text) for text, n in stats.errors.most_common()],
    )


def report(result: RunResult, bench: Bench) -> None:
    print(result.line(), flush=True)
    if result.settle_wait_s > 0.05:
        print(f"      waited {result.settle_wait_s:.1f} s for the sink to be quiet first")
    if result.sessions < len(bench.plan):
        print(f"      {len(bench.plan) - result.sessions} of {len(bench.plan)} sessions failed")
    if result.unsent:
        print(f"      {result.unsent} messages not sent: their session failed or broke")
    if not result.complete:
        want = result.accepted * len(bench.target.recipients)
        print(
            f"      the sink got {result.relayed_recipients} of {want} recipients, then nothing "
            f"for {bench.drain_timeout:.0f} s"
        )
    for n, text in result.errors[:SHOWN_ERRORS]:
        print(f"      {n}x {text}")
    if len(result.errors) > SHOWN_ERRORS:
        print(f"      ... and {len(result.errors) - SHOWN_ERRORS} more distinct errors")
    sys.stdout.flush()


async def run_all(args: argparse.Namespace, target: Target) -> list[RunResult]:
    sink, process = await find_or_start_sink(args.sink_host, args.sink_port, args.timeout)
    try:
        assert sink.latest is not None
        pid = sink.latest.pid
        visible = is_local(args.sink_host) and server_cpu([pid]) is not None
        bench = Bench(
            target=target,
            plan=share(args.messages, args.sessions),
            sink=sink,
            sink_pid=pid if visible else None,
            server_pids=args.server_pid,
            server_tree=args.server_tree,
            poll_interval=args.poll_interval,
            drain_timeout=args.drain_timeout,
        )
        if not args.json:
            owner = "started by this benchmark" if process else "already running"
            print(f"sink {args.sink_host}:{args.sink_port} (pid {pid}, {owner})")
            print(HEADER, flush=True)
        results = []
        for number in range(1, args.runs + 1):
            results.append(await run_once(bench, number))
            if not args.json:
                report(results[-1], bench)
        return results
    finally:
        sink.close()
        if process is not None:
            stop_sink(process)


def share(messages: int, sessions: int) -> list[int]:
    """``messages`` shared out over at most ``sessions`` sessions, evenly."""
    count = min(messages, sessions)
    return [messages // count + (i < messages % count) for i in range(count)]


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Outbound delivery benchmark: messages/s accepted and relayed to a sink.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="server address (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, metavar="PORT", help="server port (default: 25, with --tls 465)"
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--starttls", action="store_true", help="upgrade with STARTTLS after EHLO")
    tls.add_argument("--tls", action="store_true", help="implicit TLS from the first byte")
    parser.add_argument(
        "--cafile", help="verify the server's certificate against this CA (default: no check)"
    )
    parser.add_argument(
        "--tls-name", metavar="NAME", help="name to verify and send as SNI (default: --host)"
    )
    parser.add_argument("--user", help="AUTH PLAIN as this user (needs a password)")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--password", help="the password for --user")
    secret.add_argument("--password-file", metavar="FILE", help="read it from FILE (first line)")
    parser.add_argument(
        "--messages", type=int, default=2000, metavar="N", help="messages per run, in all (2000)"
    )
    parser.add_argument("--size", default="10KiB", help="message size, e.g. 500000, 1MiB (10KiB)")
    parser.add_argument(
        "--sessions", type=int, default=20, metavar="N", help="concurrent connections (20)"
    )
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
        required=True,
        metavar="ADDRESS",
        help="recipient the server relays to the sink; repeat for several",
    )
    parser.add_argument(
        "--sink-host", default="127.0.0.1", help="the sink's address (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--sink-port",
        type=int,
        required=True,
        metavar="PORT",
        help="the sink's port; a sink is started there if nothing listens",
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
        "--server-tree",
        action="store_true",
        help="count the processes below --server-pid too (Postfix: the master's pid)",
    )
    parser.add_argument("--runs", type=int, default=1, metavar="N", help="repeat N times (1)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="allowed per session set-up and per transaction (default: 60)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give a run up when the sink got nothing new for this long (default: 60)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.005,
        metavar="SECONDS",
        help="how often to ask the sink for its counters (default: 0.005)",
    )
    parser.add_argument(
        "--ehlo", default="outbound-bench.invalid", metavar="NAME", help="EHLO name"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        args.size_bytes = parse_size(args.size)
    except ValueError as e:
        parser.error(str(e))
    numbers = (args.sessions, args.messages, args.runs, args.size_bytes)
    if min(numbers) < 1 or min(args.timeout, args.drain_timeout, args.poll_interval) <= 0:
        parser.error("counts, --size, timeouts and --poll-interval must be positive")
    if (args.cafile or args.tls_name) and not (args.tls or args.starttls):
        parser.error("--cafile and --tls-name need --tls or --starttls")
    if args.password_file is not None:
        try:
            with open(args.password_file) as f:
                args.password = f.readline().rstrip("\r\n")
        except OSError as e:
            parser.error(f"--password-file: {e}")
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password (or --password-file) go together")
    if args.server_tree and not args.server_pid:
        parser.error("--server-tree needs --server-pid")
    for pid in args.server_pid:
        if server_cpu([pid]) is None:
            parser.error(f"--server-pid {pid}: no such process (/proc/{pid}/stat)")
    if args.port is None:
        args.port = 465 if args.tls else 25
    return args


def make_target(args: argparse.Namespace) -> Target:
    context = None
    if args.tls or args.starttls:
        context = ssl.create_default_context(cafile=args.cafile)
        if args.cafile is None:  # the appliance's and test servers' certificates: self-signed
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    auth = (args.user, args.password) if args.user is not None else None
    return build_target(args, context, auth)


def describe(args: argparse.Namespace, target: Target) -> str:
    security = {"plain": "no TLS", "starttls": "STARTTLS", "tls": "implicit TLS"}[target.mode]
    if target.context is not None:
        security += f", verified as {target.tls_name}" if args.cafile else ", not verified"
    auth = f"AUTH PLAIN as {target.auth[0]}" if target.auth else "no AUTH"
    pids = ",".join(map(str, args.server_pid)) or "not given"
    tree = " and below" if args.server_tree else ""
    return (
        f"python {platform.python_version()} on {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs; SMTP {target.host}:{target.port} ({security}; {auth}); "
        f"server pid {pids}{tree}\n"
        f"{args.messages} messages of {target.message.size} bytes over {args.sessions} sessions "
        f"from {target.sender} to {', '.join(target.recipients)}; {args.runs} run(s)"
    )


MEDIANS = (
    "submit_msgs_per_s",
    "end_to_end_msgs_per_s",
    "submit_s",
    "drain_s",
    "end_to_end_s",
    "backlog",
    "first_relay_ms",
    "submit_p50_ms",
    "submit_p99_ms",
    "server_cpu_ms_per_msg",
    "sink_cpu_ms_per_msg",
    "client_cpu_ms_per_msg",
    "machine_cpu_ms_per_msg",
)


def summary(results: list[RunResult]) -> dict[str, float | None]:
    return {key: median([getattr(r, key) for r in results]) for key in MEDIANS}


def print_summary(results: list[RunResult], med: dict[str, float | None]) -> None:
    def row(name: str, key: str, digits: int, unit: str) -> None:
        value = med[key]
        shown = "-" if value is None else f"{value:.{digits}f} {unit}"
        present = sorted(getattr(r, key) for r in results if getattr(r, key) is not None)
        runs = f"{present[0]:.{digits}f}-{present[-1]:.{digits}f}" if present else "-"
        print(f"  {name:<44} {shown:>14}  {runs:>17}")

    print(f"\nmedians over {len(results)} run(s):")
    print(f"  {'':<44} {'median':>14}  {'runs (min-max)':>17}")
    row("end to end: accepted and at the sink", "end_to_end_msgs_per_s", 1, "msg/s")
    row("  its wall time", "end_to_end_s", 3, "s")
    row("submit: accepted by the server", "submit_msgs_per_s", 1, "msg/s")
    row("  its wall time", "submit_s", 3, "s")
    row("  one transaction, p50", "submit_p50_ms", 2, "ms")
    row("  one transaction, p99", "submit_p99_ms", 2, "ms")
    row("drain: last acceptance to all at the sink", "drain_s", 3, "s")
    row("  backlog at the last acceptance", "backlog", 0, "msgs")
    row("first message at the sink after", "first_relay_ms", 1, "ms")
    row("server CPU per message (end to end)", "server_cpu_ms_per_msg", 3, "ms")
    row("sink CPU per message", "sink_cpu_ms_per_msg", 3, "ms")
    row("client CPU per message", "client_cpu_ms_per_msg", 3, "ms")
    row("whole machine's busy CPU per message", "machine_cpu_ms_per_msg", 3, "ms")
    rate = med["end_to_end_msgs_per_s"]
    print(f"median: {'-' if rate is None else f'{rate:.1f}'} msg/s end to end")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    target = make_target(args)
    if not args.json:
        print(describe(args, target), flush=True)
    try:
        results = asyncio.run(run_all(args, target))
    except KeyboardInterrupt:
        return 130
    except (OSError, SinkError, TimeoutError) as e:
        what = "no answer" if isinstance(e, TimeoutError) else str(e)
        print(f"sink {args.sink_host}:{args.sink_port}: {what}", file=sys.stderr)
        return 2
    med = summary(results)
    if args.json:
        print(
            json.dumps(
                {
                    "target": f"{target.host}:{target.port}",
                    "tls": target.mode,
                    "auth": target.auth is not None,
                    "sink": f"{args.sink_host}:{args.sink_port}",
                    "sessions": args.sessions,
                    "messages": args.messages,
                    "message_bytes": target.message.size,
                    "recipients": len(target.recipients),
                    "server_pids": args.server_pid,
                    "server_tree": args.server_tree,
                    "cpus": os.cpu_count(),
                    "runs": [asdict(r) for r in results],
                    "median": med,
                },
                indent=2,
            )
        )
    else:
        print_summary(results, med)
    return 0 if all(r.clean for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
