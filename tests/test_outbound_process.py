"""The outbound queue against ``twistd -n mailbox-appliance`` in a child process: durability
and memory.

The queue runner promises at-least-once delivery: a message accepted with 250 reaches its
destination even if the process is killed with SIGKILL while the queue is busy, or stopped
and started again while the message waits for a retry.  Duplicates after a crash are allowed
(a remote server may have said 250 just before the process died); losses are not.

It also streams: a 300 MiB message goes from the blob store to the next hop byte-exact, with
the appliance's peak RSS (VmHWM) growing by well under 64 MiB while it sends.

The appliance is the child; the loopback DNS and the SMTP sink it delivers to run in this
process, on the trial reactor, so every blocking call here (smtplib, the CLI, waiting for the
child) runs in a thread.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from mailbox_appliance.config import load_config
from tests.support.appliance import insecure_tls
from tests.support.outbound import outbound_config, sink_and_dns
from tests.support.processes import ChildAppliance, child_env, reset_peak, vm_field
from tests.support.sink import Sink, SinkBehaviour
from tests.support.smtp import submit_streamed

log = Logger()

_MESSAGE_ID = re.compile(rb"^Message-ID: <([^>]+)>\r?$", re.MULTILINE | re.IGNORECASE)
_ATTEMPTS = re.compile(r"<(\S*)>\tattempts (\d+)")


def message(message_id: str, recipients: list[str]) -> bytes:
    return (
        f"From: alice@example.test\r\nTo: {', '.join(recipients)}\r\n"
        f"Subject: durable {message_id}\r\nMessage-ID: <{message_id}>\r\n\r\n"
        f"Body of {message_id}.\r\n.a line with a leading dot\r\n"
    ).encode()


def _queued(listing: str) -> int:
    """The count on the last line of ``queue list``: "N queued"."""
    count, _, word = listing.strip().splitlines()[-1].partition(" ")
    assert word == "queued", listing
    return int(count)


def arrived(sink: Sink) -> list[tuple[str, str]]:
    """Every (Message-ID, recipient) the sink accepted, once per delivery (duplicates kept)."""
    pairs = []
    for m in sink.messages:
        found = _MESSAGE_ID.search(m.data or b"")
        message_id = found.group(1).decode() if found else "?"
        pairs.extend((message_id, r.lower()) for r in m.recipients)
    return pairs


class _OutboundChild(ChildAppliance, TestCase):
    """The child appliance with submission on, delivering by MX lookup to the sink."""

    services = ("submission",)
    timeout = 60

    def behaviour(self) -> SinkBehaviour:
        return SinkBehaviour()

    def setUp(self):
        self.sink, self.dns = sink_and_dns(self, self.behaviour())
        retry = {"first": 1, "max_interval": 2, "give_up_after": 3600}
        self.config = outbound_config(self.sink, self.dns, retry=retry)
        super().setUp()
        self._stop_in_a_thread_at_cleanup(self.twistd)

    def _stop_in_a_thread_at_cleanup(self, twistd) -> None:
        """Stopping waits for the child; the sink must keep answering its QUIT meanwhile."""

        def stop():
            if twistd.process.poll() is None:
                return deferToThread(twistd.stop)

        self.addCleanup(stop)

    @inlineCallbacks
    def restart(self):
        """Start the appliance again (same config, ports and data), without blocking the
        reactor; the previous run's output is kept beside the new one (twistd.out.1, ...)."""
        self.runs = getattr(self, "runs", 0) + 1
        shutil.copy(self.twistd.log_path, f"{self.twistd.log_path}.{self.runs}")
        self.twistd = yield deferToThread(self.start)
        self._stop_in_a_thread_at_cleanup(self.twistd)

    def submit_all(self, batches: list[list[tuple[str, list[str]]]]):
        """Submit each batch over one connection (STARTTLS, AUTH), the batches in parallel.

        Fires with the (Message-ID, recipient) pairs that got 250.
        """
        port = self.ports["submission"]

        def run(batch):
            accepted = []
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.starttls(context=insecure_tls())
                client.login("alice@example.test", "pw")
                for message_id, recipients in batch:
                    data = message(message_id, recipients)
                    refused = client.sendmail("alice@example.test", recipients, data)
                    accepted.extend((message_id, r) for r in recipients if r not in refused)
            return accepted

        d = gatherResults([deferToThread(run, batch) for batch in batches], consumeErrors=True)
        return d.addCallback(lambda results: [pair for result in results for pair in result])

    def queue_list(self):
        """``mailbox-appliance queue list`` against the same data, in a thread: its stdout."""

        def run():
            return subprocess.run(
                [sys.executable, "-m", "mailbox_appliance", "--config", self.config_path]
                + ["queue", "list"],
                text=True,
                env=child_env(),
                check=True,
                capture_output=True,
                timeout=30,
            ).stdout

        return deferToThread(run)

    @inlineCallbacks
    def wait_until(self, condition, timeout: float = 20, interval: float = 0.1, what: str = ""):
        """Poll ``condition`` (a value or a Deferred) until it is true; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = yield condition()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail(f"timed out after {timeout}s waiting for {what or condition}")
            yield deferLater(reactor, interval, lambda: None)

    @inlineCallbacks
    def wait_for_an_empty_queue(self):
        listing = yield self.wait_until(
            lambda: self.queue_list().addCallback(lambda out: out if _queued(out) == 0 else None),
            timeout=20,
            interval=0.5,
            what="queue list to say 0 queued",
        )
        return listing


class KillTests(_OutboundChild):
    def behaviour(self) -> SinkBehaviour:
        # Nearly stalled while mail goes in, so that the queue fills up.
        return SinkBehaviour(delay=1.0)

    @inlineCallbacks
    def test_kill_9_in_a_busy_queue_loses_nothing(self):
        count, threads = 200, 4
        plan = [
            (f"m{i}.k9@example.test", [f"user{(i + j) % 7}@remote.test" for j in range(i % 3 + 1)])
            for i in range(count)
        ]
        accepted = yield self.submit_all([plan[t::threads] for t in range(threads)])
        expected = {(message_id, r.lower()) for message_id, r in accepted}
        self.assertEqual(len(expected), sum(len(r) for _, r in plan), "not all were accepted")

        # The sink turns slow rather than stalled: the queue drains, busily, over seconds.
        self.sink.behaviour.delay = 0.02
        before = len(self.sink.messages)
        yield self.sink.wait_for(before + count // 4)
        os.kill(self.twistd.process.pid, signal.SIGKILL)  # the moment the sink said 250
        at_kill = len(self.sink.messages)
        status = yield deferToThread(self.twistd.wait)
        self.assertEqual(status, -signal.SIGKILL)
        self.assertLess(at_kill, count, "the sink had everything before the kill")

        self.sink.behaviour.delay = 0.0
        yield self.restart()
        yield self.wait_until(
            lambda: expected <= set(arrived(self.sink)),
            timeout=30,
            what="every accepted (message, recipient) at the sink",
        )
        delivered = arrived(self.sink)
        self.assertEqual(set(delivered) - expected, set())  # nothing made up
        yield self.wait_for_an_empty_queue()
        log.info(
            "kill -9 after {at_kill} of {count} messages reached the sink: {dups} duplicate "
            "(message, recipient) deliveries of {pairs}",
            at_kill=at_kill,
            count=count,
            dups=len(delivered) - len(set(delivered)),
            pairs=len(expected),
        )


class CleanRestartTests(_OutboundChild):
    def behaviour(self) -> SinkBehaviour:
        return SinkBehaviour(rcpt_replies={"later@remote.test": (451, "4.3.2 try again later")})

    @inlineCallbacks
    def test_a_clean_restart_keeps_deferred_mail_and_delivers_it_later(self):
        accepted = yield self.submit_all([[("later.1@example.test", ["later@remote.test"])]])
        self.assertEqual(accepted, [("later.1@example.test", "later@remote.test")])

        def deferred_row(listing: str):
            return [int(n) for who, n in _ATTEMPTS.findall(listing) if who == "later@remote.test"]

        yield self.wait_until(
            lambda: self.queue_list().addCallback(lambda out: any(deferred_row(out))),
            interval=0.3,
            what="an attempt on the queued row",
        )
        self.assertEqual(self.sink.messages, [])

        status = yield deferToThread(self.twistd.stop)  # SIGTERM: a clean shutdown
        # twistd ends a clean shutdown by re-raising the signal, for its parent to see.
        self.assertEqual(status, -signal.SIGTERM)
        self.assertIn("Server Shut Down.", self.twistd.output())
        listing = yield self.queue_list()
        self.assertEqual(len(deferred_row(listing)), 1, listing)  # kept across the stop

        self.sink.behaviour.rcpt_replies.clear()
        yield self.restart()
        (received,) = yield self.sink.wait_for(1, timeout=20)
        self.assertEqual(received.recipients, ["later@remote.test"])
        self.assertEqual(arrived(self.sink), [("later.1@example.test", "later@remote.test")])
        yield self.wait_for_an_empty_queue()


class CleanStopTests(_OutboundChild):
    def behaviour(self) -> SinkBehaviour:
        return SinkBehaviour(delay=0.3)

    @inlineCallbacks
    def test_a_clean_stop_in_mid_delivery_is_not_counted_as_an_attempt(self):
        """QueueRunner._stop: "rows in hand stay claimed and are due again at the next start".
        A shutdown is not the destination's fault: no attempt, no backoff, no error logged."""
        recipients = [f"busy{i}@remote.test" for i in range(3)]
        plan = [(f"busy.{i}@example.test", [r]) for i, r in enumerate(recipients)]
        yield self.submit_all([plan])

        def under_way():
            return all(any(c == f"RCPT TO:<{r}>" for c in self.sink.commands) for r in recipients)

        yield self.wait_until(under_way, what="three transactions under way")
        yield deferToThread(self.twistd.stop)
        listing = yield self.queue_list()
        self.assertEqual([int(n) for _, n in _ATTEMPTS.findall(listing)], [0, 0, 0], listing)
        self.assertNotIn("#critical]", self.twistd.output())

        self.sink.behaviour.delay = 0.0
        yield self.restart()
        yield self.sink.wait_for(3)
        yield self.wait_for_an_empty_queue()


