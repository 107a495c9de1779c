"""File-station benchmark: one big file up through tus and back down, beside the disk's speed.

What it measures
    A tus 1.0.0 server at ``--url`` (the appliance's ``http://HOST:PORT/files/``, or tusd),
    with HTTP Basic as ``--user``.  Each run, on fresh connections, times with the wall clock:

    1. *upload, one PATCH*: ``POST`` (creation, ``Upload-Length: --size``), then the whole
       file as the body of a single ``PATCH``, until its ``204``.
    2. *upload, chunked*: ``POST``, then ``PATCH`` after ``PATCH`` of ``--chunk`` bytes (64 MiB)
       on one keep-alive connection, each sent once the previous one's ``204`` came back, as a
       resumable client does.  The server fsyncs before every ``204``, so smaller chunks cost
       more fsyncs.
    3. *download*: ``GET`` of the finished upload's URL, read in 1 MiB pieces, every byte
       hashed: the SHA-256 must be the one uploaded (and the ``ETag``, when the server sends
       the content's SHA-256 as the appliance does), or the run is marked failed.

    MB/s are 10**6 bytes per second of file content over those windows (creation included).

    The file is made on the fly: a random 1 MiB block, repeated, then a 64-byte tail that is
    different in every upload (so that a server that stores content once, as the appliance
    does, really stores each upload).  Nothing holds the file whole, on either side of this
    client: ``http.client`` sends the body piece by piece (``putrequest``/``send``).  tuspy is
    not used: it reads each chunk into memory (a 2 GiB chunk is 2 GiB of client RSS) and does
    a ``HEAD`` before every ``PATCH``.  The SHA-256 of the repeated part is computed once,
    before the first run; each upload's is a copy of it plus the tail, so no hashing runs
    during uploads.  The download is hashed as it arrives, which costs this client CPU time
    (about 0.6 s per GiB on a 2-core VM with SHA-NI): the baseline below pays the same.

The baselines, measured in every run beside the server
    * *dd*: ``dd if=/dev/zero of=DATA_DIR/upload_bench.dd bs=4M count=N conv=fsync`` with N
      covering ``--size``, so in the file system of ``--data-dir`` (give the server's data
      directory: its uploads and blobs live there): the rate at which that disk takes the
      same amount of data, fsync'd once at the end, as the one-PATCH upload is.  The target
      is 70 % of it.  It is measured twice per run, just before each upload, because a
      virtual disk's speed drifts (341 to 1,532 MB/s within minutes on our test VM): each
      upload is compared with the dd just before it, and the summary gives the median of
      those ratios.
    * *loopback copy*: that dd file, which is in the page cache after dd, sent by a thread
      of this benchmark with ``socket.sendfile`` over a TCP connection on 127.0.0.1 and
      received by the download's own loop (1 MiB ``recv_into`` + SHA-256).  That is what a
      server that only did ``sendfile`` from page cache would reach with this client, on
      this machine, so the ratio shows the server's own cost.  The target is 80 % of it.
      (The server's blob was written and fsync'd moments before, so it is in the page cache
      too, unless the machine is short of memory.)

    ``--server-pid PID`` (repeatable) is the server process: its CPU time (utime + stime,
    ``/proc/PID/stat``) per phase, and its ``VmRSS`` and ``VmHWM`` (``/proc/PID/status``)
    before the first run and after each phase.  The growth of ``VmHWM`` over the run shows
    whether the server held a file's bytes in memory; the target is under 64 MiB.  One
    authenticated request goes first, so that the server's first password check (argon2id,
    64 MiB of memory by default) is not counted as the upload's.

How to run it
    From the repository root, against an appliance whose data directory is /tmp/upbench/var
    and whose ``http`` listener is on 127.0.0.1:18080::

        python -m benchmarks.upload_bench --url http://127.0.0.1:18080/files/ \\
            --user bench@example.test --password-file /tmp/upbench/password.txt \\
            --data-dir /tmp/upbench/var --server-pid "$(cat /tmp/upbench/server.pid)" \\
            --size 2GiB --chunk 64MiB --runs 3

    The server must allow a file of ``--size`` (the appliance: ``transfer.max_file_size``)
    and the account room for two of them per run (``transfer.station_capacity``); each run
    deletes its uploads at the end (tus termination) when the server lets it.  ``--json``
    prints one JSON object instead of the tables.  The medians over ``--runs`` come last.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from urllib.parse import urljoin, urlsplit

from benchmarks.imap_bench import client_cpu, delta, process_cpu, process_memory

BLOCK = 1024 * 1024  # the repeated random block, and the size of each send and receive
TAIL = 64
DD_BLOCK = 4 * 1024 * 1024
MB = 10**6
TARGETS = {"upload": 0.70, "download": 0.80, "rss_growth_mib": 64}


# --- the file, made on the fly ----------------------------------------------------------------


class Content:
    """``size`` bytes: a random block repeated, then a tail unique to each upload."""

    def __init__(self, size: int):
        if size <= TAIL:
            raise ValueError(f"--size must be more than {TAIL} bytes")
        self.size = size
        self.block = memoryview(os.urandom(BLOCK))
        self.prefix = size - TAIL
        prefix_hash = hashlib.sha256()
        for piece in self.pieces(0, self.prefix, b""):
            prefix_hash.update(piece)
        self.prefix_hash = prefix_hash

    def pieces(self, offset: int, length: int, tail: bytes) -> Iterator[memoryview | bytes]:
        """The bytes [offset, offset + length) as pieces of at most one block."""
        end = offset + length
        while offset < end:
            if offset >= self.prefix:
                yield tail[offset - self.prefix : end - self.prefix]
                return
            start = offset % BLOCK
            n = min(BLOCK - start, end - offset, self.prefix - offset)
            yield self.block[start : start + n]
            offset += n

    def upload(self, label: str) -> tuple[bytes, str]:
        """A fresh tail and the SHA-256 (hex) of the whole file with it."""
        tail = f"{label} {time.time_ns()} ".encode().ljust(TAIL, b".")[:TAIL]
        digest = self.prefix_hash.copy()
        digest.update(tail)
        return tail, digest.hexdigest()


# --- HTTP -----------------------------------------------------------------------------------


@dataclass
class Target:
    url: str  # the tus collection, e.g. http://127.0.0.1:18080/files/
    authorization: str
    timeout: float

    def connect(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        if parts.scheme == "https":
            import ssl

            context = ssl._create_unverified_context()  # self-signed test certificates
            return http.client.HTTPSConnection(
                parts.hostname, parts.port or 443, timeout=self.timeout, context=context
            )
        return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.timeout)

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Tus-Resumable": "1.0.0", "Authorization": self.authorization, **extra}


class BenchError(Exception):
    pass


def _answer(conn: http.client.HTTPConnection, expect: int, what: str) -> http.client.HTTPResponse:
    response = conn.getresponse()
    body = response.read()
    if response.status != expect:
        reason = body.decode("utf-8", "replace").strip()[:200]
        raise BenchError(f"{what}: {response.status} {response.reason} {reason}")
    return response


def create(conn: http.client.HTTPConnection, target: Target, size: int, name: str) -> str:
    """POST: a new upload of ``size`` bytes; its absolute URL."""
    metadata = "filename " + base64.b64encode(name.encode()).decode()
    headers = target.headers(**{"Upload-Length": str(size), "Upload-Metadata": metadata})
    conn.request("POST", urlsplit(target.url).path, headers=headers)
    response = _answer(conn, 201, "POST")
    return urljoin(target.url, response.getheader("Location", ""))


def patch(
    conn: http.client.HTTPConnection,
    target: Target,
    url: str,
    content: Content,
    tail: bytes,
    offset: int,
    length: int,
) -> None:
    """One PATCH of [offset, offset + length), the body sent piece by piece, never whole."""
    conn.putrequest("PATCH", urlsplit(url).path, skip_accept_encoding=True)
    headers = target.headers(
        **{
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(length),
        }
    )
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    for piece in content.pieces(offset, length, tail):
        conn.send(piece)
    response = _answer(conn, 204, f"PATCH at {offset}")
    got = int(response.getheader("Upload-Offset", "-1"))
    if got != offset + length:
        raise BenchError(f"PATCH at {offset}: Upload-Offset {got}, expected {offset + length}")


def upload(target: Target, content: Content, chunk: int, label: str) -> tuple[str, str]:
    """One upload in PATCHes of ``chunk`` bytes; (its URL, its SHA-256)."""
    tail, sha256 = content.upload(label)
    conn = target.connect()
    try:
        url = create(conn, target, content.size, f"upload_bench-{label}.bin")
        offset = 0
        while offset < content.size:
            length = min(chunk, content.size - offset)
            patch(conn, target, url, content, tail, offset, length)
            offset += length
    finally:
        conn.close()
    return url, sha256


def receive(read_into, expect: int) -> tuple[int, str]:
    """Read to the end in 1 MiB pieces, hashing: (bytes, SHA-256 hex)."""
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    digest = hashlib.sha256()
    total = 0
    while True:
        n = read_into(view)
        if not n:
            break
        digest.update(view[:n])
        total += n
        if total > expect:
            break
    return total, digest.hexdigest()


def download(target: Target, url: str, size: int, sha256: str) -> None:
    conn = target.connect()
    try:
        conn.request("GET", urlsplit(url).path, headers=target.headers())
        response = conn.getresponse()
        if response.status != 200:
            raise BenchError(f"GET: {response.status} {response.reason}")
        etag = (response.getheader("ETag") or "").strip('W/"')
        total, got = receive(response.readinto, size)
    finally:
        conn.close()
    if total != size or got != sha256:
        raise BenchError(f"GET: {total} bytes with SHA-256 {got}, expected {size} with {sha256}")
    if len(etag) == 64 and etag != sha256:
        raise BenchError(f"GET: ETag {etag} is not the content's SHA-256 {sha256}")


def log_in(target: Target) -> None:
    """One authenticated request before the memory baseline is taken: the server's first
    check of a password runs argon2id, whose memory cost (``auth.password_hash``, 64 MiB by
    default) would otherwise count as the upload's."""
    conn = target.connect()
    try:
        conn.request("OPTIONS", urlsplit(target.url).path, headers=target.headers())
        conn.getresponse().read()
        conn.request("HEAD", urlsplit(target.url).path + "log-in", headers=target.headers())
        response = conn.getresponse()
        response.read()
        if response.status == 401:
            raise BenchError("HEAD: 401, the user or password is wrong")
    finally:
        conn.close()


