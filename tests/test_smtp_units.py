"""Unit tests: DATA framing, SASL decoding, trace fields, connection limits, transactions."""

from __future__ import annotations

import base64
import email
import email.utils
import itertools
import random
import re
from datetime import UTC, datetime

from twisted.internet.defer import succeed
from twisted.trial.unittest import SynchronousTestCase

from mailbox_appliance.monitor.limits import ConnectionLimiter
from mailbox_appliance.sasl import (
    SASLAborted,
    SASLError,
    decode_response,
    encode_challenge,
    parse_plain,
)
from mailbox_appliance.smtp.framing import DotDecoder
from mailbox_appliance.smtp.paths import MailParams
from mailbox_appliance.smtp.received import protocol_keyword, received, return_path
from mailbox_appliance.smtp.transaction import MailTransaction


def decode(chunks):
    """Feed ``chunks`` to a fresh decoder: (content, rest); ``rest`` also holds the chunks that
    were not fed because the end marker had already been seen.  ``rest`` is None if the end
    marker never came."""
    decoder = DotDecoder()
    content = []
    for index, chunk in enumerate(chunks):
        out, rest = decoder.feed(chunk)
        content.append(out)
        if rest is not None:
            return b"".join(content), rest + b"".join(chunks[index + 1 :])
    return b"".join(content), None


def dot_stuff(body: bytes) -> bytes:
    """What a client sends for ``body``: every line that starts with "." gets one more."""
    return b"\r\n".join(
        b"." + line if line.startswith(b".") else line for line in body.split(b"\r\n")
    )