MiB = 1024**2


def _line(text: bytes, length: int) -> bytes:
    return text.ljust(length - 2, b"~") + b"\r\n"


#: Lines of 97, 101 and 103 bytes, two starting with dots.  301 is prime to the runner's
#: 256 KiB reads, so in 300 MiB of them a read starts at every byte of the three: at a dot
#: that starts a line, between CR and LF, everywhere (the places a chunk-at-a-time
#: dot-stuffer is most easily wrong).
LINES = (
    _line(b".one dot starts this line; the relay must send it as two", 97)
    + _line(b"..two dots start this one; the next hop removes one of them", 101)
    + _line(b"and an ordinary line between them, with no dot at its start", 103)
)
#: About 1 MiB of whole ``LINES``.
BLOCK = LINES * (MiB // len(LINES))
HEADER = b"From: alice@example.test\r\nTo: big@remote.test\r\nSubject: a big one\r\n\r\n"


def submit_blocks(port: int, recipient: str, blocks: int) -> list[str]:
    """Submit ``HEADER`` and ``blocks`` times ``BLOCK`` from alice, streamed."""
    size = len(HEADER) + blocks * len(BLOCK)
    return submit_streamed(port, recipient, itertools.chain([HEADER], [BLOCK] * blocks), size)


class BigMessageTests(_OutboundChild):
    """The runner streams content from the blob store: 256 KiB reads, written only when the
    connection wants more (``smtp/client.py``), so the size of a message costs no memory."""

    #: Submission (TLS), the first attempt and the relay of 300 MiB take about 10 s here.
    timeout = 90

    def behaviour(self) -> SinkBehaviour:
        # Only size and sha256 of what arrives are kept.  The big message's first attempt is
        # refused, so that it can be measured from the queue: stored, and not yet sending.
        return SinkBehaviour(
            keep_content=False, rcpt_replies={"big@remote.test": (451, "4.3.2 not yet")}
        )

    def stored_prefix(self, size: int) -> bytes:
        """What the blob holds in front of the submitted content, less the Return-Path line
        (which copies that leave skip): the trace fields the next hop gets first."""
        config = load_config(self.config_path, environ={})
        root = config.hot_blob_path
        files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
        (path,) = [f for f in files if os.path.getsize(f) >= size]
        with open(path, "rb") as f:
            head = f.read(64 * 1024)
        return_path = head[: head.index(b"\r\n") + 2]
        self.assertEqual(return_path, b"Return-Path: <alice@example.test>\r\n")
        prefix = head[len(return_path) : head.index(HEADER)]
        self.assertTrue(prefix.startswith(b"Received: from big.test "), prefix)
        self.assertEqual(os.path.getsize(path), len(return_path) + len(prefix) + size)
        return prefix

    @inlineCallbacks
    def test_300_mib_message_is_relayed_byte_exact_with_rss_growth_under_64_mib(self):
        pid = self.twistd.process.pid
        port = self.ports["submission"]
        blocks = 300
        size = len(HEADER) + blocks * len(BLOCK)

        # Warm-up: a 1 MiB message takes the whole path (file-backed blob, chunked reads).
        replies = yield deferToThread(submit_blocks, port, "warm@remote.test", 1)
        self.assertTrue(replies[-1].startswith("250 2.0.0"), replies)
        (warm,) = yield self.sink.wait_for(1)
        self.assertEqual(warm.recipients, ["warm@remote.test"])

        before_submission = vm_field(pid, "VmHWM")
        replies = yield deferToThread(submit_blocks, port, "big@remote.test", blocks)
        self.assertEqual([r[:3] for r in replies], ["250", "250", "354", "250"], replies)

        def attempted(listing: str) -> bool:
            rows = _ATTEMPTS.findall(listing)
            return any(who == "big@remote.test" and n != "0" for who, n in rows)

        yield self.wait_until(
            lambda: self.queue_list().addCallback(attempted),
            interval=0.3,
            what="the refused first attempt on the big message",
        )
        self.assertEqual(len(self.sink.messages), 1)
        prefix = self.stored_prefix(size)

        # The baseline: the message stored and queued, nothing of it sent.  Where the peak
        # cannot be reset, it is the peak from before the submission (shown flat elsewhere).
        reset = reset_peak(pid)
        before = vm_field(pid, "VmHWM") if reset else before_submission
        started = time.monotonic()
        self.sink.behaviour.rcpt_replies.clear()
        _, big = yield self.sink.wait_for(2, timeout=60)
        seconds = time.monotonic() - started
        growth = vm_field(pid, "VmHWM") - before
        rss = vm_field(pid, "VmRSS")

        def expected_digest() -> str:
            digest = hashlib.sha256(prefix + HEADER)
            for _ in range(blocks):
                digest.update(BLOCK)
            return digest.hexdigest()

        self.assertEqual((big.sender, big.recipients), ("alice@example.test", ["big@remote.test"]))
        self.assertEqual(big.size, len(prefix) + size)
        self.assertEqual(big.sha256, (yield deferToThread(expected_digest)))
        self.assertLess(growth, 64 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB")
        yield self.wait_for_an_empty_queue()
        log.info(
            "relayed {size:.0f} MiB in {seconds:.1f}s; peak RSS grew by {growth:.1f} MiB from "
            "{baseline} (RSS now {rss:.1f} MiB)",
            size=size / MiB,
            seconds=seconds,
            growth=growth / MiB,
            baseline="a reset peak" if reset else "the peak before the submission",
            rss=rss / MiB,
        )