def terminate(target: Target, url: str) -> int:
    """DELETE (tus termination); the status, or 0 if the request failed."""
    conn = target.connect()
    try:
        conn.request("DELETE", urlsplit(url).path, headers=target.headers())
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


# --- baselines ------------------------------------------------------------------------------


def _dd_seconds(path: str, size: int) -> float:
    try:
        return dd(path, size)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def dd(path: str, size: int) -> float:
    """Seconds ``dd ... conv=fsync`` takes to write at least ``size`` bytes to ``path``."""
    count = -(-size // DD_BLOCK)
    argv = ["dd", "if=/dev/zero", f"of={path}", "bs=4M", f"count={count}", "conv=fsync"]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def loopback_copy(path: str, size: int) -> float:
    """Seconds to receive ``size`` bytes of ``path`` (page cache) through loopback TCP, sent
    with sendfile by a thread, read and hashed by the download's loop."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, open(path, "rb") as f:
            conn.sendfile(f, 0, size)

    sender = threading.Thread(target=serve, daemon=True)
    sender.start()
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        total, _ = receive(sock.recv_into, size)
    seconds = time.perf_counter() - start
    sender.join()
    listener.close()
    if total != size:
        raise BenchError(f"loopback copy: {total} bytes, expected {size}")
    return seconds


# --- one run --------------------------------------------------------------------------------


@dataclass
class Phase:
    seconds: float | None = None
    mb_per_s: float | None = None
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None
    server_rss_kib: int | None = None  # after the phase
    server_hwm_kib: int | None = None


@dataclass
class RunResult:
    run: int
    ok: bool = True
    errors: list[str] = field(default_factory=list)
    dd_s: float | None = None  # before the one-PATCH upload
    dd_mb_per_s: float | None = None
    dd2_s: float | None = None  # again before the chunked upload: the disk's speed drifts
    dd2_mb_per_s: float | None = None
    loopback_s: float | None = None
    loopback_mb_per_s: float | None = None
    one_patch: Phase = field(default_factory=Phase)
    chunked: Phase = field(default_factory=Phase)
    download: Phase = field(default_factory=Phase)
    deleted: list[int] = field(default_factory=list)  # DELETE statuses


def measured(phase: Phase, pids: list[int], size: int, work) -> object:
    """Run ``work()``, filling ``phase`` with its wall time, rate, CPU and memory after."""
    server_before, client_before = process_cpu(pids) if pids else None, client_cpu()
    start = time.perf_counter()
    result = work()
    phase.seconds = time.perf_counter() - start
    phase.mb_per_s = size / MB / phase.seconds
    phase.server_cpu_s = delta(process_cpu(pids) if pids else None, server_before)
    phase.client_cpu_s = client_cpu() - client_before
    memory = process_memory(pids) if pids else None
    if memory:
        phase.server_rss_kib, phase.server_hwm_kib = memory
    return result


def run_once(number: int, args: argparse.Namespace, target: Target, content: Content) -> RunResult:
    result = RunResult(number)
    size, pids = content.size, args.server_pid
    scratch = os.path.join(args.data_dir, "upload_bench.dd")
    urls: list[str] = []
    try:
        result.dd_s = dd(scratch, size)
        result.dd_mb_per_s = size / MB / result.dd_s
        result.loopback_s = loopback_copy(scratch, size)
        result.loopback_mb_per_s = size / MB / result.loopback_s
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    try:
        url, _ = measured(
            result.one_patch, pids, size, lambda: upload(target, content, size, f"{number}-one")
        )
        urls.append(url)
        result.dd2_s = _dd_seconds(scratch, size)  # the disk now, just before this phase
        result.dd2_mb_per_s = size / MB / result.dd2_s
        url, sha256 = measured(
            result.chunked,
            pids,
            size,
            lambda: upload(target, content, args.chunk, f"{number}-chunked"),
        )
        urls.append(url)
        measured(result.download, pids, size, lambda: download(target, url, size, sha256))
    except (BenchError, OSError, http.client.HTTPException) as e:
        result.ok = False
        result.errors.append(f"{type(e).__name__}: {e}")
    result.deleted = [terminate(target, u) for u in urls]
    return result


# --- arguments and reports ------------------------------------------------------------------


def size_arg(text: str) -> int:
    units = {"KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "KB": 10**3, "MB": 10**6, "GB": 10**9}
    clean = text.strip().replace(" ", "").upper()
    for unit, factor in units.items():
        if clean.endswith(unit) and clean[: -len(unit)].replace(".", "", 1).isdigit():
            return int(float(clean[: -len(unit)]) * factor)
    if clean.isdigit():
        return int(clean)
    raise argparse.ArgumentTypeError(f"expected a size such as 2GiB or 512MiB, got {text!r}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.upload_bench",
        description="tus upload and download of one big file, beside dd and a loopback copy.",
    )
    parser.add_argument("--url", required=True, help="the tus collection, http://HOST:PORT/files/")
    parser.add_argument("--user", required=True)
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password")
    secret.add_argument("--password-file", help="the password is its first line")
    parser.add_argument("--size", type=size_arg, default=2 * 1024**3, help="default 2GiB")
    parser.add_argument("--chunk", type=size_arg, default=64 * 1024**2, help="default 64MiB")
    parser.add_argument(
        "--data-dir", required=True, help="a directory in the file system the server stores in"
    )
    parser.add_argument("--server-pid", type=int, action="append", default=[])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="socket timeout, seconds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.password_file:
        with open(args.password_file) as f:
            args.password = f.readline().rstrip("\r\n")
    if not os.path.isdir(args.data_dir):
        parser.error(f"--data-dir {args.data_dir}: not a directory")
    if args.chunk < 1 or args.runs < 1:
        parser.error("--chunk and --runs must be at least 1")
    return args


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summary(results: list[RunResult], baseline_hwm: int | None) -> dict[str, float | None]:
    good = [r for r in results if r.ok]
    med = {
        "dd_mb_per_s": median([r.dd_mb_per_s for r in results]),
        "loopback_mb_per_s": median([r.loopback_mb_per_s for r in results]),
    }
    for name in ("one_patch", "chunked", "download"):
        for key in ("mb_per_s", "server_cpu_s", "client_cpu_s"):
            med[f"{name}_{key}"] = median([getattr(getattr(r, name), key) for r in good])
    # Each upload against the dd measured just before it, in the same run; then the median.
    for name, dd_key in (("one_patch", "dd_mb_per_s"), ("chunked", "dd2_mb_per_s")):
        ratios = [
            getattr(r, name).mb_per_s / getattr(r, dd_key)
            for r in good
            if getattr(r, name).mb_per_s and getattr(r, dd_key)
        ]
        med[f"{name}_of_dd"] = median(ratios)
    rate, loop = med["download_mb_per_s"], med["loopback_mb_per_s"]
    med["download_of_loopback"] = rate / loop if rate and loop else None
    peaks = [
        p.server_hwm_kib
        for r in results
        for p in (r.one_patch, r.chunked, r.download)
        if p.server_hwm_kib is not None
    ]
    med["server_hwm_growth_mib"] = (
        (max(peaks) - baseline_hwm) / 1024 if peaks and baseline_hwm is not None else None
    )
    return med


def _f(value: float | int | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def report(result: RunResult) -> None:
    print(f"run {result.run}{'' if result.ok else ' FAILED'}")
    print(f"  dd conv=fsync   {_f(result.dd_mb_per_s):>8} MB/s  ({_f(result.dd_s, '.2f')} s)")
    print(f"  dd again        {_f(result.dd2_mb_per_s):>8} MB/s  ({_f(result.dd2_s, '.2f')} s)")
    print(
        f"  loopback copy   {_f(result.loopback_mb_per_s):>8} MB/s"
        f"  ({_f(result.loopback_s, '.2f')} s)"
    )
    for name in ("one_patch", "chunked", "download"):
        p: Phase = getattr(result, name)
        rss = "-" if p.server_rss_kib is None else f"{p.server_rss_kib / 1024:.0f}"
        hwm = "-" if p.server_hwm_kib is None else f"{p.server_hwm_kib / 1024:.0f}"
        print(
            f"  {name:<15} {_f(p.mb_per_s):>8} MB/s  ({_f(p.seconds, '.2f')} s; server CPU"
            f" {_f(p.server_cpu_s, '.2f')} s, client CPU {_f(p.client_cpu_s, '.2f')} s;"
            f" server RSS {rss} MiB, HWM {hwm} MiB)"
        )
    for error in result.errors:
        print(f"  error: {error}")


def print_summary(med: dict[str, float | None], runs: int) -> None:
    print(f"medians over {runs} run(s)")
    print(f"  dd conv=fsync        {_f(med['dd_mb_per_s']):>8} MB/s")
    print(f"  loopback copy        {_f(med['loopback_mb_per_s']):>8} MB/s")
    for name, base in (("one_patch", "dd"), ("chunked", "dd"), ("download", "loopback")):
        ratio = med[f"{name}_of_{base}"]
        want = TARGETS["download" if name == "download" else "upload"]
        verdict = "" if ratio is None else ("  ok" if ratio >= want else "  BELOW TARGET")
        print(
            f"  {name:<20} {_f(med[f'{name}_mb_per_s']):>8} MB/s; {_f(ratio and ratio * 100)} %"
            f" of {base} (target {want * 100:.0f} %){verdict}; server CPU"
            f" {_f(med[f'{name}_server_cpu_s'], '.2f')} s"
        )
    growth = med["server_hwm_growth_mib"]
    if growth is not None:
        verdict = "ok" if growth < TARGETS["rss_growth_mib"] else "ABOVE TARGET"
        print(
            f"  server VmHWM growth  {growth:8.1f} MiB (target < {TARGETS['rss_growth_mib']}"
            f" MiB) {verdict}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    credentials = base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
    target = Target(args.url, f"Basic {credentials}", args.timeout)
    pids = args.server_pid
    log_in(target)
    baseline = process_memory(pids) if pids else None
    if not args.json:
        print(
            f"upload_bench: {args.size} bytes to {args.url} as {args.user}, PATCH chunks of"
            f" {args.chunk} bytes, {args.runs} run(s); {platform.node()}, {os.cpu_count()} CPUs,"
            f" Python {platform.python_version()}"
        )
        if baseline:
            print(f"server pid(s) {pids}: VmRSS {baseline[0] / 1024:.0f} MiB,"
                  f" VmHWM {baseline[1] / 1024:.0f} MiB before the first run")  # fmt: skip
        print("hashing the file's repeated part once...", flush=True)
    content = Content(args.size)
    results = []
    for number in range(1, args.runs + 1):
        result = run_once(number, args, target, content)
        results.append(result)
        if not args.json:
            report(result)
            sys.stdout.flush()
    med = summary(results, baseline[1] if baseline else None)
    if args.json:
        out = {
            "size": args.size,
            "chunk": args.chunk,
            "runs": [asdict(r) for r in results],
            "baseline_server_kib": baseline,
            "medians": med,
        }
        print(json.dumps(out, indent=2))
    else:
        print_summary(med, len(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