class DotDecoderTests(SynchronousTestCase):
    def test_dot_line_right_after_data_is_an_empty_message(self):
        self.assertEqual(decode([b".\r\n"]), (b"", b""))

    def test_empty_message_keeps_the_pipelined_commands_after_it(self):
        self.assertEqual(decode([b".\r\nQUIT\r\n"]), (b"", b"QUIT\r\n"))

    def test_a_dot_on_the_first_line_is_unstuffed(self):
        self.assertEqual(decode([b"..hidden\r\n.\r\n"]), (b".hidden\r\n", b""))

    def test_first_line_dot_is_unstuffed_even_when_fed_one_byte_at_a_time(self):
        wire = b"..x\r\nb\r\n.\r\n"
        self.assertEqual(decode([bytes([c]) for c in wire]), (b".x\r\nb\r\n", b""))

    def test_a_double_dot_line_becomes_a_single_dot_line(self):
        self.assertEqual(decode([b"a\r\n..\r\nb\r\n.\r\n"]), (b"a\r\n.\r\nb\r\n", b""))

    def test_only_one_leading_dot_is_removed(self):
        self.assertEqual(decode([b"a\r\n...x\r\n.\r\n"]), (b"a\r\n..x\r\n", b""))

    def test_dots_inside_a_line_are_kept(self):
        self.assertEqual(decode([b"a.b..c.\r\n.\r\n"]), (b"a.b..c.\r\n", b""))

    def test_content_ends_at_the_first_end_marker_and_the_rest_is_returned(self):
        self.assertEqual(
            decode([b"Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@b.example>\r\n.\r\n"]),
            (b"Subject: x\r\n\r\nbody\r\n", b"MAIL FROM:<a@b.example>\r\n.\r\n"),
        )

    def test_end_marker_split_across_every_pair_of_feeds(self):
        for wire, content in [
            (b"hello\r\n..x\r\n.\r\nNEXT", b"hello\r\n.x\r\n"),
            (b".\r\nNEXT", b""),
            (b"\r\n.\r\nNEXT", b"\r\n"),
        ]:
            for cut in range(len(wire) + 1):
                chunks = [wire[:cut], wire[cut:]]
                self.assertEqual(decode(chunks), (content, b"NEXT"), chunks)

    def test_end_marker_split_across_every_triple_of_feeds(self):
        wire = b"hi\r\n..\r\n.\r\nNEXT"
        for first, second in itertools.combinations_with_replacement(range(len(wire) + 1), 2):
            chunks = [wire[:first], wire[first:second], wire[second:]]
            self.assertEqual(decode(chunks), (b"hi\r\n.\r\n", b"NEXT"), chunks)

    def test_rest_is_none_until_the_end_marker_is_complete(self):
        decoder = DotDecoder()
        content = b""
        for piece in (b"a\r", b"\n", b".", b"\r"):
            out, rest = decoder.feed(piece)
            content += out
            self.assertIsNone(rest)
            self.assertFalse(decoder.done)
        out, rest = decoder.feed(b"\nRSET\r\n")
        self.assertEqual((content + out, rest), (b"a\r\n", b"RSET\r\n"))
        self.assertTrue(decoder.done)

    def assertNotEnded(self, wire, content):
        """``wire`` alone leaves the decoder in DATA; the real end marker then gives ``content``."""
        decoder = DotDecoder()
        out, rest = decoder.feed(wire)
        self.assertIsNone(rest, wire)
        self.assertFalse(decoder.done, wire)
        more, rest = decoder.feed(b".\r\nQUIT\r\n")
        self.assertEqual((out + more, rest), (content, b"QUIT\r\n"), wire)

    def test_bare_lf_dot_lf_does_not_end_the_data(self):
        self.assertNotEnded(
            b"a\n.\nMAIL FROM:<evil@x.example>\r\n", b"a\n.\nMAIL FROM:<evil@x.example>\r\n"
        )

    def test_bare_lf_dot_lf_is_content_and_the_real_marker_still_ends(self):
        self.assertEqual(
            decode([b"a\n.\nRCPT TO:<x@y.example>\r\n.\r\nQUIT\r\n"]),
            (b"a\n.\nRCPT TO:<x@y.example>\r\n", b"QUIT\r\n"),
        )

    def test_crlf_dot_lf_does_not_end_the_data(self):
        # The line ".\nMAIL..." starts with a dot, which is removed; nothing ends.
        self.assertNotEnded(
            b"a\r\n.\nMAIL FROM:<evil@x.example>\r\n", b"a\r\n\nMAIL FROM:<evil@x.example>\r\n"
        )

    def test_lf_dot_crlf_does_not_end_the_data(self):
        self.assertNotEnded(b"a\n.\r\nb\r\n", b"a\n.\r\nb\r\n")

    def test_cr_dot_cr_lf_does_not_end_the_data(self):
        self.assertNotEnded(b"a\r.\r\nb\r\n", b"a\r.\r\nb\r\n")

    def test_split_smuggling_sequences_do_not_end_the_data(self):
        for wire in (b"a\n.\nb\r\n", b"a\r\n.\nb\r\n", b"a\n.\r\nb\r\n", b"a\r.\r\nb\r\n"):
            for cut in range(len(wire) + 1):
                content, rest = decode([wire[:cut], wire[cut:]])
                self.assertIsNone(rest, (wire, cut))

    def test_a_one_mebibyte_line_passes_through_without_being_held(self):
        line = b"x" * (1024 * 1024)
        decoder = DotDecoder()
        content, rest = decoder.feed(line)
        self.assertIsNone(rest)
        self.assertEqual(content, line)
        self.assertEqual(decoder.feed(b"\r\n.\r\nQUIT"), (b"\r\n", b"QUIT"))

    def test_a_long_line_fed_in_pieces_is_not_taken_for_commands(self):
        piece = b"MAIL FROM:<a@b.example> " * 2048
        chunks = [piece] * 20 + [b"\r\n.\r\n"]
        content, rest = decode(chunks)
        self.assertEqual((len(content), rest), (len(piece) * 20 + 2, b""))
        self.assertEqual(content, piece * 20 + b"\r\n")

    def test_round_trip_of_random_dot_stuffed_bodies_in_random_chunks(self):
        rng = random.Random(20240607)
        alphabet = [b".", b"\r", b"\n", b"\r\n", b"a", b".."]
        for case in range(3000):
            body = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 16)))
            if body and not body.endswith(b"\r\n"):
                body += b"\r\n"
            wire = dot_stuff(body) + b".\r\nNEXT"
            chunks = []
            position = 0
            while position < len(wire):
                size = rng.randint(1, 7)
                chunks.append(wire[position : position + size])
                position += size
            self.assertEqual(decode(chunks), (body, b"NEXT"), (case, body, chunks))


