"""Stream a large body through the blob store and report throughput and memory growth.

Design rule 3 says content is streamed: memory must not grow with the size of a message or
upload.  This script plays a fast network peer: a streaming producer that writes 64 KiB pieces
into a ``BlobWriter`` as fast as the writer lets it (honouring ``pauseProducing``), then
finishes the blob (fsync, register, rename).  It prints MB/s and how much the process's peak
RSS (``VmHWM``) grew while streaming.

    python benchmarks/blob_stream_rss.py --size 2GiB [--data-dir DIR]

The target (design.md §5): a 2 GiB body streams at disk speed with RSS growth under 64 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from mailbox_appliance.config import parse_size
from mailbox_appliance.store import Store
from mailbox_appliance.store.migrate import upgrade

PIECE = 64 * 1024


def vm_hwm_kib() -> int:
    """Peak resident set size of this process so far, in KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


@implementer(IPushProducer)
class FastPeer:
    """Writes ``total`` bytes into ``consumer`` as fast as it is allowed to."""

    def __init__(self, reactor, consumer, total: int):
        self.reactor = reactor
        self.consumer = consumer
        self.left = total
        self.paused = False
        self.pauses = 0
        self.done: Deferred[None] = Deferred()
        self.piece = os.urandom(PIECE)

    def start(self) -> Deferred[None]:
        self.consumer.registerProducer(self, True)
        self.reactor.callLater(0, self._pump)
        return self.done

    def _pump(self) -> None:
        # Like a transport's doRead: a burst of pieces per reactor turn, unless paused.
        for _ in range(16):
            if self.paused or not self.left:
                break
            n = min(PIECE, self.left)
            self.left -= n
            self.consumer.write(self.piece[:n])
        if not self.left:
            self.consumer.unregisterProducer()
            self.done.callback(None)
        elif not self.paused:
            self.reactor.callLater(0, self._pump)

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self.reactor.callLater(0, self._pump)

    def stopProducing(self) -> None:
        self.left = 0


async def run(reactor, size: int, data_dir: str) -> dict:
    url = "sqlite:///" + os.path.join(data_dir, "bench.sqlite3")
    upgrade(url)
    store = Store(reactor, url, os.path.join(data_dir, "blobs"))
    await store.start()
    try:
        before = vm_hwm_kib()
        started = time.perf_counter()
        writer = store.blobs.open_writer()
        peer = FastPeer(reactor, writer, size)
        await peer.start()
        ref = await writer.finish()
        elapsed = time.perf_counter() - started
        growth = vm_hwm_kib() - before
    finally:
        await store.stop()
    return {
        "bytes": ref.size,
        "seconds": round(elapsed, 3),
        "mb_per_s": round(ref.size / elapsed / 1e6, 1),
        "rss_growth_mib": round(growth / 1024, 1),
        "producer_pauses": peer.pauses,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2GiB", help="body size, e.g. 512MiB (default 2GiB)")
    parser.add_argument("--data-dir", help="where to write (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(dir=args.data_dir) as data_dir:
        result: dict = {}

        async def _main(reactor):
            result.update(await run(reactor, size, data_dir))

        try:
            task.react(lambda reactor: Deferred.fromCoroutine(_main(reactor)))
        except SystemExit as e:
            if e.code:
                raise
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
