"""Which parts of a message are detached, what they are called, and the part that replaces them
(smtp/detach.py, smtp/detach_notice.py), without a server."""

from __future__ import annotations

import datetime
import email
import email.policy

from twisted.trial.unittest import TestCase

from mailbox_appliance.mime.scanner import MimeScanner
from mailbox_appliance.smtp.detach import estimated_size, large_parts
from mailbox_appliance.smtp.detach_notice import (
    Notice,
    attachment_name,
    choose_boundary,
    notice_part,
)

EXPIRES = datetime.datetime(2026, 12, 28, 14, 30, tzinfo=datetime.UTC)


def tree(message: bytes):
    scanner = MimeScanner()
    scanner.feed(message)
    scanner.close()
    return scanner.root


def mixed(*parts: bytes, boundary: bytes = b"outer") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return (
        b"From: a@example.test\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
        + body + b"--" + boundary + b"--\r\n"
    )  # fmt: skip


def leaf(size: int, encoding: bytes = b"base64", kind: bytes = b"application/octet-stream"):
    return (
        b"Content-Type: " + kind + b"\r\nContent-Transfer-Encoding: " + encoding + b"\r\n\r\n"
        + b"A" * size
    )  # fmt: skip


class LargePartsTests(TestCase):
    def test_only_parts_over_the_threshold_after_decoding_are_chosen(self):
        message = mixed(
            b"Content-Type: text/plain\r\n\r\nhello",
            leaf(1000),  # base64: 750 bytes decoded
            leaf(1400),  # 1050
            leaf(1001, b"binary"),
        )
        chosen = large_parts(tree(message), 1000)
        self.assertEqual([estimated_size(part) for part, _ in chosen], [1050, 1001])
        for part, _ in chosen:
            self.assertTrue(message[part.h :].startswith(b"Content-Type: application"))

    def test_nested_multiparts_are_searched_and_a_message_is_one_attachment(self):
        inner = (
            b'Content-Type: multipart/related; boundary="inner"\r\n\r\n'
            b"--inner\r\n" + leaf(5000, b"7bit", b"image/png") + b"\r\n--inner--"
        )
        attached = b"Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\n" + b"y" * 5000
        message = mixed(inner, attached)
        chosen = large_parts(tree(message), 4000)
        self.assertEqual([part.media_type() for part, _ in chosen], ["image/png", "message/rfc822"])

    def test_a_message_that_is_not_multipart_keeps_its_body(self):
        single = b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        self.assertEqual(large_parts(tree(single + b"A" * 10000), 10), [])

    def test_a_zero_threshold_turns_detaching_off(self):
        self.assertEqual(large_parts(tree(mixed(leaf(10000))), 0), [])

    def test_the_notice_boundary_never_starts_with_an_enclosing_one(self):
        message = mixed(leaf(100), boundary=b"a")
        for _ in range(50):
            ((_, boundary),) = large_parts(tree(message), 10)
            self.assertFalse(boundary.startswith("a"))

    def test_a_part_whose_boundaries_block_every_draw_is_left_alone(self):
        every_hex_digit = tuple(c.encode() for c in "0123456789abcdef")
        self.assertIsNone(choose_boundary(every_hex_digit))
        self.assertIsNotNone(choose_boundary((b"", b"zz")))


class AttachmentNameTests(TestCase):
    def name(self, header: bytes, media_type: str = "application/pdf", number: int = 1):
        return attachment_name(header + b"\r\n\r\n", media_type, number)

    def test_rfc_2231_filename(self):
        header = b"Content-Disposition: attachment; filename*=UTF-8''Bericht%20M%C3%A4rz.pdf"
        self.assertEqual(self.name(header), "Bericht März.pdf")

    def test_rfc_2047_inside_the_name_parameter(self):
        header = b'Content-Type: application/pdf; name="=?UTF-8?B?w6lsw6h2ZS5wZGY=?="'
        self.assertEqual(self.name(header), "élève.pdf")

    def test_disposition_wins_over_the_type_name(self):
        header = (
            b'Content-Type: application/pdf; name="type.pdf"\r\n'
            b'Content-Disposition: attachment; filename="disposition.pdf"'
        )
        self.assertEqual(self.name(header), "disposition.pdf")

    def test_a_path_or_control_characters_never_reach_the_name(self):
        header = b'Content-Disposition: attachment; filename="..\\\\..\\\\evil\x07.exe"'
        self.assertEqual(self.name(header), "evil.exe")

    def test_without_a_name_the_media_type_gives_the_extension(self):
        self.assertEqual(self.name(b"Content-Type: application/pdf", number=3), "attachment-3.pdf")
        self.assertEqual(self.name(b"X-Other: 1", "message/rfc822", 2), "attachment-2.eml")
        self.assertEqual(self.name(b"X: 1", "application/x-unheard-of", 1), "attachment-1.bin")


class NoticePartTests(TestCase):
    notice = Notice(
        'Plan <B> & "C".pdf', 3 * 1024**3 // 2, "ab" * 32, "https://f.test/s/tok", EXPIRES
    )

    def test_text_and_html_alternatives_name_the_link_size_and_expiry(self):
        data = notice_part(self.notice, "b1.detached")
        part = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(part.get_content_type(), "multipart/alternative")
        self.assertEqual(part.get_boundary(), "b1.detached")
        plain = part.get_body(("plain",)).get_content()
        page = part.get_body(("html",)).get_content()
        for text in (plain, page):
            self.assertIn("1.5 GiB", text)
            self.assertIn("Monday, 28 December 2026, 14:30 UTC", text)
            self.assertIn("ab" * 32, text)
        self.assertIn('Plan <B> & "C".pdf', plain)
        self.assertIn("https://f.test/s/tok", plain)
        self.assertIn("Plan &lt;B&gt; &amp; &quot;C&quot;.pdf", page)
        self.assertIn('<a href="https://f.test/s/tok">', page)

    def test_the_part_is_seven_bit_and_ends_without_a_newline(self):
        notice = self.notice._replace(name="Größe ☃.txt")
        data = notice_part(notice, "b2.detached")
        self.assertTrue(all(byte < 128 for byte in data))
        self.assertTrue(data.endswith(b"--b2.detached--"))
        self.assertNotIn(b"\n", data.replace(b"\r\n", b""))

    def test_bare_lf_messages_get_a_bare_lf_part(self):
        data = notice_part(self.notice, "b3.detached", newline=b"\n")
        self.assertNotIn(b"\r", data)
        self.assertIn(b"\n\n--b3.detached\n", data)