class DecodeResponseTests(SynchronousTestCase):
    def test_equals_sign_is_an_empty_response(self):
        self.assertEqual(decode_response(b"="), b"")

    def test_equals_sign_with_line_ending_is_an_empty_response(self):
        self.assertEqual(decode_response(b"=\r\n"), b"")

    def test_star_aborts(self):
        self.assertRaises(SASLAborted, decode_response, b"*")

    def test_abort_is_a_sasl_error(self):
        self.assertTrue(issubclass(SASLAborted, SASLError))

    def test_invalid_base64_is_refused(self):
        for line in (b"not base64!", b"YWJjZA", b"YW=j", b"YWJ", b"YW Jj", b"**", b"=="):
            error = self.assertRaises(SASLError, decode_response, line)
            self.assertFalse(isinstance(error, SASLAborted), line)

    def test_valid_base64_is_decoded(self):
        self.assertEqual(decode_response(b"AGFsaWNlAHNlY3JldA=="), b"\0alice\0secret")

    def test_valid_base64_with_line_ending_is_decoded(self):
        self.assertEqual(decode_response(b"YWxpY2U=\r\n"), b"alice")


class ParsePlainTests(SynchronousTestCase):
    def test_empty_password_is_refused(self):
        self.assertRaises(SASLError, parse_plain, b"\0alice@example.org\0")

    def test_without_authzid(self):
        self.assertEqual(
            parse_plain(b"\0alice@example.org\0secret"), ("alice@example.org", "secret")
        )

    def test_with_authzid_equal_to_authcid(self):
        self.assertEqual(parse_plain(b"alice\0alice\0secret"), ("alice", "secret"))

    def test_authzid_equal_to_authcid_in_different_case_is_accepted(self):
        self.assertEqual(
            parse_plain(b"ALICE@Example.ORG\0alice@example.org\0secret"),
            ("alice@example.org", "secret"),
        )

    def test_different_authzid_is_refused(self):
        self.assertRaises(SASLError, parse_plain, b"bob@example.org\0alice@example.org\0secret")

    def test_one_nul_is_refused(self):
        self.assertRaises(SASLError, parse_plain, b"alice\0secret")

    def test_no_nul_is_refused(self):
        self.assertRaises(SASLError, parse_plain, b"alicesecret")

    def test_three_nuls_are_refused(self):
        self.assertRaises(SASLError, parse_plain, b"\0alice\0sec\0ret")

    def test_empty_message_is_refused(self):
        self.assertRaises(SASLError, parse_plain, b"")

    def test_empty_authcid_is_refused(self):
        self.assertRaises(SASLError, parse_plain, b"\0\0secret")

    def test_non_utf8_authcid_is_refused(self):
        self.assertRaises(SASLError, parse_plain, b"\0al\xffice\0secret")

    def test_non_utf8_password_is_refused(self):
        self.assertRaises(SASLError, parse_plain, b"\0alice\0s\xc3\0")

    def test_non_utf8_authzid_is_refused(self):
        self.assertRaises(SASLError, parse_plain, b"\xfe\0alice\0secret")

    def test_utf8_user_and_password_are_decoded(self):
        message = "\0jürgen@example.org\0pässwörd".encode()
        self.assertEqual(parse_plain(message), ("jürgen@example.org", "pässwörd"))


class EncodeChallengeTests(SynchronousTestCase):
    def test_challenge_is_base64(self):
        self.assertEqual(encode_challenge(b"Username:"), b"VXNlcm5hbWU6")

    def test_empty_challenge_is_empty(self):
        self.assertEqual(encode_challenge(b""), b"")

    def test_challenge_round_trips_through_decode_response(self):
        data = bytes(range(256))
        self.assertEqual(decode_response(encode_challenge(data)), data)
        self.assertEqual(base64.b64decode(encode_challenge(data)), data)


