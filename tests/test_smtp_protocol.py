"""The SMTP protocol alone, on a StringTransport with a Clock: timeouts, limits, flow control.

The store here is a stand-in that answers at once; every store path is tested for real in
test_smtp.py.  These tests pin down what needs a controlled clock or a byte-exact transport.
"""

from __future__ import annotations

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from mailbox_appliance.config import SMTPConfig
from mailbox_appliance.monitor.limits import ConnectionLimiter
from mailbox_appliance.smtp.factory import SMTPFactory
from mailbox_appliance.store.quota import FIXED
from mailbox_appliance.store.recipients import LocalTarget, Resolution


class _Writer:
    """Collects content as a BlobWriter would; records an abort."""

    observer = None

    def __init__(self):
        self.data = b""
        self.aborted = False

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def write(self, data):
        self.data += data

    def abort(self):
        self.aborted = True
        return succeed(None)


class _Blobs:
    def __init__(self):
        self.writers: list[_Writer] = []

    def open_writer(self, observer=None):
        self.writers.append(_Writer())
        return self.writers[-1]


class _Store:
    quota_policy = FIXED

    def __init__(self):
        self.blobs = _Blobs()

    def resolve(self, address):
        return succeed(Resolution(True, (LocalTarget(1, address, 10**9, 0),)))


def _factory(clock: Clock, **settings) -> SMTPFactory:
    return SMTPFactory(
        "smtp",
        reactor=clock,
        hostname="mx.example.test",
        store=_Store(),
        portal=None,
        throttle=None,
        limiter=ConnectionLimiter(100, 100),
        settings=SMTPConfig(**settings),
        tls_context=None,
    )


class ProtocolTests(SynchronousTestCase):
    def connect(self, **settings):
        self.clock = Clock()
        self.factory = _factory(self.clock, **settings)
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport(peerAddress=None)
        self.protocol.makeConnection(self.transport)
        return self.take()

    def take(self) -> list[str]:
        lines = self.transport.value().decode().split("\r\n")[:-1]
        self.transport.clear()
        return lines

    def send(self, data: bytes) -> list[str]:
        self.protocol.dataReceived(data)
        return self.take()

    def test_greeting_names_the_host(self):
        self.assertEqual(self.connect(), ["220 mx.example.test ESMTP mailbox-appliance"])

    def test_idle_client_gets_421_after_the_command_timeout(self):
        self.connect(command_timeout=300)
        self.clock.advance(299)
        self.assertFalse(self.transport.disconnecting)
        self.send(b"NOOP\r\n")  # activity restarts the clock
        self.clock.advance(299)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(2)
        self.assertEqual(self.take(), ["421 4.4.2 mx.example.test Timeout exceeded, closing"])
        self.assertTrue(self.transport.disconnecting)

    def test_stalled_data_times_out_after_the_data_timeout_and_drops_the_content(self):
        self.connect(command_timeout=300, data_timeout=60)
        self.send(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n")
        self.send(b"Subject: stalled\r\n\r\npart")
        self.clock.advance(61)
        self.assertEqual(self.take(), ["421 4.4.2 mx.example.test Timeout exceeded, closing"])
        self.protocol.connectionLost(None)
        (writer,) = self.factory.store.blobs.writers
        self.assertTrue(writer.aborted)

    def test_a_line_longer_than_the_limit_is_500_and_closes(self):
        self.connect()
        self.assertEqual(self.send(b"NOOP " + b"x" * 20000 + b"\r\n"), ["500 5.5.2 Line too long"])
        self.assertTrue(self.transport.disconnecting)

    def test_a_data_line_of_any_length_stays_content(self):
        self.connect()
        self.send(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n")
        long_line = b"y" * 100_000 + b"\r\n"
        self.assertEqual(self.send(long_line + b"QUIT\r\n"), [])  # still content, no reply
        (writer,) = self.factory.store.blobs.writers
        # The final CRLF is held back: it may begin the end marker.
        self.assertTrue(writer.data.endswith(long_line + b"QUIT"), writer.data[-40:])

    def test_a_client_flooding_while_a_command_waits_is_paused(self):
        self.connect()
        self.protocol.hold("busy")  # as while a command waits for the store
        self.send(b"NOOP\r\n" * 50_000)
        self.assertEqual(self.transport.producerState, "paused")
        self.protocol.release("busy")
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(len(self.take()), 50_000)  # every command answered, in order

    def test_the_blob_writer_pauses_and_resumes_reading(self):
        self.connect()
        self.send(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n")
        (writer,) = self.factory.store.blobs.writers
        writer.producer.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        writer.producer.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")
