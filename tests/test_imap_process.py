"""IMAP against ``twistd -n mailbox-appliance`` in a child process: memory and durability.

A 512 MiB message goes in by APPEND and out by FETCH (whole, and a byte range deep inside)
with the server's peak RSS (VmHWM) growing by well under 64 MiB, and a message answered
``OK`` to APPEND is there after ``kill -9``.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support.imap_clients import RawIMAP
from tests.support.processes import ChildAppliance, vm_field

MiB = 1024**2
LINE = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxy\r\n"
BLOCK = LINE * (MiB // len(LINE))
HEADER = b"From: a@remote.test\r\nSubject: a big one\r\n\r\n"


class ChildIMAPTests(ChildAppliance, TestCase):
    services = ("imap",)

    def setUp(self):
        super().setUp()
        self.port = self.ports["imap"]

    def connect(self):
        client = RawIMAP(self.port)
        client.sock.settimeout(300)
        lines = client.command(b"a", b'LOGIN alice@example.test "pw"')
        assert lines[-1].startswith(b"a OK"), lines
        return client

    @inlineCallbacks
    def test_512_mib_append_and_fetch_with_server_rss_growth_under_64_mib(self):
        pid = self.twistd.process.pid
        count = 512
        size = len(HEADER) + count * len(BLOCK)

        def append():
            client = self.connect()
            try:
                client.send(b"b APPEND INBOX {%d+}\r\n" % size + HEADER)
                digest = hashlib.sha256(HEADER)
                for _ in range(count):
                    client.send(BLOCK)
                    digest.update(BLOCK)
                client.send(b"\r\n")
                return client.until_tagged(b"b")[-1], digest.hexdigest()
            finally:
                client.close()

        def fetch(spec: bytes):
            """Read one FETCH literal without holding it: its length and SHA-256."""
            client = self.connect()
            try:
                client.command(b"s", b"SELECT INBOX")
                client.send(b"f FETCH 1 (" + spec + b")\r\n")
                line = client.line()
                length = int(re.search(rb"\{(\d+)\}\r\n$", line).group(1))
                digest, left = hashlib.sha256(), length
                while left:
                    chunk = client.file.read(min(MiB, left))
                    digest.update(chunk)
                    left -= len(chunk)
                rest = client.until_tagged(b"f")
                return length, digest.hexdigest(), rest[-1]
            finally:
                client.close()

        before = vm_field(pid, "VmHWM")
        answer, digest = yield deferToThread(append)
        self.assertRegex(answer, rb"^b OK \[APPENDUID \d+ 1\]")
        length, fetched, done = yield deferToThread(fetch, b"BODY.PEEK[]")
        self.assertEqual((length, fetched), (size, digest))
        self.assertTrue(done.startswith(b"f OK"), done)
        # A byte range deep inside: only those bytes are read and sent.
        offset = 300 * MiB + 17
        length, fetched, done = yield deferToThread(fetch, b"BODY.PEEK[TEXT]<%d.1000000>" % offset)
        start = offset % len(BLOCK)
        expected = (BLOCK * 2)[start : start + 1000000]
        self.assertEqual((length, fetched), (1000000, hashlib.sha256(expected).hexdigest()))
        growth = vm_field(pid, "VmHWM") - before
        self.assertLess(growth, 64 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB")

    @inlineCallbacks
    def test_message_appended_with_ok_survives_kill_9(self):
        message = b"Subject: durable\r\n\r\n" + os.urandom(300).hex().encode() + b"\r\n"

        def append():
            client = self.connect()
            client.send(b"b APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
            answer = client.until_tagged(b"b")[-1]
            self.twistd.process.send_signal(signal.SIGKILL)  # the moment OK arrived
            client.close()
            return answer

        answer = yield deferToThread(append)
        self.assertTrue(answer.startswith(b"b OK"), answer)
        self.twistd.wait()
        self.twistd = self.start()

        def fetch():
            client = self.connect()
            try:
                client.command(b"s", b"SELECT INBOX")
                return client.command(b"f", b"FETCH 1 BODY.PEEK[]")
            finally:
                client.close()

        lines = yield deferToThread(fetch)
        self.assertEqual(lines[1], message)
