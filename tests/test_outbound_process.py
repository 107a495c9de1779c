"""The outbound queue against ``twistd -n mailbox-appliance`` in a child process: durability.

The queue runner promises at-least-once delivery: a message accepted with 250 reaches its
destination even if the process is killed with SIGKILL while the queue is busy, or stopped
and started again while the message waits for a retry.  Duplicates after a crash are allowed
(a remote server may have said 250 just before the process died); losses are not.

The appliance is the child; the loopback DNS and the SMTP sink it delivers to run in this
process, on the trial reactor, so every blocking call here (smtplib, the CLI, waiting for the
child) runs in a thread.
"""

from __future__ import annotations

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

from tests.support.appliance import insecure_tls
from tests.support.dns_server import LoopbackDNS
from tests.support.processes import ChildAppliance, child_env
from tests.support.sink import Sink, SinkBehaviour

log = Logger()

RECORDS = {
    "remote.test": {"MX": [(10, "mx.remote.test")]},
    "mx.remote.test": {"A": ["127.0.0.2"]},
}

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
        self.sink = Sink(self.behaviour())
        sink_port = self.sink.start("127.0.0.2")
        self.addCleanup(self.sink.stop)
        self.dns = LoopbackDNS(dict(RECORDS))
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.config = {
            "delivery": {
                "hold": False,
                "port": sink_port,
                "poll_interval": 0.2,
                "reuse_time": 0.5,
                "retry": {"first": 1, "max_interval": 2, "give_up_after": 3600},
            },
            "dns": {"nameservers": [self.dns.nameserver]},
        }
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
