"""Oversized attachments of submitted mail become download links (``transfer.detach_threshold``),
end to end: the real appliance on loopback, smtplib submitting, the delivered and queued copies
read back from the store and over IMAP, and the links downloaded over HTTP with urllib."""

from __future__ import annotations

import email
import email.policy
import hashlib
import imaplib
import os
import re
import smtplib
import urllib.error
import urllib.request
from email.message import EmailMessage

from sqlalchemy import select
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailbox_appliance.store import schema
from tests.support.appliance import (
    PASSWORD,
    add_account,
    insecure_tls,
    port_of,
    started_appliance,
)
from tests.support.smtp import body_of, inbox

MiB = 1024 * 1024
PUBLIC = "https://files.example.test"
LINK = re.compile(r"https://files\.example\.test/s/([a-z2-7]{32})")


def message(*attachments: tuple[bytes, str, str], text: str = "See attached.\n") -> bytes:
    """A multipart/mixed message with a text part and ``(data, media type, name)`` parts."""
    msg = EmailMessage()
    msg["From"] = "alice@example.test"
    msg["To"] = "bob@example.test"
    msg["Subject"] = "files"
    msg["Message-ID"] = "<detach-test@example.test>"
    msg.set_content(text)
    for data, media_type, name in attachments:
        maintype, subtype = media_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)


class DetachTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.appliance = yield started_appliance(
            self,
            ("smtp", "submission", "http", "imap"),
            transfer={"detach_threshold": MiB, "public_url": PUBLIC},
            quota={"grow_by": 0},
        )
        self.alice = yield add_account(self.appliance, "alice@example.test")
        self.bob = yield add_account(self.appliance, "bob@example.test")
        self.http = f"http://127.0.0.1:{port_of(self.appliance, 'http')}"

    def submit(self, content: bytes, to=("bob@example.test",), port: str = "submission", size=True):
        """Send with smtplib; the reply to the end of data (code, text) or the refusal."""

        def run():
            with smtplib.SMTP("127.0.0.1", port_of(self.appliance, port), timeout=60) as c:
                c.ehlo()
                if port == "submission":
                    c.starttls(context=insecure_tls())
                    c.login("alice@example.test", PASSWORD)
                try:
                    c.mail("alice@example.test", [f"SIZE={len(content)}"] if size else [])
                    for address in to:
                        c.rcpt(address)
                    return c.data(content)
                except smtplib.SMTPResponseException as e:
                    return e.smtp_code, e.smtp_error

        return deferToThread(run)

    def download(self, url: str):
        def run():
            local = url.replace(PUBLIC, self.http) + "/download"
            try:
                with urllib.request.urlopen(local, timeout=30) as response:
                    return response.status, dict(response.headers), response.read()
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers), e.read()

        return deferToThread(run)

    @inlineCallbacks
    def delivered(self):
        (content,) = yield inbox(self.appliance.store, self.bob)
        return email.message_from_bytes(body_of(content), policy=email.policy.default)

    @inlineCallbacks
    def test_a_large_attachment_becomes_a_link_that_downloads_it_byte_exact(self):
        data = os.urandom(3 * MiB + 17)
        name = "Bericht März 2026.pdf"  # RFC 2231-encoded by the email package
        code, reply = yield self.submit(message((data, "application/pdf", name)))
        self.assertEqual(code, 250)
        self.assertIn(b"1 attachment(s) sent as download links", reply)

        delivered = yield self.delivered()
        text_part, notice = delivered.iter_parts()
        self.assertEqual(text_part.get_content().rstrip(), "See attached.")
        self.assertEqual(notice.get_content_type(), "multipart/alternative")
        plain = notice.get_body(("plain",)).get_content()
        page = notice.get_body(("html",)).get_content()
        (token,) = set(LINK.findall(plain))
        self.assertIn(name, plain)
        self.assertIn("3.0 MiB", plain)
        self.assertIn(hashlib.sha256(data).hexdigest(), plain)
        self.assertIn(f'href="{PUBLIC}/s/{token}"', page)

        status, headers, body = yield self.download(f"{PUBLIC}/s/{token}")
        self.assertEqual(status, 200)
        self.assertEqual(hashlib.sha256(body).digest(), hashlib.sha256(data).digest())
        self.assertIn(
            "filename*=UTF-8''Bericht%20M%C3%A4rz%202026.pdf", headers["Content-Disposition"]
        )

        (file,) = yield self.appliance.store.list_files(self.alice)
        self.assertEqual((file["name"], file["size"], file["kind"]), (name, len(data), "station"))
        (share,) = yield self.appliance.store.shares(file["id"])
        self.assertEqual((share["token"], share["expires"]), (token, file["expires"]))
        self.assertIn(f"{file['expires']:%d %B %Y}", plain)

    @inlineCallbacks
    def test_the_rest_of_the_message_is_kept_byte_for_byte(self):
        small = os.urandom(200 * 1024)
        big = os.urandom(2 * MiB)
        sent = message((small, "image/png", "small.png"), (big, "application/zip", "big.zip"))
        code, _ = yield self.submit(sent)
        self.assertEqual(code, 250)
        (content,) = yield inbox(self.appliance.store, self.bob)
        received = body_of(content)
        cut = sent.index(b"Content-Type: application/zip")
        self.assertEqual(received[:cut], sent[:cut])  # header, text and the small attachment
        boundary = re.search(rb'boundary="([^"]+)"', sent).group(1)
        self.assertTrue(received.endswith(b"\r\n--" + boundary + b"--\r\n"))
        self.assertLess(len(received), len(sent) - 2 * MiB)

    @inlineCallbacks
    def test_attachments_below_the_threshold_arrive_unchanged(self):
        sent = message((os.urandom(MiB // 2), "application/octet-stream", "half.bin"))
        code, reply = yield self.submit(sent)
        self.assertEqual(code, 250)
        self.assertNotIn(b"download links", reply)
        (content,) = yield inbox(self.appliance.store, self.bob)
        self.assertEqual(body_of(content), sent)
        self.assertEqual((yield self.appliance.store.list_files(self.alice)), [])

    @inlineCallbacks
    def test_mail_from_outside_is_never_rewritten(self):
        sent = message((os.urandom(2 * MiB), "application/octet-stream", "in.bin"))
        code, _ = yield self.submit(sent, port="smtp")
        self.assertEqual(code, 250)
        (content,) = yield inbox(self.appliance.store, self.bob)
        self.assertEqual(body_of(content), sent)

    @inlineCallbacks
    def test_several_encodings_and_an_attached_message_are_each_detached(self):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "alice@example.test", "bob@example.test", "x"
        msg.set_content("Three big ones.\n")
        text = ("Zeile mit Umlauten äöü und = Zeichen\n" * 40000).encode("utf-8")
        msg.add_attachment(
            text, maintype="text", subtype="plain", filename="log.txt", cte="quoted-printable"
        )
        inner = EmailMessage()
        inner["Subject"] = "forwarded"
        inner.set_content("x" * (2 * MiB) + "\n", cte="7bit")
        msg.add_attachment(inner)  # message/rfc822, no name
        raw = os.urandom(MiB + 1000)
        msg.add_attachment(
            raw, maintype="application", subtype="octet-stream", filename="../../etc/raw.bin"
        )
        code, reply = yield self.submit(msg.as_bytes(policy=email.policy.SMTP))
        self.assertEqual(code, 250, reply)
        self.assertIn(b"3 attachment(s)", reply)
        files = yield self.appliance.store.list_files(self.alice)
        by_name = {f["name"]: f for f in files}
        self.assertEqual(sorted(by_name), ["attachment-2.eml", "log.txt", "raw.bin"])
        self.assertEqual(by_name["raw.bin"]["blob_sha256"], hashlib.sha256(raw).hexdigest())
        # The text part is decoded from quoted-printable to the very bytes that were attached.
        self.assertEqual(by_name["log.txt"]["blob_sha256"], hashlib.sha256(text).hexdigest())
        eml = yield self.appliance.store.blobs.read_bytes(
            by_name["attachment-2.eml"]["blob_sha256"]
        )
        self.assertEqual(email.message_from_bytes(eml)["Subject"], "forwarded")
        delivered = yield self.delivered()
        notices = [
            p for p in delivered.iter_parts() if p.get_content_type() == "multipart/alternative"
        ]
        self.assertEqual(len(notices), 3)

    @inlineCallbacks
    def test_the_copy_that_leaves_is_the_small_one(self):
        sent = message((os.urandom(2 * MiB), "application/octet-stream", "out.bin"))
        code, _ = yield self.submit(sent, to=("carol@elsewhere.test", "bob@example.test"))
        self.assertEqual(code, 250)
        q, b = schema.outbound_queue, schema.blobs
        query = select(b.c.size).join(q, q.c.blob_sha256 == b.c.sha256)
        sizes = yield self.appliance.store.db.read(lambda conn: conn.execute(query).scalars().all())
        self.assertEqual(len(sizes), 1)
        self.assertLess(sizes[0], 64 * 1024)
        (content,) = yield inbox(self.appliance.store, self.bob)
        self.assertEqual(sizes[0], len(content))  # one rewritten blob serves both copies

    @inlineCallbacks
    def test_imap_shows_the_rewritten_structure(self):
        yield self.submit(message((os.urandom(2 * MiB), "application/pdf", "a.pdf")))

        def run():
            c = imaplib.IMAP4("127.0.0.1", port_of(self.appliance, "imap"), timeout=30)
            c.login("bob@example.test", PASSWORD)
            c.select("INBOX")
            _, data = c.fetch("1", "(RFC822.SIZE BODYSTRUCTURE)")
            c.logout()
            return data[0]

        answer = yield deferToThread(run)
        self.assertIn(b'("text" "html"', answer)
        self.assertIn(b'"alternative"', answer)
        size = int(re.search(rb"RFC822\.SIZE (\d+)", answer).group(1))
        self.assertLess(size, 64 * 1024)

    @inlineCallbacks
    def test_over_the_station_capacity_the_message_is_refused_and_nothing_is_kept(self):
        self.appliance.store.uploads.station_capacity = 2 * MiB
        sent = message((os.urandom(3 * MiB), "application/octet-stream", "huge.bin"))
        code, reply = yield self.submit(sent)
        self.assertEqual(code, 552)
        self.assertIn(b"5.3.4 Large attachments go to your file station", reply)
        self.assertIn(b"over the station capacity", reply)
        self.assertEqual((yield inbox(self.appliance.store, self.bob)), [])
        self.assertEqual((yield self.appliance.store.list_files(self.alice)), [])
        links = yield self.appliance.store.db.read(
            lambda conn: conn.execute(select(schema.share_links)).all()
        )
        self.assertEqual(links, [])

    @inlineCallbacks
    def test_no_file_is_kept_when_no_recipient_takes_the_message(self):
        yield self.appliance.store.set_quota("bob@example.test", 1000)
        sent = message((os.urandom(2 * MiB), "application/octet-stream", "x.bin"))
        # Without SIZE, RCPT cannot tell; the rewritten message is still too big for bob.
        code, reply = yield self.submit(sent, size=False)
        self.assertEqual((code, reply), (552, b"5.2.2 Mailbox full"))
        self.assertEqual((yield self.appliance.store.list_files(self.alice)), [])
