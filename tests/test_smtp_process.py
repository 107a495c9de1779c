"""SMTP against ``twistd -n mailbox-appliance`` in a child process: memory and durability.

A 500 MiB message streams through with the server's peak RSS (VmHWM) growing by well under
64 MiB, and a message acknowledged with 250 is in the mailbox after ``kill -9``.  Both need a
process of their own: the first to measure the server alone, the second to kill it.
"""

from __future__ import annotations

import hashlib
import os
import signal

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailbox_appliance.config import load_config
from tests.support.processes import ChildAppliance, vm_field
from tests.support.smtp import RawSMTP, body_of, inbox
from tests.support.store import started_store

MiB = 1024**2


class ChildApplianceTests(ChildAppliance, TestCase):
    services = ("smtp",)
    config = {"smtp": {"max_message_size": "600 MiB"}}

    def setUp(self):
        super().setUp()
        self.port = self.ports["smtp"]

    def envelope(self, client: RawSMTP, size: int | None = None) -> list[str]:
        client.reply()
        client.command("EHLO big.test")
        declared = f" SIZE={size}" if size else ""
        client.send(
            f"MAIL FROM:<s@remote.test>{declared}\r\nRCPT TO:<alice@example.test>\r\n"
            "DATA\r\n".encode()
        )
        return client.replies(3)

    @inlineCallbacks
    def test_500_mib_message_streams_with_server_rss_growth_under_64_mib(self):
        pid = self.twistd.process.pid
        line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxy\r\n"
        block = line * (MiB // len(line))
        header = b"Subject: a big one\r\n\r\n"
        count = 500 * MiB // len(block)

        def send():
            client = RawSMTP(self.port, timeout=300)
            try:
                envelope = self.envelope(client, len(header) + count * len(block))
                digest = hashlib.sha256(header)
                client.send(header)
                for _ in range(count):
                    client.send(block)
                    digest.update(block)
                client.send(b".\r\n")
                return envelope, client.replies(1)[0], digest.hexdigest()
            finally:
                client.close()

        before = vm_field(pid, "VmHWM")
        envelope, answer, digest = yield deferToThread(send)
        growth = vm_field(pid, "VmHWM") - before
        self.assertEqual([a[:3] for a in envelope], ["250", "250", "354"])
        self.assertTrue(answer.startswith("250 2.0.0"), answer)
        self.assertLess(growth, 64 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB")
        # The stored blob is the client's content behind our trace fields.
        config = load_config(self.config_path, environ={})
        files = [os.path.join(d, f) for d, _, fs in os.walk(config.hot_blob_path) for f in fs]
        (path,) = [f for f in files if os.path.getsize(f) > 499 * 10**6]
        with open(path, "rb") as f:
            head = f.read(4096)
            offset = len(head) - len(body_of(head))
            f.seek(offset)
            stored = hashlib.sha256()
            for chunk in iter(lambda: f.read(MiB), b""):
                stored.update(chunk)
        self.assertEqual(stored.hexdigest(), digest)

    @inlineCallbacks
    def test_message_acknowledged_with_250_survives_kill_9(self):
        body = (
            b"Subject: durable\r\nMessage-ID: <k9@remote.test>\r\n\r\n"
            + os.urandom(300).hex().encode()
            + b"\r\n"
        )

        def send():
            client = RawSMTP(self.port)
            envelope = self.envelope(client)
            client.send(body + b".\r\n")
            answer = client.replies(1)[0]
            self.twistd.process.send_signal(signal.SIGKILL)  # the moment 250 arrived
            client.close()
            return envelope, answer

        envelope, answer = yield deferToThread(send)
        self.assertTrue(answer.startswith("250 2.0.0"), answer)
        self.assertEqual(self.twistd.wait(), -signal.SIGKILL)
        config = load_config(self.config_path, environ={})
        store = yield started_store(self, config.database_url)
        (message,) = yield inbox(store, 1)
        self.assertEqual(body_of(message), body)