class ProtocolKeywordTests(SynchronousTestCase):
    def test_every_combination_has_its_rfc_3848_or_rfc_6531_keyword(self):
        expected = {
            # (tls, authenticated, smtputf8): keyword after EHLO
            (False, False, False): "ESMTP",
            (True, False, False): "ESMTPS",
            (False, True, False): "ESMTPA",
            (True, True, False): "ESMTPSA",
            (False, False, True): "UTF8SMTP",
            (True, False, True): "UTF8SMTPS",
            (False, True, True): "UTF8SMTPA",
            (True, True, True): "UTF8SMTPSA",
        }
        for (tls, authenticated, smtputf8), keyword in expected.items():
            self.assertEqual(
                protocol_keyword(True, tls, authenticated, smtputf8),
                keyword,
                (tls, authenticated, smtputf8),
            )

    def test_helo_is_plain_smtp_whatever_else_is_true(self):
        for tls, authenticated, smtputf8 in itertools.product((False, True), repeat=3):
            self.assertEqual(protocol_keyword(False, tls, authenticated, smtputf8), "SMTP")


class ReceivedTests(SynchronousTestCase):
    TIMESTAMP = 1717761600.0  # 2024-06-07 12:00:00 UTC

    def make(self, **overrides):
        arguments = dict(
            helo="client.example.net",
            client_ip="192.0.2.7",
            hostname="mx.example.org",
            protocol="ESMTPS",
            queue_id="0123456789AB",
            tls="using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
            account=None,
            recipient="alice@example.org",
            timestamp=self.TIMESTAMP,
        )
        arguments.update(overrides)
        return received(**arguments)

    def assertOneSafeField(self, field: bytes):
        self.assertTrue(field.startswith(b"Received: from "), field)
        self.assertTrue(field.endswith(b"\r\n"), field)
        lines = field[:-2].split(b"\r\n")
        for line in lines:
            self.assertNotIn(b"\r", line, field)
            self.assertNotIn(b"\n", line, field)
        for line in lines[1:]:
            self.assertTrue(line.startswith(b"\t"), field)
        message = email.message_from_bytes(field + b"\r\nbody\r\n")
        self.assertEqual(list(message.keys()), ["Received"], field)
        return lines

    def test_starts_with_received_from_and_names_helo_and_ip(self):
        lines = self.assertOneSafeField(self.make())
        self.assertEqual(lines[0], b"Received: from client.example.net ([192.0.2.7])")

    def test_names_host_protocol_and_queue_id(self):
        self.assertIn(
            b"\tby mx.example.org (mailbox-appliance) with ESMTPS id 0123456789AB\r\n", self.make()
        )

    def test_folded_lines_start_with_a_tab_and_the_field_ends_with_crlf(self):
        field = self.make(account="alice@example.org")
        lines = self.assertOneSafeField(field)
        self.assertGreater(len(lines), 2)
        self.assertFalse(field.endswith(b"\r\n\r\n"))

    def test_recipient_appears_in_a_for_clause(self):
        self.assertIn(b"\tfor <alice@example.org>;\r\n", self.make())

    def test_no_for_clause_without_a_recipient(self):
        field = self.make(recipient=None)
        self.assertOneSafeField(field)
        self.assertNotIn(b"for <", field)
        self.assertNotIn(b"for ", field)

    def test_tls_and_account_are_comments_only_when_given(self):
        field = self.make(account="alice@example.org")
        self.assertIn(b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n", field)
        self.assertIn(b"\t(authenticated as alice@example.org)\r\n", field)
        bare = self.make(tls=None, account=None)
        self.assertNotIn(b"using", bare)
        self.assertNotIn(b"authenticated", bare)

    def test_date_is_rfc_5322_after_a_semicolon(self):
        for recipient in ("alice@example.org", None):
            lines = self.assertOneSafeField(self.make(recipient=recipient))
            self.assertTrue(lines[-2].endswith(b";"), lines)
            self.assertEqual(lines[-1][:1], b"\t")
            date = email.utils.parsedate_to_datetime(lines[-1][1:].decode("ascii"))
            if date.tzinfo is None:  # "-0000": UTC, source unknown (RFC 5322 §3.3)
                date = date.replace(tzinfo=UTC)
            self.assertEqual(date, datetime.fromtimestamp(self.TIMESTAMP, UTC))

    def test_hostile_helo_cannot_break_the_header(self):
        hostile = [
            "evil.example (forged.example [10.0.0.1])",
            "evil\r\nX-Injected: yes",
            "evil\nX-Injected: yes",
            "evil\rX-Injected: yes",
            "a\x00b\x07c\x1bd\x7fe\tf g",
            "((()))",
            ")\r\n\tby trusted.example (",
            "bücher.example",
            "\r\n\r\nBody-Start",
            "x" * 5000 + "\r\nX-Injected: yes",
        ]
        for helo in hostile:
            field = self.make(helo=helo, tls=None, recipient=None)
            lines = self.assertOneSafeField(field)
            match = re.fullmatch(rb"Received: from (\S+) \(\[192\.0\.2\.7\]\)", lines[0])
            self.assertIsNotNone(match, (helo, field))
            word = match.group(1)
            self.assertNotIn(b"(", word, helo)
            self.assertNotIn(b")", word, helo)
            self.assertLessEqual(len(word), 255, helo)
            self.assertTrue(all(0x21 <= c <= 0x7E for c in word), (helo, word))
            # Exactly our own comments, none from the client.
            self.assertEqual(field.count(b"("), 2, field)
            self.assertEqual(field.count(b")"), 2, field)
            self.assertEqual(field.count(b"\r"), field.count(b"\r\n"), field)
            self.assertEqual(field.count(b"\n"), field.count(b"\r\n"), field)
            self.assertEqual(field.count(b"\r\n"), len(lines), field)
            self.assertNotIn(b"X-Injected", email.message_from_bytes(field + b"\r\n").keys())

    def test_empty_helo_is_named_unknown(self):
        lines = self.assertOneSafeField(self.make(helo=""))
        self.assertEqual(lines[0], b"Received: from unknown ([192.0.2.7])")


class ReturnPathTests(SynchronousTestCase):
    def test_null_sender_is_empty_angle_brackets(self):
        self.assertEqual(return_path(""), b"Return-Path: <>\r\n")

    def test_sender_is_in_angle_brackets(self):
        self.assertEqual(return_path("bob@example.net"), b"Return-Path: <bob@example.net>\r\n")


class ConnectionLimiterTests(SynchronousTestCase):
    def test_total_limit_refuses_beyond_the_total(self):
        limiter = ConnectionLimiter(total=2, per_ip=10)
        self.assertTrue(limiter.acquire("192.0.2.1"))
        self.assertTrue(limiter.acquire("192.0.2.2"))
        self.assertFalse(limiter.acquire("192.0.2.3"))
        self.assertFalse(limiter.acquire("192.0.2.1"))
        self.assertEqual(limiter.open, 2)

    def test_per_ip_limit_refuses_that_ip_only(self):
        limiter = ConnectionLimiter(total=10, per_ip=2)
        self.assertTrue(limiter.acquire("192.0.2.1"))
        self.assertTrue(limiter.acquire("192.0.2.1"))
        self.assertFalse(limiter.acquire("192.0.2.1"))
        self.assertTrue(limiter.acquire("192.0.2.2"))
        self.assertEqual(limiter.open, 3)

    def test_release_frees_a_total_slot(self):
        limiter = ConnectionLimiter(total=1, per_ip=10)
        self.assertTrue(limiter.acquire("192.0.2.1"))
        self.assertFalse(limiter.acquire("192.0.2.2"))
        limiter.release("192.0.2.1")
        self.assertEqual(limiter.open, 0)
        self.assertTrue(limiter.acquire("192.0.2.2"))

    def test_a_second_release_does_not_raise_the_limit(self):
        limiter = ConnectionLimiter(total=1, per_ip=1)
        self.assertTrue(limiter.acquire("192.0.2.1"))
        limiter.release("192.0.2.1")
        limiter.release("192.0.2.1")
        self.assertEqual(limiter.open, 0)
        self.assertTrue(limiter.acquire("192.0.2.2"))
        self.assertFalse(limiter.acquire("192.0.2.3"))

    def test_release_frees_a_per_ip_slot(self):
        limiter = ConnectionLimiter(total=10, per_ip=1)
        self.assertTrue(limiter.acquire("192.0.2.1"))
        self.assertFalse(limiter.acquire("192.0.2.1"))
        limiter.release("192.0.2.1")
        self.assertTrue(limiter.acquire("192.0.2.1"))

    def test_refused_connection_takes_no_slot(self):
        limiter = ConnectionLimiter(total=1, per_ip=1)
        self.assertTrue(limiter.acquire("192.0.2.1"))
        for _ in range(5):
            self.assertFalse(limiter.acquire("192.0.2.1"))
            self.assertFalse(limiter.acquire("192.0.2.2"))
        limiter.release("192.0.2.1")
        self.assertEqual(limiter.open, 0)
        self.assertTrue(limiter.acquire("192.0.2.2"))

    def test_per_ip_counts_are_forgotten_at_zero(self):
        limiter = ConnectionLimiter(total=5, per_ip=2)
        for n in range(1000):
            ip = f"10.0.{n // 256}.{n % 256}"
            self.assertTrue(limiter.acquire(ip))
            self.assertTrue(limiter.acquire(ip))
            limiter.release(ip)
            self.assertEqual(len(limiter._by_ip), 1)
            limiter.release(ip)
            self.assertEqual(len(limiter._by_ip), 0)
        self.assertEqual(limiter.open, 0)

    def test_refused_clients_leave_no_per_ip_entry(self):
        limiter = ConnectionLimiter(total=1, per_ip=1)
        self.assertTrue(limiter.acquire("192.0.2.1"))
        for n in range(100):
            self.assertFalse(limiter.acquire(f"198.51.100.{n}"))
        self.assertEqual(dict(limiter._by_ip), {"192.0.2.1": 1})


class FakeWriter:
    def __init__(self):
        self.calls = []

    def write(self, data):
        self.calls.append(("write", data))

    def abort(self):
        self.calls.append(("abort",))
        return succeed(None)

    def written(self):
        return b"".join(call[1] for call in self.calls if call[0] == "write")

    def aborts(self):
        return sum(1 for call in self.calls if call[0] == "abort")


class MailTransactionTests(SynchronousTestCase):
    def transaction(self, size_limit=1_000_000):
        tx = MailTransaction("bob@example.net", MailParams(), size_limit)
        self.writer = FakeWriter()
        tx.begin_content(
            self.writer, b"Return-Path: <bob@example.net>\r\n", b"Received: x\r\n", "DATA"
        )
        return tx

    def message_id_of(self, *chunks):
        tx = self.transaction()
        for chunk in chunks:
            tx.write(chunk)
        return tx.message_id()

    def test_message_id_is_found_in_the_header(self):
        self.assertEqual(
            self.message_id_of(b"Subject: hi\r\nMessage-ID: <abc.1@example.net>\r\n\r\nbody\r\n"),
            "<abc.1@example.net>",
        )

    def test_message_id_field_name_is_case_insensitive(self):
        for name in (b"message-id", b"MESSAGE-ID", b"Message-Id", b"mEsSaGe-iD"):
            content = name + b": <x@example.net>\r\n\r\nbody\r\n"
            self.assertEqual(self.message_id_of(content), "<x@example.net>", name)

    def test_message_id_allows_spaces_and_tabs_after_the_colon(self):
        content = b"From: a@b.example\r\nMessage-ID: \t  <x@example.net>\r\n\r\n"
        self.assertEqual(self.message_id_of(content), "<x@example.net>")

    def test_folded_message_id_is_found(self):
        content = b"Message-ID:\r\n <folded@example.net>\r\n\r\nbody\r\n"
        self.assertEqual(self.message_id_of(content), "<folded@example.net>")

    def test_message_id_in_the_body_of_a_message_without_header_is_ignored(self):
        self.assertIsNone(self.message_id_of(b"\r\nMessage-ID: <body@example.net>\r\n"))

    def test_message_id_in_the_body_is_ignored(self):
        content = b"Subject: hi\r\n\r\nMessage-ID: <body@example.net>\r\n"
        self.assertIsNone(self.message_id_of(content))

    def test_message_id_in_the_header_wins_over_one_in_the_body(self):
        content = (
            b"Subject: hi\r\n\r\nMessage-ID: <body@example.net>\r\n"
            b"\r\nMessage-ID: <later@example.net>\r\n"
        )
        self.assertIsNone(self.message_id_of(content))
        content = b"Message-ID: <head@example.net>\r\n\r\nMessage-ID: <body@example.net>\r\n"
        self.assertEqual(self.message_id_of(content), "<head@example.net>")

    def test_other_fields_ending_in_message_id_are_not_taken(self):
        content = b"X-Message-ID: <x@example.net>\r\nIn-Reply-To: <y@example.net>\r\n\r\n"
        self.assertIsNone(self.message_id_of(content))

    def test_message_id_in_a_continuation_line_is_not_taken(self):
        content = b"Subject: hi\r\n Message-ID: <x@example.net>\r\n\r\n"
        self.assertIsNone(self.message_id_of(content))

    def test_message_id_split_across_writes_is_found(self):
        self.assertEqual(
            self.message_id_of(b"Subject: hi\r\nMess", b"age-ID: <abc@exa", b"mple.net>\r\n\r\n"),
            "<abc@example.net>",
        )

    def test_message_without_a_body_still_has_its_message_id_found(self):
        self.assertEqual(self.message_id_of(b"Message-ID: <x@example.net>\r\n"), "<x@example.net>")

    def test_no_message_id_is_none(self):
        self.assertIsNone(self.message_id_of(b"Subject: hi\r\n\r\nbody\r\n"))
        self.assertIsNone(self.message_id_of())

    def test_content_up_to_the_limit_is_written(self):
        tx = self.transaction(size_limit=10)
        tx.write(b"12345")
        tx.write(b"67890")
        self.assertFalse(tx.too_big)
        self.assertEqual(tx.size, 10)
        self.assertEqual(self.writer.aborts(), 0)
        self.assertTrue(self.writer.written().endswith(b"1234567890"))

    def test_empty_write_changes_nothing(self):
        tx = self.transaction(size_limit=0)
        calls = list(self.writer.calls)
        tx.write(b"")
        self.assertEqual((tx.size, tx.too_big, self.writer.calls), (0, False, calls))

    def test_write_past_the_limit_sets_too_big_and_aborts_the_writer_once(self):
        tx = self.transaction(size_limit=10)
        tx.write(b"123456")
        tx.write(b"789012")
        self.assertTrue(tx.too_big)
        self.assertEqual(self.writer.aborts(), 1)
        self.assertEqual(self.writer.calls[-1], ("abort",))
        tx.write(b"more")
        tx.write(b"and more")
        self.assertEqual(self.writer.aborts(), 1)

    def test_nothing_is_written_to_the_writer_after_the_limit_is_passed(self):
        tx = self.transaction(size_limit=10)
        tx.write(b"123456")
        before = list(self.writer.calls)
        tx.write(b"789012")
        self.assertEqual(self.writer.calls, before + [("abort",)])
        for _ in range(5):
            tx.write(b"x" * 100)
        self.assertEqual(self.writer.calls, before + [("abort",)])
        self.assertEqual(tx.size, 12 + 500)

    def test_abort_after_too_big_does_not_abort_the_writer_again(self):
        tx = self.transaction(size_limit=3)
        tx.write(b"abcd")
        tx.abort()
        tx.abort()
        self.assertEqual(self.writer.aborts(), 1)

    def test_too_big_transaction_commits_to_a_552_reply(self):
        tx = self.transaction(size_limit=3)
        tx.write(b"abcd")
        reply, ref = self.successResultOf(tx.commit(store=None, account_id=None))
        self.assertEqual((reply.code, reply.enhanced, ref), (552, "5.3.4", None))

    def test_head_kept_for_message_id_is_not_fed_after_the_limit(self):
        tx = self.transaction(size_limit=5)
        tx.write(b"Sub")
        tx.write(b"ject: x\r\nMessage-ID: <x@example.net>\r\n\r\n")
        self.assertIsNone(tx.message_id())
