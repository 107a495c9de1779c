"""Durable message writes per second through the store: blob + metadata + journal.

What it measures
    One "write" is what local delivery does for a message: a fresh random body (10 KiB by
    default) goes into the blob store (``Store.blobs.put``: hashed; content up to
    ``storage.inline_max`` is kept in its ``blobs`` row, larger content is written to a
    temporary file, fsync'd, registered and renamed into place) and is filed into an account's
    INBOX with ``Store.deliver`` (blob row and reference, message row, mailbox entry, quota
    and journal rows, committed).  A write counts only once both Deferreds have fired, that is
    once everything is durable.  N writers run at once, each looping over writes until the
    level's message count is done; concurrent writers share statements and commits through the
    store's group commit, which the ``commits`` and ``msgs/commit`` columns show
    (``dbwrites/cmt`` counts store write functions per commit).

    Per concurrency level it prints messages/s, the median and 99th-percentile latency of one
    write, the durable commits made and how many writes shared each commit.  With ``--runs``
    above 1 every level is repeated and the median run (by messages/s) is printed last.

How to run it
    From the repository root, in an environment with the dependencies installed::

        python -m benchmarks.store_bench                        # SQLite in a temporary dir
        python -m benchmarks.store_bench --concurrency 20 --messages 5000 --runs 3
        python -m benchmarks.store_bench \\
            --database postgresql+psycopg://user@127.0.0.1:5432/benchdb

    ``-m`` from the root measures the checkout's ``mailbox_appliance``; running the file by
    its path measures whichever one is installed.  The first line printed names the one used.

    ``--database`` takes any SQLAlchemy URL the store supports, so the same numbers can be
    taken against PostgreSQL (the database must exist and be empty or already migrated;
    the schema is migrated first).  Blob files always go to ``--data-dir``; a temporary data
    dir is removed afterwards unless ``--keep`` is given.  The issue's target is at least
    2,000 durable writes/s with 20 concurrent writers on SQLite on a 2-core machine; results
    are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass

from twisted.internet import defer, task

import mailbox_appliance
from mailbox_appliance.store import Store
from mailbox_appliance.store.migrate import upgrade


@dataclass
class Result:
    concurrency: int
    messages: int
    seconds: float
    latencies: list[float]
    commits: int
    db_writes: int

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def line(self, label: str = "") -> str:
        per_commit = self.db_writes / self.commits if self.commits else float("nan")
        return (
            f"{self.concurrency:>6} {self.messages:>8} {self.rate:>10.0f} "
            f"{statistics.median(self.latencies) * 1000:>10.2f} "
            f"{self.percentile(0.99) * 1000:>9.2f} {self.commits:>8} "
            f"{per_commit:>13.1f} {self.messages / max(self.commits, 1):>12.2f}  {label}"
        )


HEADER = (
    f"{'conc':>6} {'messages':>8} {'writes/s':>10} {'median ms':>10} {'p99 ms':>9} "
    f"{'commits':>8} {'dbwrites/cmt':>13} {'msgs/commit':>12}"
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Durable message writes/s through the store (blob + deliver + journal).",
    )
    parser.add_argument(
        "--concurrency",
        default="1,20,100",
        help="comma-separated numbers of concurrent writers (default: 1,20,100)",
    )
    parser.add_argument(
        "--messages", type=int, default=2000, help="writes per level and run (default: 2000)"
    )
    parser.add_argument(
        "--size", type=int, default=10240, help="message body size in bytes (default: 10240)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="where blob files (and the SQLite file) go (default: temp)"
    )
    parser.add_argument(
        "--database",
        default=None,
        help="SQLAlchemy URL (default: sqlite:///<data-dir>/appliance.sqlite3)",
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="repeat each level this many times (default: 1)"
    )
    parser.add_argument(
        "--warmup", type=int, default=200, help="unmeasured writes before the first level"
    )
    parser.add_argument("--keep", action="store_true", help="keep a temporary data dir")
    args = parser.parse_args(argv)
    args.levels = [int(n) for n in args.concurrency.split(",") if n.strip()]
    if not args.levels or min(args.levels) < 1 or args.messages < 1 or args.runs < 1:
        parser.error("--concurrency, --messages and --runs need positive numbers")
    return args


@defer.inlineCallbacks
def run_level(store: Store, account_id: int, concurrency: int, messages: int, size: int):
    """``messages`` durable writes by ``concurrency`` writers; returns a Result."""
    remaining = messages
    latencies: list[float] = []

    @defer.inlineCallbacks
    def writer():
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            body = os.urandom(size)  # fresh content: no deduplication helps
            started = time.perf_counter()
            ref = yield store.blobs.put(body)
            yield store.deliver(ref, [(account_id, "INBOX")])
            latencies.append(time.perf_counter() - started)

    commits, db_writes = store.db.commits, store.db.writes
    started = time.perf_counter()
    yield defer.gatherResults([writer() for _ in range(concurrency)], consumeErrors=True)
    seconds = time.perf_counter() - started
    return Result(
        concurrency,
        messages,
        seconds,
        latencies,
        store.db.commits - commits,
        store.db.writes - db_writes,
    )


@defer.inlineCallbacks
def main(reactor, args: argparse.Namespace, data_dir: str, url: str):
    store = Store(reactor, url, os.path.join(data_dir, "blobs", "hot"))
    yield store.start()
    try:
        domain = f"bench-{uuid.uuid4().hex[:8]}.test"  # unique, so a reused database works
        yield store.add_domain(domain)
        account_id = yield store.add_account(f"bench@{domain}", "bench-not-a-hash", 2**62)
        if args.warmup:
            yield run_level(store, account_id, max(args.levels), args.warmup, args.size)
        print(HEADER)
        for level in args.levels:
            results = []
            for run in range(args.runs):
                result = yield run_level(store, account_id, level, args.messages, args.size)
                results.append(result)
                label = f"run {run + 1}" if args.runs > 1 else ""
                print(result.line(label), flush=True)
            if args.runs > 1:
                middle = sorted(results, key=lambda r: r.rate)[len(results) // 2]
                print(middle.line("median run"), flush=True)
    finally:
        yield store.stop()


def describe(url: str, data_dir: str) -> str:
    db = url.split("://", 1)[0]
    if db.startswith("sqlite"):
        db += f" {sqlite3.sqlite_version}"
    return (
        f"python {platform.python_version()} on {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs; database {db}; data dir {data_dir}; "
        f"code {os.path.dirname(mailbox_appliance.__file__)}"
    )


def run(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    temporary = args.data_dir is None
    data_dir = os.path.abspath(args.data_dir or tempfile.mkdtemp(prefix="store-bench-"))
    os.makedirs(data_dir, exist_ok=True)
    url = args.database or "sqlite:///" + os.path.join(data_dir, "appliance.sqlite3")
    print(describe(url, data_dir))
    print(f"{args.messages} writes of {args.size} bytes per level and run", flush=True)
    try:
        upgrade(url)  # before the reactor runs: migrations may block
        task.react(main, [args, data_dir, url])
    finally:
        if temporary and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    run()
