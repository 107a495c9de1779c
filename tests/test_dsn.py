"""Delivery status notifications: the header block we return and the DSN message (RFC 3464)."""

from __future__ import annotations

import email
import email.policy
import email.utils
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser

from twisted.trial.unittest import SynchronousTestCase

from mailbox_appliance.smtp import dsn
from mailbox_appliance.smtp.dsn import HEADER_LIMIT, RecipientStatus, build_dsn, header_block

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ARRIVED = NOW - timedelta(hours=2)
MTA = "mx.example.net"
HEADERS = b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: hello\r\n"


def failed(recipient="bob@example.com", **kwargs) -> RecipientStatus:
    fields = {
        "action": "failed",
        "status": "5.1.1",
        "diagnostic": "550 5.1.1 <bob@example.com>: no such user",
        "remote_mta": "mx.example.com",
        "last_attempt": NOW,
    }
    fields.update(kwargs)
    return RecipientStatus(recipient, **fields)


def delayed(recipient="carol@example.com", **kwargs) -> RecipientStatus:
    fields = {
        "action": "delayed",
        "status": "4.4.1",
        "diagnostic": "connection timed out",
        "last_attempt": NOW,
        "will_retry_until": NOW + timedelta(days=5),
    }
    fields.update(kwargs)
    return RecipientStatus(recipient, **fields)


def make(recipients=None, **kwargs) -> bytes:
    """A DSN with sensible defaults; keyword arguments override them."""
    fields = {
        "reporting_mta": MTA,
        "to": "alice@example.org",
        "original_headers": HEADERS,
        "recipients": [failed()] if recipients is None else recipients,
        "arrival_date": ARRIVED,
        "now": NOW,
    }
    fields.update(kwargs)
    return build_dsn(**fields)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def raw_parts(raw: bytes) -> list[tuple[bytes, bytes]]:
    """(headers, body) of each body part, cut out of the bytes by the boundary (RFC 2046 §5.1.1)."""
    boundary = parse(raw).get_boundary().encode("ascii")
    sections = raw.split(b"\r\n--" + boundary)
    parts = []
    for section in sections[1:-1]:
        assert section.startswith(b"\r\n"), section[:20]
        headers, _, body = section[2:].partition(b"\r\n\r\n")
        parts.append((headers, body))
    assert sections[-1] == b"--\r\n", sections[-1]
    return parts


