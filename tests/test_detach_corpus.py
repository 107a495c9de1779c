"""The detacher on odd and broken MIME (tests/support/mime_corpus.py) and on random nested
messages: every part it chooses is replaced, everything else is kept byte for byte, the result
still scans, and each file is the part's body transfer-decoded."""

from __future__ import annotations

import email
import email.policy
import random

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.trial.unittest import TestCase

from mailbox_appliance.mime import transfer
from mailbox_appliance.mime.scanner import MimeScanner, scan
from mailbox_appliance.smtp.detach import Detacher, large_parts
from tests.support.databases import SQLiteMixin
from tests.support.mime_corpus import CORPUS, random_message
from tests.support.store import started_store

THRESHOLD = 8  # bytes: nearly every part goes


class DetachCorpusTests(SQLiteMixin, TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.store = yield started_store(self, self.database_url())
        self.detacher = Detacher(
            reactor,
            self.store.blobs,
            threshold=THRESHOLD,
            file_expires=86400,
            base_url="https://files.example.test",
        )

    def content(self, ref):
        """A BlobRef's bytes: small ones are stored with the row that takes them (not yet)."""
        if ref.inline is not None:
            return succeed(ref.inline)
        return self.store.blobs.read_bytes(ref.sha256)

    @inlineCallbacks
    def check(self, name: str, message: bytes):
        writer = self.store.blobs.open_writer(observer=MimeScanner())
        writer.write(message)
        ref = yield writer.finish()
        root = writer.observer.root
        writer.observer.close()
        chosen = [part for part, _ in large_parts(root, THRESHOLD)]
        detached = yield Deferred.fromCoroutine(self.detacher.detach(ref, root))
        if not chosen:
            self.assertIsNone(detached, name)
            return 0
        rewritten = yield self.content(detached.ref)
        self.assertEqual(detached.structure, scan(rewritten), name)
        # Outside the chosen parts, not a byte changed.
        at, rest, starts = 0, rewritten, []
        for part in chosen:
            kept = message[at : part.h]
            self.assertTrue(rest.startswith(kept), name)
            rest = rest[len(kept) :]
            starts.append(len(rewritten) - len(rest))
            notice_end = rest.index(b".detached--") + len(b".detached--")
            self.assertIn(b"too large to send by mail", rest[:notice_end], name)
            rest = rest[notice_end:]
            at = part.e
        self.assertEqual(rest, message[at:], name)
        # Each file is its part's body, decoded.
        for part, file in zip(chosen, detached.files, strict=True):
            decoder = transfer.decoder(part.info.encoding)
            expected = decoder.feed(message[part.b : part.e]) + decoder.flush()
            content = yield self.content(file.ref)
            self.assertEqual(content, expected, f"{name}: {file.name}")
            self.assertNotIn("/", file.name)
        # Our scanner finds a text-and-HTML alternative where each part was.
        nodes = {node["h"]: node for node in _nodes(detached.structure["part"])}
        for start in starts:
            node = nodes[start]
            self.assertEqual(node["t"], "multipart/alternative", name)
            self.assertEqual([c["t"] for c in node["sub"]], ["text/plain", "text/html"], name)
        return len(chosen)

    @inlineCallbacks
    def test_the_corpus(self):
        total = 0
        for name, message in CORPUS.items():
            total += yield self.check(name, message)
            if name not in ("BOUNDARY_LINE_GARBAGE", "MISSING_FINAL_BOUNDARY"):
                # A second opinion where the message is not broken: Python's email package.
                yield self.python_agrees(name, message)
        self.assertGreater(total, 10)

    @inlineCallbacks
    def python_agrees(self, name: str, message: bytes):
        writer = self.store.blobs.open_writer(observer=MimeScanner())
        writer.write(message)
        ref = yield writer.finish()
        detached = yield Deferred.fromCoroutine(self.detacher.detach(ref, writer.observer.root))
        if detached is None:
            return
        rewritten = yield self.content(detached.ref)
        parsed = email.message_from_bytes(rewritten, policy=email.policy.default)
        notices = [p for p in parsed.walk() if (p.get_boundary() or "").endswith(".detached")]
        self.assertEqual(len(notices), len(detached.files), name)
        for notice, file in zip(notices, detached.files, strict=True):
            self.assertIn(file.name, notice.get_body(("plain",)).get_content())

    @inlineCallbacks
    def test_random_nested_messages(self):
        rng = random.Random(20261128)
        total = 0
        for i in range(150):
            total += yield self.check(f"random #{i}", random_message(rng))
        self.assertGreater(total, 25)


def _nodes(node: dict):
    """Every part of a stored structure, attached messages' included."""
    yield node
    for child in node.get("sub", []):
        yield from _nodes(child)
    if "msg" in node:
        yield from _nodes(node["msg"])
