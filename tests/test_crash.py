"""An acknowledged write survives ``kill -9``: the store's promise, tested on a real process.

A child process delivers messages with 20 concurrent writers and prints each one's Message-ID
the moment its Deferred fires (the moment SMTP would say 250).  The test kills it with SIGKILL
in the middle of that stream, then opens the database: every acknowledged message must be
there, and the database and the blob references must be consistent.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from mailbox_appliance.store.migrate import upgrade
from tests.support.databases import sqlite_url
from tests.support.processes import child_env

DELIVERING_CHILD = r"""
import os, sys
from twisted.internet import reactor, defer
from mailbox_appliance.store import Store

url, blobs = sys.argv[1], sys.argv[2]
store = Store(reactor, url, blobs)

@defer.inlineCallbacks
def writer(n, account_id):
    for i in range(100000):
        message_id = f"<{n}.{i}@crash.test>"
        body = os.urandom(2048) if i % 3 else b"the same body for every third message"
        ref = yield store.blobs.put(body)
        yield store.deliver(ref, [(account_id, "INBOX")], message_id=message_id)
        sys.stdout.write(f"ACK {message_id}\n")
        sys.stdout.flush()

@defer.inlineCallbacks
def main():
    yield store.start()
    yield store.add_domain("crash.test")
    account_id = yield store.add_account("a@crash.test", "not-a-hash", 10**12)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    yield defer.gatherResults([writer(n, account_id) for n in range(20)])

main().addErrback(lambda f: (f.printTraceback(), os._exit(3)))
reactor.run()
"""


class KillNineTests(SynchronousTestCase):
    def test_every_acknowledged_delivery_survives_kill_9(self):
        directory = os.path.abspath(self.mktemp())
        url = sqlite_url(directory)
        upgrade(url)
        blobs = os.path.join(directory, "blobs")
        child = subprocess.Popen(
            [sys.executable, "-c", DELIVERING_CHILD, url, blobs],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
            text=True,
        )
        self.addCleanup(child.wait)
        self.addCleanup(child.stderr.close)
        self.addCleanup(child.stdout.close)
        acked = []
        for line in child.stdout:
            if line.startswith("ACK "):
                acked.append(line[4:].strip())
                if len(acked) >= 600:
                    os.kill(child.pid, signal.SIGKILL)
                    break
        else:
            self.fail(f"the child ended early: {child.stderr.read()}")
        child.wait(30)
        self.assertEqual(child.returncode, -signal.SIGKILL)

        db = sqlite3.connect(url[len("sqlite:///") :])
        self.addCleanup(db.close)
        self.assertEqual(db.execute("PRAGMA integrity_check").fetchone(), ("ok",))
        stored = {row[0] for row in db.execute("SELECT message_id FROM messages")}
        missing = [m for m in acked if m not in stored]
        self.assertEqual(missing, [], "acknowledged, then lost")
        # Every message's blob exists and counts its references exactly.
        rows = db.execute(
            "SELECT b.sha256, b.refcount, COUNT(m.id) FROM blobs b"
            " LEFT JOIN messages m ON m.blob_sha256 = b.sha256 GROUP BY b.sha256"
        ).fetchall()
        self.assertTrue(rows)
        for sha, refcount, messages in rows:
            self.assertEqual(refcount, messages, f"blob {sha[:12]} refcount")
        orphans = db.execute(
            "SELECT COUNT(*) FROM messages WHERE blob_sha256 NOT IN (SELECT sha256 FROM blobs)"
        ).fetchone()
        self.assertEqual(orphans, (0,))
        entries = db.execute("SELECT COUNT(*), COUNT(DISTINCT uid) FROM mailbox_entries").fetchone()
        self.assertEqual(entries[0], entries[1], "UIDs are unique in the mailbox")
        self.assertGreaterEqual(entries[0], len(acked))
