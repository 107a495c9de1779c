"""POP3 against ``twistd -n mailbox-appliance`` in a child process: a 500 MiB RETR.

The message goes in by IMAP APPEND (streamed from the client in 1 MiB blocks) and comes out by
POP3 RETR, dot-stuffed on the way (two thirds of its lines start with dots), with the server's
peak RSS (VmHWM) growing by well under 64 MiB while it sends, and the un-stuffed bytes equal
to the original.  The server needs a process of its own so that its memory is its alone.
"""

from __future__ import annotations

import hashlib

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.support.pop3 import DOT_HEADER, MiB, RawPOP3, append_streamed, dot_block
from tests.support.processes import ChildAppliance, reset_peak, vm_field

#: 1 MiB of 64-byte lines, two of three starting with dots, after a 64-byte header: every
#: chunk the server reads starts with a line, a third of them with a dot line.
BLOCK = dot_block(MiB)
HEADER = DOT_HEADER
TRAILER = b"\r\n.\r\n"  # the message ends with a line that is only a dot


class ChildPOP3Tests(ChildAppliance, TestCase):
    services = ("imap", "pop3")
    timeout = 600

    def setUp(self):
        super().setUp()
        self.imap_port, self.pop3_port = self.ports["imap"], self.ports["pop3"]

    @inlineCallbacks
    def test_500_mib_retr_is_stuffed_exactly_with_server_rss_growth_under_64_mib(self):
        pid = self.twistd.process.pid
        count = 500
        size = len(HEADER) + count * len(BLOCK) + len(TRAILER)
        digest = hashlib.sha256(HEADER)
        for _ in range(count):
            digest.update(BLOCK)
        digest.update(TRAILER)

        def parts():
            yield HEADER
            for _ in range(count):
                yield BLOCK
            yield TRAILER

        uid = yield deferToThread(
            append_streamed, self.imap_port, "alice@example.test", "pw", size, parts()
        )
        self.assertEqual(uid, 1)
        before = vm_field(pid, "VmHWM")
        if reset_peak(pid):  # measure the RETR alone, not the APPEND before it
            before = vm_field(pid, "VmHWM")

        def retr():
            client = RawPOP3(self.pop3_port, timeout=300)
            try:
                client.login("alice@example.test", "pw")
                listed = client.ok("LIST 1")
                first, length, sha256 = client.digest("RETR 1")
                client.quit()
                return listed, first, length, sha256
            finally:
                client.close()

        listed, first, length, sha256 = yield deferToThread(retr)
        growth = vm_field(pid, "VmHWM") - before
        self.assertEqual(listed, b"+OK 1 %d\r\n" % size)
        self.assertTrue(first.startswith(b"+OK"), first)
        self.assertEqual((length, sha256), (size, digest.hexdigest()))
        self.assertLess(growth, 64 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB")
