"""A 300 MiB attachment submitted to ``twistd -n mailbox-appliance`` in a child process becomes a
download link: the mail that arrives is small, the link downloads the attachment byte-exact,
and the appliance's peak RSS (VmHWM) grows by well under 64 MiB while it decodes and rewrites.

Every blocking call here (the raw SMTP client, imaplib, urllib) runs in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import imaplib
import itertools
import random
import re
import time
import urllib.request

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from tests.support.processes import ChildAppliance, reset_peak, vm_field
from tests.support.smtp import submit_streamed

log = Logger()

MiB = 1024 * 1024
PUBLIC = "https://files.example.test"
LINK = re.compile(rb"https://files\.example\.test/s/([a-z2-7]{32})")
#: Just under 1 MiB of attachment, a whole number of 57-byte base64 lines, so the encoding of
#: N blocks is N times the encoding of one.
BLOCK = random.Random(7).randbytes(57 * 18396)
ENCODED = base64.encodebytes(BLOCK).replace(b"\n", b"\r\n")


def head(name: str) -> bytes:
    return (
        b"From: alice@example.test\r\nTo: alice@example.test\r\nSubject: " + name.encode()
        + b"\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nThe big file.\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename=\"" + name.encode() + b"\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )  # fmt: skip


TAIL = b"--b--\r\n"


def submit(port: int, name: str, blocks: int) -> list[str]:
    pieces = itertools.chain([head(name)], itertools.repeat(ENCODED, blocks), [TAIL])
    size = len(head(name)) + blocks * len(ENCODED) + len(TAIL)
    return submit_streamed(port, "alice@example.test", pieces, size)


class BigAttachmentTests(ChildAppliance, TestCase):
    services = ("submission", "imap", "http")
    config = {"transfer": {"detach_threshold": "1 MiB", "public_url": PUBLIC}}
    #: Submission over TLS of 405 MiB of base64, its decoding and the download: ~20 s here.
    timeout = 240

    def fetch(self, number: int) -> bytes:
        c = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=30)
        try:
            c.login("alice@example.test", "pw")
            c.select("INBOX")
            _, data = c.fetch(str(number), "(BODY.PEEK[])")
            return data[0][1]
        finally:
            c.logout()

    def download_digest(self, token: bytes) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.ports['http']}/s/{token.decode()}/download"
        digest, size = hashlib.sha256(), 0
        with urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(MiB):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    @inlineCallbacks
    def test_a_300_mib_attachment_becomes_a_link_with_rss_growth_under_64_mib(self):
        pid = self.twistd.process.pid
        port = self.ports["submission"]
        replies = yield deferToThread(submit, port, "warm.bin", 2)  # the whole path, once
        self.assertTrue(replies[-1].startswith("250 2.0.0"), replies)

        blocks = 300
        reset = reset_peak(pid)
        before = vm_field(pid, "VmHWM") if reset else vm_field(pid, "VmRSS")
        started = time.monotonic()
        replies = yield deferToThread(submit, port, "big.bin", blocks)
        seconds = time.monotonic() - started
        growth = vm_field(pid, "VmHWM") - before
        self.assertEqual([r[:3] for r in replies], ["250", "250", "354", "250"], replies)
        self.assertIn("1 attachment(s) sent as download links", replies[-1])
        self.assertLess(growth, 64 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB")

        delivered = yield deferToThread(self.fetch, 2)
        self.assertLess(len(delivered), 16 * 1024)
        self.assertIn(b"big.bin", delivered)
        (token,) = set(LINK.findall(delivered))

        def expected() -> str:
            digest = hashlib.sha256()
            for _ in range(blocks):
                digest.update(BLOCK)
            return digest.hexdigest()

        size, digest = yield deferToThread(self.download_digest, token)
        self.assertEqual((size, digest), (blocks * len(BLOCK), (yield deferToThread(expected))))
        log.info(
            "submitted and detached {size:.0f} MiB in {seconds:.1f}s; peak RSS grew by "
            "{growth:.1f} MiB",
            size=blocks * len(BLOCK) / MiB,
            seconds=seconds,
            growth=growth / MiB,
        )