def status_blocks(raw: bytes) -> list[list[tuple[str, str]]]:
    """The delivery-status part as blocks of (name, value) pairs, blank-line separated."""
    body = raw_parts(raw)[1][1].decode("ascii")
    blocks = []
    for block in body.split("\r\n\r\n"):
        fields = []
        for line in block.split("\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(": ")
            assert sep and name.replace("-", "").isalpha(), line
            fields.append((name, value))
        blocks.append(fields)
    return blocks


class RecipientStatusTests(SynchronousTestCase):
    def test_status_must_be_an_enhanced_status_code(self):
        bad_codes = ["5.1", "5.1.1.1", "550", "5.x.1", "6.1.1", "5.1.1\r\nX: y", "5.1.1\n", ""]
        for bad in bad_codes + ["5.1234.1", " 5.1.1"]:
            with self.assertRaises(ValueError, msg=bad):
                failed(status=bad)

    def test_three_digit_subject_and_detail_are_allowed(self):
        self.assertEqual(failed(status="5.123.456").status, "5.123.456")

    def test_action_must_be_failed_or_delayed(self):
        for bad in ["delivered", "relayed", "expanded", "FAILED", ""]:
            with self.assertRaises(ValueError, msg=bad):
                failed(action=bad)

    def test_recipient_is_required(self):
        with self.assertRaises(ValueError):
            failed(recipient=" \r\n")


class HeaderBlockTests(SynchronousTestCase):
    def test_header_ends_before_the_blank_line(self):
        head = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\nX-Not: header\r\n"
        self.assertEqual(header_block(head), b"From: a@example.org\r\nSubject: hi\r\n")

    def test_bare_lf_line_ends_become_crlf(self):
        head = b"From: a@example.org\nSubject: hi\n\nbody\n"
        self.assertEqual(header_block(head), b"From: a@example.org\r\nSubject: hi\r\n")

    def test_mixed_line_ends_become_crlf(self):
        head = b"From: a@example.org\nSubject: hi\r\n\nbody\n"
        self.assertEqual(header_block(head), b"From: a@example.org\r\nSubject: hi\r\n")

    def test_message_without_body_keeps_every_header_line(self):
        self.assertEqual(header_block(b"Subject: hi\r\n\r\n"), b"Subject: hi\r\n")

    def test_input_without_blank_line_is_all_header(self):
        self.assertEqual(
            header_block(b"From: a@example.org\r\nSubject: hi\r\n"),
            b"From: a@example.org\r\nSubject: hi\r\n",
        )

    def test_unterminated_last_line_gets_a_crlf(self):
        self.assertEqual(header_block(b"From: a\r\nSubject: hi"), b"From: a\r\nSubject: hi\r\n")

    def test_message_that_starts_with_a_blank_line_has_no_header(self):
        self.assertEqual(header_block(b"\r\nFrom: body\r\n"), b"")
        self.assertEqual(header_block(b"\nFrom: body\n"), b"")
        self.assertEqual(header_block(b""), b"")

    def test_folded_lines_are_kept_as_they_are(self):
        head = b"Subject: a long\r\n\tsubject\r\nReceived: from x\n  by y\n\nbody"
        self.assertEqual(
            header_block(head), b"Subject: a long\r\n\tsubject\r\nReceived: from x\r\n  by y\r\n"
        )

    def test_stray_cr_inside_a_line_becomes_a_space(self):
        self.assertEqual(header_block(b"Subject: a\rb\r\r\n\r\n"), b"Subject: a b \r\n")

    def test_eight_bit_bytes_go_through_unchanged(self):
        head = b"Subject: J\xc3\xb6rg \xff\xfe\x80\r\nX-Long: " + b"y" * 2000 + b"\r\n"
        self.assertEqual(header_block(head + b"\r\nbody"), head)

    def test_header_block_of_a_header_block_is_the_same(self):
        block = header_block(b"A: 1\nB: 2\r\n\r\n")
        self.assertEqual(header_block(block), block)

    def test_capped_at_64_kib_on_a_line_boundary(self):
        line = b"X-Filler: " + b"z" * 88 + b"\r\n"  # 100 bytes
        head = line * 1000 + b"\r\nbody"
        block = header_block(head)
        self.assertEqual(len(block), HEADER_LIMIT // 100 * 100)
        self.assertEqual(block, line * (HEADER_LIMIT // 100))

    def test_cap_counts_the_crlf_that_replaces_a_bare_lf(self):
        line = b"X-Filler: " + b"z" * 89 + b"\n"  # 100 bytes in, 101 out
        block = header_block(line * 1000)
        self.assertEqual(block, line.replace(b"\n", b"\r\n") * (HEADER_LIMIT // 101))

    def test_header_that_exactly_fills_the_limit_is_kept_whole(self):
        head = b"X-Filler: " + b"z" * (HEADER_LIMIT - 12) + b"\r\n"
        self.assertEqual(len(head), HEADER_LIMIT)
        self.assertEqual(header_block(head + b"\r\nbody"), head)

    def test_line_cut_off_by_a_short_read_is_dropped(self):
        line = b"X-Filler: " + b"z" * 88 + b"\r\n"
        head = (line * 1000)[:HEADER_LIMIT]  # what reading the first 64 KiB gives
        self.assertEqual(header_block(head), line * (HEADER_LIMIT // 100))

    def test_one_line_longer_than_the_limit_gives_nothing(self):
        self.assertEqual(header_block(b"X-Huge: " + b"h" * HEADER_LIMIT + b"\r\n"), b"")


class DsnStructureTests(SynchronousTestCase):
    def test_is_a_multipart_report_of_type_delivery_status(self):
        message = parse(make())
        self.assertEqual(message.get_content_type(), "multipart/report")
        self.assertEqual(message.get_param("report-type"), "delivery-status")
        self.assertEqual(message.defects, [])

    def test_has_explanation_status_and_headers_parts_in_that_order(self):
        parts = list(parse(make()).iter_parts())
        self.assertEqual(
            [part.get_content_type() for part in parts],
            ["text/plain", "message/delivery-status", "text/rfc822-headers"],
        )
        self.assertEqual(parts[0].get_content_charset(), "utf-8")

    def test_top_level_headers(self):
        message = parse(make())
        self.assertEqual(message["From"], f"Mail Delivery System <MAILER-DAEMON@{MTA}>")
        self.assertEqual(message["To"], "alice@example.org")
        self.assertIn(b"\r\nTo: <alice@example.org>\r\n", make())
        self.assertEqual(message["MIME-Version"], "1.0")
        self.assertEqual(message["Date"].datetime, NOW)
        self.assertTrue(message["Message-ID"].endswith(f"@{MTA}>"))

    def test_auto_submitted_is_auto_replied(self):
        self.assertEqual(parse(make())["Auto-Submitted"], "auto-replied")

    def test_message_ids_are_unique(self):
        ids = {parse(make())["Message-ID"] for _ in range(20)}
        self.assertEqual(len(ids), 20)

    def test_any_failed_recipient_makes_it_a_bounce(self):
        self.assertEqual(parse(make([failed()]))["Subject"], "Undelivered Mail Returned to Sender")
        self.assertEqual(
            parse(make([delayed(), failed()]))["Subject"], "Undelivered Mail Returned to Sender"
        )

    def test_only_delayed_recipients_make_it_a_delay_warning(self):
        self.assertEqual(
            parse(make([delayed(), delayed("dave@example.com")]))["Subject"],
            "Delayed Mail (still being retried)",
        )

    def test_only_crlf_line_ends(self):
        raw = make(
            [failed(diagnostic="550 one\nline\rtwo"), delayed()],
            original_headers=b"From: a\nSubject: b\r\rc\n\nbody\n",
        )
        self.assertNotIn(b"\n", raw.replace(b"\r\n", b""))
        self.assertNotIn(b"\r", raw.replace(b"\r\n", b""))
        self.assertTrue(raw.endswith(b"\r\n"))

    def test_no_line_is_longer_than_998_octets(self):
        raw = make(
            [failed(diagnostic="550 " + "w" * 3000), failed(diagnostic="550 " + "ü" * 3000)],
            original_headers=HEADERS,
        )
        self.assertLessEqual(max(len(line) for line in raw.split(b"\r\n")), 998)

    def test_compat32_parser_finds_no_defects(self):
        raw = make(
            [failed(), delayed("jörg@exämple.org")],
            to="jörg@exämple.org",
            original_headers=b"Subject: \xc3\xa9t\xc3\xa9 \xff\r\nX-Long: " + b"l" * 2000 + b"\r\n",
        )
        message = BytesParser().parsebytes(raw)
        self.assertEqual(message.defects, [])
        self.assertEqual([part.defects for part in message.walk()], [[]] * 7)
        self.assertEqual(len(message.get_payload()), 3)

    def test_boundary_never_occurs_in_the_content(self):
        tokens = iter(["a" * 32, "b" * 32])
        self.patch(dsn.secrets, "token_hex", lambda n: next(tokens))
        raw = make(original_headers=b"X-Trap: =_dsn_" + b"a" * 32 + b"\r\n")
        self.assertEqual(parse(raw).get_boundary(), "=_dsn_" + "b" * 32)
        self.assertEqual(len(raw_parts(raw)), 3)

    def test_null_reverse_path_gets_no_dsn(self):
        for to in ["", "<>", " "]:
            with self.assertRaises(ValueError, msg=to):
                make(to=to)

    def test_at_least_one_recipient_is_needed(self):
        with self.assertRaises(ValueError):
            make([])

    def test_reporting_mta_must_be_a_host_name(self):
        for bad in ["", "mx.example.net\r\nX-Evil: 1", "mx.example.net\n", "two words", "a>"]:
            with self.assertRaises(ValueError, msg=bad):
                make(reporting_mta=bad)


class DeliveryStatusFieldTests(SynchronousTestCase):
    def test_per_message_fields(self):
        blocks = status_blocks(make(envelope_id="QQ314159"))
        self.assertEqual(
            blocks[0],
            [
                ("Reporting-MTA", f"dns; {MTA}"),
                ("Original-Envelope-Id", "QQ314159"),
                ("Arrival-Date", email.utils.format_datetime(ARRIVED)),
            ],
        )

    def test_envelope_id_is_left_out_when_not_given(self):
        names = [name for name, _ in status_blocks(make())[0]]
        self.assertEqual(names, ["Reporting-MTA", "Arrival-Date"])

    def test_failed_recipient_reports_status_and_diagnostic(self):
        blocks = status_blocks(make([failed()]))
        self.assertEqual(len(blocks), 2)
        self.assertEqual(
            blocks[1],
            [
                ("Final-Recipient", "rfc822; bob@example.com"),
                ("Action", "failed"),
                ("Status", "5.1.1"),
                ("Remote-MTA", "dns; mx.example.com"),
                ("Diagnostic-Code", "smtp; 550 5.1.1 <bob@example.com>: no such user"),
                ("Last-Attempt-Date", email.utils.format_datetime(NOW)),
            ],
        )

    def test_delayed_recipient_reports_when_retries_stop(self):
        fields = dict(status_blocks(make([delayed()]))[1])
        self.assertEqual(fields["Action"], "delayed")
        self.assertEqual(fields["Status"], "4.4.1")
        self.assertEqual(
            fields["Will-Retry-Until"], email.utils.format_datetime(NOW + timedelta(days=5))
        )

    def test_will_retry_until_is_not_reported_for_a_failed_recipient(self):
        fields = dict(status_blocks(make([failed(will_retry_until=NOW)]))[1])
        self.assertNotIn("Will-Retry-Until", fields)

    def test_optional_fields_are_left_out_when_unknown(self):
        recipient = RecipientStatus("bob@example.com", "failed", "5.4.4")
        self.assertEqual(
            status_blocks(make([recipient]))[1],
            [
                ("Final-Recipient", "rfc822; bob@example.com"),
                ("Action", "failed"),
                ("Status", "5.4.4"),
            ],
        )

    def test_several_recipients_get_one_block_each_in_order(self):
        recipients = [failed(), delayed(), failed("dave@example.com", status="5.2.2")]
        blocks = status_blocks(make(recipients))
        self.assertEqual(len(blocks), 4)
        self.assertEqual(
            [
                (dict(b)["Final-Recipient"], dict(b)["Action"], dict(b)["Status"])
                for b in blocks[1:]
            ],
            [
                ("rfc822; bob@example.com", "failed", "5.1.1"),
                ("rfc822; carol@example.com", "delayed", "4.4.1"),
                ("rfc822; dave@example.com", "failed", "5.2.2"),
            ],
        )

    def test_stdlib_reads_the_same_blocks(self):
        part = list(parse(make([failed(), delayed()])).iter_parts())[1]
        blocks = [dict(block.items()) for block in part.get_payload()]
        self.assertEqual(blocks[0]["Reporting-MTA"], f"dns; {MTA}")
        self.assertEqual([b["Action"] for b in blocks[1:]], ["failed", "delayed"])

    def test_multiline_reply_is_joined_on_one_line(self):
        reply = "550-5.7.1 Our policy\r\n550-5.7.1 does not allow\r\n550 5.7.1 this message"
        fields = dict(status_blocks(make([failed(diagnostic=reply)]))[1])
        self.assertEqual(
            fields["Diagnostic-Code"],
            "smtp; 550-5.7.1 Our policy 550-5.7.1 does not allow 550 5.7.1 this message",
        )

    def test_crlf_injection_in_a_diagnostic_adds_no_field(self):
        reply = "550 no\r\nAction: delivered\r\n\r\nFinal-Recipient: rfc822; evil@example.net\n"
        blocks = status_blocks(make([failed(diagnostic=reply)]))
        self.assertEqual(len(blocks), 2)
        names = [name for name, _ in blocks[1]]
        self.assertEqual(names.count("Action"), 1)
        self.assertEqual(names.count("Final-Recipient"), 1)
        self.assertEqual(dict(blocks[1])["Action"], "failed")
        self.assertEqual(
            dict(blocks[1])["Diagnostic-Code"],
            "smtp; 550 no Action: delivered Final-Recipient: rfc822; evil@example.net",
        )

    def test_crlf_injection_in_other_values_adds_no_field(self):
        recipient = failed(
            "bob@example.com\r\nAction: delivered",
            remote_mta="mx.example.com\r\n\r\nX-Evil: 1",
        )
        raw = make([recipient], envelope_id="id\r\nX-Evil: 2")
        blocks = status_blocks(raw)
        self.assertEqual(len(blocks), 2)
        names = [name for block in blocks for name, _ in block]
        self.assertNotIn("X-Evil", names)
        self.assertEqual(names.count("Action"), 1)
        self.assertNotIn(b"\r\nX-Evil", raw)

    def test_delivery_status_part_is_ascii(self):
        recipient = failed("jörg+tag@exämple.org", diagnostic="550 Benutzer unbekannt: jörg")
        headers, body = raw_parts(make([recipient]))[1]
        self.assertTrue(body.isascii())
        self.assertIn(b"Content-Transfer-Encoding: 7bit", headers)

    def test_non_ascii_recipient_uses_the_utf8_address_type(self):
        fields = dict(status_blocks(make([failed("jörg+tag@exämple.org")]))[1])
        # RFC 6533 §3: utf-8-addr-xtext, with "+" escaped as well.
        self.assertEqual(fields["Final-Recipient"], r"utf-8; j\x{F6}rg\x{2B}tag@ex\x{E4}mple.org")

    def test_overlong_diagnostic_is_cut_to_fit_a_line(self):
        fields = dict(status_blocks(make([failed(diagnostic="550 " + "w" * 3000)]))[1])
        self.assertTrue(fields["Diagnostic-Code"].startswith("smtp; 550 www"))
        self.assertTrue(fields["Diagnostic-Code"].endswith("..."))
        self.assertLess(len(fields["Diagnostic-Code"]), 998)


class ExplanationTests(SynchronousTestCase):
    def text(self, raw: bytes) -> str:
        return list(parse(raw).iter_parts())[0].get_content()

    def test_each_recipient_gets_a_paragraph_with_its_diagnostic(self):
        text = " ".join(self.text(make([failed(), delayed()])).split())
        self.assertIn("<bob@example.com>: delivery failed (5.1.1", text)
        self.assertIn("mx.example.com said: 550 5.1.1 <bob@example.com>: no such user", text)
        self.assertIn("<carol@example.com>: delivery is delayed (4.4.1", text)
        self.assertIn("said: connection timed out", text)

    def test_delayed_mail_says_until_when_it_is_retried(self):
        text = " ".join(self.text(make([delayed()])).split())
        until = email.utils.format_datetime(NOW + timedelta(days=5))
        self.assertIn(f"will keep trying until {until}", text)
        self.assertIn("do not need to send it again", text)

    def test_explanation_lines_are_short_even_for_a_huge_reply(self):
        raw = make([failed(diagnostic="550 " + "x" * 5000)])
        body = raw_parts(raw)[0][1]
        self.assertLessEqual(max(len(line) for line in body.split(b"\r\n")), 800)

    def test_non_ascii_is_kept_as_utf8(self):
        raw = make([failed("jörg@exämple.org", diagnostic="550 Benutzer jörg unbekannt")])
        headers, body = raw_parts(raw)[0]
        self.assertIn("<jörg@exämple.org>".encode(), body)
        self.assertIn(b"Content-Transfer-Encoding: 8bit", headers)
        self.assertIn("Benutzer jörg unbekannt", self.text(raw))


class OriginalHeadersTests(SynchronousTestCase):
    def test_original_headers_are_byte_exact_with_8bit_and_a_long_line(self):
        original = (
            b"From: J\xc3\xb6rg <jorg@example.org>\r\n"
            b"Subject: \xff\xfe not utf-8 \x80\r\n"
            b"X-Long: " + b"0123456789" * 200 + b"\r\n"
        )
        raw = make(original_headers=original)
        headers, body = raw_parts(raw)[2]
        self.assertEqual(body, original)
        self.assertIn(b"Content-Transfer-Encoding: 8bit", headers)
        part = list(parse(raw).iter_parts())[2]
        self.assertEqual(part.get_payload(decode=True), original)

    def test_ascii_headers_are_7bit(self):
        headers, body = raw_parts(make())[2]
        self.assertEqual(body, HEADERS)
        self.assertIn(b"Content-Transfer-Encoding: 7bit", headers)

    def test_a_whole_message_is_cut_to_its_header(self):
        _, body = raw_parts(make(original_headers=b"Subject: x\n\nsecret body\n"))[2]
        self.assertEqual(body, b"Subject: x\r\n")

    def test_headers_over_the_limit_are_capped(self):
        line = b"Received: " + b"r" * 88 + b"\r\n"
        _, body = raw_parts(make(original_headers=line * 2000))[2]
        self.assertEqual(body, line * (HEADER_LIMIT // 100))


class UnicodeSenderTests(SynchronousTestCase):
    def test_non_ascii_to_is_kept_as_utf8(self):
        raw = make(to="jörg@exämple.org")
        self.assertIn("\r\nTo: <jörg@exämple.org>\r\n".encode(), raw)
        self.assertEqual(str(parse(raw)["To"]), "jörg@exämple.org")

    def test_angle_brackets_around_to_are_not_doubled(self):
        self.assertIn(b"\r\nTo: <alice@example.org>\r\n", make(to="<alice@example.org>"))

    def test_crlf_in_to_adds_no_header(self):
        raw = make(to="alice@example.org\r\nBcc: evil@example.net")
        head = raw.split(b"\r\n\r\n", 1)[0]
        self.assertNotIn(b"\r\nBcc:", head)
